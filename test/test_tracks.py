"""Keypoint detector (seeds KeypointTracker): spreads points over the image, keeps away from existing ones."""

import numpy as np

from vggt4d_ros.window.tracks import detect_features

H, W = 120, 160


def _image(seed=0):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, size=(H // 10, W // 10)).astype(np.uint8) * 255
    return np.kron(blocks, np.ones((10, 10), np.uint8))


def test_detector_grid_and_exclusion():
    img = _image()
    pts = detect_features(img, 40, min_distance=8)
    assert 20 <= len(pts) <= 40
    assert (pts[:, 0] >= 4).all() and (pts[:, 0] <= W - 5).all()
    # Spread: points in at least 12 of the 16 grid cells.
    cells = set(zip((pts[:, 0] * 4 // W).astype(int), (pts[:, 1] * 4 // H).astype(int)))
    assert len(cells) >= 12
    more = detect_features(img, 40, exclude=pts, min_distance=8)
    d = np.linalg.norm(more[:, None] - pts[None], axis=-1)
    assert d.min() > 8 - 1.5
