"""Variety of the synthetic data (issue 16 part 4): new shapes, textures, lighting, exposure, blur, camera
rotation, and the train / held-out scene families of the training data."""
from __future__ import annotations

import numpy as np
import pytest

from vggt4d_ros.data.synth import SynthConfig, SynthSequence
from vggt4d_ros.data.textures import ALL_PATTERNS, PATTERNS, TextureBank
from vggt4d_ros.training.data import EVAL_SEEDS, FAMILIES, FOV_RANGE_DEG, TRAIN_SEED_BASE, WindowConfig, synth_config

SMALL = dict(num_cameras=2, width=64, height=40, duration_s=0.5, texture_px=64, num_tracks=32)


def test_default_scenes_are_unchanged():
    """The variety knobs draw nothing with their defaults: a default frame is the one rendered before they
    existed (figures recorded from commit 4cdac35's renderer)."""
    f = SynthSequence(SynthConfig(seed=11, **SMALL)).frame(3)
    want = {"cam0": (85.4546875, 11546.416384220123, 450, 2023.591527119279),
            "cam1": (82.23190104166666, 9804.374324560165, 422, 1413.586202532053)}
    for cam, (rgb, depth, dyn, uv) in want.items():
        c = f[cam]
        assert float(c.rgb.astype(np.float64).mean()) == pytest.approx(rgb, abs=1e-6)
        assert float(c.depth.astype(np.float64).sum()) == pytest.approx(depth, rel=1e-7)
        assert int(c.dynamic_mask.sum()) == dyn
        assert float(np.nansum(c.tracks.uv.astype(np.float64))) == pytest.approx(uv, rel=1e-6)


def _world_points(c):
    h, w = c.depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    d = c.depth.astype(np.float64)
    pc = np.stack([(u - c.K[0, 2]) / c.K[0, 0] * d, (v - c.K[1, 2]) / c.K[1, 1] * d, d], -1)
    return pc @ c.T_world_cam[:3, :3].T + c.T_world_cam[:3, 3]


def test_moving_ellipsoids_are_exact_and_masked():
    """Pixels of a moving ellipsoid unproject (ground-truth depth, pose, K) onto its analytic surface
    ``sum((p / semi_axes)^2) = 1`` in the object frame at the camera's instant, and carry its instance."""
    seq = SynthSequence(SynthConfig(seed=4, moving_kinds=("ellipsoid",), num_moving_objects=4, **dict(SMALL, width=96,
                                                                                                      height=64)))
    assert all(p.kind == "ellipsoid" for p in seq.scene.moving)
    seen = 0
    for i in range(seq.num_frames):
        f = seq.frame(i)
        for cam in seq.camera_names:
            c = f[cam]
            X = _world_points(c)
            for k, prim in enumerate(seq.scene.moving):
                sel = c.instance == k
                if not sel.any():
                    continue
                R, t = prim.pose(c.time_s * seq.config.speed)
                q = (X[sel] - t) @ R / prim.size
                assert np.allclose((q ** 2).sum(-1), 1.0, atol=1e-4)
                seen += int(sel.sum())
    assert seen > 50


def test_texture_patterns_all_render_and_differ():
    rng = np.random.default_rng(0)
    bank = TextureBank.generate(rng, len(ALL_PATTERNS), tile_px=64, kinds=ALL_PATTERNS)
    assert bank.levels[0].shape[0] == len(ALL_PATTERNS) * (64 + 4)
    assert set(PATTERNS) < set(ALL_PATTERNS)
    with pytest.raises(ValueError, match="unknown texture pattern"):
        TextureBank.generate(rng, 1, tile_px=64, kinds=("plaid",))


def test_photometric_knobs_change_images_not_geometry():
    base = dict(SMALL, seed=5)
    ref = SynthSequence(SynthConfig(**base)).frame(2)["cam0"]
    for knobs in (dict(exposure=(0.5, 0.5)), dict(gamma=1.5), dict(blur_sigma=1.5), dict(lighting="random")):
        c = SynthSequence(SynthConfig(**base, **knobs)).frame(2)["cam0"]
        assert np.array_equal(c.depth, ref.depth) and np.array_equal(c.dynamic_mask, ref.dynamic_mask)
        assert np.abs(c.rgb.astype(float) - ref.rgb.astype(float)).mean() > 2.0, knobs
    dark = SynthSequence(SynthConfig(**base, exposure=(0.5, 0.5), noise_std=0.0)).frame(2)["cam0"].rgb.mean()
    full = SynthSequence(SynthConfig(**base, noise_std=0.0)).frame(2)["cam0"].rgb.mean()
    assert dark == pytest.approx(0.5 * full, rel=0.03)
    blurred = SynthSequence(SynthConfig(**base, blur_sigma=1.5, noise_std=0.0)).frame(2)["cam0"].rgb.astype(float)
    sharp = SynthSequence(SynthConfig(**base, noise_std=0.0)).frame(2)["cam0"].rgb.astype(float)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.7 * np.abs(np.diff(sharp, axis=1)).mean()


