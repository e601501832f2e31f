"""4D-VGGT v1.0 (``build_model(architecture="4d-vggt")``) against the release's own code.

``test/data/model/4dvggt_small.pt`` (the release's checkpoint format) and ``4dvggt_small_io.safetensors``
(inputs and the release's fp32 outputs) were made by ``scripts/make_4dvggt_fixture.py`` from the release
(Haonan-Wang-aurora/4D-VGGT @ f9c6efe): a small FourDVGGT, S = 6 frames, window 5, random non-zero time bias and
fusion gates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vggt4d_ros.model import CheckpointError, build_model, load_checkpoint
from vggt4d_ros.model.fourd_vggt import FourDVGGT
from vggt4d_ros.model.layers import WindowAttention, window_frame_indices

DATA = Path(__file__).parent / "data" / "model"
CKPT = DATA / "4dvggt_small.pt"
IO = DATA / "4dvggt_small_io.safetensors"
#: the release's FourDVGGT() with defaults, counted on ``meta`` by scripts/make_4dvggt_fixture.py
RELEASE_DEFAULT_PARAMS = 1_803_726_236
RELEASE_DEFAULT_TENSORS = 2296
DENSE = ("depth", "depth_conf", "world_points", "world_points_conf")


def _io():
    with safe_open(str(IO), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def loaded():
    payload = torch.load(str(CKPT), map_location="cpu", weights_only=True)
    model = build_model(architecture="4d-vggt", **payload["model_config"]).eval()
    report = load_checkpoint(model, CKPT)
    assert report.ok and report.layout == "4d-vggt"
    meta, t = _io()
    return model, t["input.images_u8"].float() / 255, t, meta


def _mismatch(out, t):
    """Names of the fixture outputs ``out`` does not reproduce within 1e-3 relative."""
    bad = []
    for key, ref in t.items():
        if not key.startswith("output."):
            continue
        name = key[len("output."):]
        got = out["pose_enc_list"][int(name.rsplit(".", 1)[1])] if name.startswith("pose_enc_list.") else out[name]
        if not torch.allclose(got, ref, rtol=1e-3, atol=1e-5):
            bad.append(name)
    return bad


def test_outputs_match_the_release(loaded):
    model, images, t, _ = loaded
    with torch.no_grad():
        out = model(images)
    assert _mismatch(out, t) == []
    assert sum(k.startswith("output.") for k in t) == 9  # pose_enc, 4 refinements, depth(+conf), points(+conf)
    assert out["depth"].shape == (1, 6, 42, 56, 1) and out["world_points"].shape == (1, 6, 42, 56, 3)
    with torch.no_grad():  # [B, S, 3, H, W] input, same numbers
        out5 = model(images[None])
    assert _mismatch(out5, t) == []


def test_state_dict_and_config_are_the_releases(loaded):
    model, _, _, meta = loaded
    payload = torch.load(str(CKPT), map_location="cpu", weights_only=True)
    sd = model.state_dict()
    assert set(sd) == set(payload["model"])
    assert all(sd[k].shape == v.shape for k, v in payload["model"].items())
    assert model.release_model_config == payload["model_config"]
    assert model.release_metadata == {k: v for k, v in payload.items() if k not in ("model", "model_config")}
    assert model.project_extensions == {}
    ours = model.release_payload()
    assert set(ours) == set(payload) and ours["model_config"] == payload["model_config"]
    assert json.loads(meta["config"])["window_size"] == model.release_model_config["window_size"] == 5


def test_default_parameter_count_on_meta():
    with torch.device("meta"):
        model = build_model(architecture="4d-vggt")
    assert sum(p.numel() for p in model.parameters()) == RELEASE_DEFAULT_PARAMS
    assert len(model.state_dict()) == RELEASE_DEFAULT_TENSORS
    meta, _ = _io()
    assert int(meta["default_param_count"]) == RELEASE_DEFAULT_PARAMS  # the release's own count
    cfg = model.release_model_config
    assert cfg["cached_layer_indices"] == [4, 11, 17, 23] and cfg["dense_head_options"] == {"intermediate_layer_idx": [4, 11, 17, 23]}
    assert len(cfg) == 25


def _window_modules(model):
    return [m for m in model.modules() if isinstance(m, WindowAttention)]


def test_window_edges_are_masked(loaded):
    model, images, t, _ = loaded
    try:
        for m in _window_modules(model):
            m.mask_edges = False
        with torch.no_grad():
            out = model(images)
    finally:
        for m in _window_modules(model):
            m.mask_edges = True
    assert {"depth", "world_points"} <= set(_mismatch(out, t)) <= set(DENSE)  # the pose path has no window


def test_time_bias_is_signed(loaded):
    model, images, t, _ = loaded
    with torch.no_grad():
        for m in _window_modules(model):
            m.relative_time_bias.neg_()
        try:
            out = model(images)
        finally:
            for m in _window_modules(model):
                m.relative_time_bias.neg_()
    assert set(_mismatch(out, t)) >= {"depth", "world_points"}


def test_fusion_gates_are_learned(loaded):
    model, images, t, _ = loaded
    alpha = model.spatiotemporal_dense_fusion.alpha
    saved = alpha.detach().clone()
    with torch.no_grad():
        alpha.zero_()
        try:
            out = model(images)
        finally:
            alpha.copy_(saved)
    assert set(_mismatch(out, t)) == set(DENSE)


def test_window_indices_definition():
    idx, valid = window_frame_indices(4, 1, 3)
    assert idx.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert valid.tolist() == [[False, True, True], [True] * 3, [True] * 3, [True, True, False]]
    idx, valid = window_frame_indices(6, 2, 3)  # T=3, V=2, s = t*2 + v: each camera's own frames
    assert idx.tolist() == [[0, 0, 2], [1, 1, 3], [0, 2, 4], [1, 3, 5], [2, 4, 4], [3, 5, 5]]
    assert valid[0].tolist() == [False, True, True] and valid[5].tolist() == [True, True, False]
    with pytest.raises(ValueError):
        window_frame_indices(4, 1, 4)


def test_batch_and_cameras(loaded):
    """A batch of two sequences = each alone; with V=2 the cross-time branch of a camera sees only its frames."""
    model, images, t, _ = loaded
    other = images.flip(0)
    with torch.no_grad():
        both = model(torch.stack([images, other]))
        alone = model(other)
        for k in ("pose_enc", "depth", "world_points"):
            torch.testing.assert_close(both[k][1], alone[k][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(both["depth"][:1], t["output.depth"], rtol=1e-3, atol=1e-5)
        agg, ct = model.aggregator, model.cross_time_local_fusion
        enc = agg.encode(images[None])
        grid_out = ct(enc, num_views=2)
        for v in (0, 1):
            frames = torch.arange(v, 6, 2)
            sub = enc._replace(tokens=enc.tokens[frames], pos=enc.pos[frames], frames=3)
            own = ct(sub, num_views=1)
            for i in range(4):
                torch.testing.assert_close(grid_out[i][:, frames], own[i], rtol=1e-4, atol=1e-5)
        out_v2 = model(images, num_views=2)
    assert _mismatch(out_v2, t) and "pose_enc" not in _mismatch(out_v2, t)  # only the window changed


def test_heads_dense_frames_and_patch_tokens(loaded):
    model, images, t, _ = loaded
    with torch.no_grad():
        cam = model(images, heads=["camera"])
        assert set(cam) == {"pose_enc", "pose_enc_list", "images"}
        torch.testing.assert_close(cam["pose_enc"], t["output.pose_enc"], rtol=1e-4, atol=1e-6)
        sub = model(images, dense_frames=[4, 1])
        torch.testing.assert_close(sub["depth"][0], t["output.depth"][0, [4, 1]], rtol=1e-4, atol=1e-6)
        tokens = model.aggregator.embed_frames(images)
        cached = model(images, patch_tokens=tokens[None])
        torch.testing.assert_close(cached["world_points"], t["output.world_points"], rtol=1e-3, atol=1e-5)
    assert model.enabled_heads() == {"camera", "depth", "point"}
    assert model.required_layers() == [0, 1, 2, 3] and model.required_layers(["camera"]) == [3]


def test_wrong_config_is_refused_by_name(loaded):
    payload = torch.load(str(CKPT), map_location="cpu", weights_only=True)
    cfg = dict(payload["model_config"], window_size=3)
    model = build_model(architecture="4d-vggt", **cfg)
    with pytest.raises(CheckpointError, match="window_size"):
        load_checkpoint(model, CKPT)


def test_release_checks():
    with pytest.raises(ValueError, match="profile"):
        build_model(architecture="4d-vggt", profile="other")
    with pytest.raises(ValueError, match="cross-time"):
        build_model(architecture="4d-vggt", depth=4, cached_layer_indices=[0, 1, 2, 3], enable_cross_time=False)
    with pytest.raises(ValueError, match="cached_layer_indices"):
        build_model(architecture="4d-vggt", depth=4)
    with pytest.raises(ValueError, match="architecture"):
        build_model(architecture="nope")
    small = build_model(architecture="4d-vggt", img_size=28, embed_dim=16, depth=4, num_heads=2, patch_embed="conv",
                        cached_layer_indices=[0, 1, 2, 3], enable_cross_time=False, enable_dense_fusion=False,
                        spatial_head_options={"num_heads": 2, "trunk_depth": 1},
                        dense_head_options={"features": 4, "out_channels": [4, 4, 4, 4]})
    assert isinstance(small, FourDVGGT) and small.cross_time_local_fusion is None
    assert not any(k.startswith("cross_time_local_fusion.") for k in small.state_dict())


def test_predictor_runs_the_release_config():
    """``Predictor.from_config("4d-vggt-small")`` loads the release-format fixture strictly, preprocesses like
    load_fn.py (resize "pil") and reports the model's depth, for one and for two cameras."""
    import numpy as np

    from vggt4d_ros.inference.predictor import Predictor
    from vggt4d_ros.inference.preprocess import model_to_input, preprocess_frames

    pred = Predictor.from_config("4d-vggt-small", checkpoint=str(CKPT), target_width=56)
    assert pred.image_resize == "pil" and isinstance(pred.model, FourDVGGT)
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (45, 80, 3), dtype=np.uint8) for _ in range(6)]
    images, maps = preprocess_frames(frames, 56, "crop", resize="pil")
    for views in (1, 2):
        out = pred.predict(frames, num_views=views, frame_keys=list(range(6)))
        with torch.no_grad():
            ref = pred.model(images, num_views=views)
        for i, f in enumerate(out.frames):
            want = model_to_input(ref["depth"][0, i, ..., 0], maps[i]).numpy()
            ok = np.isfinite(f.depth)
            assert ok.mean() > 0.5
            np.testing.assert_allclose(f.depth[ok], want[ok], rtol=1e-4, atol=1e-6)
