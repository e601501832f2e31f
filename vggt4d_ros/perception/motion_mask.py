"""Dynamic mask from dense optical flow against the static-scene motion of the window's depth and poses.

A pixel of a static surface moves between two frames of one camera only because the camera moved: with its
depth ``Z`` and the frames' relative pose it lands at a predictable pixel of the other frame. A pixel that lands
elsewhere belongs to something that moved. The model's depth is uncertain, so the static prediction is not a
point but a segment of the epipolar line (the pixel's depth between ``Z / (1 + d)`` and ``Z * (1 + d)``); the
motion evidence is the distance of the measured match from that segment, in pixels. Motion across the epipolar
line is found whatever the depth error; motion along it only when it exceeds the depth's uncertainty. The
threshold on that distance adapts to each frame: the larger of a floor and a multiple of the frame's median
distance, since most of a frame is static and its median is the level the pose, depth and flow errors leave on
static pixels (it grows with the image size and the motion between the frames).

The match is dense optical flow (OpenCV's DIS). Each output frame is compared with up to ``max_refs`` older
frames of its camera in the window; a pixel is dynamic when the evidence of every reference with a valid match
says so, which suppresses the flow's own outliers. This needs only the output frame's depth, so it runs with
``model.dense_frames: needed``.

A small model's dense mask head and PAGE-4D's mask predictor are trained on little data; this estimate uses the
model's depth and the PnP-refined poses of :mod:`.pose_refine`, which the embedded weights give far better than
their masks. OpenCV does the image work (DIS flow, morphology): fast on a Jetson's CPU and deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["MASK_SOURCES", "MotionMaskConfig", "dis_flow", "fit_to", "flow_motion_evidence", "motion_mask",
           "working_size"]

#: Values of the node's ``mask.source`` ("auto": "flow" for the embedded weights, "model" for a given checkpoint;
#: resolved by :class:`vggt4d_ros.perception.pipeline.Pipeline`).
MASK_SOURCES = ("auto", "flow", "model")


@dataclass(frozen=True)
class MotionMaskConfig:
    depth_uncertainty: float = 1.0  # relative depth error the static prediction tolerates along the epipolar line
    min_px: float = 1.0  # distance from the static segment (working-image pixels) that counts as motion, at least
    rel_k: float = 4.0  # ... or this multiple of the frame's median distance (the static scene's residual level)
    max_refs: int = 2  # older frames of the camera compared with
    open_px: int = 5  # morphological opening (input pixels) that removes isolated specks; 0 = none
    max_width: int = 640  # flow and evidence on images at most this wide (the mask is resized back); 0 = input size
    reestimate_pose: bool = True  # the pair's rotation and translation direction from the flow's matches


def working_size(shape: Tuple[int, int], max_width: int) -> Optional[Tuple[int, int]]:
    """(width, height) to compare an image of ``shape`` (H, W) at when it is wider than ``max_width`` (aspect
    kept), else None (``max_width`` <= 0: never)."""
    H, W = shape
    return (int(max_width), int(round(H * max_width / W))) if 0 < max_width < W else None


def fit_to(gray: np.ndarray, K: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """``gray`` resized to ``size`` (width, height; area interpolation) and its intrinsics ``K`` scaled to it."""
    import cv2

    h, w = gray.shape
    S = np.diag([size[0] / w, size[1] / h, 1.0])
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA), S @ np.asarray(K, np.float64)


def dis_flow(g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 dense optical flow g0 -> g1 (OpenCV's DIS, medium preset), for this module and the
    rig's dense triangulation (:func:`.pose_refine.rig_depth_scale`)."""
    import cv2

    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(g0, g1, None)


def flow_motion_evidence(gray_s: np.ndarray, gray_r: np.ndarray, depth_s: np.ndarray, K_s: np.ndarray,
                         K_r: np.ndarray, T_r_s: np.ndarray, cfg: MotionMaskConfig = MotionMaskConfig(),
                         flow: Optional[np.ndarray] = None) -> np.ndarray:
    """Motion evidence of each pixel of frame ``s`` against frame ``r``.

    Args:
        gray_s, gray_r: (H, W) uint8 images of one camera.
        depth_s: (H, W) z-depth of ``s`` (any units; NaN or <= 0 invalid).
        K_s, K_r: (3, 3) intrinsics of the two frames, pixels.
        T_r_s: (4, 4) camera ``r`` <- camera ``s``, translation in the depth's units.
        flow: (H, W, 2) float32 flow s -> r when already computed (else DIS computes it).

    Returns:
        (H, W) float32: distance in pixels of the flow's match from the static segment; NaN where there is no
        evidence (invalid depth, the match or the static prediction outside the image or behind the camera).
    """
    H, W = depth_s.shape
    f = dis_flow(gray_s, gray_r) if flow is None else flow
    K_s = np.asarray(K_s, np.float64)
    K_r = np.asarray(K_r, np.float64)
    T = np.asarray(T_r_s, np.float64)
    dist = _segment_distance(f, depth_s, K_s, K_r, T, cfg)
    if cfg.reestimate_pose:
        # The window's relative pose is an estimate; an error in it leaves residual motion on every static
        # pixel, which raises the frame's threshold and hides slow objects. The flow's own matches re-estimate
        # the rotation and the translation's direction (RANSAC: moving pixels are the outliers; the window keeps
        # the translation's length, the depth's units). Of the two poses the one that leaves the static scene
        # (the frame's median distance) closer to its segments is used: a right pose stays, since an essential
        # matrix over a short baseline can absorb part of the objects' motion.
        from .stereo_depth import pose_candidates

        k = max(1, int(np.sqrt(H * W / 4000.0)))  # a grid of about 4000 matches is all the RANSAC reads
        gv, gu = np.mgrid[0:H:k, 0:W:k].astype(np.float64)
        fs = f[::k, ::k].astype(np.float64)
        m1 = np.stack([gu + fs[..., 0], gv + fs[..., 1]], -1).reshape(-1, 2)
        inside = (m1[:, 0] >= 0) & (m1[:, 0] <= W - 1) & (m1[:, 1] >= 0) & (m1[:, 1] <= H - 1)
        p0 = np.stack([gu.reshape(-1), gv.reshape(-1), np.ones(gu.size)], 1)[inside]
        for R, t in pose_candidates(p0, m1[inside], K_s, K_r, T[:3, :3], T[:3, 3], 1.0):
            T2 = T.copy()
            T2[:3, :3], T2[:3, 3] = R, t
            d2 = _segment_distance(f, depth_s, K_s, K_r, T2, cfg)
            if np.isfinite(d2).any() and (not np.isfinite(dist).any() or np.nanmedian(d2) < np.nanmedian(dist)):
                dist = d2
    return dist


