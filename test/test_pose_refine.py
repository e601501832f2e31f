"""pose.refine pnp: camera-0 poses from the anchor's depth + LK correspondences (vggt4d_ros/perception/pose_refine.py).

Against the synthetic renderer's exact poses: the solved relative poses match ground truth where the camera head's
are replaced by a motion prior (the tiny model's failure: about one step's motion whatever the frames' time
apart, no rotation); the translation follows the depth's units (so the chainer's scale handling is unchanged);
moving objects do not pull the solution; a frame without texture keeps the head's pose; the pipeline says
which source its poses have; the rig's stereo triangulation gives metres per depth unit; pose.refine auto picks
PnP for the embedded weights only.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vggt4d_ros.data.synth import SynthConfig, SynthSequence
from vggt4d_ros.perception.pose_refine import PoseRefineConfig, refine_camera_poses, rig_depth_scale, to_gray

GAPS = [0, 1, 3, 6]  # frame indices of the window: irregular gaps, as the live node's skipping gives


@pytest.fixture(scope="module")
def seq():
    # real rotation (pan) and 3 moving objects; 252x140 like the node's model grid for tiny
    return SynthSequence(SynthConfig(seed=11, num_cameras=1, width=320, height=180, duration_s=1.0, texture_px=128,
                                     num_moving_objects=3, pan_deg=8.0, pan_hz=0.5, noise_std=1.5))


def _window(seq):
    cams = [seq.frame(i)["cam0"] for i in GAPS]
    world_from_cam = np.stack([c.T_world_cam for c in cams])
    gt = np.linalg.inv(world_from_cam)  # cam_from_world
    return cams, gt


def _rel_errors(E, gt, anchor):
    """Per frame: translation error (m) and rotation error (deg) of cam_t <- cam_anchor."""
    out = []
    for t in range(len(E)):
        A = E[t] @ np.linalg.inv(E[anchor])
        B = gt[t] @ np.linalg.inv(gt[anchor])
        D = np.linalg.inv(B) @ A
        ang = np.degrees(np.arccos(np.clip((np.trace(D[:3, :3]) - 1) / 2, -1, 1)))
        out.append((np.linalg.norm(A[:3, 3] - B[:3, 3]), ang))
    return np.array(out)


def _prior(gt):
    """A 'camera head' that knows only the first step's motion and repeats it per frame, rotation-free."""
    step = gt[1] @ np.linalg.inv(gt[0])
    E = [np.eye(4)]
    for _ in range(1, len(gt)):
        P = np.eye(4)
        P[:3, 3] = step[:3, 3]
        E.append(P @ E[-1])
    return np.stack(E) @ gt[0]


def test_solved_poses_match_ground_truth_across_irregular_gaps(seq):
    cams, gt = _window(seq)
    head = _prior(gt)
    K = np.stack([c.K for c in cams])
    res = refine_camera_poses([to_gray(c.rgb) for c in cams], head, K, 0, cams[0].depth)
    assert res.solved.all() and res.source == "pnp"
    err = _rel_errors(res.cam_from_world, gt, 0)
    head_err = _rel_errors(head, gt, 0)
    moved = np.linalg.norm((gt[-1] @ np.linalg.inv(gt[0]))[:3, 3])
    assert moved > 0.2 and head_err[-1, 0] > 0.1 and head_err[1:, 1].max() > 1.0  # the prior is wrong
    assert err[:, 0].max() < 0.02 * max(moved, 1.0), err
    assert err[:, 1].max() < 0.3, err
    np.testing.assert_allclose(res.cam_from_world[0], head[0])  # the anchor keeps its pose
    assert (res.inliers[1:] >= 30).all()


def test_translation_is_in_the_depths_units_and_any_frame_can_anchor(seq):
    cams, gt = _window(seq)
    K = np.stack([c.K for c in cams])
    gray = [to_gray(c.rgb) for c in cams]
    a = 2  # the anchor of a live window is its shared, newest-but-one step
    res = refine_camera_poses(gray, gt, K, a, 0.5 * cams[a].depth)
    want = gt @ np.linalg.inv(gt[a])
    got = res.cam_from_world @ np.linalg.inv(res.cam_from_world[a])
    for t in range(len(gt)):
        if t != a:
            np.testing.assert_allclose(got[t][:3, 3], 0.5 * want[t][:3, 3], atol=0.01)
            np.testing.assert_allclose(got[t][:3, :3], want[t][:3, :3], atol=5e-3)


