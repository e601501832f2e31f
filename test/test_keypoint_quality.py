"""Geometric track-quality check of KeypointTracker on an analytic scene (known poses, depth, tracks).

A textured plane seen by 2 cameras over 3 steps; the "track head" output is built from the exact
projections, with one static track corrupted by 20 px after the reference frame and one track on a
moving object (dynamic mask at its query) that moves off the static prediction.
"""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from vggt4d_ros.inference.types import FramePrediction, WindowPrediction
from vggt4d_ros.perception.keypoints import KeypointTracker, static_projection
from vggt4d_ros.perception.pipeline import PipelineConfig, pipeline_config_from_params
from vggt4d_ros.ros.params import NODE_PARAMS

H, W = 120, 160
K = np.array([[110.0, 0, 79.5], [0, 105.0, 59.5], [0, 0, 1]])
PLANE_N = np.array([0.1, -0.05, 1.0]) / np.linalg.norm([0.1, -0.05, 1.0])  # world plane n . X = d
PLANE_D = 4.0
CORRUPT_PX = 20.0
DYN_MOTION = np.array([6.0, -4.0])  # px per step of the moving point


def _image():
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 2, size=(H // 10, W // 10)).astype(np.uint8) * 255
    return np.kron(blocks, np.ones((10, 10), np.uint8))


def _world_from_cam(t, v):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [0.01 * t, 0.03 * t + 0.02 * v, -0.01 * t]).as_matrix()
    T[:3, 3] = [0.15 * t + 0.3 * v, 0.04 * t, 0.1 * t]
    return T


def _plane_depth(E):
    """(H, W) z-depth of the world plane in the camera with cam_from_world ``E``."""
    n_c = E[:3, :3] @ PLANE_N
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    r = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    return ((PLANE_D + n_c @ E[:3, 3]) / (r @ n_c)).astype(np.float32)


def _project(E, X):
    """cv2's projection of world points X (N, 3) into the camera ``E`` (an independent reference)."""
    rvec, _ = cv2.Rodrigues(E[:3, :3])
    uv, _ = cv2.projectPoints(X.reshape(-1, 1, 3), rvec, E[:3, 3], K, None)
    return uv.reshape(-1, 2)


def _scene(queries, V=2, T=3, corrupt=1, dynamic=0, head=True):
    """WindowPrediction with exact static tracks, track ``corrupt`` off by CORRUPT_PX after frame 0, track
    ``dynamic`` moving DYN_MOTION per step with the dynamic mask set at its query. Returns (pred, truth (S, N, 2),
    points in camera (S, N, 3))."""
    E0 = np.linalg.inv(_world_from_cam(0, 0))
    d0 = _plane_depth(E0)
    q = np.asarray(queries, np.float64)
    z = d0[np.round(q[:, 1]).astype(int), np.round(q[:, 0]).astype(int)].astype(np.float64)
    X = np.stack([(q[:, 0] - K[0, 2]) / K[0, 0] * z, (q[:, 1] - K[1, 2]) / K[1, 1] * z, z], -1)  # world = cam 0
    frames, truth, cam_pts = [], [], []
    for t in range(T):
        for v in range(V):
            s = t * V + v
            E = np.linalg.inv(_world_from_cam(t, v))
            uv = _project(E, X)
            truth.append(uv.copy())
            cam_pts.append(X @ E[:3, :3].T + E[:3, 3])
            tracks = uv.copy()
            if s > 0:
                tracks[corrupt, 0] += CORRUPT_PX
            tracks[dynamic] = q[dynamic] + t * DYN_MOTION
            mask = np.zeros((H, W), np.float32)
            if s == 0:
                ui, vi = np.round(q[dynamic]).astype(int)
                mask[vi - 2:vi + 3, ui - 2:ui + 3] = 0.9
            depth = _plane_depth(E)
            frames.append(FramePrediction(
                index=s, time_index=t, view_index=v, image_hw=(H, W), cam_from_world=E, intrinsics=K.copy(),
                intrinsics_known=False, depth=depth, depth_conf=np.ones((H, W), np.float32),
                points_world=np.zeros((H, W, 3), np.float32), points_conf=np.ones((H, W), np.float32),
                dynamic_mask=mask, tracks=tracks.astype(np.float32) if head else None,
                track_vis=np.ones(len(q), np.float32) if head else None,
                track_conf=np.full(len(q), 0.8, np.float32) if head else None, pixel_map=None))
    pred = WindowPrediction(frames=frames, num_views=V, num_times=T, reference_index=0, model_hw=(H, W),
                            cam_from_world=torch.zeros(V * T, 4, 4), model_intrinsics=torch.zeros(V * T, 3, 3))
    return pred, np.stack(truth), np.stack(cam_pts)


