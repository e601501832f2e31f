"""Keypoints with ids that stay stable across sliding windows (no ROS).

The track head follows query points given in the window's reference frame (camera 0 at the oldest
step) through every frame of the window, other cameras included, so one id names one physical
point in every camera. Across windows the overlap carries ids: the previous window already
predicted where each live track is at the new window's first step, and those positions become the
new queries. Tracks lost in camera 0 for ``max_invisible_steps`` steps, or that leave the image, die;
new points are detected (Shi-Tomasi, :func:`vggt4d_ros.window.tracks.detect_features`) where tracks
are sparse in the reference frame. Ids come from one counter and are never reused.

Geometric check (``geometry_check``): a query pixel and the predicted depth there give a 3D point;
projected with each frame's predicted pose and intrinsics it gives where a STATIC point must be
(:func:`static_projection`). For queries the dynamic mask calls static (probability below
``mask_threshold`` at the query pixel; every query when the window has no mask), the distance between
that position and the track head's is the reprojection error. ``"off"``: computed, not used.
``"reject"``: an observation whose error exceeds ``max_reprojection_px`` is marked not visible, counts
towards ``max_invisible_steps`` like an invisible one, and is never carried into the next window (a
track whose carried position failed dies). ``"correct"``: static tracks take the geometric position
(visible when inside the image and not behind a nearer predicted surface) and 3D point, dynamic tracks
keep the head's; with no track head output, static tracks are still produced this way.

Bounded: live tracks <= ``max_count``; positions are kept for the steps of the last window only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vggt4d_ros.frontend.frames import Frame
from vggt4d_ros.window.tracks import detect_features

__all__ = ["GEOMETRY_CHECKS", "KeypointSet", "KeypointTracker", "static_projection"]

#: Values of ``KeypointTracker(geometry_check=...)`` / the node's ``keypoints.geometry_check``.
GEOMETRY_CHECKS = ("off", "reject", "correct")


@dataclass
class KeypointSet:
    """One frame's tracked keypoints (what the pipeline outputs per camera)."""

    ids: np.ndarray  # (N,) uint64
    uv: np.ndarray  # (N, 2) float32 input pixels
    conf: np.ndarray  # (N,) float32
    visible: np.ndarray  # (N,) bool
    age: np.ndarray  # (N,) uint32
    xyz: np.ndarray  # (N, 3) float32 optical frame, NaN unknown
    reprojection_px: Optional[np.ndarray] = None  # (N,) float32 geometric check error, NaN not checked


