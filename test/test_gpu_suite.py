"""bench/gpu_suite.py: the smoke mode runs every model on the CPU and reports each planned run; the full plan
covers the four models x 1x8 / 2x8 x bf16 / fp16 x eager / compiled (+ ONNX Runtime for the VGGT layouts)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import gpu_suite  # noqa: E402


def test_full_plan_covers_the_matrix():
    args = argparse.Namespace(smoke=False, models=list(gpu_suite.MODELS), precisions=["bf16", "fp16"], compile=True,
                              ort=True, shapes=gpu_suite.SHAPES)
    runs = gpu_suite.plan(args)
    keys = {(r["model"], r["precision"], r["shape"], r["mode"]) for r in runs}
    assert len(keys) == len(runs) == 4 * 2 * 2 * 2 + 2 * 2 * 2
    for m in gpu_suite.MODELS:
        for p in ("bf16", "fp16"):
            for s in ("1x8", "2x8"):
                assert {(m, p, s, "eager"), (m, p, s, "compile")} <= keys
    modes = [r["mode"] for r in runs]
    assert modes == sorted(modes, key=["eager", "compile", "ort-cuda", "ort-trt"].index)  # priority order
    assert [r["model"] for r in runs[16:20]] == list(gpu_suite.MODELS)  # one compiled run per model first
    assert gpu_suite.SHAPES == {"1x8": (1, 8), "2x8": (2, 8)} and gpu_suite.INPUT_HW == (360, 640)


def test_smoke_runs_every_model(tmp_path, capsys):
    out = tmp_path / "smoke.json"
    assert gpu_suite.main(["--smoke", "--save", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == doc
    assert doc["mode"] == "smoke" and doc["device"] == "cpu"
    assert set(doc["parameters"]) == set(gpu_suite.MODELS)
    # the small stand-ins are the same architectures: the 4D-VGGT ones have the release's branches
    assert doc["parameters"]["4d-vggt-page4d"] > doc["parameters"]["4d-vggt"] > doc["parameters"]["page4d"]
    planned = {(r["model"], r["precision"], r["shape"], r["mode"]) for r in doc["rows"] + doc["skipped"]}
    assert len(planned) == len(doc["rows"]) + len(doc["skipped"]) == 9
    assert not [r for r in doc["rows"] if "error" in r]
    ran = {r["model"] for r in doc["rows"]}
    assert ran == set(gpu_suite.MODELS)  # the first round reaches every model
    for r in doc["rows"]:
        assert r["ms"]["n"] == 1 and r["ms"]["median"] > 0 and 0 < r["model_ms"]["median"] <= r["ms"]["median"]
    assert {r["image_resize"] for r in doc["rows"] if r["model"].startswith("4d-vggt")} == {"pil"}
    for s in doc["skipped"]:
        assert s["reason"]


@pytest.mark.parametrize("name", gpu_suite.MODELS)
def test_full_size_configs_build_on_meta(name):
    import torch

    from vggt4d_ros.model.configs import build_model_from_config

    with torch.device("meta"):
        model = build_model_from_config(gpu_suite.model_config(name, smoke=False))
    n = sum(p.numel() for p in model.parameters())
    assert n == {"vggt-1b": 1_256_537_516, "4d-vggt": 1_803_726_236, "4d-vggt-page4d": 1_902_595_058}.get(name, n)
    assert n > 1_000_000_000
