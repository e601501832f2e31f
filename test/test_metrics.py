"""vggt4d_ros.eval.metrics against hand-made inputs with known answers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggt4d_ros.eval import metrics as M


def _curve(n: int = 20) -> tuple:
    """A 3D trajectory with turning orientation: (stamps_ns (n,), poses (n, 4, 4))."""
    t = np.linspace(0.0, 2.0, n)
    poses = np.repeat(np.eye(4)[None], n, axis=0)
    poses[:, :3, 3] = np.stack([np.cos(t) * 2.0, np.sin(1.3 * t), 0.3 * t], axis=1)
    poses[:, :3, :3] = Rotation.from_euler("zyx", np.stack([t, 0.2 * t, -0.1 * t], axis=1)).as_matrix()
    stamps = (1_700_000_000 * 10**9 + np.arange(n) * 100_000_000).astype(np.int64)
    return stamps, poses


def _sim3(s: float, rotvec, t) -> np.ndarray:
    S = np.eye(4)
    S[:3, :3] = s * Rotation.from_rotvec(rotvec).as_matrix()
    S[:3, 3] = t
    return S


def _apply(S: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Sim(3) acting on poses (positions scaled, orientations rotated) - what an up-to-scale estimate looks like."""
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    R = S[:3, :3] / s
    out = poses.copy()
    out[:, :3, :3] = R @ poses[:, :3, :3]
    out[:, :3, 3] = (S[:3, :3] @ poses[:, :3, 3].T).T + S[:3, 3]
    return out


def test_sim3_offset_has_zero_ate_after_sim3_only():
    stamps, gt = _curve()
    est = _apply(_sim3(0.37, [0.3, -0.2, 1.1], [4.0, -2.0, 0.5]), gt)
    m = M.trajectory_metrics(stamps, gt, stamps, est)
    assert m["num_poses"] == 20
    assert m["sim3"]["ate_rmse"] < 1e-9
    assert m["sim3"]["rpe_trans_rmse"] < 1e-9
    assert m["sim3"]["rpe_rot_deg_rmse"] < 1e-6
    assert m["scale"] == pytest.approx(1 / 0.37, rel=1e-9)
    assert m["se3"]["ate_rmse"] > 0.3  # the wrong scale cannot be aligned away
    assert m["se3"]["rpe_rot_deg_rmse"] < 1e-6  # rotations are right either way


def test_se3_offset_is_zero_after_both_alignments():
    stamps, gt = _curve()
    est = _apply(_sim3(1.0, [0.0, 0.0, 2.0], [1.0, 2.0, 3.0]), gt)
    m = M.trajectory_metrics(stamps, gt, stamps, est)
    assert m["se3"]["ate_rmse"] < 1e-9 and m["sim3"]["ate_rmse"] < 1e-9
    assert m["scale"] == pytest.approx(1.0, abs=1e-9)


def test_known_position_error_and_association():
    stamps, gt = _curve()
    est = gt.copy()
    est[:, 2, 3] += np.where(np.arange(20) % 2 == 0, 0.1, -0.1)  # +-10 cm alternating, mean zero
    m = M.trajectory_metrics(stamps, gt, stamps + 3_000_000, est)  # 3 ms late: still associated
    assert m["num_poses"] == 20
    # the alignment may absorb a little of the zero-mean error, never add to it
    assert 0.098 < m["se3"]["ate_rmse"] <= 0.1 + 1e-12
    assert m["se3"]["rpe_trans_rmse"] == pytest.approx(0.2, rel=2e-2)
    with pytest.raises(ValueError):
        M.trajectory_metrics(stamps, gt, stamps[:2], est[:2])
    with pytest.raises(ValueError):  # 50 ms apart: nothing associates
        M.trajectory_metrics(stamps, gt, stamps + 50_000_000, est)


def test_constant_pose_baseline():
    stamps, gt = _curve()
    b = M.constant_pose_baseline(stamps, gt, stamps)
    p = gt[:, :3, 3]
    assert b["ate_rmse"] == pytest.approx(np.sqrt(np.mean(np.sum((p - p.mean(0)) ** 2, axis=1))), rel=1e-12)
    steps = np.linalg.norm(np.diff(p, axis=0), axis=1)
    assert b["rpe_trans_rmse"] == pytest.approx(np.sqrt(np.mean(steps ** 2)), rel=1e-9)


