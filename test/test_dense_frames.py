"""Dense outputs only for selected frames (issue 6): model, Predictor, preprocess cache and Pipeline.

Tiny model on random weights (deterministic seed), small frames: every test runs in seconds.
"""

import copy

import numpy as np
import pytest
import torch

from tiny_data import shifting_frames, tiny_model
from vggt4d_ros.inference import Predictor

TW = 126  # model width: 9 patches
V, T = 2, 3
DENSE_KEYS = ("depth", "depth_conf", "points_world", "points_conf", "dynamic_mask")


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def frames():
    return shifting_frames(V * T + V, shift=4, seed=1)  # one extra step for streaming


QUERIES = [[20.0, 30.0], [120.5, 60.25], [80.0, 45.0]]


def test_model_dense_frames_match_full_run(model):
    torch.manual_seed(3)
    imgs = torch.rand(V * T, 3, 70, TW)
    full = model(imgs, num_views=V)
    sel = [5, 1, 2]  # any order: outputs follow it
    sub = model(imgs, num_views=V, dense_frames=sel)
    for k in ("depth", "depth_conf", "world_points", "world_points_conf", "dynamic_mask_logits"):
        assert sub[k].shape[1] == len(sel)
        torch.testing.assert_close(sub[k], full[k][:, sel], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sub["pose_enc"], full["pose_enc"], rtol=0, atol=0)
    torch.testing.assert_close(sub["page_mask"], full["page_mask"], rtol=0, atol=0)
    with pytest.raises(ValueError):
        model(imgs, num_views=V, dense_frames=[V * T])


@pytest.mark.parametrize("dense", [[0, 5], [4, 5, 2]])
def test_predictor_subset_equals_full_on_selected_frames(model, frames, dense):
    win = frames[: V * T]
    full = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="head").predict(
        win, num_views=V, query_points=QUERIES)
    sub = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="head").predict(
        win, num_views=V, query_points=QUERIES, dense_frames=dense)
    assert sub.dense_frames == tuple(sorted(dense)) and full.dense_frames == tuple(range(V * T))
    assert sub.dynamic_mask_source == full.dynamic_mask_source == "head"
    assert sub.raw["depth"].shape[0] == len(dense)
    for s in range(V * T):
        a, b = full.frames[s], sub.frames[s]
        np.testing.assert_array_equal(a.cam_from_world, b.cam_from_world)  # the camera head is unchanged
        np.testing.assert_array_equal(a.intrinsics, b.intrinsics)
        np.testing.assert_array_equal(a.tracks, b.tracks)  # the track head still sees every frame
        np.testing.assert_array_equal(a.track_vis, b.track_vis)
        if s in dense:
            for k in DENSE_KEYS:
                np.testing.assert_allclose(getattr(b, k), getattr(a, k), rtol=1e-6, atol=1e-6, equal_nan=True)
        else:
            for k in DENSE_KEYS:
                assert getattr(b, k) is None, (s, k)


def test_point_head_subset(model, frames):
    win = frames[: V * T]
    kw = dict(target_width=TW, compute_points="head")
    full = Predictor(copy.deepcopy(model), **kw).predict(win, num_views=V)
    sub = Predictor(copy.deepcopy(model), **kw).predict(win, num_views=V, dense_frames=[3])
    np.testing.assert_allclose(sub.frames[3].points_world, full.frames[3].points_world, rtol=1e-6, atol=1e-6,
                               equal_nan=True)
    np.testing.assert_allclose(sub.frames[3].points_conf, full.frames[3].points_conf, rtol=1e-6, atol=1e-6)
    assert sub.frames[0].points_world is None


def test_geometric_mask_falls_back_to_every_frame(model, frames):
    win = frames[: V * T]
    full = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="geometric").predict(win, num_views=V)
    p = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="geometric")
    out = p.predict(win, num_views=V, dense_frames=[5])
    assert out.dynamic_mask_source == "geometric" and out.dense_frames == tuple(range(V * T))
    for s in range(V * T):
        assert out.frames[s].depth is not None and out.frames[s].dynamic_mask is not None
        np.testing.assert_array_equal(out.frames[s].dynamic_mask, full.frames[s].dynamic_mask)
    # "auto" on a model without a mask head and without PAGE-4D also resolves to the geometric mask
    m = copy.deepcopy(model)
    m.mask_head = None
    m.aggregator.page4d_cfg = dict(m.aggregator.page4d_cfg, enabled=False)
    auto = Predictor(m, target_width=TW).predict(win, num_views=V, dense_frames=[5])
    assert auto.dynamic_mask_source == "geometric" and len(auto.dense_frames) == V * T