def _window(step0=0, V=2, T=3):
    frames = [{"rgb": _image()} for _ in range(V * T)]
    return SimpleNamespace(num_views=V, num_steps=T, step_ids=tuple(range(step0, step0 + T)), frames=frames)


def _pick(q):
    """Indices of the dynamic and the corrupted track: points well inside the image."""
    c = np.linalg.norm(q - [W / 2, H / 2], axis=1)
    order = np.argsort(c)
    return int(order[0]), int(order[1])


def _in_view(truth, border=4):
    """(N,) tracks inside camera 0's image (minus the border) at the last step: the ones that stay alive."""
    uv = truth[-2]  # t = T - 1, v = 0
    return (uv[:, 0] >= border) & (uv[:, 0] <= W - 1 - border) & (uv[:, 1] >= border) & (uv[:, 1] <= H - 1 - border)


def _first_window(mode, max_invisible=2, head=True, thr=5.0):
    kt = KeypointTracker(max_count=20, max_invisible_steps=max_invisible, geometry_check=mode,
                         max_reprojection_px=thr, mask_threshold=0.5)
    win = _window()
    q = kt.queries(win, ("first",))
    dyn, bad = _pick(q)
    pred, truth, cam_pts = _scene(q, corrupt=bad, dynamic=dyn, head=head)
    out = kt.update(pred, win, ("first",), [0, 1, 2])
    return kt, q, dyn, bad, pred, truth, cam_pts, out


def test_static_projection_matches_cv2_and_depth():
    q = np.array([[10.0, 12.0], [80.0, 60.0], [150.0, 100.0]])
    pred, truth, cam_pts = _scene(q, corrupt=0, dynamic=1)
    uv, pts = static_projection(pred.frames, q, 0)
    assert np.allclose(uv[0], q, atol=1e-9)
    assert np.allclose(uv, truth, atol=1e-6)
    assert np.allclose(pts, cam_pts, atol=1e-9)
    # The point lies on the plane: its depth in every frame is the plane depth at its projection.
    for s, f in enumerate(pred.frames):
        ui, vi = np.round(uv[s]).T.astype(int)
        ok = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
        assert np.allclose(f.depth[vi[ok], ui[ok]], pts[s, ok, 2], rtol=0.03)
    # No depth at the query: no geometric position.
    pred.frames[0].depth[60, 80] = np.nan
    uv, pts = static_projection(pred.frames, q, 0)
    assert np.isnan(uv[:, 1]).all() and np.isfinite(uv[:, 0]).all()


def test_off_is_the_head_unchanged_and_reports_errors():
    kt, q, dyn, bad, pred, truth, _, out = _first_window("off")
    assert len(q) >= 10
    for s, ks in out.items():
        head = pred.frames[s].tracks
        idx = np.searchsorted(kt._query_ids, ks.ids)
        assert np.array_equal(ks.uv, head[idx])
        assert ks.visible.all()
        err = kt.last_reprojection_px[s]
        assert np.array_equal(ks.reprojection_px, err, equal_nan=True)  # what the message carries
        i_bad = int(np.nonzero(ks.ids == kt._query_ids[bad])[0][0])
        assert err[i_bad] == pytest.approx(0.0 if s == 0 else CORRUPT_PX, abs=1e-3)
        assert np.isnan(err[ks.ids == kt._query_ids[dyn]]).all()  # dynamic: not checked
        others = np.isin(ks.ids, kt._query_ids[[bad, dyn]], invert=True)
        assert np.nanmax(err[others]) < 1e-3
    assert kt.stats["failed"] == 5 and kt.stats["dropped_by_check"] == 0  # frames 1..5, corrupted track
    # Every track still in view lives on (one leaves with the camera motion); carried positions: the head's.
    alive = _in_view(truth)
    assert 0 < (~alive).sum() < 3 and np.array_equal(kt.ids, kt._query_ids[alive])
    assert np.allclose(kt._pos[1], pred.frames[2].tracks[alive])


def test_reject_marks_corrupted_observations_and_kills_the_track():
    kt, q, dyn, bad, pred, truth, _, out = _first_window("reject", max_invisible=1)
    bad_id, dyn_id = kt._query_ids[bad], kt._query_ids[dyn]
    for s, ks in out.items():
        vis = dict(zip(ks.ids.tolist(), ks.visible.tolist()))
        assert vis[int(bad_id)] == (s == 0)
        assert vis[int(dyn_id)]  # the dynamic point is left alone although it is 7+ px off the static prediction
        assert sum(vis.values()) == len(vis) - (s > 0)
        assert np.isnan(ks.xyz[ks.ids == bad_id]).all() == (s > 0)
    # Failed at steps 1 and 2 in camera 0 (2 > max_invisible_steps = 1): dead; every other track in view lives.
    alive = _in_view(truth)
    alive[bad] = False
    assert np.array_equal(kt.ids, kt._query_ids[alive]) and dyn_id in kt.ids
    assert kt.stats["dropped_by_check"] == 1


