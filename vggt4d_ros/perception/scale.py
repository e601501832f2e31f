"""Metric scale for ONE camera: from a metric depth sensor aligned with it, or from its known height.

The model predicts depth and poses up to an unknown scale per window. With two or more cameras whose
extrinsics are known, :func:`vggt4d_ros.window.chain.metric_scale_from_rig` fixes it; with one camera,
one of these estimators does (metres per model unit, like the rig's):

- :func:`scale_from_sensor_depth`: a metric depth image registered to camera 0 (e.g. a RealSense
  ``aligned_depth_to_color``), any resolution with the same field of view. Scale = median over the valid
  pixels of every frame that has one of ``sensor / predicted`` depth, with a range gate, a minimum support
  and a spread gate.
- :func:`scale_from_camera_height`: the camera's height above a ground plane. Per frame, the predicted
  points (optical frame) whose surface normal is near the known "up" direction (from the ``base <- camera``
  extrinsic and base-frame z, REP 103) and that lie below the camera are the candidates; a RANSAC plane
  constrained to be near horizontal is fitted, refined by least squares on its inliers, and the camera's
  distance to it (model units) compared with the known height. Median over frames.

Both return a :class:`ScaleEstimate` whose ``scale`` is NaN (with a reason) when the support is too thin
or the result implausible; the caller then keeps the chain's held scale. No ROS import here.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "ScaleEstimate", "PlaneFit", "resample_depth_nearest", "scale_from_sensor_depth", "up_in_camera",
    "surface_normals", "fit_ground_plane", "scale_from_camera_height", "SensorDepthMatcher",
]

_NAN = float("nan")


@dataclass
class ScaleEstimate:
    """One window's metric scale estimate.

    Attributes:
        scale: metres per model unit (multiply predicted depth by it); NaN when not found.
        support: pixels (depth) or plane inliers (height) that went into it, summed over frames.
        frames: frames that contributed.
        spread: robust spread of the log scale (1.4826 * MAD over pixels for depth, over frames for height);
            NaN when undefined.
        reason: why ``scale`` is NaN ("" when found).
    """

    scale: float
    support: int = 0
    frames: int = 0
    spread: float = _NAN
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.scale) and self.scale > 0)


def _robust_spread(log_values: np.ndarray) -> float:
    if log_values.size == 0:
        return _NAN
    return float(1.4826 * np.median(np.abs(log_values - np.median(log_values))))


# ----------------------------------------------------------------------------------------- depth sensor
def resample_depth_nearest(depth: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """Resize a depth map (Hs, Ws) to (H, W) = ``hw`` by nearest neighbour on pixel centres.

    Nearest, never interpolating: a hole (NaN) must not bleed into its neighbours and an edge must not
    produce depths between foreground and background. Same field of view assumed (a registered depth image).
    """
    d = np.asarray(depth, dtype=np.float32)
    h, w = int(hw[0]), int(hw[1])
    if d.shape == (h, w):
        return d
    return cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


def scale_from_sensor_depth(
    pred_depths: Sequence[np.ndarray],
    sensor_depths: Sequence[Optional[np.ndarray]],
    *,
    min_depth_m: float = 0.1,
    max_depth_m: float = 10.0,
    min_pixels: int = 500,
    max_spread: float = 0.5,
) -> ScaleEstimate:
    """Metres per model unit from metric sensor depth registered to the predicted frames.

    Args:
        pred_depths: per frame (H, W) predicted z-depth in model units (NaN / <= 0 invalid).
        sensor_depths: per frame (Hs, Ws) float metres or None (no sensor frame); 0 / NaN / inf = no data.
            Resampled to (H, W) by nearest neighbour (same field of view).
        min_depth_m, max_depth_m: range gate on the sensor (outside = unreliable, ignored).
        min_pixels: pixels valid in both, summed over frames, needed for an estimate.
        max_spread: largest robust spread of ``log(sensor / predicted)`` accepted (0.5 = a factor 1.65
            between the median and the typical pixel): above it the two disagree too much to trust.
    Returns:
        :class:`ScaleEstimate`: scale = median over all valid pixels of ``sensor / predicted``.
    """
    logs = []
    frames = 0
    for pred, sensor in zip(pred_depths, sensor_depths):
        if sensor is None:
            continue
        p = np.asarray(pred, dtype=np.float32)
        s = resample_depth_nearest(sensor, p.shape)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(s) & (s >= min_depth_m) & (s <= max_depth_m) & np.isfinite(p) & (p > 0)
        if not ok.any():
            continue
        frames += 1
        logs.append(np.log(s[ok].astype(np.float64)) - np.log(p[ok].astype(np.float64)))
    lr = np.concatenate(logs) if logs else np.zeros(0)
    if lr.size < max(int(min_pixels), 1):
        return ScaleEstimate(_NAN, int(lr.size), frames, _robust_spread(lr),
                             f"sensor depth: {lr.size} valid pixels < {min_pixels}")
    spread = _robust_spread(lr)
    if not spread <= max_spread:
        return ScaleEstimate(_NAN, int(lr.size), frames, spread,
                             f"sensor depth: ratio spread {spread:.2f} > {max_spread}")
    return ScaleEstimate(float(np.exp(np.median(lr))), int(lr.size), frames, spread)


# ----------------------------------------------------------------------------------------- camera height
def up_in_camera(T_base_cam: Optional[np.ndarray], up_base: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(3,) unit "up" direction in a camera's optical frame: ``R_base_cam^T up_base``.

    Without an extrinsic the camera is taken to look along base x (REP 103 optical axes): up = -y optical.
    """
    if T_base_cam is None:
        return np.array([0.0, -1.0, 0.0])
    u = np.asarray(T_base_cam, dtype=np.float64)[:3, :3].T @ np.asarray(up_base, dtype=np.float64)
    return u / np.linalg.norm(u)