def _segment_distance(f: np.ndarray, depth_s: np.ndarray, K_s: np.ndarray, K_r: np.ndarray, T: np.ndarray,
                      cfg: MotionMaskConfig) -> np.ndarray:
    """Distance of the flow's matches ``f`` from the static segments of ``depth_s`` under the pose ``T``."""
    H, W = depth_s.shape
    # M maps a pixel's homogeneous coordinates to the direction of its ray in camera r; e is the projection of
    # camera s's centre: x_r ~ M p * z + e (float32 on purpose: 8-bit images, sub-pixel flow)
    M = (K_r @ T[:3, :3] @ np.linalg.inv(K_s)).astype(np.float32)
    e = (K_r @ T[:3, 3]).astype(np.float32)
    u, v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    z = depth_s.astype(np.float32)
    ok = np.isfinite(z) & (z > 0)
    z = np.where(ok, z, 1.0)
    mx, my = u + f[..., 0], v + f[..., 1]
    ok &= (mx >= 0) & (mx <= W - 1) & (my >= 0) & (my <= H - 1)
    rx = M[0, 0] * u + M[0, 1] * v + M[0, 2]
    ry = M[1, 0] * u + M[1, 1] * v + M[1, 2]
    rz = M[2, 0] * u + M[2, 1] * v + M[2, 2]
    ends = []
    for zz in (z * np.float32(1.0 / (1.0 + cfg.depth_uncertainty)), z * np.float32(1.0 + cfg.depth_uncertainty)):
        w = rz * zz + e[2]
        ok &= w > 1e-6
        w = np.where(w > 1e-6, w, 1.0)
        ends.append(((rx * zz + e[0]) / w, (ry * zz + e[1]) / w))
    (ax, ay), (cx, cy) = ends
    dx, dy = cx - ax, cy - ay
    s = np.clip(((mx - ax) * dx + (my - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    dist = np.hypot(mx - (ax + s * dx), my - (ay + s * dy))
    dist[~ok] = np.nan
    return dist


def motion_mask(gray_s: np.ndarray, depth_s: np.ndarray, K_s: np.ndarray, E_s: np.ndarray,
                refs: Sequence[tuple], cfg: MotionMaskConfig = MotionMaskConfig()) -> Optional[np.ndarray]:
    """Dynamic score of frame ``s`` (1 dynamic, 0 static) from its older frames ``refs``.

    Args:
        gray_s: (H, W) uint8 image; depth_s: (H, W) its z-depth (window units); K_s: (3, 3); E_s: (4, 4)
            cam_from_world of ``s``.
        refs: (gray_r, K_r, E_r) of other frames of the same camera, nearest first; the first
            ``cfg.max_refs`` are used.

    Returns:
        (H, W) float32 in {0, 1}, or None without a reference.
    """
    import cv2

    refs = list(refs)[: cfg.max_refs]
    if not refs:
        return None
    E_s = np.asarray(E_s, np.float64)
    H, W = depth_s.shape
    size = working_size((H, W), cfg.max_width)
    f = 1.0 if size is None else size[0] / W
    if size is not None:
        gray_s, K_s = fit_to(gray_s, K_s, size)
        depth_s = cv2.resize(depth_s.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
        refs = [(*fit_to(g, K, size), E) for g, K, E in refs]
    votes = np.zeros(depth_s.shape, np.int32)
    seen = np.zeros(depth_s.shape, np.int32)
    for g_r, K_r, E_r in refs:
        ev = flow_motion_evidence(gray_s, g_r, depth_s, K_s, K_r, np.asarray(E_r, np.float64) @ np.linalg.inv(E_s),
                                  cfg)
        valid = np.isfinite(ev)
        seen += valid
        thr = cfg.min_px
        if cfg.rel_k > 0 and valid.any():
            thr = max(thr, cfg.rel_k * float(np.median(ev[valid])))
        votes += valid & (ev > thr)
    mask = ((seen > 0) & (votes == seen)).astype(np.uint8)
    px = int(round(cfg.open_px * f))
    if px > 1:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (px, px))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, k)
    if size is not None:
        mask = cv2.resize(mask, (W, H), interpolation=cv2.INTER_NEAREST)
    return mask.astype(np.float32)
