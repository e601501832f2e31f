"""Dense two-view triangulation along optical flow, and depth refined by it.

Two images of a static scene with a known relative pose fix the depth of every pixel they both see: the second
image is warped into the first by the rotation's homography (what remains is parallax), dense optical flow
(OpenCV's DIS, forward-backward checked) matches each pixel, and the match is triangulated along the first
camera's ray. The pose is either a calibrated rig's extrinsics at one stamp (metric, and moving objects
triangulate like the rest) or two frames of one camera with the window's poses (window units; moving pixels
must be masked out).

:func:`triangulate_flow` gives that depth where the flow is consistent, on the epipolar line and with enough
parallax. :func:`.pose_refine.rig_depth_scale` takes the ratio of its median to the model's; :func:`refine_depth`
corrects the model's depth map with it: the log ratio of triangulated to predicted depth, interpolated over the
image by normalised convolution (a Gaussian of ``sigma_frac`` of the image width), multiplies the prediction.
A small model's depth errors are mostly smooth (a wall tilted, an object too near); the correction keeps the
model's edges and fills the pixels the flow does not triangulate (occlusions, blank walls, the image border)
with the nearby correction, and the model's own depth where there is none near.

Written here: the triangulation is a few lines of linear algebra on the flow (cv2.triangulatePoints would need
the matches twice and has no ray constraint), and the interpolation is two Gaussian blurs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["DEPTH_REFINE", "DepthRefineConfig", "Triangulation", "pose_candidates", "refine_depth", "triangulate_flow"]

#: Values of the node's ``depth.refine`` ("auto": "stereo" for the embedded weights, "none" for a given
#: checkpoint; resolved by :class:`vggt4d_ros.perception.pipeline.Pipeline`).
DEPTH_REFINE = ("auto", "stereo", "none")


@dataclass(frozen=True)
class DepthRefineConfig:
    fb_max_px: float = 1.0  # forward-backward flow disagreement and distance off the epipolar line, working pixels
    min_parallax_px: float = 1.0  # parallax below this does not triangulate (working pixels)
    max_width: int = 320  # flow on images at most this wide; 0 = input size
    sigma_frac: float = 0.02  # the correction's interpolation kernel, fraction of the image width
    min_support: float = 0.005  # Gaussian-weighted share of triangulated pixels below which the model's depth stays
    motion_agree: float = 0.2  # two motion partners' depths must agree within this (log) for a pixel to count
    max_log_ratio: float = 1.0  # triangulations off the model's depth by more than e^this are outliers


@dataclass
class Triangulation:
    """Depth of the first image's pixels at the working size.

    Attributes:
        depth: (h, w) float64 depth along the first camera's rays, NaN where the pixel did not triangulate.
        K: (3, 3) the first camera's intrinsics at the working size.
    """

    depth: np.ndarray
    K: np.ndarray


def triangulate_flow(g0: np.ndarray, g1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_10: np.ndarray,
                     fb_max_px: float = 1.0, min_parallax_px: float = 1.0, max_width: int = 320,
                     reestimate_pose: bool = False) -> Triangulation:
    """Depth of ``g0``'s pixels from its dense match in ``g1``.

    Args:
        g0, g1: (H, W) uint8 grey images (any sizes).
        K0, K1: (3, 3) their intrinsics.
        T_10: (4, 4) camera 1 <- camera 0 (its translation sets the depth's units).
        fb_max_px: forward-backward disagreement and distance off the epipolar line allowed (working pixels).
        min_parallax_px: least parallax left after the rotation's homography (working pixels).
        max_width: images wider than this are matched at this width (aspect kept); the result is at that size.
        reestimate_pose: ``T_10`` is a guess (two frames of one camera with a window's estimated poses): the
            flow's own matches give other poses (:func:`pose_candidates`), and the one under which the most
            matches triangulate is used, the guess included. A pose error bends the whole triangulated depth;
            the dense matches fix the pose far better than a window's poses.
    """
    import cv2

    from .motion_mask import dis_flow, fit_to, working_size

    K0 = np.asarray(K0, np.float64)
    K1 = np.asarray(K1, np.float64)
    size = working_size(g0.shape, max_width)
    if size is not None:
        (g0, K0) = fit_to(g0, K0, size)
        s1 = working_size(g1.shape, max_width)
        if s1 is not None:
            (g1, K1) = fit_to(g1, K1, s1)
    R = np.asarray(T_10, np.float64)[:3, :3]
    tv = np.asarray(T_10, np.float64)[:3, 3]
    H = K1 @ R @ np.linalg.inv(K0)  # camera-0 pixel -> camera-1 pixel at infinite depth
    h, w = g0.shape
    # g1w(p) = g1(H p): camera 1 seen from camera 0's orientation
    g1w = cv2.warpPerspective(g1, H, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
    seen = cv2.warpPerspective(np.full(g1.shape, 255, np.uint8), H, (w, h),
                               flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST) > 0
    f = dis_flow(g0, g1w)
    back = dis_flow(g1w, g0)
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = u + f[..., 0], v + f[..., 1]
    bb = cv2.remap(back, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    fb = np.hypot(f[..., 0] + bb[..., 0], f[..., 1] + bb[..., 1]).reshape(-1)
    ok = (fb < fb_max_px) & seen.reshape(-1) & ((mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)).reshape(-1)
    out = np.full(h * w, np.nan)
    if ok.any():
        one = np.ones(int(ok.sum()))
        q = np.stack([mx.reshape(-1)[ok], my.reshape(-1)[ok], one], 1) @ H.T
        u1 = q[:, :2] / q[:, 2:3]  # the match in camera 1's pixels
        p0 = np.stack([u.reshape(-1)[ok], v.reshape(-1)[ok], one], 1)
        poses = [(R, tv)]
        if reestimate_pose:
            poses += pose_candidates(p0, u1, K0, K1, R, tv, fb_max_px)
        best = None
        for R_, t_ in poses:  # the pose under which the most matches triangulate (lie on their epipolar lines)
            Z, use = _triangulate(p0, u1, K0, K1, R_, t_, fb_max_px, min_parallax_px)
            if best is None or use.sum() > best[1].sum():
                best = (Z, use)
        Z, use = best
        out[np.flatnonzero(ok)[use]] = Z[use]
    return Triangulation(out.reshape(h, w), K0)


def _triangulate(p0: np.ndarray, u1: np.ndarray, K0: np.ndarray, K1: np.ndarray, R: np.ndarray, t: np.ndarray,
                 max_px: float, min_parallax_px: float):
    """Depth along camera 0's rays of matches ``p0`` (N, 3 homogeneous) -> ``u1`` (N, 2) under camera 1 <- 0 =
    (R, t), and which of them are usable: in front of both cameras, within ``max_px`` of the epipolar line,
    with at least ``min_parallax_px`` of parallax."""
    # camera 1 sees Z * a + c for depth Z along the camera-0 ray: a = K1 R K0^-1 [u v 1], c = K1 t
    a = p0 @ (K1 @ R @ np.linalg.inv(K0)).T
    c = K1 @ t
    # u1 = (Z a_x + c_x) / (Z a_z + c_z) (and v): least squares in Z from the two linear equations
    ex = a[:, 0] - u1[:, 0] * a[:, 2]
    ey = a[:, 1] - u1[:, 1] * a[:, 2]
    fx = u1[:, 0] * c[2] - c[0]
    fy = u1[:, 1] * c[2] - c[1]
    Z = (ex * fx + ey * fy) / np.maximum(ex * ex + ey * ey, 1e-12)
    P = Z[:, None] * a + c[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(P[:, :2] / P[:, 2:3] - u1, axis=1)  # off the epipolar line
        parallax = np.linalg.norm(u1 - a[:, :2] / a[:, 2:3], axis=1)
    return Z, (Z > 0) & (P[:, 2] > 0) & (err <= max_px) & (parallax >= min_parallax_px)


def pose_candidates(p0: np.ndarray, u1: np.ndarray, K0: np.ndarray, K1: np.ndarray, R: np.ndarray, t: np.ndarray,
                    px: float, max_matches: int = 4000) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Other estimates of camera 1 <- 0 than the guess (R, t), from pixel matches ``p0`` (N, 3 homogeneous) ->
    ``u1`` (N, 2): the essential matrix's pose (cv2.findEssentialMat + recoverPose on normalised coordinates,
    RANSAC at ``px`` pixels; moving pixels are its outliers), its rotation with the translation's direction
    refitted by least squares over the inliers, and its rotation with the guess's translation (over a short
    baseline the rotation is far better determined than the translation's direction). All keep
    the guess's translation length (the units). Empty when the matches give no pose. The caller keeps whichever
    explains its data best, the guess included."""
    import cv2

    n = len(p0)
    if n < 50 or np.linalg.norm(t) <= 0:
        return []
    pick = np.linspace(0, n - 1, min(n, max_matches)).astype(int)  # evenly over the image, deterministic
    x0 = (p0[pick] @ np.linalg.inv(K0).T)[:, :2]
    x1 = (np.hstack([u1[pick], np.ones((len(pick), 1))]) @ np.linalg.inv(K1).T)[:, :2]
    cv2.setRNGSeed(0)  # RANSAC's samples: the same input gives the same pose (replay == node)
    E, inl = cv2.findEssentialMat(x0, x1, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=px / K0[0, 0])
    if E is None or E.shape != (3, 3) or inl is None or inl.sum() < 0.5 * len(pick):
        return []
    good, R2, t2, _ = cv2.recoverPose(E, x0, x1, np.eye(3), mask=inl.copy())
    if good < 10:
        return []
    L = float(np.linalg.norm(t))
    t2 = t2.reshape(3)
    # the translation's direction again by least squares over every inlier, the rotation fixed: x1 . (t x R x0) = 0
    # is linear in t (the essential matrix's own decomposition leans on its 5-point samples)
    keep = inl.reshape(-1) > 0
    a = np.hstack([x0[keep], np.ones((int(keep.sum()), 1))]) @ R2.T
    b = np.hstack([x1[keep], np.ones((int(keep.sum()), 1))])
    t3 = np.linalg.svd(np.cross(a, b), full_matrices=False)[2][-1]
    t3 = t3 if float(t3 @ t2) >= 0 else -t3
    return [(R2, t2 * L), (R2, t3 * L), (R2, np.asarray(t, np.float64))]


def refine_depth(depth: np.ndarray, tris: Union[Triangulation, Sequence[Triangulation]],
                 cfg: DepthRefineConfig = DepthRefineConfig()) -> Optional[np.ndarray]:
    """``depth`` (H, W) multiplied by the smooth correction toward the triangulations ``tris`` (same camera).

    The correction is in log space and changes the depth's shape only: the median log ratio is taken out, so the
    result keeps ``depth``'s units. Several triangulations (e.g. the rig's, then the camera's own motion, in
    other units) are merged in order: each later one fills the pixels the earlier ones left, after its offset
    to them (median over the pixels both triangulate) is removed. Returns None when fewer triangulated pixels
    than needed to say anything remain.
    """
    import cv2

    if isinstance(tris, Triangulation):
        tris = [tris]
    if not tris:
        return None
    depth = np.asarray(depth, np.float32)
    H, W = depth.shape
    h, w = tris[0].depth.shape
    d = cv2.resize(depth, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != (H, W) else depth
    logd = np.log(np.where(d > 0, d, np.nan).astype(np.float64))
    r = np.full((h, w), np.nan)
    for tri in tris:
        z = tri.depth if tri.depth.shape == (h, w) else cv2.resize(
            tri.depth.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ri = np.log(z) - logd
        ok_i = np.isfinite(ri)
        if ok_i.sum() < 50:
            continue
        have = np.isfinite(r)
        both = have & ok_i
        if both.sum() >= 50:
            ri = ri - float(np.median(ri[both] - r[both]))
        elif have.any():
            ri = ri - (float(np.median(ri[ok_i])) - float(np.median(r[have])))
        fill = ok_i & ~have
        r[fill] = ri[fill]
    ok = np.isfinite(r)
    if ok.sum() < 50:
        return None
    med = float(np.median(r[ok]))
    ok &= np.abs(r - med) <= cfg.max_log_ratio
    if ok.sum() < 50:
        return None
    sigma = max(1.0, cfg.sigma_frac * w)
    num = cv2.GaussianBlur(np.where(ok, r - med, 0.0), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(ok.astype(np.float64), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    # A shape correction: the median ratio (a scale) is taken out, so the depth keeps the window's scale (the
    # metric scale is the scale sources' job); where triangulated pixels are sparse it fades to none.
    a = np.clip(den / cfg.min_support, 0.0, 1.0)
    corr = a * num / np.maximum(den, 1e-12)
    if (h, w) != (H, W):
        corr = cv2.resize(corr.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    return (depth * np.exp(corr)).astype(np.float32)