def test_reject_never_carries_a_failed_position():
    kt, q, dyn, bad, pred, truth, _, out = _first_window("reject", max_invisible=2)
    first_ids = kt._query_ids.copy()
    bad_id = first_ids[bad]
    assert bad_id in kt.ids  # still alive after 2 failed steps (max_invisible_steps = 2)
    q2 = kt.queries(_window(step0=1), ("first",))
    # Its position at step 1 failed the check: it is not a query of the next window, its id is gone.
    assert bad_id not in kt._query_ids and kt.stats["dropped_by_check"] == 1
    assert np.isfinite(q2).all()
    # The other ids are queried at the head's positions at step 1 (frame s = 2), in the same order.
    alive = _in_view(truth)
    alive[bad] = False
    survivors = np.nonzero(alive)[0]
    assert np.array_equal(kt._query_ids[: len(survivors)], first_ids[survivors])
    assert np.allclose(q2[: len(survivors)], pred.frames[2].tracks[survivors])


def test_correct_moves_static_tracks_back_and_leaves_dynamic_ones():
    kt, q, dyn, bad, pred, truth, cam_pts, out = _first_window("correct")
    bad_id, dyn_id = kt._query_ids[bad], kt._query_ids[dyn]
    for s, ks in out.items():
        idx = np.searchsorted(kt._query_ids, ks.ids)
        static = ks.ids != dyn_id
        assert np.allclose(ks.uv[static], truth[s][idx[static]], atol=1e-3)  # the corrupted one included
        assert np.allclose(ks.uv[~static], pred.frames[s].tracks[dyn])  # the head's, off the static position
        assert np.linalg.norm(ks.uv[~static] - truth[s][dyn]) > (5.0 if s >= 2 else -1)
        assert ks.visible.all()
        # 3D points of corrected tracks: the static point in this camera.
        assert np.allclose(ks.xyz[static], cam_pts[s][idx[static]], rtol=1e-5)
        assert kt.last_reprojection_px[s][ks.ids == bad_id] == pytest.approx(0 if s == 0 else CORRUPT_PX, abs=1e-3)
    alive = _in_view(truth)
    assert np.array_equal(kt.ids, kt._query_ids[alive])
    j = int(np.nonzero(kt.ids == bad_id)[0][0])
    assert np.allclose(kt._pos[2][j], truth[4][bad], atol=1e-3)  # the next window queries the true point


def test_correct_without_track_head_gives_static_tracks():
    kt, q, dyn, bad, pred, truth, cam_pts, out = _first_window("correct", head=False)
    assert out
    for s, ks in out.items():
        assert int(kt._query_ids[dyn]) not in ks.ids.tolist()  # dynamic: no position without a head
        idx = np.searchsorted(kt._query_ids, ks.ids)
        assert np.allclose(ks.uv, truth[s][idx], atol=1e-3) and ks.visible.all()
    alive = _in_view(truth)
    alive[dyn] = False
    assert np.array_equal(kt.ids, kt._query_ids[alive])
    # "off" / "reject" without a head: nothing, as before.
    for mode in ("off", "reject"):
        assert _first_window(mode, head=False)[-1] == {}


def test_correct_hides_an_occluded_static_point():
    kt = KeypointTracker(max_count=20, geometry_check="correct", max_reprojection_px=5.0)
    win = _window()
    q = kt.queries(win, ("first",))
    dyn, bad = _pick(q)
    pred, truth, _ = _scene(q, corrupt=bad, dynamic=dyn)
    ui, vi = np.round(truth[3][bad]).astype(int)
    pred.frames[3].depth[vi - 3:vi + 4, ui - 3:ui + 4] *= 0.5  # something nearer covers it in frame 3
    out = kt.update(pred, win, ("first",), [0, 1, 2])
    ks = out[3]
    assert not ks.visible[ks.ids == kt._query_ids[bad]].any()
    assert ks.visible[ks.ids != kt._query_ids[bad]].all()


def test_config_and_params():
    with pytest.raises(ValueError):
        KeypointTracker(geometry_check="maybe")
    with pytest.raises(ValueError):
        KeypointTracker(max_reprojection_px=0.0)
    p = {x.name: x for x in NODE_PARAMS}
    assert set(p["keypoints.geometry_check"].choices) == {"off", "reject", "correct"}
    assert p["keypoints.max_reprojection_px"].range[0] > 0
    params = {x.name: x.default for x in NODE_PARAMS}
    params.update({"cameras": ["a"], "keypoints.geometry_check": "reject", "keypoints.max_reprojection_px": 3.5})
    cfg = pipeline_config_from_params(params)
    assert cfg.keypoints_geometry_check == "reject" and cfg.keypoints_max_reprojection_px == 3.5
    with pytest.raises(ValueError):
        PipelineConfig(cameras=["a"], keypoints_geometry_check="maybe")
