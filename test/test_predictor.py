"""Predictor with the tiny model on random weights: types, shapes, conventions, precisions, references."""

import copy

import numpy as np
import pytest
import torch

from tiny_data import shifting_frames, tiny_model
from vggt4d_ros.geometry import project_points
from vggt4d_ros.inference import FramePrediction, Predictor, WindowPrediction

TW = 126  # model width: 9 patches
V, T = 2, 2


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def frames():
    return shifting_frames(V * T, shift=3, seed=0)


@pytest.fixture(scope="module")
def fp32_pred(model, frames):
    p = Predictor(copy.deepcopy(model), target_width=TW)
    return p.predict(frames, num_views=V, query_points=[[20.0, 30.0], [120.5, 60.25]])


def test_types_shapes_and_finiteness(fp32_pred):
    out = fp32_pred
    assert isinstance(out, WindowPrediction) and len(out) == V * T
    assert out.model_hw == (70, TW) and out.reference_index == 0
    assert set(out.timing_ms) == {"preprocess", "model", "postprocess", "total"}
    assert out.dynamic_mask_source in ("head", "page4d", "geometric")
    for s, f in enumerate(out.frames):
        assert isinstance(f, FramePrediction)
        assert (f.index, f.time_index, f.view_index) == (s, s // V, s % V)
        assert f.cam_from_world.shape == (4, 4) and f.cam_from_world.dtype == np.float64
        assert np.isfinite(f.cam_from_world).all()
        np.testing.assert_allclose(f.cam_from_world[:3, :3] @ f.cam_from_world[:3, :3].T, np.eye(3), atol=1e-9)
        assert f.intrinsics.shape == (3, 3) and np.isfinite(f.intrinsics).all() and not f.intrinsics_known
        assert f.depth.shape == (90, 160) and f.depth.dtype == np.float32
        assert np.isfinite(f.depth).all() and (f.depth > 0).all()  # landscape crop: nothing cropped away
        assert f.depth_conf.shape == (90, 160) and np.isfinite(f.depth_conf).all()
        assert f.points_world.shape == (90, 160, 3) and np.isfinite(f.points_world).all()
        assert f.dynamic_mask.shape == (90, 160)
        assert f.dynamic_mask.min() >= 0.0 and f.dynamic_mask.max() <= 1.0
        assert f.tracks.shape == (2, 2) and f.track_vis.shape == (2,) and np.isfinite(f.tracks).all()
    # the reference frame is the world frame exactly
    np.testing.assert_allclose(out.frames[0].cam_from_world, np.eye(4), atol=1e-12)
    raw = out.raw
    assert raw["pose_enc"].shape == (V * T, 9) and raw["depth"].shape == (V * T, 70, TW)
    assert raw["images"].shape == (V * T, 3, 70, TW)


def test_predicted_intrinsics_are_centred_and_points_reproject(fp32_pred):
    f = fp32_pred.frames[1]
    K = f.intrinsics
    # Principal point at the input image centre (pixel centres at integers), positive focals.
    np.testing.assert_allclose(K[:2, 2], [(160 - 1) / 2, (90 - 1) / 2], atol=1e-9)
    assert K[0, 0] > 0 and K[1, 1] > 0
    # Depth-derived world points project back onto their own pixels with the reported pose and intrinsics.
    # They are computed and stored in float32: a world coordinate carries an error of a few float32 ulps of
    # max(|p|, |t|), i.e. up to f * eps * max(|p|, |t|) / z pixels (random weights give focals up to 1.6e5).
    v, u = np.mgrid[0:90, 0:160]
    for f in fp32_pred.frames:
        pts = torch.as_tensor(f.points_world, dtype=torch.float64).reshape(-1, 3)
        uv, z = project_points(pts, torch.as_tensor(f.cam_from_world), torch.as_tensor(f.intrinsics))
        scale = max(np.abs(f.points_world).max(), np.abs(f.cam_from_world[:3, 3]).max()) / f.depth.min()
        tol = 1e-4 + 4 * np.finfo(np.float32).eps * f.intrinsics[:2, :2].max() * scale
        np.testing.assert_allclose(uv.numpy().reshape(90, 160, 2), np.stack([u, v], -1), atol=tol)
        np.testing.assert_allclose(z.numpy().reshape(90, 160), f.depth, rtol=1e-5)


def test_tracks_start_at_the_queries_in_the_reference_frame(fp32_pred):
    np.testing.assert_allclose(fp32_pred.frames[0].tracks, [[20.0, 30.0], [120.5, 60.25]], atol=1e-3)


def test_newest_reference_makes_that_frame_identity(model, frames):
    p = Predictor(copy.deepcopy(model), target_width=TW)
    out = p.predict(frames, num_views=V, reference=("newest", 1), query_points=[[40.0, 50.0]])
    ref = (T - 1) * V + 1
    assert out.reference_index == ref
    np.testing.assert_allclose(out.frames[ref].cam_from_world, np.eye(4), atol=1e-12)
    assert not np.allclose(out.frames[0].cam_from_world, np.eye(4), atol=1e-6)
    np.testing.assert_allclose(out.frames[ref].tracks, [[40.0, 50.0]], atol=1e-3)
    # newest view 0 as well, and bad views are refused
    out0 = p.predict(frames, num_views=V, reference=("newest", 0))
    np.testing.assert_allclose(out0.frames[(T - 1) * V].cam_from_world, np.eye(4), atol=1e-12)
    with pytest.raises(ValueError):
        p.predict(frames, num_views=V, reference=("newest", V))


def test_known_intrinsics_are_reported_and_used(model, frames):
    K = np.array([[150.0, 0.0, 81.0], [0.0, 148.0, 44.5], [0.0, 0.0, 1.0]])
    p = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="geometric")
    out = p.predict(frames, num_views=V, intrinsics=K)
    for f in out.frames:
        assert f.intrinsics_known
        np.testing.assert_allclose(f.intrinsics, K)
    # model-grid intrinsics are the known ones mapped onto the grid
    pm = out.frames[0].pixel_map
    np.testing.assert_allclose(out.model_intrinsics[0].cpu().numpy(),
                               pm.intrinsics_to_model(torch.as_tensor(K)).numpy())
    # points are the depth unprojected with K: camera-frame x = (u - cx) / fx * z
    f = out.frames[2]
    Tcw = f.cam_from_world
    pc = f.points_world.astype(np.float64) @ Tcw[:3, :3].T + Tcw[:3, 3]
    u = np.arange(160)[None, :]
    np.testing.assert_allclose(pc[..., 0], (u - 81.0) / 150.0 * f.depth, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pc[..., 2], f.depth, rtol=1e-5)
    assert out.dynamic_mask_source == "geometric"


