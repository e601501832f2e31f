"""ONNX export and the onnxruntime backend (vggt4d_ros.export, vggt4d-export).

Two exports per session (module fixtures), each verified against the torch model:
- the committed tiny model (spatiotemporal layout, PAGE-4D, mask head) at 112 x 70 with V=2, T=2, through the
  ``vggt4d-export`` CLI;
- a small random model with a DINOv2 patch embed trained on a 4 x 4 grid, exported at a 5 x 8 grid with a
  dynamic number of frames (global layout): exercises the fixed position-embedding resize and RoPE tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from vggt4d_ros.export import ExportError, ExportSpec, OrtBackend, compare_outputs, export_onnx, sidecar_path
from vggt4d_ros.inference import Predictor
from vggt4d_ros.model import build_model, build_model_from_config, load_checkpoint
from vggt4d_ros.model.layers import DinoV2
from vggt4d_ros.tools.export import main as export_main

ROOT = Path(__file__).resolve().parents[1]
TINY_CKPT = ROOT / "vggt4d_ros" / "resources" / "models" / "tiny.safetensors"
H, W, V, T = 70, 112, 2, 2


def _tiny() -> torch.nn.Module:
    m = build_model_from_config("tiny")
    load_checkpoint(m, TINY_CKPT)
    return m.eval()


@pytest.fixture(scope="module")
def tiny_export_run(tmp_path_factory):
    """The README's vggt4d-export command (tiny weights named with --checkpoint), as its own process."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "vggt4d_export"), "--config", "tiny", "--checkpoint",
                          str(TINY_CKPT), "--height", str(H), "--width", str(W), "--views", str(V), "--steps", str(T),
                          "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:]
    return out, run.stdout


@pytest.fixture(scope="module")
def tiny_export(tiny_export_run):
    return tiny_export_run[0]


def _dino_model() -> torch.nn.Module:
    """Global-layout model whose DINOv2 patch embed (1 block) was 'trained' at 56 px (4 x 4 patches)."""
    torch.manual_seed(0)
    m = build_model(img_size=56, embed_dim=64, depth=2, num_heads=2, patch_embed="conv", enable_track=False,
                    enable_point=False, camera_head={"trunk_depth": 1, "num_heads": 2},
                    dpt={"features": 8, "out_channels": [8, 16, 16, 16]})
    m.aggregator.patch_embed = DinoV2(img_size=56, patch_size=14, embed_dim=64, depth=1, num_heads=2,
                                      num_register_tokens=4)
    torch.nn.init.normal_(m.aggregator.patch_embed.pos_embed, std=0.5)  # a resize error would show
    return m.eval()


@pytest.fixture(scope="module")
def dino_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "dino.onnx"
    model = _dino_model()
    info = export_onnx(model, out, ExportSpec(height=H, width=W, num_views=1, num_steps=3, dynamic_frames=True,
                                              optimize=False))
    return model, out, info