def test_moving_objects_are_outliers(seq):
    """With the moving objects' corners in the input, RANSAC leaves them out: the solution is as close to ground
    truth as one whose anchor depth has the moving pixels removed."""
    cams, gt = _window(seq)
    K = np.stack([c.K for c in cams])
    gray = [to_gray(c.rgb) for c in cams]
    assert cams[0].dynamic_mask.mean() > 0.01
    static_depth = np.where(cams[0].dynamic_mask, np.nan, cams[0].depth).astype(np.float32)
    a = refine_camera_poses(gray, gt, K, 0, cams[0].depth).cam_from_world
    b = refine_camera_poses(gray, gt, K, 0, static_depth).cam_from_world
    assert np.abs(_rel_errors(a, gt, 0)[:, 0]).max() < np.abs(_rel_errors(b, gt, 0)[:, 0]).max() + 0.01


def test_a_blank_frame_keeps_the_camera_heads_pose(seq):
    cams, gt = _window(seq)
    head = _prior(gt)
    K = np.stack([c.K for c in cams])
    gray = [to_gray(c.rgb) for c in cams]
    gray[2] = np.full_like(gray[2], 128)
    res = refine_camera_poses(gray, head, K, 0, cams[0].depth)
    assert list(res.solved) == [True, True, False, True] and res.source == "pnp+camera_head"
    np.testing.assert_allclose(res.cam_from_world[2], head[2])
    assert any("step 2" in n for n in res.notes)
    # no depth at the anchor: nothing solved
    res = refine_camera_poses(gray, head, K, 0, np.full_like(cams[0].depth, np.nan))
    assert res.source == "camera_head" and not res.solved[1:].any()
    # a stricter inlier requirement than the frame can give also falls back
    res = refine_camera_poses(gray, head, K, 0, cams[0].depth, PoseRefineConfig(max_features=40, min_inliers=41))
    assert res.source == "camera_head"


def test_pipeline_reports_the_pose_source_and_none_keeps_the_head():
    from types import SimpleNamespace

    from vggt4d_ros.perception.pipeline import Pipeline, PipelineConfig

    s = SynthSequence(SynthConfig(seed=3, num_cameras=1, width=252, height=140, duration_s=1.0, texture_px=128,
                                  pan_deg=8.0, pan_hz=0.5))
    frames = [s.frame(i)["cam0"] for i in range(4)]

    def win():
        return SimpleNamespace(num_views=1, num_steps=4, step_ids=list(range(4)), camera_names=["cam0"],
                               frames=[{"camera": "cam0", "rgb": f.rgb, "stamp_ns": f.stamp_ns} for f in frames])

    got = {}
    for refine in ("pnp", "none"):
        p = Pipeline(PipelineConfig(cameras=["cam0"], target_width=252, keypoints_max=0, pose_refine=refine))
        r = p.process(win())
        got[refine] = r
        assert r.pose_source == ("pnp" if refine == "pnp" else "camera_head")
    # PnP changed the poses of the new steps; the chain still starts at the first step
    a = got["pnp"].steps[-1].T_odom_base
    b = got["none"].steps[-1].T_odom_base
    assert not np.allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(got["pnp"].steps[0].T_odom_base, got["none"].steps[0].T_odom_base, atol=1e-9)
    with pytest.raises(ValueError, match="pose_refine"):
        PipelineConfig(cameras=["cam0"], pose_refine="icp")


