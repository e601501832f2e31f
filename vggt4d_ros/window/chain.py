"""Chaining overlapping windows into one odometry trajectory with a tracking state machine.

Each window's prediction lives in its own frame (world = its reference camera, scale normalised by
the model). :class:`WindowChainer` fits a Sim(3) ``odom <- window`` through the frames the new window
shares with the trajectory so far and expresses every frame of the window in a fixed ``odom`` frame.

Fit: rotation = chordal mean of the per-frame rotations ``R_odom_cam(prev) R_window_cam(new)^T``;
scale and translation = weighted least squares on the camera centres with that rotation fixed.
When per-pixel points are given (the same pixels of the overlap frames in both windows, with
confidences and dynamic masks), a robust Sim(3) (:func:`robust_umeyama`, RANSAC + IRLS) runs on the
points and centres instead, and its rotation is checked against the camera orientations.

Poses: ``T_odom_cam`` are rigid 4x4 transforms (rotation + translation in odom units); odom units =
the first window's units times ``initial_scale`` (or metres when a metric scale is given).

States (values match ``vggt4d_ros/WindowStatus``): INITIALIZING before the first window, OK, LOST when
the fit fails (too little overlap, too few inliers, residual too high, rotation inconsistent, scale
jump), RECOVERED on the first good fit after a loss. On loss the window is attached at the predicted
pose of its newest step (constant pose or constant velocity from the last output poses), so the
odom output never jumps; on recovery against an older good reference a rigid correction keeps the
output continuous as well.

Bounded: only the newest window's estimates and the last good window's estimates are kept.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..geometry.align import robust_umeyama, rotation_angle

__all__ = ["TrackingState", "ChainResult", "WindowChainer", "metric_scale_from_rig"]


class TrackingState(enum.IntEnum):
    INITIALIZING = 0
    OK = 1
    LOST = 2
    RECOVERED = 3


@dataclass
class ChainResult:
    """Output of :meth:`WindowChainer.add_window`.

    Attributes:
        state: tracking state after this window.
        window_index: count of windows given to the chainer.
        step_ids: (T,) the window's step ids.
        T_odom_cam: (T, V, 4, 4) camera-to-odom rigid poses of every frame (odom units).
        newest_step_id / newest_T_odom_cam (V, 4, 4): the newest step, the pose to publish.
        sim3: (s, R (3,3), t (3,)) with X_odom = s R X_window + t.
        scale: s, odom units per window unit (multiply the window's depth by it).
        scale_is_metric: odom units are metres.
        fit_ok: the chaining fit passed every check (False on LOST and on attachment).
        inlier_ratio, residual (window units, RMS over centres), rotation_residual_deg (median),
        scale_ratio (s / previous s), num_overlap_frames: fit statistics.
        message: why the state is what it is ("" when OK).
    """

    state: TrackingState
    window_index: int
    step_ids: np.ndarray
    T_odom_cam: np.ndarray
    newest_step_id: int
    newest_T_odom_cam: np.ndarray
    sim3: Tuple[float, np.ndarray, np.ndarray]
    scale: float
    scale_is_metric: bool
    fit_ok: bool
    inlier_ratio: float
    residual: float
    rotation_residual_deg: float
    scale_ratio: float
    num_overlap_frames: int
    message: str = ""


@dataclass
class _Reference:
    """One window's estimates expressed in odom (what the next window's overlap needs)."""

    step_ids: np.ndarray  # (T,)
    R: np.ndarray  # (T, V, 3, 3) odom_from_cam rotations
    c: np.ndarray  # (T, V, 3) camera centres in odom
    points: Optional[np.ndarray]  # (T, V, P, 3) odom points
    weights: Optional[np.ndarray]  # (T, V, P)
    scale: float  # odom units per window unit of that window


def _rigid(R: np.ndarray, c: np.ndarray) -> np.ndarray:
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = c
    T[..., 3, 3] = 1.0
    return T


def _project_so3(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def metric_scale_from_rig(cam_from_world: np.ndarray, num_views: int, rig_cam0_from_cam: np.ndarray) -> float:
    """Metres per window unit from a rig with known extrinsics.

    Args:
        cam_from_world: (T*V, 4, 4) or (T, V, 4, 4) predicted extrinsics (time-major).
        num_views: V (>= 2).
        rig_cam0_from_cam: (V, 4, 4) known extrinsics of each camera in camera 0's frame (metres).
    Returns:
        median over steps and cameras of known baseline / predicted baseline (NaN when V < 2).
    """
    E = np.asarray(cam_from_world, dtype=np.float64).reshape(-1, num_views, 4, 4)
    if num_views < 2:
        return float("nan")
    Rw = np.swapaxes(E[..., :3, :3], -1, -2)
    c = -(Rw @ E[..., :3, 3:4])[..., 0]  # (T, V, 3)
    pred = np.linalg.norm(c[:, 1:] - c[:, :1], axis=-1)  # (T, V-1)
    known = np.linalg.norm(np.asarray(rig_cam0_from_cam, dtype=np.float64)[1:, :3, 3], axis=-1)  # (V-1,)
    ok = (pred > 1e-9) & (known[None] > 1e-9)
    return float(np.median((known[None] / np.where(ok, pred, 1.0))[ok])) if ok.any() else float("nan")


class WindowChainer:
    """Chains per-window camera estimates into a continuous odom trajectory.

    Args:
        num_views: V.
        T_odom_cam0: (4, 4) pose of the first window's reference camera in odom (default identity).
        initial_scale: odom units per first-window unit (ignored when the first window has a
            metric scale).
        max_residual: maximum RMS centre residual after the fit, in the new window's units (the model
            normalises a window to mean point distance 1, so 0.05 is 5% of the scene size).
        max_rotation_residual_deg: maximum median disagreement between the fit rotation and the
            per-frame camera rotations.
        max_scale_jump: maximum factor between consecutive window scales (non-metric).
        min_inlier_ratio: minimum weighted inlier ratio of the point fit.
        min_overlap_frames: overlapping frames needed to try a fit.
        min_baseline: below this centre spread (window units) scale cannot be observed from centres
            and the previous scale is held.
        motion_model: "constant_pose" or "constant_velocity" for attaching after a loss.
        centre_fraction: share of the total weight given to camera centres in a point fit.
        max_points_per_frame: points per frame kept (deterministic stride subsample).
        seed: RANSAC seed.
    """

    def __init__(
        self,
        num_views: int,
        T_odom_cam0: Optional[np.ndarray] = None,
        initial_scale: float = 1.0,
        max_residual: float = 0.05,
        max_rotation_residual_deg: float = 5.0,
        max_scale_jump: float = 3.0,
        min_inlier_ratio: float = 0.5,
        min_overlap_frames: int = 2,
        min_baseline: float = 1e-3,
        motion_model: str = "constant_pose",
        centre_fraction: float = 0.5,
        max_points_per_frame: int = 1024,
        seed: int = 0,
    ) -> None:
        if motion_model not in ("constant_pose", "constant_velocity"):
            raise ValueError("motion_model must be constant_pose or constant_velocity")
        self.V = int(num_views)
        self.T_odom_cam0 = np.eye(4) if T_odom_cam0 is None else np.asarray(T_odom_cam0, dtype=np.float64)
        self.initial_scale = float(initial_scale)
        self.max_residual = float(max_residual)
        self.max_rot = float(max_rotation_residual_deg)
        self.max_scale_jump = float(max_scale_jump)
        self.min_inlier_ratio = float(min_inlier_ratio)
        self.min_overlap_frames = int(min_overlap_frames)
        self.min_baseline = float(min_baseline)
        self.motion_model = motion_model
        self.centre_fraction = float(centre_fraction)
        self.max_points_per_frame = int(max_points_per_frame)
        self.seed = int(seed)
        self.state = TrackingState.INITIALIZING
        self.scale_is_metric = False
        self.windows = 0
        self.lost_count = 0
        self._cur: Optional[_Reference] = None
        self._good: Optional[_Reference] = None
        self._lost_since_good = False
        # Last two output newest poses: (step_id, (V,4,4)).
        self._out_hist: list = []
        self._prev_scale = self.initial_scale

    # ------------------------------------------------------------------ public
    def reset(self) -> None:
        """Forget the references (e.g. after a bag loop). Odom stays continuous: the next window is
        attached at the last output pose (state RECOVERED) or, before any output, starts odom."""
        self._cur = None
        self._good = None
        self._lost_since_good = False
        if not self._out_hist:
            self.state = TrackingState.INITIALIZING

    @property
    def last_pose(self) -> Optional[Tuple[int, np.ndarray]]:
        """(step_id, (V,4,4)) of the newest output step, or None."""
        return self._out_hist[-1] if self._out_hist else None

    def add_window(
        self,
        step_ids: Sequence[int],
        cam_from_world: np.ndarray,
        points: Optional[np.ndarray] = None,
        weights: Optional[np.ndarray] = None,
        dynamic: Optional[np.ndarray] = None,
        metric_scale: Optional[float] = None,
    ) -> ChainResult:
        """Chain one window.

        Args:
            step_ids: (T,) step ids of the window (shared ids identify overlapping frames).
            cam_from_world: (T*V, 4, 4) or (T, V, 4, 4) extrinsics in the window's frame, time-major.
            points: optional (T*V, P, 3) / (T, V, P, 3) world points of a fixed pixel sample (the same
                pixels in every window), NaN where invalid.
            weights: optional (T*V, P) confidences (default 1).
            dynamic: optional (T*V, P) bool, True on moving points (excluded from the fit).
            metric_scale: metres per window unit for this window (e.g. :func:`metric_scale_from_rig`);
                overrides the fitted scale.
        """
        ids = np.asarray(step_ids, dtype=np.int64)
        T = len(ids)
        E = np.asarray(cam_from_world, dtype=np.float64).reshape(T, self.V, 4, 4)
        Rw = np.swapaxes(E[..., :3, :3], -1, -2)  # window_from_cam
        cw = -(Rw @ E[..., :3, 3:4])[..., 0]  # (T, V, 3)
        pts, wts = self._prepare_points(T, points, weights, dynamic)
        self.windows += 1
        prev_state = self.state

        if self._cur is None and not self._out_hist:
            s0 = float(metric_scale) if metric_scale is not None else self.initial_scale
            self.scale_is_metric = metric_scale is not None
            # odom <- cam0 (metric) <- window: x_cam0 = E00 x_w, scaled by s0.
            R0 = self.T_odom_cam0[:3, :3]
            sim = (s0, R0 @ E[0, 0, :3, :3], s0 * R0 @ E[0, 0, :3, 3] + self.T_odom_cam0[:3, 3])
            self.state = TrackingState.OK
            return self._finish(ids, Rw, cw, pts, wts, sim, True, 1.0, 0.0, 0.0, 1.0, 0, "", good=True)

        if self._cur is None:  # after reset(): attach at the last output pose
            sim = self._attach(ids, Rw, cw, self._prev_scale)
            self.state = TrackingState.RECOVERED
            return self._finish(ids, Rw, cw, pts, wts, sim, False, 0.0, 0.0, 0.0, 1.0, 0,
                                "re-initialised after reset: attached at the last pose", good=True)

        refs = [self._good, self._cur] if self._lost_since_good and self._good is not None else [self._cur]
        reasons = []
        for ref in refs:
            fit = self._fit(ref, ids, Rw, cw, pts, wts, metric_scale)
            if fit["ok"]:
                sim = fit["sim"]
                correction = None
                if self._lost_since_good and ref is self._good:
                    correction = self._continuity_correction(ids, Rw, cw, sim)
                    if correction is None:
                        fit["ok"] = False
                        reasons.append("recovered fit does not reach the last output step")
                        continue
                    Rc, tc = correction
                    sim = (sim[0], Rc @ sim[1], Rc @ sim[2] + tc)
                self.state = TrackingState.RECOVERED if prev_state in (TrackingState.LOST,) else TrackingState.OK
                if metric_scale is not None:
                    self.scale_is_metric = True
                return self._finish(ids, Rw, cw, pts, wts, sim, True, fit["inlier_ratio"], fit["residual"],
                                    fit["rot_deg"], fit["scale_ratio"], fit["n"],
                                    "" if self.state == TrackingState.OK else "tracking recovered", good=True)
            reasons.append(fit["reason"])
        # Lost: attach at the predicted pose.
        self.lost_count += 1
        self.state = TrackingState.LOST
        sim = self._attach(ids, Rw, cw, self._prev_scale)
        last = fit
        return self._finish(ids, Rw, cw, pts, wts, sim, False, last.get("inlier_ratio", 0.0), last.get("residual", np.inf),
                            last.get("rot_deg", np.inf), last.get("scale_ratio", np.nan), last.get("n", 0),
                            "tracking lost (" + "; ".join(reasons) + f"); attached with {self.motion_model}", good=False)

    # ------------------------------------------------------------------ internals
    def _prepare_points(self, T, points, weights, dynamic):
        if points is None:
            return None, None
        P = np.asarray(points, dtype=np.float64).reshape(T, self.V, -1, 3)
        n = P.shape[2]
        W = np.ones(P.shape[:3]) if weights is None else np.asarray(weights, dtype=np.float64).reshape(T, self.V, n)
        if dynamic is not None:
            W = np.where(np.asarray(dynamic, dtype=bool).reshape(T, self.V, n), 0.0, W)
        W = np.where(np.isfinite(P).all(-1) & np.isfinite(W), np.clip(W, 0.0, None), 0.0)
        if n > self.max_points_per_frame:
            step = int(np.ceil(n / self.max_points_per_frame))
            P, W = P[:, :, ::step], W[:, :, ::step]
        return P, W

    def _fit(self, ref: _Reference, ids, Rw, cw, pts, wts, metric_scale) -> Dict:
        common, i_new, i_ref = np.intersect1d(ids, ref.step_ids, return_indices=True)
        n = len(common) * self.V
        res: Dict = {"ok": False, "n": n}
        if len(common) == 0 or n < self.min_overlap_frames:
            res["reason"] = f"{n} overlapping frames"
            return res
        A = ref.R[i_ref].reshape(-1, 3, 3)  # odom_from_cam (prev)
        B = Rw[i_new].reshape(-1, 3, 3)  # window_from_cam (new)
        dst_c = ref.c[i_ref].reshape(-1, 3)
        src_c = cw[i_new].reshape(-1, 3)
        rel = A @ np.swapaxes(B, -1, -2)  # each ~ R_odom_window
        R_rot = _project_so3(rel.sum(0))
        use_points = pts is not None and ref.points is not None and ref.points.shape[2] == pts.shape[2]
        if use_points:
            sp = pts[i_new].reshape(-1, 3)
            dp = ref.points[i_ref].reshape(-1, 3)
            wp = (np.sqrt(wts[i_new] * ref.weights[i_ref])).reshape(-1)
            wp = np.where(np.isfinite(dp).all(-1), wp, 0.0)
            use_points = int((wp > 0).sum()) >= 3 * max(self.V, 3)
        if use_points:
            wc = np.full(len(src_c), self.centre_fraction * wp.sum() / max(len(src_c), 1) / max(1e-12, 1 - self.centre_fraction))
            src = np.concatenate([src_c, sp])
            dst = np.concatenate([dst_c, np.nan_to_num(dp)])
            w = np.concatenate([wc, wp])
            rf = robust_umeyama(src, dst, np.nan_to_num(w), with_scale=True, seed=self.seed)
            if not rf.valid:
                res["reason"] = "point fit degenerate"
                return res
            s, R, t = float(rf.s), np.asarray(rf.R), np.asarray(rf.t)
            res["inlier_ratio"] = float(rf.inlier_ratio)
        else:
            # Rotation from the camera orientations, scale and translation from the centres.
            R = R_rot
            mu_s, mu_d = src_c.mean(0), dst_c.mean(0)
            xs, xd = src_c - mu_s, dst_c - mu_d
            var = float((xs**2).sum(-1).mean())
            if var < self.min_baseline**2:
                s = ref.scale  # scale unobservable from centres: hold it
            else:
                s = float((xd * (xs @ R.T)).sum(-1).mean() / var)
            t = mu_d - s * R @ mu_s
            res["inlier_ratio"] = 1.0
        if metric_scale is not None:
            s = float(metric_scale)
            t = dst_c.mean(0) - s * R @ src_c.mean(0)
        # Checks.
        if not np.isfinite(s) or s <= 0:
            res["reason"] = f"invalid scale {s}"
            return res
        resid = np.linalg.norm(dst_c - (s * src_c @ R.T + t), axis=-1)
        res["residual"] = float(np.sqrt((resid**2).mean()) / s)
        res["rot_deg"] = float(np.degrees(np.median(rotation_angle(rel @ R.T))))
        res["scale_ratio"] = float(s / ref.scale)
        res["sim"] = (s, R, t)
        if res["residual"] > self.max_residual:
            res["reason"] = f"centre residual {res['residual']:.3g} > {self.max_residual}"
        elif res["rot_deg"] > self.max_rot:
            res["reason"] = f"rotation residual {res['rot_deg']:.3g} deg > {self.max_rot}"
        elif res["inlier_ratio"] < self.min_inlier_ratio:
            res["reason"] = f"inlier ratio {res['inlier_ratio']:.2f} < {self.min_inlier_ratio}"
        elif metric_scale is None and abs(np.log(res["scale_ratio"])) > np.log(self.max_scale_jump):
            res["reason"] = f"scale jump x{res['scale_ratio']:.3g}"
        else:
            res["ok"] = True
        return res

    def _predict_newest(self, newest_id: int) -> np.ndarray:
        """(V,4,4) predicted poses at ``newest_id`` from the output history."""
        sid, last = self._out_hist[-1]
        if self.motion_model == "constant_velocity" and len(self._out_hist) >= 2:
            sid0, prev = self._out_hist[-2]
            ds = max(sid - sid0, 1)
            k = max(newest_id - sid, 0)
            # Body-frame motion of view 0 over ds steps, applied k/ds times (when it divides).
            D = np.linalg.inv(prev[0]) @ last[0]
            if k % ds == 0:
                G = last[0] @ np.linalg.matrix_power(D, k // ds) @ np.linalg.inv(last[0])
                return np.einsum("ij,vjk->vik", G, last)
        return last.copy()

    def _attach(self, ids, Rw, cw, scale):
        """Sim(3) placing the window's newest view-0 pose at the predicted pose (held scale)."""
        if not self._out_hist:
            raise RuntimeError("attach needs an output history")
        pred0 = self._predict_newest(int(ids[-1]))[0]
        R = pred0[:3, :3] @ Rw[-1, 0].T
        t = pred0[:3, 3] - scale * R @ cw[-1, 0]
        return (float(scale), R, t)

    def _continuity_correction(self, ids, Rw, cw, sim):
        """Rigid (R, t) that maps the chained pose of the newest output step onto its output pose."""
        sid, last = self._out_hist[-1]
        idx = np.nonzero(ids == sid)[0]
        if len(idx) == 0:
            return None
        s, R, t = sim
        chained = _rigid(R @ Rw[idx[0], 0], s * R @ cw[idx[0], 0] + t)
        C = last[0] @ np.linalg.inv(chained)
        return C[:3, :3], C[:3, 3]

    def _finish(self, ids, Rw, cw, pts, wts, sim, fit_ok, inl, resid, rot, ratio, n, msg, good) -> ChainResult:
        s, R, t = sim
        R_oc = np.einsum("ij,tvjk->tvik", R, Rw)
        c_o = s * cw @ R.T + t
        T_oc = _rigid(R_oc, c_o)
        opts = None if pts is None else s * pts @ R.T + t
        ref = _Reference(ids, R_oc, c_o, opts, wts, float(s))
        self._cur = ref
        if good:
            self._good = ref
            self._lost_since_good = False
        else:
            self._lost_since_good = True
        self._prev_scale = float(s)
        self._out_hist = (self._out_hist + [(int(ids[-1]), T_oc[-1].copy())])[-2:]
        return ChainResult(
            state=self.state,
            window_index=self.windows - 1,
            step_ids=ids,
            T_odom_cam=T_oc,
            newest_step_id=int(ids[-1]),
            newest_T_odom_cam=T_oc[-1],
            sim3=(float(s), R, t),
            scale=float(s),
            scale_is_metric=self.scale_is_metric,
            fit_ok=fit_ok,
            inlier_ratio=float(inl),
            residual=float(resid),
            rotation_residual_deg=float(rot),
            scale_ratio=float(ratio),
            num_overlap_frames=int(n),
            message=msg,
        )
