"""Evaluation metrics (no ROS import): trajectory, depth, dynamic masks, point tracks, runtime.

Trajectories use evo (``PoseTrajectory3D``, ``associate_trajectories``, ``APE``/``RPE`` with Umeyama
alignment); everything else is vectorised numpy. Every function returns plain floats/lists (JSON-ready)
and reports ``nan`` where a quantity is undefined, never raises on empty input.

Conventions:

- poses are (N, 4, 4) float64 world-from-body matrices with (N,) stamps in nanoseconds;
- depth maps are (H, W) float, invalid = non-finite or <= 0; median scale alignment multiplies the
  prediction by ``median(gt) / median(pred)`` over the pixels valid in both (the usual monocular
  protocol);
- masks are (H, W) bool, True = dynamic.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

__all__ = [
    "NAN",
    "stats",
    "trajectory_metrics",
    "constant_pose_baseline",
    "depth_frame_errors",
    "DepthAccumulator",
    "MaskAccumulator",
    "TrackAccumulator",
    "FrameGeometry",
    "runtime_metrics",
]

NAN = float("nan")
DELTA_THRESHOLD = 1.25
TRACK_THRESHOLDS_PX = (1.0, 2.0, 4.0, 8.0, 16.0)  # TAP-Vid's delta_avg thresholds


def _f(x) -> float:
    """float() that maps None to nan."""
    return NAN if x is None else float(x)


def stats(values: Sequence[float]) -> Dict[str, float]:
    """min / mean / median / p95 / max / count of the finite values (nan when there are none)."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"count": 0, "min": NAN, "mean": NAN, "median": NAN, "p95": NAN, "max": NAN}
    return {"count": int(a.size), "min": float(a.min()), "mean": float(a.mean()), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


# ---------------------------------------------------------------------------------------------- trajectory

def _trajectory(stamps_ns: np.ndarray, poses: np.ndarray):
    from evo.core.trajectory import PoseTrajectory3D

    order = np.argsort(stamps_ns, kind="stable")
    return PoseTrajectory3D(poses_se3=[np.asarray(p, dtype=np.float64) for p in poses[order]],
                            timestamps=np.asarray(stamps_ns, dtype=np.float64)[order] * 1e-9)


def _ape_rpe(ref, est) -> Dict[str, float]:
    from evo.core import metrics

    out: Dict[str, float] = {}
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    s = ape.get_all_statistics()
    out.update(ate_rmse=float(s["rmse"]), ate_mean=float(s["mean"]), ate_median=float(s["median"]),
               ate_max=float(s["max"]))
    if ref.num_poses >= 2:
        for key, rel in (("rpe_trans", metrics.PoseRelation.translation_part),
                         ("rpe_rot_deg", metrics.PoseRelation.rotation_angle_deg)):
            rpe = metrics.RPE(rel, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
            rpe.process_data((ref, est))
            st = rpe.get_all_statistics()
            out[f"{key}_rmse"] = float(st["rmse"])
            out[f"{key}_mean"] = float(st["mean"])
    else:
        out.update(rpe_trans_rmse=NAN, rpe_trans_mean=NAN, rpe_rot_deg_rmse=NAN, rpe_rot_deg_mean=NAN)
    return out


def trajectory_metrics(ref_stamps_ns: np.ndarray, ref_poses: np.ndarray, est_stamps_ns: np.ndarray,
                       est_poses: np.ndarray, max_diff_s: float = 0.01) -> Dict[str, object]:
    """ATE and RPE (delta = 1 pose) of ``est`` against ``ref`` after Sim(3) and SE(3) Umeyama alignment.

    Args:
        ref_stamps_ns, ref_poses: (N,) int and (N, 4, 4) ground truth.
        est_stamps_ns, est_poses: (M,) int and (M, 4, 4) estimate.
        max_diff_s: stamp association tolerance (evo's default 10 ms).

    Returns:
        ``{"num_poses", "sim3": {...}, "se3": {...}, "scale", "per_pose_ate_sim3": [...],
        "stamps_ns": [...], "est_aligned_xyz", "ref_xyz"}``; raises ValueError with a one-line
        reason when fewer than 3 poses associate (alignment is undefined).
    """
    from evo.core import sync

    if len(est_stamps_ns) < 3 or len(ref_stamps_ns) < 3:
        raise ValueError(f"{len(est_stamps_ns)} estimated and {len(ref_stamps_ns)} ground-truth poses "
                         f"(need 3 for alignment)")
    ref = _trajectory(np.asarray(ref_stamps_ns), np.asarray(ref_poses))
    est = _trajectory(np.asarray(est_stamps_ns), np.asarray(est_poses))
    try:
        ref_a, est_a = sync.associate_trajectories(ref, est, max_diff=max_diff_s)
    except Exception as exc:  # noqa: BLE001 - evo raises SyncException with a readable text
        raise ValueError(f"no poses associate within {max_diff_s * 1e3:g} ms: {exc}") from None
    n = ref_a.num_poses
    if n < 3:
        raise ValueError(f"only {n} estimated poses match ground-truth stamps (need 3 for alignment)")
    out: Dict[str, object] = {"num_poses": int(n)}
    sim = copy.deepcopy(est_a)
    _r, _t, scale = sim.align(ref_a, correct_scale=True)
    out["sim3"] = _ape_rpe(ref_a, sim)
    out["scale"] = float(scale)
    se = copy.deepcopy(est_a)
    se.align(ref_a, correct_scale=False)
    out["se3"] = _ape_rpe(ref_a, se)
    out["per_pose_ate_sim3"] = np.linalg.norm(sim.positions_xyz - ref_a.positions_xyz, axis=1).tolist()
    out["stamps_ns"] = (np.round(ref_a.timestamps * 1e9)).astype(np.int64).tolist()
    out["est_aligned_xyz"] = sim.positions_xyz.tolist()
    out["ref_xyz"] = ref_a.positions_xyz.tolist()
    return out


def constant_pose_baseline(ref_stamps_ns: np.ndarray, ref_poses: np.ndarray, est_stamps_ns: np.ndarray,
                           max_diff_s: float = 0.01) -> Dict[str, float]:
    """Errors of a robot that reports it never moved (every pose = identity) at the estimate's stamps.

    The best Sim(3) or SE(3) fit of a constant trajectory puts it at the ground truth's centroid, so its
    ATE is the RMS spread of the ground-truth positions about their centroid (computed directly: evo's
    Umeyama divides by the estimate's zero variance). RPE is evo's, with zero relative motion.
    """
    from evo.core import metrics, sync

    ref = _trajectory(np.asarray(ref_stamps_ns), np.asarray(ref_poses))
    stamps = np.asarray(est_stamps_ns)
    est = _trajectory(stamps, np.repeat(np.eye(4)[None], len(stamps), axis=0))
    ref_a, est_a = sync.associate_trajectories(ref, est, max_diff=max_diff_s)
    p = ref_a.positions_xyz
    err = np.linalg.norm(p - p.mean(axis=0), axis=1)
    out = {"ate_rmse": float(np.sqrt(np.mean(err ** 2))), "ate_mean": float(err.mean()),
           "ate_median": float(np.median(err)), "ate_max": float(err.max())}
    for key, rel in (("rpe_trans", metrics.PoseRelation.translation_part),
                     ("rpe_rot_deg", metrics.PoseRelation.rotation_angle_deg)):
        rpe = metrics.RPE(rel, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
        rpe.process_data((ref_a, est_a))
        st = rpe.get_all_statistics()
        out[f"{key}_rmse"] = float(st["rmse"])
        out[f"{key}_mean"] = float(st["mean"])
    return out


# ---------------------------------------------------------------------------------------------- depth

def _valid_pairs(pred: np.ndarray, gt: np.ndarray):
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    ok = np.isfinite(p) & np.isfinite(g) & (p > 0) & (g > 0)
    return p[ok], g[ok]


def _abs_rel_delta(p: np.ndarray, g: np.ndarray, scale: float) -> Dict[str, float]:
    if p.size == 0 or not np.isfinite(scale):
        return {"abs_rel": NAN, "delta1": NAN, "scale": _f(scale), "pixels": int(p.size)}
    q = p * scale
    ratio = np.maximum(q / g, g / q)
    return {"abs_rel": float(np.mean(np.abs(q - g) / g)), "delta1": float(np.mean(ratio < DELTA_THRESHOLD)),
            "scale": float(scale), "pixels": int(p.size)}


def median_scale(p: np.ndarray, g: np.ndarray) -> float:
    """``median(g) / median(p)`` of valid pairs (nan when there are none)."""
    if p.size == 0:
        return NAN
    mp = float(np.median(p))
    return float(np.median(g)) / mp if mp > 0 else NAN


def depth_frame_errors(pred: np.ndarray, gt: np.ndarray, align: str = "median") -> Dict[str, float]:
    """AbsRel and delta < 1.25 of one depth map; ``align`` "median" (per frame) or "none" (scale 1)."""
    p, g = _valid_pairs(pred, gt)
    s = median_scale(p, g) if align == "median" else 1.0
    return _abs_rel_delta(p, g, s)


@dataclass
class DepthAccumulator:
    """Depth errors over a sequence: per frame (median-aligned per frame), per sequence (one median scale
    for every frame of every camera) and raw (scale 1, meaningful when the output is metric), each beside
    a constant-depth baseline (one value everywhere; after median alignment that value is the median
    of the ground truth of the frame, or of the sequence).

    Per-sequence numbers use at most ``max_samples_per_frame`` pixels of each frame (a regular stride,
    exact for frames up to that size) so memory stays bounded on long bags.
    """

    max_samples_per_frame: int = 65536
    frames: List[Dict[str, object]] = field(default_factory=list)
    _p: List[np.ndarray] = field(default_factory=list)
    _g: List[np.ndarray] = field(default_factory=list)

    def add(self, camera: str, stamp_ns: int, pred: np.ndarray, gt: np.ndarray) -> Dict[str, float]:
        p, g = _valid_pairs(pred, gt)
        per = _abs_rel_delta(p, g, median_scale(p, g))
        base = _abs_rel_delta(np.ones_like(g), g, float(np.median(g)) if g.size else NAN)
        raw = _abs_rel_delta(p, g, 1.0)
        self.frames.append({"camera": camera, "stamp_ns": int(stamp_ns), "abs_rel": per["abs_rel"],
                            "delta1": per["delta1"], "scale": per["scale"], "raw_abs_rel": raw["abs_rel"],
                            "baseline_abs_rel": base["abs_rel"], "pixels": per["pixels"]})
        step = max(1, int(math.ceil(p.size / self.max_samples_per_frame)))
        self._p.append(p[::step].astype(np.float32))
        self._g.append(g[::step].astype(np.float32))
        return per

    def summary(self) -> Dict[str, object]:
        fr = [f for f in self.frames if f["pixels"]]
        if not fr:
            return {"frames": 0}
        p = np.concatenate(self._p).astype(np.float64)
        g = np.concatenate(self._g).astype(np.float64)
        seq = _abs_rel_delta(p, g, median_scale(p, g))
        raw = _abs_rel_delta(p, g, 1.0)
        base_seq = _abs_rel_delta(np.ones_like(g), g, float(np.median(g)))

        def mean(key):
            return float(np.nanmean([f[key] for f in fr]))

        return {
            "frames": len(fr),
            "per_frame": {"abs_rel": mean("abs_rel"), "delta1": mean("delta1")},
            "per_sequence": {"abs_rel": seq["abs_rel"], "delta1": seq["delta1"], "scale": seq["scale"]},
            "raw": {"abs_rel": raw["abs_rel"], "delta1": raw["delta1"]},
            "baseline_constant_depth": {
                "per_frame": {"abs_rel": mean("baseline_abs_rel")},
                "per_sequence": {"abs_rel": base_seq["abs_rel"], "delta1": base_seq["delta1"]},
            },
        }


# ---------------------------------------------------------------------------------------------- masks

@dataclass
class MaskAccumulator:
    """Dynamic-mask agreement: IoU of the dynamic class over the sequence (summed intersections / unions)
    and per frame, static-class IoU, pixel accuracy; the all-static baseline alongside."""

    inter: int = 0
    union: int = 0
    static_inter: int = 0
    static_union: int = 0
    correct: int = 0
    pixels: int = 0
    base_static_inter: int = 0
    base_static_union: int = 0
    base_correct: int = 0
    gt_dynamic: int = 0
    per_frame: List[float] = field(default_factory=list)
    frames: List[Dict[str, object]] = field(default_factory=list)

    def add(self, camera: str, stamp_ns: int, pred: np.ndarray, gt: np.ndarray) -> float:
        p = np.asarray(pred, dtype=bool)
        g = np.asarray(gt, dtype=bool)
        if p.shape != g.shape:
            raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
        i, u = int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))
        self.inter += i
        self.union += u
        self.static_inter += int(np.count_nonzero(~p & ~g))
        self.static_union += int(np.count_nonzero(~p | ~g))
        self.correct += int(np.count_nonzero(p == g))
        self.pixels += int(g.size)
        n_static = int(np.count_nonzero(~g))
        self.base_static_inter += n_static
        self.base_static_union += int(g.size)
        self.base_correct += n_static
        self.gt_dynamic += int(g.size) - n_static
        iou = i / u if u else NAN
        if u:
            self.per_frame.append(iou)
        self.frames.append({"camera": camera, "stamp_ns": int(stamp_ns), "iou": iou})
        return iou

    def summary(self) -> Dict[str, object]:
        if not self.pixels:
            return {"frames": 0}
        dyn = self.inter / self.union if self.union else NAN
        sta = self.static_inter / self.static_union if self.static_union else NAN
        b_dyn = 0.0 if self.gt_dynamic else NAN  # all-static: no dynamic pixel predicted
        b_sta = self.base_static_inter / self.base_static_union if self.base_static_union else NAN
        all_dyn = self.gt_dynamic / self.pixels  # all-dynamic: IoU = the dynamic fraction
        return {
            "frames": len(self.frames),
            "iou_dynamic": dyn,
            "iou_dynamic_per_frame_mean": float(np.mean(self.per_frame)) if self.per_frame else NAN,
            "iou_static": sta,
            "miou": float(np.nanmean([dyn, sta])),
            "accuracy": self.correct / self.pixels,
            "gt_dynamic_fraction": self.gt_dynamic / self.pixels,
            "baseline_all_static": {"iou_dynamic": b_dyn, "iou_static": b_sta,
                                    "miou": float(np.nanmean([b_dyn, b_sta])),
                                    "accuracy": self.base_correct / self.pixels},
            # a mask that calls everything moving: its IoU is the dynamic fraction; a mask below it
            # separates nothing (the v1 tiny weights: 0.049 vs 0.053 in the demo)
            "baseline_all_dynamic": {"iou_dynamic": all_dyn if self.gt_dynamic else NAN, "iou_static": 0.0,
                                     "accuracy": all_dyn},
        }


# ---------------------------------------------------------------------------------------------- tracks

@dataclass
class FrameGeometry:
    """Ground truth of one camera frame that defines where any STATIC surface point goes: z-depth (H, W)
    (metres, invalid = non-finite or <= 0), world-from-optical pose (4, 4), intrinsics (3, 3) and the dynamic
    mask (H, W) bool (None: everything static)."""

    depth: np.ndarray
    T_world_cam: np.ndarray
    K: np.ndarray
    dynamic: object = None

    def unproject(self, uv: np.ndarray) -> np.ndarray:
        """World points (N, 3) of pixels (N, 2) at the nearest pixel's depth (NaN where invalid or dynamic)."""
        h, w = self.depth.shape
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        ui = np.clip(np.round(uv[:, 0]).astype(np.int64), 0, w - 1)
        vi = np.clip(np.round(uv[:, 1]).astype(np.int64), 0, h - 1)
        z = self.depth[vi, ui].astype(np.float64)
        ok = np.isfinite(z) & (z > 0) & np.isfinite(uv).all(-1)
        if self.dynamic is not None:
            ok &= ~np.asarray(self.dynamic, bool)[vi, ui]
        K = np.asarray(self.K, np.float64)
        xc = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z], -1)
        T = np.asarray(self.T_world_cam, np.float64)
        X = xc @ T[:3, :3].T + T[:3, 3]
        X[~ok] = np.nan
        return X

    def project(self, X: np.ndarray, occlusion_tolerance: float = 0.05):
        """Pixels (N, 2) and visibility (N,) of world points: in front, inside the image and not behind the
        ground-truth surface by more than ``occlusion_tolerance`` (relative depth)."""
        h, w = self.depth.shape
        T = np.asarray(self.T_world_cam, np.float64)
        xc = (np.asarray(X, np.float64) - T[:3, 3]) @ T[:3, :3]
        K = np.asarray(self.K, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            uv = (xc[:, :2] / xc[:, 2:3]) @ K[:2, :2].T + K[:2, 2]
        z = xc[:, 2]
        inside = (z > 1e-6) & (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)
        vis = np.zeros(len(z), bool)
        if inside.any():
            ui = np.clip(np.round(uv[inside, 0]).astype(np.int64), 0, w - 1)
            vi = np.clip(np.round(uv[inside, 1]).astype(np.int64), 0, h - 1)
            d = self.depth[vi, ui]
            vis[inside] = ~(d < (1.0 - occlusion_tolerance) * z[inside])
        uv[~(z > 1e-6)] = np.nan
        return uv, vis


#: frames since an id was first published, for the end-point error by horizon
TRACK_HORIZONS = ((1, 3), (4, 10), (11, 10 ** 9))


@dataclass
class TrackAccumulator:
    """Published keypoints against ground-truth point tracks, per camera.

    Matching, the first time a keypoint id appears in a camera:

    - with ``geometry`` (:class:`FrameGeometry` of that frame) and a static ground-truth pixel under the
      keypoint: its ground truth is the static surface point there (ground-truth depth, pose and
      intrinsics), projected into every later frame with that frame's geometry (exact for static points;
      visibility from the ground-truth depth). Every static keypoint is evaluated, not only those that
      happen to lie near one of the sparse ground-truth tracks;
    - otherwise (a moving point, or no geometry): the nearest ground-truth track visible in that frame
      within ``match_radius_px`` (moving tracks only when the geometry says the pixel is dynamic), then
      that track is followed; no such track: unmatched.

    On every later frame where the ground truth is known the end-point error (pixels, where the ground
    truth is visible) and the visibility agreement are counted, overall, for static and moving points, and
    by horizon (frames since the id appeared, :data:`TRACK_HORIZONS`; the error grows with the horizon,
    so a tracker whose ids live longer is not comparable by the overall figure alone). Baseline: a keypoint
    that never moves from its first position and is always reported visible, on the same observations.

    Feed frames of one camera in stamp order with :meth:`add`: ``pred_ids`` (N,), ``pred_uv`` (N, 2),
    ``pred_vis`` (N,) bool; ``gt_ids`` (M,), ``gt_uv`` (M, 2), ``gt_vis`` (M,) bool (tracks inside the image).
    """

    match_radius_px: float = 8.0
    _pair: Dict[tuple, object] = field(default_factory=dict)  # (camera, kp id) -> gt id | world point | -1
    _first_uv: Dict[tuple, np.ndarray] = field(default_factory=dict)
    _frame_no: Dict[str, int] = field(default_factory=dict)  # camera -> frames added
    _first_frame: Dict[tuple, int] = field(default_factory=dict)
    epe: List[float] = field(default_factory=list)
    base_epe: List[float] = field(default_factory=list)
    horizon: List[int] = field(default_factory=list)
    is_static: List[bool] = field(default_factory=list)
    vis_agree: int = 0
    vis_total: int = 0
    base_vis_agree: int = 0
    matched: int = 0
    matched_geometry: int = 0
    unmatched: int = 0

    def add(self, camera: str, pred_ids, pred_uv, pred_vis, gt_ids, gt_uv, gt_vis,
            geometry: "FrameGeometry | None" = None) -> None:
        pred_ids = np.asarray(pred_ids, dtype=np.int64).reshape(-1)
        pred_uv = np.asarray(pred_uv, dtype=np.float64).reshape(-1, 2)
        pred_vis = np.asarray(pred_vis, dtype=bool).reshape(-1)
        gt_ids = np.asarray(gt_ids, dtype=np.int64).reshape(-1)
        gt_uv = np.asarray(gt_uv, dtype=np.float64).reshape(-1, 2)
        gt_vis = np.asarray(gt_vis, dtype=bool).reshape(-1)
        frame_no = self._frame_no.get(camera, 0)
        self._frame_no[camera] = frame_no + 1
        index = {int(g): j for j, g in enumerate(gt_ids)}
        new = [i for i, k in enumerate(pred_ids) if (camera, int(k)) not in self._pair]
        if new:
            X = geometry.unproject(pred_uv[new]) if geometry is not None else None
            cand = np.nonzero(gt_vis)[0]
            if geometry is not None and geometry.dynamic is not None and cand.size:
                # a moving keypoint is matched to moving ground-truth tracks only
                h, w = geometry.depth.shape
                ui = np.clip(np.round(gt_uv[cand, 0]).astype(np.int64), 0, w - 1)
                vi = np.clip(np.round(gt_uv[cand, 1]).astype(np.int64), 0, h - 1)
                cand = cand[np.asarray(geometry.dynamic, bool)[vi, ui]]
            for n, i in enumerate(new):
                key = (camera, int(pred_ids[i]))
                self._first_uv[key] = pred_uv[i].copy()
                self._first_frame[key] = frame_no
                if X is not None and np.isfinite(X[n]).all():
                    self._pair[key] = X[n].copy()
                    self.matched += 1
                    self.matched_geometry += 1
                    continue
                if cand.size:
                    d = np.linalg.norm(gt_uv[cand] - pred_uv[i], axis=1)
                    j = int(np.argmin(d))
                    if d[j] <= self.match_radius_px:
                        self._pair[key] = int(gt_ids[cand[j]])
                        self.matched += 1
                        continue
                self._pair[key] = -1
                self.unmatched += 1
        newset = set(new)
        old = [i for i in range(len(pred_ids)) if i not in newset]  # the first frame is the match itself
        geo = [i for i in old if isinstance(self._pair.get((camera, int(pred_ids[i]))), np.ndarray)]
        geo_uv, geo_vis = {}, {}
        if geo and geometry is not None:
            uv, vis = geometry.project(np.stack([self._pair[(camera, int(pred_ids[i]))] for i in geo]))
            geo_uv = {i: uv[n] for n, i in enumerate(geo)}
            geo_vis = {i: bool(vis[n]) for n, i in enumerate(geo)}
        for i in old:
            key = (camera, int(pred_ids[i]))
            g = self._pair.get(key, -1)
            if isinstance(g, np.ndarray):
                if i not in geo_uv:
                    continue  # a static point but no geometry for this frame: unknown
                gt_p, vis, static = geo_uv[i], geo_vis[i], True
            else:
                if g < 0:
                    continue
                j = index.get(g)
                vis = bool(gt_vis[j]) if j is not None else False
                gt_p, static = (gt_uv[j] if j is not None else None), False
            self.vis_total += 1
            self.vis_agree += int(bool(pred_vis[i]) == vis)
            self.base_vis_agree += int(vis)
            if vis and gt_p is not None:
                self.epe.append(float(np.linalg.norm(pred_uv[i] - gt_p)))
                self.base_epe.append(float(np.linalg.norm(self._first_uv[key] - gt_p)))
                self.horizon.append(frame_no - self._first_frame[key])
                self.is_static.append(static)

    @staticmethod
    def _epe_summary(e) -> Dict[str, float]:
        a = np.asarray(e, dtype=np.float64)
        if a.size == 0:
            return {"epe_mean": NAN, "epe_median": NAN, "delta_avg": NAN}
        return {"epe_mean": float(a.mean()), "epe_median": float(np.median(a)),
                "delta_avg": float(np.mean([np.mean(a < t) for t in TRACK_THRESHOLDS_PX]))}

    def summary(self) -> Dict[str, object]:
        out: Dict[str, object] = {"keypoints_matched": self.matched, "keypoints_unmatched": self.unmatched,
                                  "keypoints_matched_by_geometry": self.matched_geometry,
                                  "points_evaluated": len(self.epe)}
        out.update(self._epe_summary(self.epe))
        out["visibility_accuracy"] = self.vis_agree / self.vis_total if self.vis_total else NAN
        base = self._epe_summary(self.base_epe)
        base["visibility_accuracy"] = self.base_vis_agree / self.vis_total if self.vis_total else NAN
        out["baseline_static_points"] = base
        e, b = np.asarray(self.epe), np.asarray(self.base_epe)
        h, st = np.asarray(self.horizon, np.int64), np.asarray(self.is_static, bool)
        out["by_kind"] = {name: {"points": int(sel.sum()), "epe_median": float(np.median(e[sel])) if sel.any() else NAN,
                                 "baseline_epe_median": float(np.median(b[sel])) if sel.any() else NAN}
                          for name, sel in (("static", st), ("moving", ~st))}
        out["by_horizon"] = [
            {"frames": [lo, hi if hi < 10 ** 9 else None], "points": int(sel.sum()),
             "epe_median": float(np.median(e[sel])) if sel.any() else NAN,
             "baseline_epe_median": float(np.median(b[sel])) if sel.any() else NAN}
            for lo, hi in TRACK_HORIZONS for sel in [(h >= lo) & (h <= hi)]]
        return out


# ---------------------------------------------------------------------------------------------- runtime

def runtime_metrics(*, frames_in: int, frames_used: int, steps_in: int, steps_out: int, windows: int,
                    windows_skipped: int, frames_dropped: int, latencies_s: Sequence[float],
                    output_times_s: Sequence[float], wall_s: float, num_cameras: int) -> Dict[str, object]:
    """Counts, window latency statistics, throughput and jitter (ros2_benchmark's figures).

    ``output_times_s``: wall-clock time at which each output time step became available (for jitter:
    the standard deviation of the intervals between consecutive outputs).
    """
    t = np.sort(np.asarray(list(output_times_s), dtype=np.float64))
    iv = np.diff(t)
    return {
        "frames_in": int(frames_in),
        "frames_used": int(frames_used),
        "frames_out": int(steps_out * num_cameras),
        "steps_in": int(steps_in),
        "steps_out": int(steps_out),
        "windows": int(windows),
        "windows_skipped": int(windows_skipped),
        "frames_dropped": int(frames_dropped),
        "latency_s": stats(latencies_s),
        "wall_s": float(wall_s),
        "throughput_steps_per_s": steps_out / wall_s if wall_s > 0 else NAN,
        "throughput_frames_per_s": steps_out * num_cameras / wall_s if wall_s > 0 else NAN,
        "output_interval_mean_s": float(iv.mean()) if iv.size else NAN,
        "jitter_s": float(iv.std()) if iv.size >= 2 else NAN,
    }