def test_rig_depth_scale_is_metres_per_depth_unit():
    """Dense stereo triangulation with a calibrated rig (cameras 0.3 m apart, 15 degrees apart in yaw: the flow
    starts from the rotation's homography): metres per unit of the given depth, the statistic of a median depth
    alignment; moving objects triangulate like the rest (same stamp). A depth wrong on the depth edges (a model's
    blur: 1.5x within 4 px of every edge) barely moves it, since most triangulated pixels are not on an edge."""
    s = SynthSequence(SynthConfig(seed=5, num_cameras=2, width=320, height=180, duration_s=0.5, texture_px=128,
                                  num_moving_objects=3, noise_std=1.5))
    c0, c1 = s.camera_names
    T_10 = np.linalg.inv(s.T_base_cam[c1]) @ s.T_base_cam[c0]  # cam1 <- cam0, metres
    assert np.linalg.norm(T_10[:3, 3]) > 0.2
    assert np.degrees(np.arccos((np.trace(T_10[:3, :3]) - 1) / 2)) > 10  # LK must start at the rotation
    for i in (0, 3):
        f = s.frame(i)
        g0, g1 = to_gray(f[c0].rgb), to_gray(f[c1].rgb)
        for unit in (1.0, 0.25):
            m, n = rig_depth_scale(g0, g1, unit * f[c0].depth, f[c0].K, f[c1].K, T_10)
            assert n >= 100 and m == pytest.approx(1.0 / unit, rel=0.01), (i, unit, m, n)
        edges = cv2.dilate((np.abs(cv2.Laplacian(np.log(f[c0].depth), cv2.CV_32F)) > 0.05).astype(np.uint8),
                           np.ones((9, 9), np.uint8)) > 0
        assert 0.1 < edges.mean() < 0.5
        m, n = rig_depth_scale(g0, g1, np.where(edges, 1.5, 1.0) * f[c0].depth, f[c0].K, f[c1].K, T_10)
        assert m == pytest.approx(1.0, rel=0.03), (i, m, n)
    # a wrong calibration (baseline doubled) doubles the scale: it is read, not assumed
    T_bad = T_10.copy()
    T_bad[:3, 3] *= 2
    m, _ = rig_depth_scale(g0, g1, f[c0].depth, f[c0].K, f[c1].K, T_bad)
    assert m == pytest.approx(2.0, rel=0.02)
    # a blank second image: no scale
    m, n = rig_depth_scale(g0, np.full_like(g1, 90), f[c0].depth, f[c0].K, f[c1].K, T_10)
    assert np.isnan(m)


def test_auto_is_pnp_for_the_embedded_weights_only(tmp_path):
    from vggt4d_ros.perception.pipeline import Pipeline, PipelineConfig

    assert Pipeline(PipelineConfig(cameras=["cam0"], target_width=56)).pose_refine == "pnp"
    # a checkpoint the user gives: the model's own poses (here: the embedded file under another name)
    from vggt4d_ros.perception.pipeline import EMBEDDED_DIR
    import shutil

    ck = tmp_path / "mine.safetensors"
    shutil.copy(EMBEDDED_DIR / "tiny.safetensors", ck)
    assert Pipeline(PipelineConfig(cameras=["cam0"], target_width=56, checkpoint=str(ck))).pose_refine == "none"
    assert Pipeline(PipelineConfig(cameras=["cam0"], target_width=56, checkpoint=str(ck),
                                   pose_refine="pnp")).pose_refine == "pnp"


def test_a_frame_the_anchor_does_not_reach_is_bridged_through_a_solved_frame():
    # The node slower than the cameras: a window of [old, anchor, +1.1 s, +2.3 s] (frames picked by age). LK from
    # the anchor does not reach the newest frame; solved against the middle frame's depth it is placed right.
    seq = SynthSequence(SynthConfig(seed=11, num_cameras=1, width=320, height=180, duration_s=3.0, texture_px=128,
                                    num_moving_objects=3, pan_deg=8.0, pan_hz=0.5, noise_std=1.5))
    cams = [seq.frame(i)["cam0"] for i in (0, 1, 12, 24)]
    gt = np.linalg.inv(np.stack([c.T_world_cam for c in cams]))
    head = _prior(gt)
    K = np.stack([c.K for c in cams])
    gray = [to_gray(c.rgb) for c in cams]
    alone = refine_camera_poses(gray, head, K, 1, cams[1].depth)
    assert not alone.solved[3] and alone.source == "pnp+camera_head"  # the case this is for
    res = refine_camera_poses(gray, head, K, 1, cams[1].depth, depths=[c.depth for c in cams])
    assert res.solved.all() and res.source == "pnp"
    assert any("bridged from step 2" in n for n in res.notes), res.notes
    err = _rel_errors(res.cam_from_world, gt, 1)
    moved = np.linalg.norm((gt[3] @ np.linalg.inv(gt[1]))[:3, 3])
    assert moved > 1.0 and _rel_errors(head, gt, 1)[3, 0] > 0.5  # the head's pose would be far off
    assert err[3, 0] < 0.05 * moved and err[3, 1] < 1.0, err
    # without depth for the middle frame nothing can bridge: the head's pose stays
    res2 = refine_camera_poses(gray, head, K, 1, cams[1].depth, depths=[c.depth for c in cams[:2]] + [None, None])
    assert not res2.solved[3]
    np.testing.assert_allclose(res2.cam_from_world[3], head[3])
