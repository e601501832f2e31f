"""WindowChainer against a ground-truth 2-camera trajectory cut into normalised windows."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggt4d_ros.geometry.align import umeyama
from vggt4d_ros.window.chain import TrackingState, WindowChainer, metric_scale_from_rig

V, T, STRIDE, N = 2, 6, 2, 30
BASELINE = 0.3


def _rig():
    """cam0_from_cam: camera 1 sits 0.3 m to the right of camera 0, slightly toed in."""
    rig = np.tile(np.eye(4), (V, 1, 1))
    rig[1, :3, :3] = Rotation.from_euler("y", -5, degrees=True).as_matrix()
    rig[1, :3, 3] = [BASELINE, 0.0, 0.0]
    return rig


def _gt_world_from_cam():
    """(N, V, 4, 4) smooth curve: a circle arc with a slow climb and yaw following the path."""
    k = np.arange(N)
    ang = 0.05 * k
    T0 = np.tile(np.eye(4), (N, 1, 1))
    T0[:, :3, 3] = np.stack([3 * np.sin(ang), 0.02 * k, 3 - 3 * np.cos(ang)], -1)
    T0[:, :3, :3] = Rotation.from_euler("yx", np.stack([ang, 0.02 * np.sin(k / 3.0)], -1)).as_matrix()
    return np.einsum("nij,vjk->nvik", T0, _rig())


def _static_points(frame_seed, P=64):
    rng = np.random.default_rng(1000 + frame_seed)
    return rng.uniform([-4, -2, 2], [8, 2, 9], size=(P, 3))


def _windows(gt, seed=0, with_points=False, outlier_frac=0.0):
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, N - T + 1, STRIDE):
        ids = np.arange(start, start + T)
        sig = float(rng.uniform(0.6, 1.6))  # the model's per-window normalisation
        ref_inv = np.linalg.inv(gt[start, 0])
        rel = np.einsum("ij,tvjk->tvik", ref_inv, gt[ids])  # ref_from_cam, metres
        rel[..., :3, 3] *= sig
        E = np.linalg.inv(rel)  # cam_from_window
        item = {"step_ids": ids, "cam_from_world": E.reshape(T * V, 4, 4), "sigma": sig}
        if with_points:
            P = np.stack([[_static_points(t * V + v) for v in range(V)] for t in ids])  # world, (T,V,P,3)
            Pw = sig * (P @ ref_inv[:3, :3].T + ref_inv[:3, 3])
            dyn = np.zeros(Pw.shape[:3], bool)
            if outlier_frac:
                bad = rng.random(Pw.shape[:3]) < outlier_frac
                Pw[bad] += rng.normal(size=(int(bad.sum()), 3)) * 0.5 * sig
                dyn = bad & (rng.random(bad.shape) < 0.5)  # only half of them are flagged dynamic
            item.update(points=Pw.reshape(T * V, -1, 3), weights=np.ones(Pw.shape[:3]).reshape(T * V, -1),
                        dynamic=dyn.reshape(T * V, -1))
        out.append(item)
    return out


def _run(chainer, wins, corrupt=None):
    results = []
    for i, w in enumerate(wins):
        w = dict(w)
        sig = w.pop("sigma")
        if corrupt is not None and i == corrupt:
            rng = np.random.default_rng(99)
            E = w["cam_from_world"].copy()
            E[:, :3, :3] = Rotation.random(len(E), random_state=rng).as_matrix()
            E[:, :3, 3] = rng.normal(size=(len(E), 3))
            w["cam_from_world"] = E
        results.append((chainer.add_window(**w), sig))
    return results


def _trajectory(results):
    """step -> (V,4,4) chained pose, first window gives all steps, later ones the new steps."""
    traj = {}
    for r, _ in results:
        for t, sid in enumerate(r.step_ids):
            traj.setdefault(int(sid), r.T_odom_cam[t])
    return traj


def _align_error(traj, gt, steps):
    est = np.stack([traj[s][:, :3, 3] for s in steps]).reshape(-1, 3)
    ref = gt[steps][..., :3, 3].reshape(-1, 3)
    s, R, t = umeyama(est, ref)
    err = np.linalg.norm(s * est @ R.T + t - ref, axis=-1)
    rot = [
        np.degrees(Rotation.from_matrix(R @ traj[k][v, :3, :3] @ gt[k, v, :3, :3].T).magnitude())
        for k in steps
        for v in range(V)
    ]
    return s, err.max(), max(rot)


def test_chain_recovers_ground_truth_up_to_one_sim3():
    gt = _gt_world_from_cam()
    ch = WindowChainer(V)
    res = _run(ch, _windows(gt))
    assert all(r.state == TrackingState.OK and r.fit_ok for r, _ in res)
    traj = _trajectory(res)
    assert sorted(traj) == list(range(N))
    s, err, rot = _align_error(traj, gt, list(range(N)))
    assert err < 1e-6 and rot < 1e-6
    # The first window fixes odom = its reference camera and the scale: identity at step 0.
    assert np.allclose(traj[0][0], np.eye(4), atol=1e-9)
    # Scale is held: odom units per metre (s_w * sigma_w) is the same for every window.
    held = np.array([r.scale * sig for r, sig in res])
    assert np.ptp(held) < 1e-9 * held.mean()
    assert abs(1.0 / s - held[0]) < 1e-6


def test_chain_with_points_dynamic_and_outliers():
    gt = _gt_world_from_cam()
    ch = WindowChainer(V, max_residual=0.02)
    res = _run(ch, _windows(gt, with_points=True, outlier_frac=0.25))
    assert all(r.state == TrackingState.OK for r, _ in res)
    assert all(0.6 < r.inlier_ratio < 0.95 for r, _ in res[1:])
    _, err, rot = _align_error(_trajectory(res), gt, list(range(N)))
    assert err < 1e-4 and rot < 1e-3


def test_corrupted_window_lost_without_jump_then_recovered():
    gt = _gt_world_from_cam()
    ch = WindowChainer(V)
    res = _run(ch, _windows(gt), corrupt=6)
    states = [r.state for r, _ in res]
    assert states[:6] == [TrackingState.OK] * 6
    assert states[6] == TrackingState.LOST and "lost" in res[6][0].message
    assert states[7] == TrackingState.RECOVERED
    assert states[8:] == [TrackingState.OK] * (len(states) - 8)
    # No jump: consecutive newest poses move at most what the ground truth moves in one stride.
    newest = np.stack([r.newest_T_odom_cam[0, :3, 3] for r, _ in res])
    gt_step = np.linalg.norm(np.diff(gt[T - 1 :: STRIDE, 0, :3, 3], axis=0), axis=-1).max()
    jumps = np.linalg.norm(np.diff(newest, axis=0), axis=-1)
    assert jumps.max() <= 2.0 * gt_step
    assert np.allclose(newest[6], newest[5])  # constant pose while lost
    # The segment after recovery is again ground truth up to a Sim(3), with the same scale.
    traj = _trajectory(res)
    s_before, e1, _ = _align_error(traj, gt, list(range(0, 16)))
    after = {}
    for r, _ in res[7:]:
        for t, sid in enumerate(r.step_ids):
            after.setdefault(int(sid), r.T_odom_cam[t])
    s_after, e2, _ = _align_error(after, gt, sorted(after))
    assert e1 < 1e-6 and e2 < 1e-6
    assert abs(s_after / s_before - 1) < 1e-6


def test_lost_with_constant_velocity_extrapolates():
    gt = _gt_world_from_cam()
    ch = WindowChainer(V, motion_model="constant_velocity")
    res = _run(ch, _windows(gt), corrupt=6)
    assert res[6][0].state == TrackingState.LOST
    p = [r.newest_T_odom_cam[0, :3, 3] for r, _ in res[4:7]]
    assert np.allclose(p[2] - p[1], Rotation.from_matrix(
        res[5][0].newest_T_odom_cam[0, :3, :3] @ res[4][0].newest_T_odom_cam[0, :3, :3].T).apply(p[1] - p[0]), atol=1e-9)


def test_metric_scale_from_rig_and_odom_offset():
    gt = _gt_world_from_cam()
    wins = _windows(gt)
    T_odom_cam0 = np.eye(4)
    T_odom_cam0[:3, 3] = [1.0, 2.0, 3.0]
    ch = WindowChainer(V, T_odom_cam0=T_odom_cam0)
    res = []
    for w in wins:
        ms = metric_scale_from_rig(w["cam_from_world"], V, _rig())
        assert abs(ms * w["sigma"] - 1.0) < 1e-9
        res.append(ch.add_window(w["step_ids"], w["cam_from_world"], metric_scale=ms))
    assert all(r.scale_is_metric and r.state == TrackingState.OK for r in res)
    traj = {}
    for r in res:
        for t, sid in enumerate(r.step_ids):
            traj.setdefault(int(sid), r.T_odom_cam[t])
    # Metric odom: distances equal ground truth, origin at T_odom_cam0.
    assert np.allclose(traj[0][0], T_odom_cam0, atol=1e-9)
    d_est = np.linalg.norm(traj[N - 1][0, :3, 3] - traj[0][0, :3, 3])
    d_gt = np.linalg.norm(gt[N - 1, 0, :3, 3] - gt[0, 0, :3, 3])
    assert abs(d_est - d_gt) < 1e-6


def test_reset_attaches_at_last_pose_and_memory_is_bounded():
    gt = _gt_world_from_cam()
    wins = _windows(gt)
    ch = WindowChainer(V)
    res = _run(ch, wins[:4])
    ch.reset()
    r = ch.add_window(wins[6]["step_ids"], wins[6]["cam_from_world"])
    assert r.state == TrackingState.RECOVERED
    assert np.allclose(r.newest_T_odom_cam[0], res[-1][0].newest_T_odom_cam[0])
    assert len(ch._out_hist) <= 2 and ch._cur.step_ids.shape == (T,)
    with pytest.raises(ValueError):
        WindowChainer(V, motion_model="teleport")
