"""Keypoints with ids that stay stable across sliding windows (no ROS).

The track head follows query points given in the window's reference frame (camera 0 at the oldest
step) through every frame of the window, other cameras included, so one id names one physical
point in every camera. Across windows the overlap carries ids: the previous window already
predicted where each live track is at the new window's first step, and those positions become the
new queries. Tracks lost in camera 0 for ``max_invisible_steps`` steps, or that leave the image, die;
new points are detected (Shi-Tomasi, :func:`vggt4d_ros.window.tracks.detect_features`) where tracks
are sparse in the reference frame. Ids come from one counter and are never reused.

Bounded: live tracks <= ``max_count``; positions are kept for the steps of the last window only.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from vggt4d_ros.window.tracks import detect_features

__all__ = ["KeypointTracker"]


class KeypointTracker:
    def __init__(self, max_count: int = 64, max_invisible_steps: int = 2, visibility_threshold: float = 0.5,
                 min_distance: float = 8.0, border: int = 4) -> None:
        self.max_count = int(max_count)
        self.max_invisible = int(max_invisible_steps)
        self.vis_thr = float(visibility_threshold)
        self.min_distance = float(min_distance)
        self.border = int(border)
        self._next_id = 1
        self.ids = np.zeros(0, np.uint64)
        self.ages = np.zeros(0, np.int64)
        self.invisible = np.zeros(0, np.int64)
        self._pos: Dict[int, np.ndarray] = {}  # step id -> (N, 2) camera-0 positions of the live tracks
        self._last_step: Optional[int] = None
        self._query_ids = self.ids

    def reset(self) -> None:
        self.ids = np.zeros(0, np.uint64)
        self.ages = np.zeros(0, np.int64)
        self.invisible = np.zeros(0, np.int64)
        self._pos = {}
        self._last_step = None

    # ------------------------------------------------------------------
    def queries(self, win: Any, ref: Tuple) -> Optional[np.ndarray]:
        """(N, 2) query pixels in the reference frame (camera 0, oldest step) of ``win``."""
        if ref[0] != "first":
            return None  # queries must be in the reference frame, which for "newest" holds no known tracks
        first = win.step_ids[0]
        carried = self._pos.get(first)
        if carried is None:
            self.reset()
            pts = np.zeros((0, 2), np.float32)
        else:
            pts = carried
        frame = win.frames[0]
        if frame is None:
            return None
        img = frame["rgb"]
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
        return pts.astype(np.float32) if len(pts) else None

    def update(self, pred: Any, win: Any, ref: Tuple, new_t: List[int], scale: float = 1.0
               ) -> Dict[int, "Any"]:
        """Apply the window's track predictions; returns ``{frame index s: KeypointSet}`` for new steps."""
        from vggt4d_ros.pipeline import KeypointSet

        V, T = win.num_views, win.num_steps
        if pred.frames[0].tracks is None or len(self._query_ids) == 0:
            return {}
        n = len(self._query_ids)
        tr = np.stack([f.tracks for f in pred.frames]).reshape(T, V, n, 2)
        vis = np.stack([f.track_vis for f in pred.frames]).reshape(T, V, n) >= self.vis_thr
        conf = np.stack([f.track_conf if f.track_conf is not None else np.ones(n, np.float32)
                         for f in pred.frames]).reshape(T, V, n)
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
                    ui = np.clip(np.round(uv[:, 0]).astype(int), 0, w - 1)
                    vi = np.clip(np.round(uv[:, 1]).astype(int), 0, h - 1)
                    z = fp.depth[vi, ui].astype(np.float64) * scale
                    K = fp.intrinsics
                    xyz[:, 0] = (uv[:, 0] - K[0, 2]) / K[0, 0] * z
                    xyz[:, 1] = (uv[:, 1] - K[1, 2]) / K[1, 1] * z
                    xyz[:, 2] = z
                    xyz[~visible] = np.nan
                sel = inside
                out[s] = KeypointSet(ids=self._query_ids[sel], uv=uv[sel].astype(np.float32),
                                     conf=conf[t, v][sel].astype(np.float32), visible=visible[sel],
                                     age=ages[sel].astype(np.uint32), xyz=xyz[sel])
        # Track life in camera 0 over the new steps; keep positions of every step for the next window.
        h0, w0 = pred.frames[0].image_hw
        b = self.border
        last = tr[-1, 0]
        inside0 = np.isfinite(last).all(-1) & (last[:, 0] >= b) & (last[:, 0] <= w0 - 1 - b) & \
            (last[:, 1] >= b) & (last[:, 1] <= h0 - 1 - b)
        invisible = self.invisible.copy()
        for t in new_t:
            invisible = np.where(vis[t, 0], 0, invisible + 1)
        alive = inside0 & (invisible <= self.max_invisible)
        self.ids = self._query_ids[alive]
        self.ages = ages[alive]
        self.invisible = invisible[alive]
        self._pos = {int(win.step_ids[t]): tr[t, 0][alive].astype(np.float32) for t in range(T)}
        return out