def test_cli_export_round_trip(tiny_export, capsys):
    onnx.checker.check_model(str(tiny_export))
    info = json.loads(sidecar_path(tiny_export).read_text())
    assert (info["height"], info["width"], info["num_views"], info["num_steps"]) == (H, W, V, T)
    assert info["input"]["shape"] == [1, V * T, 3, H, W] and info["num_frames"] == V * T
    assert info["layout"] == "spatiotemporal" and info["reference_index"] == 0
    assert info["outputs"] == ["pose_enc", "depth", "depth_conf", "dynamic_mask_logits"]
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["onnx"] == onnx.__version__
    assert info["checker"] == "passed" and info["parity"]["max_rel"] < 1e-4
    # onnxruntime on a fresh input against the torch model's forward
    model = _tiny()
    x = torch.rand(1, V * T, 3, H, W, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(x, num_views=V)
    backend = OrtBackend(tiny_export, providers=("CPUExecutionProvider",))
    got = backend(x, num_views=V)
    assert got["depth"].shape == (1, V * T, H, W, 1) and got["pose_enc"].shape == (1, V * T, 9)
    errs = compare_outputs({k: ref[k].numpy() for k in info["outputs"]}, {k: got[k].numpy() for k in info["outputs"]})
    for name, e in errs.items():
        assert e["finite"] and e["max_rel"] < 1e-4, (name, e)
    # the graph has no data-dependent max (RoPE tables are fixed)
    ops = {n.op_type for n in onnx.load(str(tiny_export)).graph.node}
    assert "ReduceMax" not in ops


def test_cli_export_prints_its_result_and_nothing_of_the_exporter_stack(tiny_export_run):
    """Before, one export printed about 650 lines of torch.onnx / onnxscript / onnx_ir logging."""
    out, text = tiny_export_run
    lines = text.strip().splitlines()
    assert lines[0].startswith(f"wrote {out}") and lines[-1].startswith("parity ok"), text
    assert len(lines) == 7, text  # wrote, checker + 4 outputs, parity
    for noise in ("onnxscript", "onnx_ir", "[torch.onnx]", "Warning", "torchvision"):
        assert noise not in text, noise


def test_cli_refuses_random_weights_unless_asked(tmp_path, capsys, monkeypatch):
    import vggt4d_ros.export as export_pkg

    rc = export_main(["--config", "tiny", "--height", "70", "--width", "112", "-o", str(tmp_path / "a.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "no --checkpoint" in err and "--random-weights" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a.onnx").exists()
    rc = export_main(["--config", "tiny", "--checkpoint", str(TINY_CKPT), "--random-weights", "--height", "70",
                      "--width", "112", "-o", str(tmp_path / "a.onnx")])
    assert rc == 2 and "exclude each other" in capsys.readouterr().err
    # Asked for: the model is built with seeded random weights and exported; the sidecar says so.
    seen = []

    def fake_export(model, path, spec, **kw):
        seen.append((next(model.parameters()).detach().clone(), kw["metadata"]))
        return {"input": {"shape": [1, 1, 3, 70, 112], "dtype": "float32"}, "outputs": [], "export_seconds": 0}

    monkeypatch.setattr(export_pkg, "export_onnx", fake_export)
    for _ in range(2):
        rc = export_main(["--config", "tiny", "--random-weights", "--no-verify", "--height", "70", "--width", "112",
                          "-o", str(tmp_path / "r.onnx")])
        assert rc == 0
    assert seen[0][1]["random_weights"] is True and seen[0][1]["checkpoint"] is None
    assert torch.equal(seen[0][0], seen[1][0])  # seeded (--seed 0): the same random weights each time
    assert not torch.equal(seen[0][0], next(_tiny().parameters()))


def test_predictor_on_ort_backend_matches_torch(tiny_export):
    rng = np.random.default_rng(3)
    base = (rng.random((H // 7, W // 7, 3)) * 255).astype(np.float32)
    frames = []
    for s in range(V * T):  # smooth images shifted per frame (not white noise)
        img = np.kron(np.roll(base, s, axis=1), np.ones((7, 7, 1)))
        frames.append(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))
    torch_pred = Predictor(_tiny(), target_width=W, dynamic_mask="head").predict(frames, num_views=V)  # the export's mask
    ort_pred = Predictor(OrtBackend(tiny_export), target_width=W).predict(frames, num_views=V)
    assert ort_pred.model_hw == (H, W) and ort_pred.dynamic_mask_source == torch_pred.dynamic_mask_source == "head"
    for a, b in zip(torch_pred.frames, ort_pred.frames):
        np.testing.assert_allclose(b.cam_from_world, a.cam_from_world, atol=1e-4)
        np.testing.assert_allclose(b.intrinsics, a.intrinsics, rtol=1e-4)
        np.testing.assert_allclose(b.depth, a.depth, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b.points_world, a.points_world, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(b.dynamic_mask, a.dynamic_mask, atol=1e-4)


def test_ort_backend_rejects_windows_the_graph_was_not_exported_for(tiny_export):
    backend = OrtBackend(tiny_export)
    x = torch.rand(1, V * T, 3, H, W)
    with pytest.raises(ValueError, match="exported for 70x112"):
        backend(torch.rand(1, V * T, 3, 84, W), num_views=V)
    with pytest.raises(ValueError, match="6 frames"):
        backend(torch.rand(1, 6, 3, H, W), num_views=V)
    with pytest.raises(ValueError, match="num_views=1"):
        backend(x, num_views=1)
    with pytest.raises(ValueError, match="reference"):
        backend(x, num_views=V, reference_index=2)
    with pytest.raises(ValueError, match="layout 'global'"):
        backend(x, num_views=V, layout="global")
    with pytest.raises(ValueError, match="patch_tokens"):
        backend(x, num_views=V, patch_tokens=torch.zeros(1, V * T, 40, 128))
    with pytest.raises(FileNotFoundError):
        OrtBackend(tiny_export.parent / "missing.onnx")
    with pytest.raises(RuntimeError, match="none of the providers"):
        OrtBackend(tiny_export, providers=("NoSuchExecutionProvider",))


def test_dynamic_frames_and_fixed_position_embedding(dino_export):
    model, path, info = dino_export
    assert info["dynamic_frames"] and info["input"]["shape"][1] == "S" and info["parity"]["max_rel"] < 1e-4
    graph = onnx.load(str(path)).graph
    for node in graph.node:  # DINOv2's bicubic position-embedding resize was folded into a constant
        if node.op_type == "Resize":
            modes = [a.s for a in node.attribute if a.name == "mode"]
            assert modes != [b"cubic"]
    # the 4x4 -> 5x8 resize matters: without it the first tokens differ
    pe = model.aggregator.patch_embed
    assert pe._fixed_grid == (5, 8) and not torch.allclose(pe._fixed_pos[:, 1:17], pe.pos_embed[:, 1:17])
    backend = OrtBackend(path)
    for s in (1, 5):
        x = torch.rand(1, s, 3, H, W, generator=torch.Generator().manual_seed(s))
        with torch.no_grad():
            ref = model(x)
        got = backend(x)
        for k in info["outputs"]:
            err = (got[k] - ref[k]).abs().max().item()
            assert err <= 1e-4 * ref[k].abs().max().item() + 1e-6, (s, k, err)


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(height=71, width=W), "multiple of the patch size 14"),
        (dict(height=H, width=0), "positive multiple"),
        (dict(height=H, width=W, num_views=0), "must be >= 1"),
        (dict(height=H, width=W, heads=("camera", "track")), "unknown heads"),
        (dict(height=H, width=W, opset=13), "opset 13"),
        (dict(height=H, width=W, dynamic_frames=True), "dynamic frames need the 'global' layout"),
        (dict(height=H, width=W, num_views=2, num_steps=2, reference=4), "reference frame 4 outside"),
    ],
)
def test_bad_export_requests_raise_clear_errors(spec, message, tmp_path):
    with pytest.raises(ExportError, match=message):
        export_onnx(_tiny(), tmp_path / "x.onnx", ExportSpec(**spec))
    assert not (tmp_path / "x.onnx").exists()


def test_missing_head_and_cli_errors(tmp_path, capsys):
    no_mask = build_model(img_size=56, embed_dim=32, depth=1, num_heads=2, patch_embed="conv", enable_track=False,
                          camera_head={"trunk_depth": 1, "num_heads": 2}, dpt={"features": 8, "out_channels": [8] * 4})
    with pytest.raises(ExportError, match="no mask head"):
        export_onnx(no_mask, tmp_path / "x.onnx", ExportSpec(height=56, width=56, heads=("camera", "mask")))
    rc = export_main(["--config", "no-such-config", "--random-weights", "--height", "70", "--width", "112",
                      "-o", str(tmp_path / "a.onnx")])
    assert rc == 2 and "no model configuration 'no-such-config'" in capsys.readouterr().err
    rc = export_main(["--config", "tiny", "--checkpoint", str(TINY_CKPT), "--height", "70", "--width", "100",
                      "-o", str(tmp_path / "a.onnx")])
    assert rc == 2 and "width 100 must be a positive multiple of the patch size 14" in capsys.readouterr().err
    rc = export_main(["--config", "tiny", "--checkpoint", str(tmp_path / "none.safetensors"), "--height", "70",
                      "--width", "112", "-o", str(tmp_path / "a.onnx")])
    assert rc == 2 and "none.safetensors" in capsys.readouterr().err
