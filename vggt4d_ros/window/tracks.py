"""Stable keypoint track ids across sliding windows.

Per camera, the newest positions of the live tracks of one window become the query points of the
next window (all in the frame of that newest step). The tracker's outputs for query ``i`` continue
track ``ids[i]``; tracks invisible for more than ``max_invisible_steps`` steps, with low confidence,
or outside the image are dropped; new points are detected (Shi-Tomasi, OpenCV
``goodFeaturesToTrack``, spread over a grid) where tracks are sparse. Ids come from one counter and
are never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["TrackQueries", "TrackUpdate", "TrackIdManager", "detect_features"]


@dataclass
class TrackQueries:
    """Query points for the next window of one camera.

    ids (N,) uint64, points (N, 2) float32 pixels (u, v), ages (N,), step_id: the step the points
    are in (None before the first update: detect in the window's first frame instead).
    """

    ids: np.ndarray
    points: np.ndarray
    ages: np.ndarray
    step_id: Optional[int]


@dataclass
class TrackUpdate:
    """Tracks of one camera after a window (at its newest step).

    ids (N,), points (N, 2), ages (N,) frames tracked (1 on the first frame), confidence (N,),
    visible (N,) bool at the newest step; dropped_ids / new_ids: ids that died / were born.
    """

    ids: np.ndarray
    points: np.ndarray
    ages: np.ndarray
    confidence: np.ndarray
    visible: np.ndarray
    dropped_ids: np.ndarray
    new_ids: np.ndarray
    step_id: int


def detect_features(
    image: np.ndarray,
    max_count: int,
    exclude: Optional[np.ndarray] = None,
    min_distance: float = 10.0,
    quality_level: float = 0.01,
    border: int = 4,
    grid: Tuple[int, int] = (4, 4),
) -> np.ndarray:
    """Shi-Tomasi corners spread over a grid, away from ``exclude`` points.

    Args:
        image: HxW or HxWx3, uint8 or float in [0, 1].
        max_count: maximum corners returned.
        exclude: (M, 2) pixel positions around which (radius ``min_distance``) nothing is detected.
        grid: (cols, rows); each cell keeps at most ceil(max_count / cells) of the strongest corners.
    Returns:
        (K, 2) float32 (u, v), strongest first; each grid cell's budget is served before any extra.
    """
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.shape[2] == 3 else img[..., 0]
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    H, W = img.shape
    if max_count <= 0:
        return np.zeros((0, 2), np.float32)
    mask = np.zeros((H, W), np.uint8)
    b = int(border)
    mask[b : H - b, b : W - b] = 255
    if exclude is not None and len(exclude):
        e = np.round(np.asarray(exclude)).astype(np.int64)
        ok = (e[:, 0] >= 0) & (e[:, 0] < W) & (e[:, 1] >= 0) & (e[:, 1] < H)
        seeds = np.zeros((H, W), np.uint8)
        seeds[e[ok, 1], e[ok, 0]] = 255
        r = max(int(np.ceil(min_distance)), 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask[cv2.dilate(seeds, kernel) > 0] = 0
    cells = grid[0] * grid[1]
    per_cell = int(np.ceil(max_count / cells))
    pts = cv2.goodFeaturesToTrack(img, maxCorners=max_count * 3, qualityLevel=quality_level,
                                  minDistance=float(min_distance), mask=mask)
    if pts is None:
        return np.zeros((0, 2), np.float32)
    pts = pts.reshape(-1, 2)  # sorted by strength
    cell = (np.minimum((pts[:, 1] * grid[1] / H).astype(int), grid[1] - 1) * grid[0]
            + np.minimum((pts[:, 0] * grid[0] / W).astype(int), grid[0] - 1))
    # Rank of each corner inside its cell (corners are already strongest-first).
    order = np.argsort(cell, kind="stable")
    sorted_cells = cell[order]
    first = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.empty(len(pts), int)
    rank[order] = np.arange(len(pts)) - first
    # Grid-capped corners first; leftover budget goes to the strongest remaining ones.
    keep = np.concatenate([np.nonzero(rank < per_cell)[0], np.nonzero(rank >= per_cell)[0]])[:max_count]
    return pts[np.sort(keep)].astype(np.float32)


class _CameraTracks:
    def __init__(self) -> None:
        self.ids = np.zeros(0, np.uint64)
        self.points = np.zeros((0, 2), np.float32)
        self.ages = np.zeros(0, np.int64)
        self.invisible = np.zeros(0, np.int64)
        self.step_id: Optional[int] = None


class TrackIdManager:
    """Keeps stable, never-reused integer ids for tracked keypoints, per camera.

    Args:
        camera_names: cameras (ids are unique across all of them).
        max_tracks: live tracks per camera (bounded).
        max_invisible_steps: drop a track invisible for more than this many consecutive steps.
        min_confidence: drop a track whose mean confidence over its visible new steps is below this.
        visibility_threshold: vis >= threshold counts as visible.
        border: drop / do not detect within this many pixels of the image edge.
        min_distance: minimum spacing of new detections from each other and from live tracks.
    """

    def __init__(
        self,
        camera_names: Sequence[str],
        max_tracks: int = 256,
        max_invisible_steps: int = 2,
        min_confidence: float = 0.3,
        visibility_threshold: float = 0.5,
        border: int = 4,
        min_distance: float = 10.0,
        quality_level: float = 0.01,
    ) -> None:
        self.cameras = tuple(camera_names)
        self.max_tracks = int(max_tracks)
        self.max_invisible_steps = int(max_invisible_steps)
        self.min_confidence = float(min_confidence)
        self.visibility_threshold = float(visibility_threshold)
        self.border = int(border)
        self.min_distance = float(min_distance)
        self.quality_level = float(quality_level)
        self._next_id = 1
        self._cams: Dict[str, _CameraTracks] = {c: _CameraTracks() for c in self.cameras}

    def _new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.uint64)
        self._next_id += n
        return ids

    def num_live(self, camera: str) -> int:
        return len(self._cams[camera].ids)

    def reset(self, camera: Optional[str] = None) -> None:
        """Drop live tracks (ids are still never reused)."""
        for c in [camera] if camera is not None else self.cameras:
            self._cams[c] = _CameraTracks()

    def queries(self, camera: str) -> TrackQueries:
        st = self._cams[camera]
        return TrackQueries(st.ids.copy(), st.points.copy(), st.ages.copy(), st.step_id)

    def seed(self, camera: str, image: np.ndarray, step_id: int) -> TrackQueries:
        """Start tracks on a camera with no live tracks (first window): detect in ``image``."""
        st = self._cams[camera]
        pts = detect_features(image, self.max_tracks - len(st.ids), st.points, self.min_distance,
                              self.quality_level, self.border)
        st.ids = np.concatenate([st.ids, self._new_ids(len(pts))])
        st.points = np.concatenate([st.points, pts]).astype(np.float32)
        st.ages = np.concatenate([st.ages, np.ones(len(pts), np.int64)])
        st.invisible = np.concatenate([st.invisible, np.zeros(len(pts), np.int64)])
        st.step_id = int(step_id)
        return self.queries(camera)

    def update(
        self,
        camera: str,
        step_ids: Sequence[int],
        tracks: np.ndarray,
        visibility: np.ndarray,
        confidence: np.ndarray,
        image_size: Tuple[int, int],
        image: Optional[np.ndarray] = None,
    ) -> TrackUpdate:
        """Apply one window's tracker output for this camera's queries.

        Args:
            step_ids: (T,) the window's step ids.
            tracks: (T, N, 2) pixel positions of the N queries (in query order) at every step.
            visibility, confidence: (T, N) in [0, 1].
            image_size: (H, W).
            image: newest frame of this camera, for detecting new points (None: no detection).
        """
        st = self._cams[camera]
        ids_w = np.asarray(step_ids, dtype=np.int64)
        tracks = np.asarray(tracks, dtype=np.float32)
        vis = np.asarray(visibility, dtype=np.float32) >= self.visibility_threshold
        conf = np.asarray(confidence, dtype=np.float32)
        N = len(st.ids)
        if tracks.shape[:2] != (len(ids_w), N):
            raise ValueError(f"tracks must be (T={len(ids_w)}, N={N}, 2); got {tracks.shape}")
        H, W = image_size
        # Steps after the query frame are new information.
        new = ids_w > st.step_id if st.step_id is not None else np.ones(len(ids_w), bool)
        n_new = int(new.sum())
        vis_new, conf_new = vis[new], conf[new]  # (n_new, N)
        # Trailing invisible run over the new steps (vectorised).
        seen = vis_new.any(0)
        last_seen = n_new - 1 - np.argmax(vis_new[::-1], axis=0)
        trailing = np.where(seen, n_new - 1 - last_seen, st.invisible + n_new)
        mean_conf = np.where(seen, (conf_new * vis_new).sum(0) / np.maximum(vis_new.sum(0), 1), 0.0)
        pos = tracks[-1]
        b = self.border
        inside = (pos[:, 0] >= b) & (pos[:, 0] <= W - 1 - b) & (pos[:, 1] >= b) & (pos[:, 1] <= H - 1 - b)
        inside &= np.isfinite(pos).all(-1)
        alive = inside & (trailing <= self.max_invisible_steps) & (~seen | (mean_conf >= self.min_confidence))
        dropped = st.ids[~alive]
        st.ids = st.ids[alive]
        st.points = pos[alive]
        st.ages = st.ages[alive] + n_new
        st.invisible = trailing[alive]
        st.step_id = int(ids_w[-1])
        out_conf = conf[-1][alive]
        out_vis = vis[-1][alive]
        born = np.zeros(0, np.uint64)
        if image is not None and len(st.ids) < self.max_tracks:
            pts = detect_features(image, self.max_tracks - len(st.ids), st.points, self.min_distance,
                                  self.quality_level, self.border)
            born = self._new_ids(len(pts))
            st.ids = np.concatenate([st.ids, born])
            st.points = np.concatenate([st.points, pts]).astype(np.float32)
            st.ages = np.concatenate([st.ages, np.ones(len(pts), np.int64)])
            st.invisible = np.concatenate([st.invisible, np.zeros(len(pts), np.int64)])
            out_conf = np.concatenate([out_conf, np.ones(len(pts), np.float32)])
            out_vis = np.concatenate([out_vis, np.ones(len(pts), bool)])
        return TrackUpdate(st.ids.copy(), st.points.copy(), st.ages.copy(), out_conf, out_vis,
                           dropped, born, st.step_id)