def surface_normals(points: np.ndarray, step: int = 2) -> np.ndarray:
    """Unit normals of an organised cloud by central differences ``step`` pixels apart.

    Args:
        points: (H, W, 3) points (NaN invalid).
        step: pixel offset of the differences (larger = smoother on noisy depth).
    Returns:
        (H, W, 3) float32 unit normals (sign arbitrary), NaN where a neighbour is missing or degenerate.
    """
    P = np.asarray(points, dtype=np.float32)
    h, w = P.shape[:2]
    out = np.full(P.shape, np.nan, dtype=np.float32)
    k = int(step)
    if h <= 2 * k or w <= 2 * k:
        return out
    du = P[k:-k, 2 * k:] - P[k:-k, :-2 * k]
    dv = P[2 * k:, k:-k] - P[:-2 * k, k:-k]
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(norm > 0, n / norm, np.nan)
    out[k:-k, k:-k] = n
    return out


@dataclass
class PlaneFit:
    """A plane ``normal . x + offset = 0`` with ``normal`` a unit vector on the side of "up".

    ``offset`` is then the signed height of the origin (the camera centre) above the plane.
    ``inliers`` (N,) bool over the given points; ``ok`` False with ``reason`` when no plausible plane.
    """

    normal: np.ndarray
    offset: float
    inliers: np.ndarray
    ok: bool
    reason: str = ""
    tilt_deg: float = _NAN


def _plane_lsq(P: np.ndarray, up: np.ndarray):
    c = P.mean(0)
    _, _, vt = np.linalg.svd(P - c, full_matrices=False)
    n = vt[-1]
    if n @ up < 0:
        n = -n
    return n, float(-n @ c)


