"""Camera-0 poses of a window from the model's depth and image correspondences (PnP), instead of the camera head.

A window's camera head predicts every frame's pose; a small model learns little more than a motion prior from
it (the embedded tiny model predicts about one step's motion between two frames whatever their time apart, and
almost no rotation). Its depth is much better than its poses, and depth + correspondences fix the pose: for an
*anchor* frame of camera 0 with a dense depth map (the chain's shared frame, so the window attaches to the
trajectory through it), Shi-Tomasi corners are tracked into every other camera-0 frame of the window with
pyramidal Lucas-Kanade (forward-backward checked), lifted to 3D with the anchor's depth and intrinsics, and each
frame's pose relative to the anchor is solved by RANSAC PnP. Correspondences on moving objects are RANSAC
outliers. The translation is in the depth's units, which are the window's own units (the camera head's), so
the chainer's Sim(3) fit and the metric scale sources work on the result unchanged.

OpenCV does the image work (corners, LK, PnP): well kept, fast on a Jetson's CPU, and deterministic for the same
input (its RANSAC seeds its generator per call), so a replay and the node give the same poses.

A frame the anchor's corners do not reach (too far apart in time, when the model is slower than the cameras and
the window's frames are picked by age) is solved against the nearest solved frame with depth instead, through
that frame's pose. Where a frame still has too few inliers (blur, a blank wall), it keeps the camera head's
pose, placed relative to the anchor as the head predicted it; :attr:`RefineResult.source` says which frames
were solved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["POSE_REFINE", "PoseRefineConfig", "RefineResult", "refine_camera_poses", "rig_depth_scale", "to_gray"]

#: Values of the node's ``pose.refine`` ("auto": "pnp" for the embedded weights, "none" for a given checkpoint;
#: resolved by :class:`vggt4d_ros.perception.pipeline.Pipeline`).
POSE_REFINE = ("auto", "pnp", "none")


@dataclass(frozen=True)
class PoseRefineConfig:
    max_features: int = 400  # corners detected in the anchor frame
    min_inliers: int = 30  # PnP inliers below this keep the camera head's pose
    ransac_px: float = 2.0  # RANSAC reprojection threshold, input pixels
    lk_window: int = 21  # LK window side, pixels
    lk_levels: int = 3  # pyramid levels above the image
    fb_max_px: float = 1.0  # forward-backward LK disagreement above this drops a correspondence


@dataclass
class RefineResult:
    """Outcome for one window.

    Attributes:
        cam_from_world: (T, 4, 4) float64 camera-0 poses in the window's world frame (the anchor keeps its
            camera-head pose).
        solved: (T,) bool, True where PnP gave the frame's pose (the anchor counts as solved).
        inliers: (T,) int PnP inliers per frame (0 for the anchor and unsolved frames).
        anchor: time index of the anchor frame.
    """

    cam_from_world: np.ndarray
    solved: np.ndarray
    inliers: np.ndarray
    anchor: int
    notes: List[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """"pnp" (every frame solved), "camera_head" (none) or "pnp+camera_head" (some)."""
        others = np.delete(self.solved, self.anchor)
        if others.size == 0 or others.all():
            return "pnp"
        return "camera_head" if not others.any() else "pnp+camera_head"


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 grey (OpenCV's weights)."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _track(g0: np.ndarray, g1: np.ndarray, p0: np.ndarray, cfg: PoseRefineConfig,
           guess: Optional[np.ndarray] = None):
    """LK from g0 to g1 with a backward check, starting at ``guess`` (N, 1, 2) when given; returns (kept mask
    (N,), p1 (N, 2))."""
    import cv2

    lk = dict(winSize=(cfg.lk_window, cfg.lk_window), maxLevel=cfg.lk_levels,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    if guess is None:
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(g0, g1, p0, None, **lk)
    else:
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(g0, g1, p0, guess.astype(np.float32).copy(),
                                              flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    pb, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, p1, p0.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    fb = np.linalg.norm((pb - p0).reshape(-1, 2), axis=1)
    h, w = g1.shape
    q = p1.reshape(-1, 2)
    inside = (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1)
    ok = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb < cfg.fb_max_px) & inside
    return ok, q


def refine_camera_poses(gray: Sequence[np.ndarray], cam_from_world: np.ndarray, intrinsics: np.ndarray,
                        anchor: int, anchor_depth: np.ndarray, cfg: PoseRefineConfig = PoseRefineConfig(),
                        depths: Optional[Sequence[Optional[np.ndarray]]] = None) -> RefineResult:
    """Solve camera 0's poses of one window against its anchor frame.

    Args:
        gray: T (H, W) uint8 images of camera 0, time order.
        cam_from_world: (T, 4, 4) the camera head's poses (window world frame).
        intrinsics: (T, 3, 3) intrinsics in input pixels (the ones the depth was unprojected with).
        anchor: time index whose depth is given; its pose is kept.
        anchor_depth: (H, W) z-depth of the anchor frame in window units, NaN invalid.
        depths: optional T depth maps (None where a frame has none): a frame the anchor's corners do not reach
            (too far apart in time when the model is slower than the cameras) is then solved against the nearest
            solved frame with depth, and placed through that frame's solved pose.

    Returns:
        :class:`RefineResult`.
    """
    import cv2

    E = np.asarray(cam_from_world, dtype=np.float64).copy()
    T = E.shape[0]
    solved = np.zeros(T, bool)
    solved[anchor] = True
    inliers = np.zeros(T, np.int64)
    res = RefineResult(cam_from_world=E, solved=solved, inliers=inliers, anchor=anchor)
    g0 = gray[anchor]
    Ka = np.asarray(intrinsics[anchor], dtype=np.float64)
    lifted = _lift(g0, np.asarray(anchor_depth, dtype=np.float32), Ka, cfg) if T >= 2 else None
    if lifted is None:
        res.notes.append("anchor: too few corners with depth")
        return res
    p0, X, has_z = lifted
    E_a = E[anchor]
    # pass 1: per frame, LK + RANSAC PnP
    tracked: Dict[int, tuple] = {}
    for t in range(T):
        if t == anchor:
            continue
        got = _solve_pair(g0, gray[t], p0, X, has_z, intrinsics[t], cfg)
        if isinstance(got, str):
            res.notes.append(f"step {t}: {got}")
            continue
        tracked[t] = got
    # pass 2: a point is static only if it reprojects within the threshold in every solved frame it was tracked
    # in. A slow moving object passes RANSAC in the frames next to the anchor and fails in the far ones; this
    # drops it from all of them, then every frame is re-solved (LM from pass 1's pose) on the static points.
    static = has_z.copy()
    for t, (ok, uv1, rvec, tvec, _) in tracked.items():
        proj = cv2.projectPoints(X[ok], rvec, tvec, np.asarray(intrinsics[t], dtype=np.float64), None)[0]
        bad = np.linalg.norm(proj.reshape(-1, 2) - uv1[ok], axis=1) > cfg.ransac_px
        static[np.flatnonzero(ok)[bad]] = False
    for t, (ok, uv1, rvec, tvec, n_ransac) in tracked.items():
        use = ok & static
        n = int(use.sum())
        if n >= cfg.min_inliers:
            _, rvec, tvec = cv2.solvePnP(X[use], uv1[use].astype(np.float64),
                                         np.asarray(intrinsics[t], dtype=np.float64), None, rvec.copy(),
                                         tvec.copy(), useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        else:  # too few points static everywhere: keep pass 1's RANSAC solution for this frame
            n = n_ransac
        T_ta = np.eye(4)
        T_ta[:3, :3] = cv2.Rodrigues(rvec)[0]
        T_ta[:3, 3] = tvec.reshape(3)
        E[t] = T_ta @ E_a
        solved[t] = True
        inliers[t] = n
    if depths is not None:
        _bridge(gray, intrinsics, depths, res, cfg)
    return res


def _solve_pair(g0: np.ndarray, g1: np.ndarray, p0: np.ndarray, X: np.ndarray, has_z: np.ndarray, K1: np.ndarray,
                cfg: PoseRefineConfig):
    """LK of g0's corners ``p0`` (3D points ``X`` in g0's camera) into g1 and RANSAC PnP: (ok, uv1, rvec, tvec,
    inliers) with the pose g1 <- g0, or a string saying why not."""
    import cv2

    ok, uv1 = _track(g0, g1, p0, cfg)
    ok &= has_z
    if ok.sum() < cfg.min_inliers:
        return f"{int(ok.sum())} correspondences"
    found, rvec, tvec, inl = cv2.solvePnPRansac(
        X[ok], uv1[ok].astype(np.float64), np.asarray(K1, dtype=np.float64), None, iterationsCount=100,
        reprojectionError=float(cfg.ransac_px), confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
    n = 0 if inl is None else len(inl)
    if not found or n < cfg.min_inliers or not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
        return f"{n} PnP inliers"
    return ok, uv1, rvec, tvec, n


def _bridge(gray, intrinsics, depths, res: RefineResult, cfg: PoseRefineConfig) -> None:
    """Frames the anchor did not reach, solved against the nearest solved frame with depth (in time), nearest
    first, until no frame is added. The bridged pose composes two PnP poses, so it is in the same (depth) units
    as the others; a frame no solved neighbour reaches keeps the camera head's pose."""
    import cv2

    T = len(gray)
    lifted: Dict[int, Optional[tuple]] = {}
    progress = True
    while progress and not res.solved.all():
        progress = False
        for t in sorted(np.flatnonzero(~res.solved), key=lambda t: abs(int(t) - res.anchor)):
            srcs = sorted((s for s in range(T) if res.solved[s] and s != res.anchor and depths[s] is not None),
                          key=lambda s: abs(s - int(t)))
            for s in srcs[:2]:
                if s not in lifted:
                    lifted[s] = _lift(gray[s], np.asarray(depths[s], dtype=np.float32),
                                      np.asarray(intrinsics[s], dtype=np.float64), cfg)
                if lifted[s] is None:
                    continue
                p0, X, has_z = lifted[s]
                got = _solve_pair(gray[s], gray[t], p0, X, has_z, intrinsics[t], cfg)
                if isinstance(got, str):
                    res.notes.append(f"step {t} from step {s}: {got}")
                    continue
                _, _, rvec, tvec, n = got
                T_ts = np.eye(4)
                T_ts[:3, :3] = cv2.Rodrigues(rvec)[0]
                T_ts[:3, 3] = tvec.reshape(3)
                res.cam_from_world[t] = T_ts @ res.cam_from_world[s]
                res.solved[t] = True
                res.inliers[t] = n
                res.notes.append(f"step {t}: bridged from step {s}")
                progress = True
                break