def test_pan_adds_real_camera_rotation():
    """With pan the rig turns by tens of degrees per second on its own; without, only as its path turns."""
    def yaw_rates(**kw):
        seq = SynthSequence(SynthConfig(seed=2, **dict(SMALL, duration_s=4.0), **kw))
        return np.abs([np.linalg.norm(seq.base_twist(t)[1]) for t in np.linspace(0, 4, 40)])

    plain, pan = yaw_rates(), yaw_rates(pan_deg=25.0, pan_hz=0.3)
    assert np.degrees(plain.max()) < 20.0
    assert np.degrees(pan.max()) > 35.0  # 2 pi 0.3 Hz x 25 deg = 47 deg/s peak from the pan alone


def test_training_families_hold_out_patterns_shapes_and_rooms():
    train, held = FAMILIES["train"], FAMILIES["heldout"]
    only_held_patterns = set(held["texture_kinds"]) - set(train["texture_kinds"])
    only_held_shapes = set(held["moving_kinds"]) - set(train["moving_kinds"])
    assert only_held_patterns == {"dots", "marble"} and only_held_shapes == {"ellipsoid"}
    assert "ellipsoid" not in train["static_kinds"]
    for (tlo, thi), (hlo, hhi) in zip(train["room"], held["room"]):
        assert thi < hlo  # held-out rooms are larger than any training room
    assert max(EVAL_SEEDS) < TRAIN_SEED_BASE


@pytest.mark.parametrize("family", ["train", "heldout"])
def test_family_scene_settings_are_drawn_in_range(family):
    cfg = WindowConfig(family=family, views=[1, 2], sizes=[(126, 224), (168, 224)])
    fovs = []
    for seed in range(12):
        sc = synth_config(seed, (168, 224), cfg, np.random.default_rng(seed), num_views=1 + seed % 2)
        sc.validate()
        assert sc.num_cameras == 1 + seed % 2 and (sc.height, sc.width) == (168, 224)
        assert set(sc.texture_kinds) == set(FAMILIES[family]["texture_kinds"])
        assert sc.lighting == "random" and sc.exposure[0] <= 1.0 <= sc.exposure[1]
        fovs.append(sc.fov_deg)
    assert FOV_RANGE_DEG[0] <= min(fovs) and max(fovs) <= FOV_RANGE_DEG[1] and np.ptp(fovs) > 15.0
    with pytest.raises(ValueError, match="family"):
        WindowConfig(family="other")


def test_sampler_draws_one_and_two_camera_windows():
    from vggt4d_ros.training.data import WindowSampler

    cfg = WindowConfig(family="train", views=[1, 2], num_steps=2, sizes=[(42, 56), (42, 70)], strides=[1],
                       duration_s=0.4, cache_sequences=2, windows_per_sequence=2, num_queries=4, texture_px=64)
    s = WindowSampler(cfg, batch_size=1, seed=3)
    shapes = {tuple(s.batch(k)["images"].shape) for k in range(8)}
    assert {sh[1] for sh in shapes} == {2, 4}  # S = T x V with V in {1, 2}
    assert {sh[-1] for sh in shapes} == {56, 70}
    b = s.batch(5)
    assert torch_equal(b["images"], s.batch(5)["images"])  # a pure function of (seed, step)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_rotation_matrices_stay_orthonormal_with_pan_and_tilt():
    seq = SynthSequence(SynthConfig(seed=9, pan_deg=30.0, tilt_deg=8.0, **SMALL))
    for t in (0.0, 0.2, 0.4):
        R = seq.T_world_cam(t, "cam0")[:3, :3]
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-12) and np.linalg.det(R) == pytest.approx(1.0)