def fit_ground_plane(
    points: np.ndarray,
    up: np.ndarray,
    *,
    max_tilt_deg: float = 15.0,
    inlier_tol: float = 0.02,
    iterations: int = 200,
    min_inliers: int = 100,
    min_inlier_ratio: float = 0.2,
    max_points: int = 3000,
    seed: int = 0,
) -> PlaneFit:
    """Robust near-horizontal plane through candidate ground points (RANSAC, then least squares).

    Args:
        points: (N, 3) candidate points in the camera frame (finite).
        up: (3,) unit "up" in the same frame; hypotheses tilted more than ``max_tilt_deg`` from it are
            discarded, and so is the final plane.
        inlier_tol: inlier distance as a fraction of the median height of the candidates below the camera
            (scale-free: model units are arbitrary).
        iterations: RANSAC hypotheses (evaluated at once).
        min_inliers, min_inlier_ratio: support needed (count, and share of the candidates).
        max_points: candidates kept (seeded random subsample) for the hypothesis scoring.
    Returns:
        :class:`PlaneFit`; ``inliers`` refer to ``points``.
    """
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    n_all = len(P)
    empty = np.zeros(n_all, dtype=bool)
    if n_all < max(3, min_inliers):
        return PlaneFit(up, _NAN, empty, False, f"{n_all} ground candidates < {max(3, min_inliers)}")
    rng = np.random.default_rng(seed)
    S = P if n_all <= max_points else P[rng.choice(n_all, max_points, replace=False)]
    h0 = float(np.median(-(S @ up)))
    if not h0 > 0:
        return PlaneFit(up, _NAN, empty, False, "ground candidates are not below the camera")
    tol = inlier_tol * h0
    cos_max = np.cos(np.radians(max_tilt_deg))
    tri = rng.integers(0, len(S), size=(iterations, 3))
    a, b, c = S[tri[:, 0]], S[tri[:, 1]], S[tri[:, 2]]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=-1)
    good = norm > 1e-12 * max(h0, 1e-12) ** 2
    n = n / np.where(good, norm, 1.0)[:, None]
    n *= np.where(n @ up < 0, -1.0, 1.0)[:, None]
    good &= (n @ up) >= cos_max
    if not good.any():
        return PlaneFit(up, _NAN, empty, False, f"no plane hypothesis within {max_tilt_deg:g} deg of up")
    n, a = n[good], a[good]
    d = -(n * a).sum(-1)  # (K,)
    counts = (np.abs(S @ n.T + d[None]) < tol).sum(0)  # (K,)
    best = int(np.argmax(counts))
    normal, offset = n[best], float(d[best])
    inl = np.abs(P @ normal + offset) < tol
    for _ in range(2):  # least-squares refinement on the inliers
        if inl.sum() < 3:
            break
        normal, offset = _plane_lsq(P[inl], up)
        inl = np.abs(P @ normal + offset) < tol
    tilt = float(np.degrees(np.arccos(np.clip(normal @ up, -1.0, 1.0))))
    k = int(inl.sum())
    if tilt > max_tilt_deg:
        return PlaneFit(normal, offset, inl, False, f"ground plane tilted {tilt:.1f} deg > {max_tilt_deg:g}", tilt)
    if k < min_inliers or k < min_inlier_ratio * n_all:
        return PlaneFit(normal, offset, inl, False, f"ground plane has {k} inliers of {n_all} candidates", tilt)
    if not offset > 0:
        return PlaneFit(normal, offset, inl, False, "camera is not above the ground plane", tilt)
    return PlaneFit(normal, offset, inl, True, "", tilt)