def test_fp32_and_bf16_agree_on_cpu(model, frames, fp32_pred):
    p = Predictor(copy.deepcopy(model), target_width=TW, precision="bf16")
    assert p.dtype == torch.bfloat16
    assert next(p.model.aggregator.parameters()).dtype == torch.bfloat16  # weights cast, not autocast
    assert next(p.model.camera_head.parameters()).dtype == torch.float32  # kept in fp32
    out = p.predict(frames, num_views=V)
    a, b = fp32_pred.raw, out.raw
    d32, d16 = a["depth"], b["depth"]
    rel = ((d16 - d32).abs() / d32.abs().clamp(min=1e-6)).median()
    assert float(rel) < 0.01, float(rel)
    torch.testing.assert_close(b["pose_enc"], a["pose_enc"], atol=0.05, rtol=0.05)
    for f16, f32 in zip(out.frames, fp32_pred.frames):
        np.testing.assert_allclose(f16.cam_from_world, f32.cam_from_world, atol=0.05)


def test_pad_and_crop_modes_with_portrait_frames(model):
    rng = np.random.default_rng(1)
    portrait = [rng.integers(0, 256, (200, 120, 3), dtype=np.uint8) for _ in range(2)]
    crop = Predictor(copy.deepcopy(model), target_width=TW, mode="crop").predict(portrait)
    d = crop.frames[0].depth
    assert crop.model_hw == (126, 126)
    assert np.isnan(d[:5]).all() and np.isnan(d[-5:]).all() and np.isfinite(d[100]).all()
    assert np.isnan(crop.frames[0].points_world[:5]).all()
    pad = Predictor(copy.deepcopy(model), target_width=TW, mode="pad").predict(portrait)
    assert pad.model_hw == (126, 126)
    assert np.isfinite(pad.frames[0].depth).all()


def test_head_points_and_mask_sources(model, frames):
    has_mask_head = getattr(model, "mask_head", None) is not None
    p = Predictor(copy.deepcopy(model), target_width=TW, compute_points="head")
    out = p.predict(frames, num_views=V)
    preferred = (getattr(model, "inference_defaults", None) or {}).get("dynamic_mask")  # the config's choice
    assert out.dynamic_mask_source == (preferred or ("head" if has_mask_head else "geometric"))
    f = out.frames[0]
    assert f.points_world.shape == (90, 160, 3) and np.isfinite(f.points_world).all()
    if model.config.get("page4d", {}).get("enabled"):
        pg = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="page4d").predict(frames, num_views=V)
        assert pg.dynamic_mask_source == "page4d"
        m = pg.frames[1].dynamic_mask
        assert m.shape == (90, 160) and 0.0 <= m.min() and m.max() <= 1.0
    none = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="none").predict(frames, num_views=V)
    assert none.dynamic_mask_source == "none" and none.frames[0].dynamic_mask is None


def test_from_config_tiny():
    p = Predictor.from_config("tiny", target_width=TW)
    assert isinstance(p, Predictor) and p.precision == "fp32"


def test_patch_embedding_cache_reuses_shared_frames(model, frames):
    p = Predictor(copy.deepcopy(model), target_width=TW)
    plain = p.predict(frames, num_views=V)
    keys = [("cam", i) for i in range(V * T)]
    first = p.predict(frames, num_views=V, frame_keys=keys)
    assert p.embed_cache_misses == V * T
    torch.testing.assert_close(first.raw["depth"], plain.raw["depth"])
    # the next window shares the newest time step: only the new frames are embedded
    nxt = frames[V:] + frames[:V]
    keys2 = keys[V:] + [("cam", 100 + i) for i in range(V)]
    second = p.predict(nxt, num_views=V, frame_keys=keys2)
    assert p.embed_cache_misses == V
    fresh = Predictor(copy.deepcopy(model), target_width=TW).predict(nxt, num_views=V)
    torch.testing.assert_close(second.raw["depth"], fresh.raw["depth"])
    torch.testing.assert_close(second.raw["pose_enc"], fresh.raw["pose_enc"])
