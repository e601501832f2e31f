"""Equivalence with the reference VGGT implementation via the golden fixture.

``test/data/model/reference_small.safetensors`` was produced by ``scripts/make_reference_fixture.py`` from
the reference code (a small conv-patch-embed VGGT with random weights, fp32, S=3 frames, 3 query points).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vggt4d_ros.model import build_model, load_checkpoint

FIXTURE = Path(__file__).parent / "data" / "model" / "reference_small.safetensors"


def _load_fixture():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return json.loads(meta["build_model"]), tensors


@pytest.fixture(scope="module")
def fixture_and_model(tmp_path_factory):
    cfg, t = _load_fixture()
    model = build_model(**cfg).eval()
    sd = {k[len("model."):]: v.float() for k, v in t.items() if k.startswith("model.")}
    path = tmp_path_factory.mktemp("ckpt") / "ref.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(path))
    report = load_checkpoint(model, path)  # strict: same keys and shapes as the reference
    assert report.ok and report.layout == "vggt"
    return cfg, t, model


def test_reference_outputs_match(fixture_and_model):
    _, t, model = fixture_and_model
    with torch.no_grad():
        out = model(t["input.images"], t["input.query_points"])
    checked = 0
    for key, ref in t.items():
        if not key.startswith("output."):
            continue
        name = key[len("output."):]
        if name.startswith("pose_enc_list."):
            got = out["pose_enc_list"][int(name.rsplit(".", 1)[1])]
        else:
            got = out[name]
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
        checked += 1
    assert checked >= 11  # pose_enc, 4 refinements, depth(+conf), points(+conf), track, vis, conf
    assert out["track"].shape == (1, 3, 3, 2)
    # the fixture is not trivial: tracks leave their query points, depth varies
    assert (t["output.track"][0, 1:] - t["output.track"][0, :1]).abs().max() > 0.1
    assert t["output.depth"].std() > 1e-3


def test_keep_layers_does_not_change_outputs(fixture_and_model):
    cfg, t, model = fixture_and_model
    lean = build_model(**{**cfg, "keep_layers": "auto"}).eval()
    lean.load_state_dict(model.state_dict())
    with torch.no_grad():
        a = model(t["input.images"])
        b = lean(t["input.images"])
        layers, _, _ = lean.aggregator(t["input.images"][None])
    assert sum(x is not None for x in layers) == len(lean.required_layers())
    for k in ("pose_enc", "depth", "world_points"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_patch_token_cache_equals_images(fixture_and_model):
    _, t, model = fixture_and_model
    imgs = t["input.images"]
    with torch.no_grad():
        cached = model.aggregator.embed_frames(imgs)[None]  # per-frame, reusable
        a = model(imgs)
        b = model(imgs, patch_tokens=cached)
    torch.testing.assert_close(a["depth"], b["depth"], rtol=0, atol=0)
    torch.testing.assert_close(a["pose_enc"], b["pose_enc"], rtol=0, atol=0)