def test_page4d_mask_subset(model, frames):
    win = frames[: V * T]
    full = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="page4d").predict(win, num_views=V)
    sub = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="page4d").predict(
        win, num_views=V, dense_frames=[1, 4])
    for s in (1, 4):
        np.testing.assert_allclose(sub.frames[s].dynamic_mask, full.frames[s].dynamic_mask, rtol=1e-6, atol=1e-6)
    assert sub.frames[0].dynamic_mask is None


def test_preprocess_cache_identical_and_bounded(model, frames):
    keys = [("cam%d" % (s % V), s // V) for s in range(len(frames))]
    cached = Predictor(copy.deepcopy(model), target_width=TW)
    plain = Predictor(copy.deepcopy(model), target_width=TW)
    for start in (0, 1):  # two stride-1 windows sharing T - 1 steps
        sl = slice(start * V, start * V + V * T)
        a = cached.predict(frames[sl], num_views=V, frame_keys=keys[sl], dense_frames=[V * T - 2, V * T - 1])
        b = plain.predict(frames[sl], num_views=V, dense_frames=[V * T - 2, V * T - 1])
        assert cached.preprocess_cache_misses == (V * T if start == 0 else V)
        assert len(cached._pre_cache) == V * T  # only this window's frames stay
        torch.testing.assert_close(a.raw["images"], b.raw["images"], rtol=0, atol=0)
        for s in range(V * T):
            np.testing.assert_array_equal(a.frames[s].cam_from_world, b.frames[s].cam_from_world)
            assert a.frames[s].pixel_map == b.frames[s].pixel_map
        np.testing.assert_array_equal(a.frames[-1].depth, b.frames[-1].depth)


# ------------------------------------------------------------------ the pipeline (real tiny model, CPU)
from types import SimpleNamespace  # noqa: E402

from vggt4d_ros.perception.pipeline import Pipeline, PipelineConfig, pipeline_config_from_params  # noqa: E402

PT = 4  # window steps in the pipeline tests (4: the chain sees fewer shared points with "needed")


@pytest.fixture(scope="module")
def rig():
    from vggt4d_ros.data.synth import SynthConfig, SynthSequence

    seq = SynthSequence(SynthConfig(seed=2, num_cameras=2, width=160, height=90, duration_s=0.9,
                                    num_moving_objects=1, texture_px=128))
    frames = [seq.frame(i) for i in range(seq.num_frames)]
    return SimpleNamespace(seq=seq, frames=frames)


def _rig_window(rig, start, T=PT):
    cams = rig.seq.camera_names
    fr = []
    for t in range(T):
        for c in cams:
            cf = rig.frames[start + t].cameras[c]
            fr.append({"rgb": cf.rgb, "stamp": cf.stamp_ns, "stamp_ns": cf.stamp_ns, "frame_id": f"{c}_optical",
                       "info": None})
    return SimpleNamespace(num_views=len(cams), num_steps=T, step_ids=tuple(range(start, start + T)), frames=fr,
                           camera_names=tuple(cams))


def _run(rig, mode, windows=4, T_base_cam="rig", keypoints=16):
    torch.manual_seed(0)
    cfg = PipelineConfig(cameras=list(rig.seq.camera_names), device="cpu",  # embedded tiny weights
                         target_width=TW, num_steps=PT, keypoints_max=keypoints, keypoints_geometry_check="correct",
                         dense_frames=mode)
    p = Pipeline(cfg)
    tbc = rig.seq.T_base_cam if T_base_cam == "rig" else None
    results, dense = [], []
    for w in range(windows):
        results.append(p.process(_rig_window(rig, w), tbc))
        dense.append(list(p.last_dense_frames))
    return results, dense


def test_pipeline_needed_vs_all(rig):
    needed, dn = _run(rig, "needed")
    full, da = _run(rig, "all")
    V = 2
    # First window: every frame; then the new step's V frames + camera 0 at the previous newest step
    # + frame 0 (keypoint query depth).
    assert dn[0] == list(range(V * PT)) and all(d == list(range(V * PT)) for d in da)
    for d in dn[1:]:
        assert d == [0, (PT - 2) * V, (PT - 1) * V, (PT - 1) * V + 1], d
    for a, b in zip(needed, full):
        assert [s.step_id for s in a.steps] == [s.step_id for s in b.steps]
        assert a.scale_is_metric and b.scale_is_metric and a.scale_source == "rig"
        assert a.scale == pytest.approx(b.scale, rel=1e-9)  # the rig scale: same poses within a window
        for sa, sb in zip(a.steps, b.steps):
            for c in sa.cameras:
                ca, cb = sa.cameras[c], sb.cameras[c]
                np.testing.assert_allclose(ca.depth, cb.depth, rtol=1e-5, atol=1e-6, equal_nan=True)
                np.testing.assert_allclose(ca.dynamic, cb.dynamic, rtol=1e-5, atol=1e-6)
                assert ca.keypoints is not None and len(ca.keypoints.ids) > 0  # keypoints still published
                np.testing.assert_array_equal(ca.keypoints.ids, cb.keypoints.ids)
                np.testing.assert_allclose(ca.keypoints.uv, cb.keypoints.uv, atol=1e-3)
            # Poses: the chain fit reads the same points in both modes (camera 0 at the shared step the
            # previous window had dense outputs for); only float summation order may differ
            assert np.linalg.norm(sa.T_odom_base[:3, 3] - sb.T_odom_base[:3, 3]) <= 1e-6
            R = sa.T_odom_base[:3, :3].T @ sb.T_odom_base[:3, :3]
            assert np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))) < 0.05


