"""TrackIdManager: ids stable across windows, never reused, bounded; detector spreads points."""

import numpy as np

from vggt4d_ros.window.tracks import TrackIdManager, detect_features

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


def test_ids_stable_across_windows_and_never_reused():
    T, stride = 4, 2
    mgr = TrackIdManager(["cam0", "cam1"], max_tracks=30, max_invisible_steps=1, min_distance=8)
    q = mgr.seed("cam0", _image(), step_id=0)
    assert q.step_id == 0 and len(q.ids) == 30 and (q.ages == 1).all()
    all_ids = set(q.ids.tolist())
    history = {int(i): 1 for i in q.ids}
    first_ids = q.ids.copy()
    for w in range(5):
        step_ids = np.arange(w * stride, w * stride + T)
        q = mgr.queries("cam0")
        n = len(q.ids)
        k_new = int((step_ids > q.step_id).sum())
        assert k_new == (T if w == 0 else stride) - (1 if w == 0 else 0)
        # Tracker output: every point moves 1 px/step in u towards the image centre.
        dt = (step_ids - q.step_id).astype(np.float32)
        direction = np.where(q.points[:, 0] < W / 2, 1.0, -1.0).astype(np.float32)
        tracks = np.repeat(q.points[None], T, axis=0)
        tracks[..., 0] += dt[:, None] * direction[None]
        vis = np.ones((T, n))
        conf = np.full((T, n), 0.9)
        vis[-2:, 0] = 0.0  # query 0 invisible for the last 2 steps -> dies (K = 1)
        conf[:, 1] = 0.1  # query 1 low confidence -> dies
        tracks[-1, 2, 0] = W + 5  # query 2 leaves the image -> dies
        up = mgr.update("cam0", step_ids, tracks, vis, conf, (H, W), image=_image())
        assert set(up.dropped_ids.tolist()) == set(q.ids[:3].tolist())
        survivors = q.ids[3:]
        assert np.array_equal(up.ids[: len(survivors)], survivors)  # same ids, same order
        assert np.allclose(up.points[: len(survivors)], tracks[-1, 3:])
        for i, a in zip(up.ids[: len(survivors)], up.ages[: len(survivors)]):
            history[int(i)] += k_new
            assert a == history[int(i)]
        # New detections fill up to max_tracks, with fresh ids only.
        assert len(up.ids) <= 30 and len(up.new_ids) >= 3
        assert not (set(up.new_ids.tolist()) & all_ids)
        all_ids |= set(up.new_ids.tolist())
        for i in up.new_ids:
            history[int(i)] = 1
        assert up.step_id == step_ids[-1]
    # Some first-window tracks survived five windows with their original ids.
    assert len(set(first_ids.tolist()) & set(mgr.queries("cam0").ids.tolist())) >= 10
    # Ids are unique across cameras too, and a reset does not recycle them.
    q1 = mgr.seed("cam1", _image(1), step_id=0)
    assert not (set(q1.ids.tolist()) & all_ids)
    mgr.reset()
    q2 = mgr.seed("cam0", _image(), step_id=100)
    assert min(q2.ids.tolist()) > max(all_ids | set(q1.ids.tolist()))