def scale_from_camera_height(
    points_cam: Sequence[np.ndarray],
    up_cam: np.ndarray,
    camera_height_m: float,
    *,
    normal_tol_deg: float = 30.0,
    max_tilt_deg: float = 15.0,
    inlier_tol: float = 0.02,
    min_inliers: int = 100,
    min_inlier_ratio: float = 0.2,
    normal_step: int = 2,
    max_spread: float = 0.25,
    seed: int = 0,
) -> ScaleEstimate:
    """Metres per model unit from the known height of the camera above a ground plane.

    Args:
        points_cam: per frame (H, W, 3) predicted points of the camera in its optical frame (model units,
            NaN invalid), e.g. :func:`vggt4d_ros.perception.pipeline.unproject_depth` of the predicted depth.
        up_cam: (3,) unit "up" in the camera's optical frame (:func:`up_in_camera`); the camera is assumed
            rigidly mounted on a body that stays near level (a ground robot).
        camera_height_m: height of the optical centre above the ground (metres, > 0).
        normal_tol_deg: candidates = points below the camera whose surface normal is within this of up.
        max_tilt_deg, inlier_tol, min_inliers, min_inlier_ratio: :func:`fit_ground_plane`.
        normal_step: pixel step of :func:`surface_normals`.
        max_spread: largest robust spread of the per-frame log scales accepted.
    Returns:
        :class:`ScaleEstimate`: median over frames with a plane of ``camera_height_m / distance``.
    """
    if not camera_height_m > 0:
        return ScaleEstimate(_NAN, reason="camera height not set")
    up = np.asarray(up_cam, dtype=np.float64)
    up = up / np.linalg.norm(up)
    cos_n = np.cos(np.radians(normal_tol_deg))
    per_frame, support, reasons = [], 0, []
    for i, pts in enumerate(points_cam):
        P = np.asarray(pts, dtype=np.float32)
        N = surface_normals(P, normal_step)
        with np.errstate(invalid="ignore"):
            cand = np.isfinite(P).all(-1) & (P[..., 2] > 0) & (np.abs(N @ up.astype(np.float32)) >= cos_n) \
                & ((P @ up.astype(np.float32)) < 0)
        fit = fit_ground_plane(P[cand], up, max_tilt_deg=max_tilt_deg, inlier_tol=inlier_tol,
                               min_inliers=min_inliers, min_inlier_ratio=min_inlier_ratio, seed=seed + i)
        if fit.ok:
            per_frame.append(camera_height_m / fit.offset)
            support += int(fit.inliers.sum())
        else:
            reasons.append(fit.reason)
    if not per_frame:
        why = reasons[0] if reasons else "no frames"
        return ScaleEstimate(_NAN, 0, 0, _NAN, f"camera height: no ground plane ({why})")
    lg = np.log(np.asarray(per_frame))
    spread = _robust_spread(lg)
    if len(per_frame) >= 3 and not spread <= max_spread:
        return ScaleEstimate(_NAN, support, len(per_frame), spread,
                             f"camera height: per-frame scales disagree (spread {spread:.2f} > {max_spread})")
    return ScaleEstimate(float(np.exp(np.median(lg))), support, len(per_frame), spread)


# ----------------------------------------------------------------------------------------- pairing by stamp
class SensorDepthMatcher:
    """Attaches depth images to camera frame payloads by stamp, whichever arrives first.

    A frame (:class:`~vggt4d_ros.frontend.frames.Frame`, or any object with ``stamp_ns`` and a ``sensor_depth``
    attribute) gets ``frame.sensor_depth = depth`` from the depth image nearest in stamp within ``tolerance_s``; a depth image arriving after its frame (a driver's alignment takes time)
    still reaches it while the frame is among the last ``max_items`` frames, and replaces a farther one.
    Bounded: the last ``max_items`` depth images and frames. Thread-safe (callbacks of several threads).
    """

    def __init__(self, tolerance_s: float = 0.02, max_items: int = 15) -> None:
        self.tolerance_ns = int(round(float(tolerance_s) * 1e9))
        self._depths: deque = deque(maxlen=int(max_items))  # (stamp_ns, (H, W) float32 metres)
        self._frames: deque = deque(maxlen=int(max_items))  # [stamp_ns, frame, |dt| of the attached depth]
        self._lock = threading.Lock()
        self.attached = 0  # frames that received a depth image (counted once each)

    def _attach(self, entry: list, stamp_ns: int, depth: np.ndarray) -> None:
        dt = abs(int(stamp_ns) - entry[0])
        if dt <= self.tolerance_ns and dt < entry[2]:
            if entry[2] > self.tolerance_ns:
                self.attached += 1
            entry[1].sensor_depth = depth
            entry[2] = dt

    def add_frame(self, frame: Any) -> bool:
        """Attach the nearest buffered depth image to ``frame`` (when within tolerance); True if attached."""
        entry = [int(frame.stamp_ns), frame, self.tolerance_ns + 1]
        with self._lock:
            for stamp, depth in self._depths:
                self._attach(entry, stamp, depth)
            self._frames.append(entry)
        return entry[2] <= self.tolerance_ns

    def add_depth(self, stamp_ns: int, depth: np.ndarray) -> int:
        """Buffer a depth image (H, W) float32 metres and give it to recent frames it is nearer to; returns
        how many frames it was attached to."""
        n = 0
        with self._lock:
            self._depths.append((int(stamp_ns), depth))
            for entry in self._frames:
                before = entry[2]
                self._attach(entry, stamp_ns, depth)
                n += entry[2] != before
        return n
