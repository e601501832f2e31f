"""Checkpoint loading: every supported layout, and one clear error for every kind of bad file."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from vggt4d_ros.model import CheckpointError, build_model, load_checkpoint

SMALL = dict(img_size=56, embed_dim=32, depth=2, num_heads=2, patch_embed="conv", enable_track=False,
             camera_head=dict(trunk_depth=1, num_heads=2), dpt=dict(features=8, out_channels=[8, 8, 8, 8]))
PAGE = dict(page4d=dict(enabled=True, mask_block=0, bias_blocks=(1, 1), strength=4.0))


def _src(**kw):
    torch.manual_seed(7)
    m = build_model(**{**SMALL, **kw})
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    return m


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pth-wrapped", "pt-module-prefix", "safetensors-module"])
def test_supported_layouts_load(tmp_path, fmt):
    src = _src()
    sd = src.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "m.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "safetensors-module":
        path = tmp_path / "m.safetensors"
        save_file({f"module.{k}": v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "pt":
        path = tmp_path / "m.pt"
        torch.save(sd, path)
    elif fmt == "pth-wrapped":  # PAGE-4D ships {"model": state_dict, ...}
        path = tmp_path / "m.pth"
        torch.save({"model": sd, "epoch": 3, "optimizer": {"lr": 1e-4}}, path)
    else:
        path = tmp_path / "m.pt"
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    dst = build_model(**SMALL)
    assert not _same(src, dst)
    report = load_checkpoint(dst, path)
    assert report.ok and report.layout == "vggt" and report.num_tensors == len(sd)
    assert _same(src, dst)


def test_page4d_with_and_without_mask_head(tmp_path):
    src = _src(**PAGE)
    path = tmp_path / "page.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = build_model(**SMALL, **PAGE)
    rep = load_checkpoint(dst, path)
    assert rep.layout == "page4d" and _same(src, dst)
    # a PAGE-4D checkpoint with its mask head into a plain model: one error that names the fix
    with pytest.raises(CheckpointError, match="page4d.enabled") as e:
        load_checkpoint(build_model(**SMALL), path)
    assert "unexpected 6" in str(e.value)
    # PAGE-4D without its mask head (plain VGGT layout) into a PAGE-4D model: the predictor is missing
    plain = tmp_path / "plain.pt"
    torch.save({"model": _src().state_dict()}, plain)
    with pytest.raises(CheckpointError, match="missing 6"):
        load_checkpoint(build_model(**SMALL, **PAGE), plain)
    rep = load_checkpoint(build_model(**SMALL, **PAGE), plain, strict=False)
    assert len(rep.missing) == 6 and rep.layout == "vggt"


def test_missing_unexpected_and_shape_errors_in_one_message(tmp_path):
    sd = dict(_src().state_dict())
    sd.pop("camera_head.empty_pose_tokens")
    sd["extra.weight"] = torch.zeros(3)
    sd["aggregator.camera_token"] = torch.zeros(1, 2, 1, 16)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(build_model(**SMALL), path)
    msg = str(e.value)
    assert "camera_head.empty_pose_tokens" in msg and "extra.weight" in msg and "aggregator.camera_token" in msg
    assert "missing 1" in msg and "unexpected 1" in msg and "shape mismatch 1" in msg


def test_missing_path_wrong_and_truncated_files(tmp_path):
    m = build_model(**SMALL)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(m, tmp_path / "nope.safetensors")
    txt = tmp_path / "notes.pt"
    txt.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(m, txt)
    good_pt, good_st = tmp_path / "g.pt", tmp_path / "g.safetensors"
    torch.save(m.state_dict(), good_pt)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(good_st))
    for good, err in ((good_pt, "PyTorch"), (good_st, "safetensors")):
        cut = tmp_path / f"cut{good.suffix}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(CheckpointError, match=err):
            load_checkpoint(m, cut)
    bad_header = tmp_path / "h.safetensors"
    bad_header.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(m, bad_header)
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported"):
        load_checkpoint(m, tmp_path / "w.onnx")


class _Payload:
    """Unpickling this would create a marker file (stands in for arbitrary code execution)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"aggregator.camera_token": torch.zeros(1), "payload": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused") as e:
        load_checkpoint(build_model(**SMALL), path)
    assert not marker.exists()
    assert "weights_only=False" not in str(e.value) and "Unsupported global" in str(e.value)  # no advice to run it
    # the payload is real: an unrestricted load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(CheckpointError):
        load_checkpoint(build_model(**SMALL), path)
    assert not marker.exists()


# ---------------------------------------------------------------- 4D-VGGT v1.0 release format
RELEASE_META = {"model_name": "4D-VGGT", "naming_schema_version": 2, "distribution_name": "4d-vggt",
                "import_package": "four_d_vggt", "release": "version-1.0", "architecture": "4d-vggt-geometry-v1",
                "architecture_schema_version": 2, "released_tasks": ["camera", "depth", "point"]}
RELEASE_CFG = {"img_size": 56, "patch_size": 14, "embed_dim": 8, "window_size": 5, "depth": 2,
               "cached_layer_indices": [0, 1, 1, 1], "enable_cross_time": True, "spatial_head_options": None,
               "dense_head_options": {"intermediate_layer_idx": [0, 1, 1, 1]}}