def _lift(g0: np.ndarray, depth: np.ndarray, K0: np.ndarray, cfg: PoseRefineConfig):
    """Shi-Tomasi corners of ``g0`` where ``depth`` is valid, and their 3D points in camera 0's frame; None when
    too few."""
    import cv2

    valid = np.isfinite(depth) & (depth > 0)
    if valid.sum() < cfg.min_inliers:
        return None
    corners = cv2.goodFeaturesToTrack(g0, maxCorners=int(cfg.max_features), qualityLevel=0.01, minDistance=7,
                                      mask=valid.astype(np.uint8) * 255)
    if corners is None or len(corners) < cfg.min_inliers:
        return None
    p0 = corners.astype(np.float32).reshape(-1, 1, 2)
    uv0 = p0.reshape(-1, 2).astype(np.float64)
    ix = np.clip(np.rint(uv0[:, 0]).astype(int), 0, depth.shape[1] - 1)
    iy = np.clip(np.rint(uv0[:, 1]).astype(int), 0, depth.shape[0] - 1)
    z = depth[iy, ix].astype(np.float64)
    X = np.linalg.solve(K0, np.vstack([uv0.T, np.ones(len(uv0))])).T * z[:, None]
    return p0, X, np.isfinite(z) & (z > 0)


def rig_depth_scale(g0: np.ndarray, g1: np.ndarray, depth0: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                    T_10: np.ndarray, cfg: PoseRefineConfig = PoseRefineConfig(), min_parallax_px: float = 1.0,
                    max_width: int = 320):
    """Metres per unit of ``depth0`` from a calibrated pair of cameras at one stamp: dense stereo triangulation.

    Camera 1's image is warped into camera 0 by the calibrated rotation's homography (what remains is parallax),
    dense optical flow (OpenCV's DIS, forward-backward checked) matches every pixel of camera 0, and each match is
    triangulated along its camera-0 ray with the metric calibration ``T_10`` (cam1 <- cam0, metres;
    :func:`.stereo_depth.triangulate_flow`). The scale is
    median(triangulated depth) / median(``depth0``) over the pixels that triangulate: the statistic of a median
    depth alignment, over far more of the image than corners (corners sit on edges, where a model's depth is
    least right: on held-out scenes they gave a scale 9-23 % off where the dense pixels give 0-11 %). Both images
    have the same stamp, so moving objects triangulate like the rest; matches off their epipolar line by more
    than ``cfg.fb_max_px``, failing the forward-backward check or with less parallax than ``min_parallax_px`` are
    left out.

    Images wider than ``max_width`` are compared at that width (pixel thresholds are then in its pixels): on
    held-out scenes 320 px gives the scale of the full 518 px within 0.5 % at a quarter of the cost.

    Returns:
        (scale, pixels used); (NaN, n) when fewer than ``cfg.min_inliers`` pixels are usable.
    """
    import cv2

    from .stereo_depth import triangulate_flow

    tri = triangulate_flow(g0, g1, K0, K1, T_10, fb_max_px=cfg.fb_max_px, min_parallax_px=min_parallax_px,
                           max_width=max_width)
    h, w = tri.depth.shape
    z = np.asarray(depth0, np.float32)
    if z.shape != (h, w):
        z = cv2.resize(z, (w, h), interpolation=cv2.INTER_NEAREST)
    use = np.isfinite(tri.depth) & np.isfinite(z) & (z > 0)
    n = int(use.sum())
    if n < cfg.min_inliers:
        return float("nan"), n
    return float(np.median(tri.depth[use]) / np.median(z[use].astype(np.float64))), n