def test_pipeline_config_param():
    assert PipelineConfig(cameras=["c"]).dense_frames == "needed"
    with pytest.raises(ValueError, match="dense_frames"):
        PipelineConfig(cameras=["c"], dense_frames="some")
    from vggt4d_ros.ros.params import NODE_PARAMS

    params = {p.name: p.default for p in NODE_PARAMS}
    params["cameras"] = ["cam0"]
    assert pipeline_config_from_params(params).dense_frames == "needed"
    params["model.dense_frames"] = "all"
    assert pipeline_config_from_params(params).dense_frames == "all"


def test_pipeline_needed_without_keypoints_and_after_reset(rig):
    needed, dn = _run(rig, "needed", windows=3, T_base_cam=None, keypoints=0)
    full, _ = _run(rig, "all", windows=3, T_base_cam=None, keypoints=0)
    assert dn[1] == [(PT - 2) * 2, (PT - 1) * 2, (PT - 1) * 2 + 1]  # no query frame without keypoints
    for a, b in zip(needed, full):
        assert a.scale == pytest.approx(b.scale, rel=1e-6)  # fitted (up-to-scale) chain: the same points
        for sa, sb in zip(a.steps, b.steps):
            np.testing.assert_allclose(sa.T_odom_base, sb.T_odom_base, atol=1e-6)
            for c in sa.cameras:
                ra = sa.cameras[c].depth / a.scale
                rb = sb.cameras[c].depth / b.scale
                np.testing.assert_allclose(ra, rb, rtol=1e-5, atol=1e-6, equal_nan=True)
    # After a reset request every frame is computed again (the chain has no reference).
    torch.manual_seed(0)
    p = Pipeline(PipelineConfig(cameras=list(rig.seq.camera_names), device="cpu", target_width=TW, num_steps=PT,
                                keypoints_max=0))
    p.process(_rig_window(rig, 0), None)
    p.process(_rig_window(rig, 1), None)
    assert len(p.last_dense_frames) == 3
    p.request_reset("test")
    r = p.process(_rig_window(rig, 2), None)
    assert p.last_dense_frames == list(range(2 * PT))
    assert [s.step_id for s in r.steps] == [2 + PT - 1]  # re-attached: only the newest step (as before)
    p.process(_rig_window(rig, 3), None)
    assert len(p.last_dense_frames) == 3  # chained again: the subset
