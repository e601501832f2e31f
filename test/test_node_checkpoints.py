"""Checkpoints that do not fit the configured model, at the node (in-process lifecycle node, real rclpy):
a 4D-VGGT release file for a VGGT model (wrong architecture), a release file whose architecture or
``model_config`` differs from the 4D-VGGT model's, a truncated release file, and PAGE-4D's mask checkpoint for
the no-mask configuration. Each leaves the node unconfigured and alive, with one log line that names the
mismatch; configure can be tried again (same reason), and a node given a fitting file configures.

The 4D-VGGT model of this project is stood in for by a small VGGT4D carrying the two attributes the loader
reads from it (``release_model_config``, ``release_metadata``): these cases fail before any weight is read, so
what is tested is the node's handling of the loader's reason (the loader's checks themselves:
test_model_checkpoint.py; PAGE-4D's pairing: test_model_page4d_parity.py).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vggt4d_ros.model.configs import available_configs, load_model_config
from vggt4d_ros.perception.pipeline import EMBEDDED_DIR

ROOT = Path(__file__).resolve().parents[1]
TINY = EMBEDDED_DIR / "tiny.safetensors"
PAGE = ROOT / "test" / "data" / "model" / "page4d_small"
pytestmark = pytest.mark.skipif(not TINY.is_file(), reason="the embedded tiny weights are not in this checkout")

META = {"model_name": "4D-VGGT", "naming_schema_version": 2, "release": "version-1.0",
        "architecture": "4d-vggt-geometry-v1", "architecture_schema_version": 2,
        "released_tasks": ["camera", "depth", "point"]}
CFG = {"img_size": 252, "patch_size": 14, "embed_dim": 128, "depth": 4, "window_size": 5,
       "cached_layer_indices": [0, 1, 2, 3]}


def _node_class():
    from vggt4d_ros.ros import node as node_mod

    cls = getattr(node_mod, "Vggt4dNode", None)
    return cls if cls is not None else node_mod.build_node_class()


def _configure(params, release_like=False, monkeypatch=None):
    """Configure an in-process node with ``params`` twice (the second try shows it alive and retrying);
    returns the lifecycle state after each.

    ``release_like``: the model built gets the 4D-VGGT model's two attributes (module docstring).
    """
    import rclpy
    from rclpy.parameter import Parameter

    from vggt4d_ros.model import configs

    if release_like:
        real = configs.build_model_from_config

        def build(*a, **kw):
            m = real(*a, **kw)
            m.release_model_config = dict(CFG)
            m.release_metadata = {"architecture": META["architecture"], "architecture_schema_version": 2}
            return m

        monkeypatch.setattr(configs, "build_model_from_config", build)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        base = {"autostart": False, "model.device": "cpu", "model.target_width": 112, "keypoints.max_count": 0}
        base.update(params)
        node = _node_class()(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in base.items()])
        states = []
        for _ in range(2):
            node.trigger_configure()
            states.append(node._state_machine.current_state[1])
            if states[-1] != "unconfigured":
                break
        assert node.get_parameter("model.checkpoint").value == params["model.checkpoint"]  # still answers
        node.destroy_node()
        return states
    finally:
        rclpy.shutdown(context=ctx)


def _line(capfd):
    """The one ``configure failed`` line (the same for both tries)."""
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "configure failed" in ln]
    assert len(lines) == 2, err[-2000:]
    assert lines[0].split("configure failed", 1)[1] == lines[1].split("configure failed", 1)[1]
    assert "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    sd = load_file(str(TINY))
    out = {}

    def release(name, **over):
        payload = {**META, "model_config": dict(CFG), "model": sd}
        payload.update(over)
        torch.save(payload, d / name)
        out[name] = d / name

    release("4d-vggt-geometry-v1.pt")
    release("wrong-arch.pt", architecture="4d-vggt-geometry-v2")
    release("wrong-config.pt", model_config={**CFG, "window_size": 7, "cached_layer_indices": [4, 11, 17, 23]})
    good = out["4d-vggt-geometry-v1.pt"]
    cut = d / "cut-release.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out["cut-release.pt"] = cut
    plain = d / "tiny.pt"
    torch.save({"model": sd}, plain)
    out["tiny.pt"] = plain
    # PAGE-4D's no-mask configuration at the fixture's size, as a model YAML the node reads by path
    cfg = load_model_config("page4d")
    cfg.pop("name")
    cfg.update(img_size=56, embed_dim=32, depth=5, num_heads=2, patch_embed="conv", dpt_layers=[0, 2, 3, 4],
               camera_head={"trunk_depth": 1, "num_heads": 2}, dpt={"features": 8, "out_channels": [8, 8, 16, 16]})
    cfg["page4d"] = dict(cfg["page4d"], mask_block=1, bias_blocks=[2, 3])
    (d / "page4d-small.yaml").write_text(yaml.safe_dump(cfg))
    out["page4d-small.yaml"] = d / "page4d-small.yaml"
    for v in ("nomask", "mask"):
        shutil.copy(PAGE / f"checkpoint_{v}.pt", d / f"checkpoint_{v}.pt")
        out[f"checkpoint_{v}.pt"] = d / f"checkpoint_{v}.pt"
    return out


def test_release_file_for_a_vggt_model(files, capfd):
    assert _configure({"model.checkpoint": str(files["4d-vggt-geometry-v1.pt"])}) == ["unconfigured"] * 2
    line = _line(capfd)
    for w in ("4d-vggt-geometry-v1.pt", "4D-VGGT release checkpoint", 'model.config "tiny"', "model.config: 4d-vggt"):
        assert w in line, line
    assert _configure({"model.checkpoint": str(files["tiny.pt"])}) == ["inactive"]  # control: the same weights


@pytest.mark.parametrize("name,words", [
    ("wrong-arch.pt", ['architecture: file "4d-vggt-geometry-v2" vs model "4d-vggt-geometry-v1"']),
    ("wrong-config.pt", ["model_config.window_size: file 7 vs model 5",
                         "model_config.cached_layer_indices: file [4, 11, 17, 23] vs model [0, 1, 2, 3]"]),
    ("cut-release.pt", ["not a readable PyTorch checkpoint, truncated or corrupt"]),
])
def test_release_mismatch_leaves_node_unconfigured(files, capfd, monkeypatch, name, words):
    assert _configure({"model.checkpoint": str(files[name])}, True, monkeypatch) == ["unconfigured"] * 2
    line = _line(capfd)
    assert name in line, line
    for w in words:
        assert w in line, line


def test_release_file_that_fits_configures(files, monkeypatch):
    """Control for the cases above: the fitting release file configures the stand-in model."""
    assert _configure({"model.checkpoint": str(files["4d-vggt-geometry-v1.pt"])}, True, monkeypatch) == ["inactive"]


def test_page4d_mask_checkpoint_for_the_nomask_config(files, capfd):
    cfg = str(files["page4d-small.yaml"])
    params = {"model.config": cfg, "model.checkpoint": str(files["checkpoint_mask.pt"]), "model.target_width": 70}
    assert _configure(params) == ["unconfigured"] * 2
    line = _line(capfd)
    for w in ("checkpoint_mask.pt", "mask-enabled variant", "page4d.strength 0", "model.config page4d-mask"):
        assert w in line, line
    params["model.checkpoint"] = str(files["checkpoint_nomask.pt"])
    assert _configure(params) == ["inactive"]  # the no-mask checkpoint is the one this configuration runs


REAL = ROOT / "test" / "data" / "model" / "4dvggt_small.pt"


@pytest.mark.skipif(not REAL.is_file() or "4d-vggt-small" not in available_configs(),
                    reason="the small 4D-VGGT config / release-format fixture is not in this checkout")
def test_real_4dvggt_release_file_mismatches(tmp_path, capfd):
    """The same cases with this project's 4D-VGGT model (config 4d-vggt-small) and its release-format fixture."""
    payload = torch.load(REAL, map_location="cpu", weights_only=True)
    cases = {
        "window.pt": ({**payload, "model_config": {**payload["model_config"], "window_size": 3}},
                      ["model_config.window_size: file 3 vs model 5"]),
        "arch.pt": ({**payload, "architecture": "4d-vggt-geometry-v9"},
                    ['architecture: file "4d-vggt-geometry-v9" vs model "4d-vggt-geometry-v1"']),
    }
    base = {"model.config": "4d-vggt-small", "model.target_width": 56}
    for name, (p, words) in cases.items():
        torch.save(p, tmp_path / name)
        assert _configure({**base, "model.checkpoint": str(tmp_path / name)}) == ["unconfigured"] * 2, name
        line = _line(capfd)
        for w in [name] + words:
            assert w in line, line
    assert _configure({**base, "model.checkpoint": str(REAL)}) == ["inactive"]
