"""SynthSequence API: determinism, configuration checks, rig conventions, exact depth and tracks."""
from __future__ import annotations

import numpy as np
import pytest

from vggt4d_ros.data.synth import SynthConfig, SynthSequence

SMALL = dict(num_cameras=2, width=96, height=64, duration_s=0.6, texture_px=64, num_tracks=128)


@pytest.fixture(scope="module")
def seq():
    return SynthSequence(SynthConfig(seed=4, **SMALL))


def test_shapes_and_types(seq):
    assert seq.num_frames == 6 and seq.camera_names == ["cam0", "cam1"]
    f = seq.frame(2)
    assert f.index == 2 and f.T_world_base.shape == (4, 4)
    for cam in seq.camera_names:
        cf = f[cam]
        assert cf.rgb.shape == (64, 96, 3) and cf.rgb.dtype == np.uint8
        assert cf.depth.shape == (64, 96) and cf.depth.dtype == np.float32
        assert np.all(np.isfinite(cf.depth)) and cf.depth.min() > 0.1
        assert cf.dynamic_mask.dtype == bool and cf.dynamic_mask.shape == (64, 96)
        assert np.array_equal(cf.dynamic_mask, cf.instance >= 0)
        assert cf.T_world_cam.dtype == np.float64
        np.testing.assert_allclose(cf.T_world_cam, f.T_world_base @ seq.T_base_cam[cam], atol=1e-12)
        tr = cf.tracks
        assert tr.ids.shape == (128,) and tr.uv.shape == (128, 2) and tr.uv.dtype == np.float32
        assert tr.visible.dtype == bool and np.all(tr.in_image[tr.visible])
        assert cf.stamp_ns == f.stamp_ns  # no jitter: cameras share the stamp
    assert f.stamp_ns == int(1.7e18) + 200_000_000
    # rich texture: strong local gradients almost everywhere
    g = np.abs(np.diff(f["cam0"].rgb.astype(float).mean(-1), axis=1))
    assert np.median(g) > 1.5


def test_determinism_from_seed(seq):
    again = SynthSequence(SynthConfig(seed=4, **SMALL))
    other = SynthSequence(SynthConfig(seed=5, **SMALL))
    a, b, c = seq.frame(3), again.frame(3), other.frame(3)
    for cam in seq.camera_names:
        assert np.array_equal(a[cam].rgb, b[cam].rgb)
        assert np.array_equal(a[cam].depth, b[cam].depth)
        assert np.array_equal(a[cam].tracks.uv, b[cam].tracks.uv, equal_nan=True)
        assert np.array_equal(a[cam].T_world_cam, b[cam].T_world_cam)
        assert not np.array_equal(a[cam].rgb, c[cam].rgb)


def test_depth_is_exact_on_the_floor(seq):
    """Pixels whose ray hits the floor plane z = 0 first have depth = -c_z / d_z exactly."""
    cf = seq.frame(1)["cam0"]
    K, T = cf.K, cf.T_world_cam
    h, w = cf.depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    d = rays @ T[:3, :3].T
    with np.errstate(divide="ignore"):
        t_floor = -T[2, 3] / d[..., 2]
    X = T[:3, 3] + d * cf.depth[..., None]
    on_floor = np.abs(X[..., 2]) < 1e-4
    assert on_floor.sum() > 100
    np.testing.assert_allclose(cf.depth[on_floor], t_floor[on_floor], rtol=1e-6)
    # nothing is ever behind the floor
    below = (d[..., 2] < 0) & (cf.depth > t_floor + 1e-3)
    assert not below.any()


def test_track_ages_and_static_points(seq):
    prev = None
    for i in range(seq.num_frames):
        tr = seq.frame(i)["cam1"].tracks
        assert np.all((tr.age > 0) == tr.visible)
        if prev is not None:
            np.testing.assert_array_equal(tr.age[tr.visible], prev.age[tr.visible] + 1)
        prev = tr
    X0, X1 = seq.track_points_world(0.0), seq.track_points_world(0.5)
    static = ~seq.track_dynamic
    assert static.any() and seq.track_dynamic.any()
    np.testing.assert_array_equal(X0[static], X1[static])
    assert np.linalg.norm(X0[~static] - X1[~static], axis=1).max() > 0.01


def test_speed_zero_freezes_the_scene():
    s = SynthSequence(SynthConfig(seed=4, speed=0.0, **SMALL))
    a, b = s.frame(0), s.frame(5)
    assert np.array_equal(a["cam0"].depth, b["cam0"].depth)
    np.testing.assert_array_equal(a.T_world_base, b.T_world_base)


@pytest.mark.parametrize("field, value, words", [
    ("width", 0, "width must be positive"), ("height", -3, "height must be positive"),
    ("num_cameras", 0, "num_cameras"), ("rate_hz", 0.0, "rate_hz"), ("fov_deg", 180.0, "fov_deg"),
    ("jitter_ms", 60.0, "jitter_ms"), ("texture_px", 100, "texture_px"), ("num_moving_objects", -1, "num_moving"),
])
def test_invalid_config(field, value, words):
    with pytest.raises(ValueError, match=words):
        SynthSequence(SynthConfig(**{**SMALL, field: value}))


def test_rig_layout_three_cameras():
    s = SynthSequence(SynthConfig(seed=0, **{**SMALL, "num_cameras": 3, "duration_s": 0.1}))
    ys = [s.T_base_cam[c][1, 3] for c in s.camera_names]
    assert ys == pytest.approx([0.3, 0.0, -0.3])
    for c in s.camera_names:
        R = s.T_base_cam[c][:3, :3]
        assert np.allclose(R.T @ R, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0)
        assert R[:, 2] @ [1, 0, 0] > 0.95  # optical z looks forward
    K = s.intrinsics["cam0"]
    assert K[0, 0] == pytest.approx(48 / np.tan(np.radians(35)))
    assert (K[0, 2], K[1, 2]) == (47.5, 31.5)
    with pytest.raises(IndexError):
        s.frame(1)