def static_projection(frames: Sequence[Any], queries: np.ndarray, ref_index: int = 0
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Where static points seen at ``queries`` in frame ``ref_index`` must appear in every frame.

    Args:
        frames: S frame predictions with ``depth`` (H, W), ``intrinsics`` (3, 3), ``cam_from_world`` (4, 4)
            (:class:`vggt4d_ros.inference.types.FramePrediction`).
        queries: (N, 2) pixels (u, v) in frame ``ref_index``.
        ref_index: the frame the queries are in.

    Returns:
        uv (S, N, 2) float64 projected pixels and points (S, N, 3) float64 in each frame's optical frame
        (window units); NaN where the depth at the query is invalid, and uv NaN where the point is not in
        front of the camera (z <= 0).
    """
    q = np.asarray(queries, np.float64).reshape(-1, 2)
    f0 = frames[ref_index]
    h, w = f0.depth.shape
    ui = np.clip(np.round(q[:, 0]).astype(np.int64), 0, w - 1)
    vi = np.clip(np.round(q[:, 1]).astype(np.int64), 0, h - 1)
    z = f0.depth[vi, ui].astype(np.float64)  # nearest pixel: no blending across depth edges at corners
    z = np.where(np.isfinite(z) & (z > 0), z, np.nan)
    K0 = np.asarray(f0.intrinsics, np.float64)
    x_cam0 = np.stack([(q[:, 0] - K0[0, 2]) / K0[0, 0] * z, (q[:, 1] - K0[1, 2]) / K0[1, 1] * z, z], -1)
    E0 = np.asarray(f0.cam_from_world, np.float64)
    x_world = (x_cam0 - E0[:3, 3]) @ E0[:3, :3]  # R^T (x - t)
    E = np.stack([np.asarray(f.cam_from_world, np.float64) for f in frames])  # (S, 4, 4)
    K = np.stack([np.asarray(f.intrinsics, np.float64) for f in frames])  # (S, 3, 3)
    pts = np.einsum("sij,nj->sni", E[:, :3, :3], x_world) + E[:, None, :3, 3]  # (S, N, 3)
    pix = np.einsum("sij,snj->sni", K, pts)
    with np.errstate(invalid="ignore", divide="ignore"):
        uv = pix[..., :2] / pix[..., 2:3]
    uv[~(pts[..., 2] > 0)] = np.nan
    return uv, pts


class KeypointTracker:
    """Ids carried through window overlaps, with an optional geometric quality check (module docstring).

    Args:
        max_count: live tracks at most.
        max_invisible_steps: camera-0 steps a track may stay invisible (or fail the check) before it dies.
        visibility_threshold: track-head visibility at or above which a point is visible.
        min_distance, border: detector spacing and image border (pixels).
        geometry_check: one of :data:`GEOMETRY_CHECKS`.
        max_reprojection_px: reprojection error (pixels) above which a static observation fails the check.
        mask_threshold: dynamic probability at the query pixel at or above which a track is dynamic.
        occlusion_tolerance: a corrected static point counts as occluded when the predicted depth at its
            projection is below ``(1 - occlusion_tolerance)`` times its own depth.
    """

    def __init__(self, max_count: int = 64, max_invisible_steps: int = 2, visibility_threshold: float = 0.5,
                 min_distance: float = 8.0, border: int = 4, geometry_check: str = "off",
                 max_reprojection_px: float = 8.0, mask_threshold: float = 0.5,
                 occlusion_tolerance: float = 0.15) -> None:
        self.max_count = int(max_count)
        self.max_invisible = int(max_invisible_steps)
        self.vis_thr = float(visibility_threshold)
        self.min_distance = float(min_distance)
        self.border = int(border)
        self.geometry_check = "off"
        self.max_reprojection_px = 8.0
        self.configure_check(geometry_check, max_reprojection_px, mask_threshold)
        self.occlusion_tolerance = float(occlusion_tolerance)
        self._next_id = 1
        self.ids = np.zeros(0, np.uint64)
        self.ages = np.zeros(0, np.int64)
        self.invisible = np.zeros(0, np.int64)
        self._pos: Dict[int, np.ndarray] = {}  # step id -> (N, 2) camera-0 positions of the live tracks
        self._last_step: Optional[int] = None
        self._query_ids = self.ids
        self._query_pts = np.zeros((0, 2), np.float32)
        self._queried = False  # this window's queries were handed to the model
        #: Reprojection error (pixels) per output frame s, aligned with that frame's KeypointSet; NaN where
        #: not checked (dynamic track, no valid depth at the query, no track head output).
        self.last_reprojection_px: Dict[int, np.ndarray] = {}
        #: Running counts: static observations checked / failing (new steps, every camera), tracks that
        #: died because of the check ("reject"), observations moved to the geometric position ("correct").
        self.stats = {"checked": 0, "failed": 0, "dropped_by_check": 0, "corrected": 0}

    def configure_check(self, geometry_check: str, max_reprojection_px: float, mask_threshold: float) -> None:
        """Set the geometric check (may change between windows)."""
        if geometry_check not in GEOMETRY_CHECKS:
            raise ValueError(f"geometry_check must be one of {list(GEOMETRY_CHECKS)}, got {geometry_check!r}")
        if not max_reprojection_px > 0:
            raise ValueError(f"max_reprojection_px must be > 0, got {max_reprojection_px!r}")
        self.geometry_check = geometry_check
        self.max_reprojection_px = float(max_reprojection_px)
        self.mask_threshold = float(mask_threshold)

    def reset(self) -> None:
        self.ids = np.zeros(0, np.uint64)
        self.ages = np.zeros(0, np.int64)
        self.invisible = np.zeros(0, np.int64)
        self._pos = {}
        self._last_step = None

    # ------------------------------------------------------------------
    def queries(self, win: Any, ref: Tuple) -> Optional[np.ndarray]:
        """(N, 2) query pixels in the reference frame (camera 0, oldest step) of ``win``."""
        self._queried = False
        if ref[0] != "first":
            return None  # queries must be in the reference frame, which for "newest" holds no known tracks
        first = win.step_ids[0]
        carried = self._pos.get(first)
        if carried is None:
            self.reset()
            pts = np.zeros((0, 2), np.float32)
        else:
            pts = carried
            ok = np.isfinite(pts).all(-1)  # a position that failed the check is never carried
            if not ok.all():
                self.stats["dropped_by_check"] += int((~ok).sum())
                pts, self.ids, self.ages, self.invisible = pts[ok], self.ids[ok], self.ages[ok], self.invisible[ok]
        frame = win.frames[0]
        if frame is None:
            return None
        img = Frame.of(frame).rgb
        need = self.max_count - len(pts)
        if need > 0:
            new = detect_features(img, need, pts if len(pts) else None, self.min_distance, 0.01, self.border)
            if len(new):
                n = len(new)
                self.ids = np.concatenate([self.ids, np.arange(self._next_id, self._next_id + n, dtype=np.uint64)])
                self._next_id += n
                self.ages = np.concatenate([self.ages, np.zeros(n, np.int64)])
                self.invisible = np.concatenate([self.invisible, np.zeros(n, np.int64)])
                pts = np.concatenate([pts, new.astype(np.float32)])
        self._query_ids = self.ids.copy()
        self._query_pts = np.asarray(pts, np.float32).reshape(-1, 2)
        self._queried = len(pts) > 0
        return self._query_pts.copy() if len(pts) else None

    # ------------------------------------------------------------------
    def _check(self, pred: Any, tr: np.ndarray, S: int, n: int):
        """Geometric positions and reprojection errors: (geo_uv (S, N, 2), geo_xyz (S, N, 3), static (N,),
        err (S, N)); err NaN where not checked, inf where the head is in the image but the point is behind
        the camera."""
        ref = int(getattr(pred, "reference_index", 0))
        geo_uv, geo_xyz = static_projection(pred.frames, self._query_pts, ref)
        q = self._query_pts
        f0 = pred.frames[ref]
        if f0.depth is None:
            raise ValueError(f"the geometric check needs the depth of the query frame {ref}")
        h, w = f0.depth.shape
        static = np.isfinite(geo_xyz[0]).all(-1)
        if f0.dynamic_mask is not None:
            ui = np.clip(np.round(q[:, 0]).astype(np.int64), 0, w - 1)
            vi = np.clip(np.round(q[:, 1]).astype(np.int64), 0, h - 1)
            static &= ~(f0.dynamic_mask[vi, ui] >= self.mask_threshold)
        err = np.linalg.norm(tr - geo_uv, axis=-1)  # (S, N), NaN where either is unknown
        behind = static[None] & np.isfinite(tr).all(-1) & ~np.isfinite(geo_uv).all(-1)
        err[behind] = np.inf
        err[:, ~static] = np.nan
        return geo_uv, geo_xyz, static, err

    def update(self, pred: Any, win: Any, ref: Tuple, new_t: List[int], scale: float = 1.0
               ) -> Dict[int, "Any"]:
        """Apply the window's track predictions; returns ``{frame index s: KeypointSet}`` for new steps."""

        V, T = win.num_views, win.num_steps
        S = V * T
        self.last_reprojection_px = {}
        head = pred.frames[0].tracks is not None
        mode = self.geometry_check
        if not self._queried or len(self._query_ids) == 0 or (not head and mode != "correct"):
            return {}
        n = len(self._query_ids)
        if head:
            tr = np.stack([f.tracks for f in pred.frames]).astype(np.float64).reshape(S, n, 2)
            vis = np.stack([f.track_vis for f in pred.frames]).reshape(S, n) >= self.vis_thr
            conf = np.stack([f.track_conf if f.track_conf is not None else np.ones(n, np.float32)
                             for f in pred.frames]).reshape(S, n)
        else:
            tr = np.full((S, n, 2), np.nan)
            vis = np.zeros((S, n), bool)
            conf = np.ones((S, n), np.float32)
        geo_uv, geo_xyz, static, err = self._check(pred, tr, S, n)
        fail = np.zeros((S, n), bool)
        corrected = np.zeros((S, n), bool)
        if mode == "reject":
            fail = err > self.max_reprojection_px  # NaN (not checked) compares False
        elif mode == "correct":
            corrected = np.broadcast_to(static[None], (S, n)) & np.isfinite(geo_uv).all(-1)
            tr = np.where(corrected[..., None], geo_uv, tr)
            geo_vis = np.zeros((S, n), bool)
            for s in range(S):  # occlusion test per frame: one gather per frame, vectorised over points
                d = pred.frames[s].depth
                if d is None:  # no dense output (a frame that is not output): unknown depth, like NaN
                    geo_vis[s] = True
                    continue
                hh, ww = d.shape
                ui = np.clip(np.round(np.nan_to_num(geo_uv[s, :, 0])).astype(np.int64), 0, ww - 1)
                vi = np.clip(np.round(np.nan_to_num(geo_uv[s, :, 1])).astype(np.int64), 0, hh - 1)
                dz = d[vi, ui]
                geo_vis[s] = ~(dz < (1.0 - self.occlusion_tolerance) * geo_xyz[s, :, 2])  # NaN depth: visible
            vis = np.where(corrected, geo_vis, vis)
        tr = tr.reshape(T, V, n, 2)
        vis = (vis & ~fail).reshape(T, V, n)
        conf = conf.reshape(T, V, n)
        err_tv = err.reshape(T, V, n)
        fail = fail.reshape(T, V, n)
        corrected = corrected.reshape(T, V, n)
        geo_xyz = geo_xyz.reshape(T, V, n, 3)
        out: Dict[int, KeypointSet] = {}
        ages = self.ages.copy()
        for t in new_t:
            ages = ages + 1
            for v in range(V):
                s = t * V + v
                fp = pred.frames[s]
                h, w = fp.image_hw
                uv = tr[t, v]
                inside = np.isfinite(uv).all(-1) & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & \
                    (uv[:, 1] <= h - 1)
                visible = vis[t, v] & inside
                xyz = np.full((n, 3), np.nan, np.float32)
                if inside.any():
                    ui = np.clip(np.round(np.nan_to_num(uv[:, 0])).astype(int), 0, w - 1)
                    vi = np.clip(np.round(np.nan_to_num(uv[:, 1])).astype(int), 0, h - 1)
                    z = fp.depth[vi, ui].astype(np.float64) * scale
                    K = fp.intrinsics
                    xyz[:, 0] = (uv[:, 0] - K[0, 2]) / K[0, 0] * z
                    xyz[:, 1] = (uv[:, 1] - K[1, 2]) / K[1, 1] * z
                    xyz[:, 2] = z
                    c = corrected[t, v]
                    xyz[c] = (geo_xyz[t, v][c] * scale).astype(np.float32)  # the static point itself
                    xyz[~visible] = np.nan
                sel = inside
                checked = np.isfinite(err_tv[t, v]) & inside
                self.stats["checked"] += int(checked.sum())
                self.stats["failed"] += int((checked & (err_tv[t, v] > self.max_reprojection_px)).sum())
                self.stats["corrected"] += int((corrected[t, v] & inside).sum())
                self.last_reprojection_px[s] = err_tv[t, v][sel].astype(np.float32)
                out[s] = KeypointSet(ids=self._query_ids[sel], uv=uv[sel].astype(np.float32),
                                     conf=conf[t, v][sel].astype(np.float32), visible=visible[sel],
                                     age=ages[sel].astype(np.uint32), xyz=xyz[sel],
                                     reprojection_px=self.last_reprojection_px[s])
        # Track life in camera 0 over the new steps; keep positions of every step for the next window.
        h0, w0 = pred.frames[0].image_hw
        b = self.border
        last = tr[-1, 0]
        inside0 = np.isfinite(last).all(-1) & (last[:, 0] >= b) & (last[:, 0] <= w0 - 1 - b) & \
            (last[:, 1] >= b) & (last[:, 1] <= h0 - 1 - b)
        invisible = self.invisible.copy()
        failed_new = np.zeros(n, bool)
        for t in new_t:
            invisible = np.where(vis[t, 0], 0, invisible + 1)
            failed_new |= fail[t, 0]
        alive = inside0 & (invisible <= self.max_invisible)
        self.stats["dropped_by_check"] += int((inside0 & ~alive & failed_new).sum())
        self.ids = self._query_ids[alive]
        self.ages = ages[alive]
        self.invisible = invisible[alive]
        carry = np.where(fail[:, 0, :, None], np.nan, tr[:, 0])  # failed positions are not carried
        self._pos = {int(win.step_ids[t]): carry[t][alive].astype(np.float32) for t in range(T)}
        return out