def test_depth_scaled_prediction_is_exact_after_median_alignment():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 8.0, (24, 32)).astype(np.float32)
    gt[0, :5] = np.nan  # invalid ground truth is ignored
    pred = gt * 0.37
    pred[3, 3] = 0.0  # invalid prediction is ignored
    e = M.depth_frame_errors(pred, gt)
    assert e["abs_rel"] == pytest.approx(0.0, abs=1e-6) and e["delta1"] == 1.0
    assert e["scale"] == pytest.approx(1 / 0.37, rel=1e-5)
    assert e["pixels"] == 24 * 32 - 6
    raw = M.depth_frame_errors(pred, gt, align="none")
    assert raw["abs_rel"] == pytest.approx(0.63, rel=1e-5) and raw["delta1"] == 0.0
    assert M.depth_frame_errors(gt * 1.1, gt, align="none")["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert M.depth_frame_errors(gt * 1.3, gt, align="none")["delta1"] == 0.0


def test_depth_accumulator_per_frame_vs_per_sequence_and_baseline():
    gt = np.ones((10, 10), np.float32)
    gt[:, 5:] = 3.0  # half 1 m, half 3 m: median 2 m
    acc = M.DepthAccumulator()
    acc.add("cam0", 1, gt * 2.0, gt)
    acc.add("cam0", 2, gt * 0.5, gt)  # a different scale per frame
    s = acc.summary()
    assert s["frames"] == 2
    assert s["per_frame"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert s["per_sequence"]["abs_rel"] > 0.3  # one scale cannot fit both frames
    # constant depth after median alignment = 2 m everywhere: (|2-1|/1 + |2-3|/3) / 2
    assert s["baseline_constant_depth"]["per_frame"]["abs_rel"] == pytest.approx(2 / 3, rel=1e-6)
    assert s["baseline_constant_depth"]["per_sequence"]["abs_rel"] == pytest.approx(2 / 3, rel=1e-6)


def test_mask_iou_known_masks():
    pred = np.zeros((10, 10), bool)
    gt = np.zeros((10, 10), bool)
    pred[0:5] = True
    gt[2:7] = True
    acc = M.MaskAccumulator()
    assert acc.add("cam0", 1, pred, gt) == pytest.approx(3 / 7)
    s = acc.summary()
    assert s["iou_dynamic"] == pytest.approx(3 / 7)
    assert s["iou_static"] == pytest.approx(3 / 7)  # static both: rows 7-9; static in either: 70 px
    assert s["accuracy"] == pytest.approx(0.6)
    b = s["baseline_all_static"]
    assert b["iou_dynamic"] == 0.0 and b["iou_static"] == pytest.approx(0.5) and b["accuracy"] == pytest.approx(0.5)
    a = s["baseline_all_dynamic"]  # IoU = the dynamic fraction (50 of 100 pixels)
    assert a["iou_dynamic"] == pytest.approx(0.5) and a["iou_static"] == 0.0 and a["accuracy"] == pytest.approx(0.5)
    acc.add("cam0", 2, gt, gt)  # a perfect frame
    s = acc.summary()
    assert s["iou_dynamic"] == pytest.approx((30 + 50) / (70 + 50))
    assert s["iou_dynamic_per_frame_mean"] == pytest.approx((3 / 7 + 1) / 2)


def test_tracks_match_follow_and_baseline():
    acc = M.TrackAccumulator(match_radius_px=5.0)
    gt_ids = np.array([10, 20, 30])
    gt_uv0 = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 10.0]])
    vis = np.array([True, True, True])
    # frame 0: keypoint 1 near track 20, keypoint 2 far from everything (unmatched)
    acc.add("cam0", [1, 2], [[51.0, 49.0], [200.0, 200.0]], [True, True], gt_ids, gt_uv0, vis)
    # frame 1: every track moves +4 px in u; keypoint 1 follows with a 1 px error; track 20 becomes occluded
    gt_uv1 = gt_uv0 + [4.0, 0.0]
    acc.add("cam0", [1, 2], [[55.0, 51.0], [200.0, 200.0]], [True, True], gt_ids, gt_uv1, vis)
    acc.add("cam0", [1], [[58.0, 50.0]], [False], gt_ids, gt_uv1 + [4.0, 0.0], np.array([True, False, True]))
    s = acc.summary()
    assert s["keypoints_matched"] == 1 and s["keypoints_unmatched"] == 1
    assert s["points_evaluated"] == 1  # frame 1 only (occluded at frame 2)
    assert s["epe_mean"] == pytest.approx(np.hypot(1.0, 1.0))
    assert s["visibility_accuracy"] == 1.0  # visible at frame 1, invisible at frame 2: both right
    b = s["baseline_static_points"]
    assert b["epe_mean"] == pytest.approx(np.hypot(3.0, 1.0))  # stays at (51, 49), truth (54, 50)
    assert b["visibility_accuracy"] == 0.5


