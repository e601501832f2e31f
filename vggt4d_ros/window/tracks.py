"""Keypoint detection for tracking: Shi-Tomasi corners (OpenCV ``goodFeaturesToTrack``) spread over a grid.

Used by :class:`vggt4d_ros.perception.keypoints.KeypointTracker` to seed new tracks where tracks are sparse.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = ["detect_features"]


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