class _ReleaseLike(torch.nn.Module):
    """Stands in for the project's 4D-VGGT model in loader-only tests: the release's key prefixes, and the
    ``release_model_config`` / ``release_metadata`` that model exposes."""

    def __init__(self, **cfg):
        super().__init__()
        self.cross_view_global_fusion = torch.nn.Linear(8, 8)
        self.spatial_head = torch.nn.Linear(8, 4)
        self.release_model_config = {**RELEASE_CFG, **cfg}
        self.release_metadata = {k: RELEASE_META[k] for k in ("architecture", "architecture_schema_version")}


def _release_file(path, model=None, drop=(), **over):
    torch.manual_seed(3)
    src = model or _ReleaseLike()
    payload = {**RELEASE_META, "model_config": dict(RELEASE_CFG),
               "model": {k: torch.randn_like(v) for k, v in src.state_dict().items()}}
    payload.update(over)
    for k in drop:
        payload.pop(k)
    torch.save(payload, path)
    return payload


def test_release_format_loads_strictly(tmp_path):
    path = tmp_path / "4d-vggt-geometry-v1.pt"
    payload = _release_file(path)
    m = _ReleaseLike(cached_layer_indices=(0, 1, 1, 1))  # a tuple equals the file's JSON list
    rep = load_checkpoint(m, path)
    assert rep.ok and rep.layout == "4d-vggt" and rep.notes == []
    assert rep.metadata["architecture"] == "4d-vggt-geometry-v1" and rep.metadata["release"] == "version-1.0"
    assert all(torch.equal(v, payload["model"][k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("over,words", [
    ({"architecture": "4d-vggt-geometry-v2"}, ['architecture: file "4d-vggt-geometry-v2" vs model "4d-vggt-geometry-v1"']),
    ({"architecture_schema_version": 1}, ["architecture_schema_version: file 1 vs model 2"]),
    ({"model_config": {**RELEASE_CFG, "window_size": 7, "depth": 3}},
     ["2 differences", "model_config.window_size: file 7 vs model 5", "model_config.depth: file 3 vs model 2"]),
    ({"model_config": {**RELEASE_CFG, "enable_cross_time": 1}}, ["model_config.enable_cross_time: file 1 vs model true"]),
    ({"model_config": {**{k: v for k, v in RELEASE_CFG.items() if k != "img_size"}, "extra": "x"}},
     ["model_config.extra: file \"x\" vs model <absent>", "model_config.img_size: file <absent> vs model 56"]),
    ({"model_config": {**RELEASE_CFG, "dense_head_options": {"intermediate_layer_idx": [0, 1, 1, 0]}}},
     ['model_config.dense_head_options: file {"intermediate_layer_idx": [0, 1, 1, 0]} vs model '
      '{"intermediate_layer_idx": [0, 1, 1, 1]}']),
])
def test_release_mismatch_names_each_difference(tmp_path, over, words):
    path = tmp_path / "r.pt"
    _release_file(path, **over)
    m = _ReleaseLike()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(m, path)
    msg = str(e.value)
    assert "r.pt" in msg
    for w in words:
        assert w in msg, msg
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # nothing loaded


def test_release_without_model_config_or_state(tmp_path):
    path = tmp_path / "r.pt"
    _release_file(path, drop=("model_config",))
    with pytest.raises(CheckpointError, match="model_config: absent"):
        load_checkpoint(_ReleaseLike(), path)
    _release_file(path, drop=("model",))
    with pytest.raises(CheckpointError, match="no 'model' state_dict"):
        load_checkpoint(_ReleaseLike(), path)


def test_release_file_into_a_vggt_model_names_the_config(tmp_path):
    path = tmp_path / "4d-vggt-geometry-v1.pt"
    _release_file(path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(build_model(**SMALL), path)
    msg = str(e.value)
    assert "4D-VGGT release checkpoint" in msg and "model.config: 4d-vggt" in msg and "VGGT4D" in msg, msg
    # an architecture this project does not build: the message lists what it builds
    _release_file(path, architecture="4d-vggt-full-v2")
    with pytest.raises(CheckpointError, match="4d-vggt-full-v2.*4d-vggt-geometry-v1"):
        load_checkpoint(build_model(**SMALL), path)
    # the bare weights (no metadata) into a VGGT4D: key mismatch with the hint
    torch.save(_ReleaseLike().state_dict(), path)
    with pytest.raises(CheckpointError, match="layout '4d-vggt'.*model.config: 4d-vggt"):
        load_checkpoint(build_model(**SMALL), path)


def test_release_bare_state_dict_loads_with_a_note(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({k: torch.randn_like(v) for k, v in _ReleaseLike().state_dict().items()}, str(path))
    rep = load_checkpoint(_ReleaseLike(), path)
    assert rep.ok and len(rep.notes) == 1 and "only its keys and shapes" in rep.notes[0]


def test_truncated_release_file(tmp_path):
    good = tmp_path / "good.pt"
    _release_file(good)
    cut = tmp_path / "4d-vggt-geometry-v1.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    with pytest.raises(CheckpointError, match="4d-vggt-geometry-v1.pt: not a readable PyTorch checkpoint, truncated"):
        load_checkpoint(_ReleaseLike(), cut)