def _static_scene(n_frames=6, w=64, h=48):
    """A camera translating +0.1 m/frame along x in front of a wall at z = 4 m (one moving square)."""
    K = np.array([[50.0, 0.0, (w - 1) / 2], [0.0, 50.0, (h - 1) / 2], [0.0, 0.0, 1.0]])
    frames = []
    for i in range(n_frames):
        T = np.eye(4)
        T[0, 3] = 0.1 * i
        depth = np.full((h, w), 4.0, np.float32)
        dyn = np.zeros((h, w), bool)
        dyn[5:10, 5:10] = True
        frames.append(M.FrameGeometry(depth=depth, T_world_cam=T, K=K, dynamic=dyn))
    return frames, K


def test_tracks_static_ground_truth_from_depth_and_poses():
    """Keypoints far from every ground-truth track are still evaluated: a static pixel's ground truth is the
    surface point under it (depth, pose, intrinsics) projected into each later frame. A wall 4 m away seen by a
    camera moving 0.1 m per frame to the right (f = 50 px): static points move 1.25 px left per frame."""
    frames, K = _static_scene()
    acc = M.TrackAccumulator(match_radius_px=2.0)
    kp0 = np.array([[30.0, 20.0], [40.0, 30.0]])
    no_gt = (np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, bool))  # no ground-truth track at all
    for i, g in enumerate(frames):
        truth = kp0 - [1.25 * i, 0.0]
        pred = truth + [[0.5, 0.0], [0.0, 0.0]]  # keypoint 1 is 0.5 px off from frame 1 on, keypoint 2 exact
        if i == 0:
            pred = kp0
        acc.add("cam0", [1, 2], pred, [True, True], *no_gt, geometry=g)
    s = acc.summary()
    assert s["keypoints_matched"] == 2 and s["keypoints_matched_by_geometry"] == 2 and s["keypoints_unmatched"] == 0
    assert s["points_evaluated"] == 2 * 5
    assert s["epe_mean"] == pytest.approx(0.25, abs=1e-9)  # half the points 0.5 px off, half exact
    base = s["baseline_static_points"]  # a point that stays put is 1.25 px per frame behind
    assert base["epe_mean"] == pytest.approx(1.25 * np.mean([1, 2, 3, 4, 5]), rel=1e-9)
    hz = {tuple(h["frames"]): h for h in s["by_horizon"]}
    assert hz[(1, 3)]["points"] == 6 and hz[(1, 3)]["baseline_epe_median"] == pytest.approx(2.5)
    assert s["by_kind"]["static"]["points"] == 10 and s["by_kind"]["moving"]["points"] == 0


def test_tracks_moving_keypoints_match_moving_tracks_only():
    """A keypoint on the moving square pairs with the moving ground-truth track, not a nearer static one;
    the static geometry is never used for it."""
    frames, _K = _static_scene(3)
    acc = M.TrackAccumulator(match_radius_px=6.0)
    gt_ids = np.array([7, 8])
    for i, g in enumerate(frames):
        gt_uv = np.array([[7.0 + 2 * i, 7.0], [11.0, 7.0]])  # 7 on the square (moves +2 px), 8 static beside it
        acc.add("cam0", [1], [[8.0 + 2 * i, 7.0]] if i else [[9.4, 7.0]], [True],  # 9.4: nearer track 8
                gt_ids, gt_uv, np.array([True, True]), geometry=g)
    s = acc.summary()
    assert s["keypoints_matched"] == 1 and s["keypoints_matched_by_geometry"] == 0
    assert s["by_kind"]["moving"]["points"] == 2 and s["epe_median"] == pytest.approx(1.0)


def test_runtime_metrics():
    r = M.runtime_metrics(frames_in=20, frames_used=18, steps_in=9, steps_out=8, windows=4, windows_skipped=1,
                          frames_dropped=2, latencies_s=[0.1, 0.2, 0.3, 0.4, float("nan")],
                          output_times_s=[0.0, 1.0, 2.0, 3.5], wall_s=4.0, num_cameras=2)
    assert r["latency_s"]["count"] == 4 and r["latency_s"]["median"] == pytest.approx(0.25)
    assert r["latency_s"]["min"] == 0.1 and r["latency_s"]["max"] == 0.4
    assert r["latency_s"]["p95"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4], 95))
    assert r["throughput_steps_per_s"] == 2.0 and r["frames_out"] == 16
    assert r["jitter_s"] == pytest.approx(np.std([1.0, 1.0, 1.5]))
    assert M.stats([])["count"] == 0
