"""MultiCameraSynchronizer: jitter, missing/stopped cameras, reordering, duplicates, resets."""

import numpy as np
import pytest

from vggt4d_ros.window.sync import CameraInfoCache, MultiCameraSynchronizer

CAMS = ("front", "left", "right")


def _feed(sync, msgs):
    steps, resets = [], []
    for i, (cam, stamp) in enumerate(msgs):
        out = sync.add(cam, stamp, (cam, stamp), now=i * 0.001)
        steps += out.steps
        if out.reset_reason:
            resets.append(out.reset_reason)
    return steps, resets


def _jittered(n, rate=10.0, jitter=0.004, cams=CAMS, seed=0, t0=100.0):
    rng = np.random.default_rng(seed)
    msgs = []
    for k in range(n):
        for c in cams:
            msgs.append((c, t0 + k / rate + rng.uniform(-jitter, jitter)))
    return msgs


def test_jittered_stamps_all_matched_in_order():
    msgs = _jittered(40)
    rng = np.random.default_rng(1)
    # Interleave cameras arbitrarily within a small arrival delay (cross-camera reordering).
    order = np.argsort(np.array([s for _, s in msgs]) + rng.uniform(0, 0.05, len(msgs)))
    msgs = [msgs[i] for i in order]
    sync = MultiCameraSynchronizer(CAMS, tolerance_s=0.01)
    steps, resets = _feed(sync, msgs)
    assert not resets
    # All but possibly the last step (its slack has not passed) are emitted; each is complete.
    assert len(steps) >= 39
    for k, st in enumerate(steps):
        assert set(st.frames) == set(CAMS) and st.complete
        assert max(st.stamps.values()) - min(st.stamps.values()) <= 0.01
        assert abs(st.stamp - (100.0 + k / 10.0)) < 0.005  # the k-th grid time
        assert st.stamp == st.stamps["front"]
        assert st.frames["left"] == ("left", st.stamps["left"])
        assert st.seq == k
    assert sync.total_dropped == 0


def test_missing_camera_partial_steps_and_no_partials_by_default():
    msgs = [(c, s) for c, s in _jittered(20) if c != "right"]
    strict = MultiCameraSynchronizer(CAMS, tolerance_s=0.01)
    steps, _ = _feed(strict, msgs)
    assert steps == []
    # Nothing accumulates without bound: anchors past the slack are dropped.
    assert max(strict.pending.values()) <= 5
    assert strict.stats["front"].dropped_unmatched > 10
    loose = MultiCameraSynchronizer(CAMS, tolerance_s=0.01, min_cameras=2)
    steps, _ = _feed(loose, msgs)
    assert len(steps) >= 18
    assert all(set(s.frames) == {"front", "left"} and not s.complete for s in steps)
    assert loose.partial_steps == len(steps)


def test_camera_that_stops_is_stale_and_partial_steps_continue():
    msgs = [(c, s) for c, s in _jittered(30) if not (c == "left" and s > 101.0)]
    sync = MultiCameraSynchronizer(CAMS, tolerance_s=0.01, min_cameras=2, stale_timeout_s=0.5)
    steps = []
    for i, (cam, stamp) in enumerate(msgs):
        steps += sync.add(cam, stamp, None, now=stamp).steps
    full = [s for s in steps if s.complete]
    part = [s for s in steps if not s.complete]
    assert len(full) == 11 and len(part) >= 17
    assert all("left" not in s.frames for s in part)
    assert sync.stale_cameras(now=103.0) == ["left"]
    diag = sync.diagnostics(now=103.0)
    assert diag["left"]["stale"] and not diag["front"]["stale"]
    assert abs(diag["front"]["rate_hz"] - 10.0) < 1.0


def test_reordered_and_duplicated_messages():
    msgs = _jittered(15, seed=3)
    rng = np.random.default_rng(4)
    dup = [msgs[i] for i in rng.choice(len(msgs), 10, replace=False)]
    msgs = msgs + dup
    # Arrival order shuffled by up to 0.15 s: frames of one camera arrive out of order too.
    order = np.argsort(np.array([s for _, s in msgs]) + rng.uniform(0, 0.15, len(msgs)))
    msgs = [msgs[i] for i in order]
    sync = MultiCameraSynchronizer(CAMS, tolerance_s=0.01, reorder_s=0.2)
    steps, resets = _feed(sync, msgs)
    assert not resets
    assert len(steps) >= 13 and all(s.complete for s in steps)
    stamps = [s.stamp for s in steps]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    dups = sum(s.duplicates for s in sync.stats.values()) + sum(s.dropped_late for s in sync.stats.values())
    assert dups == 10  # every duplicate ignored (either still buffered or already emitted)


def test_stamps_jumping_back_reset_reported():
    first = _jittered(10, t0=100.0)
    second = _jittered(10, t0=5.0, seed=9)
    sync = MultiCameraSynchronizer(CAMS, tolerance_s=0.01, reset_threshold_s=1.0)
    steps, resets = _feed(sync, first + second)
    assert len(resets) == 1 and "went back" in resets[0]
    assert sync.resets == 1
    before = [s for s in steps if s.stamp > 50]
    after = [s for s in steps if s.stamp < 50]
    assert len(before) >= 9 and len(after) >= 9
    assert all(s.complete for s in after)


def test_bag_loop_with_cameras_jumping_back_at_different_times():
    # front jumps back first; left/right still deliver two old-epoch frames each: one reset only.
    old = _jittered(10, t0=100.0)
    new = _jittered(10, t0=5.0, seed=2)
    tail = [("left", 101.0), ("right", 101.0), ("left", 101.1), ("right", 101.1)]
    msgs = old[:-3] + [new[0]] + tail + new[1:]
    sync = MultiCameraSynchronizer(CAMS, tolerance_s=0.01)
    steps, resets = _feed(sync, msgs)
    assert len(resets) == 1
    assert len([s for s in steps if s.stamp < 50]) >= 9


def test_camera_lagging_behind_the_others_is_not_a_restart():
    """One camera's frames arrive 2 s late (a transport stall): no reset; the frames that cannot be
    matched any more are dropped and counted, and the cameras match again once it catches up."""
    msgs = []
    for k in range(30):
        t = 100.0 + 0.1 * k
        msgs += [(c, t) for c in CAMS if c != "front"]
        if k < 10 or k >= 20:
            msgs.append(("front", t))
        if k == 19:  # front's frames of steps 10..19 come in a burst, 1 s after the others
            msgs += [("front", 100.0 + 0.1 * j) for j in range(10, 20)]
    sync = MultiCameraSynchronizer(CAMS, tolerance_s=0.01, reset_threshold_s=0.5)
    steps, resets = _feed(sync, msgs)
    assert resets == [] and sync.resets == 0
    complete = [round(s.stamp, 1) for s in steps if s.complete]
    assert complete[:10] == [round(100.0 + 0.1 * k, 1) for k in range(10)]
    assert complete[-10:] == [round(100.0 + 0.1 * k, 1) for k in range(20, 30)]
    assert sync.total_dropped >= 10


def test_bounded_buffers_count_overflow():
    sync = MultiCameraSynchronizer(CAMS, tolerance_s=0.01, max_pending=5, slack_s=1e9)
    for k in range(50):
        sync.add("front", 100 + k * 0.1, k, now=k)
    assert sync.pending["front"] == 5
    assert sync.stats["front"].dropped_overflow == 45


def test_camera_info_required():
    cache = CameraInfoCache()
    sync = MultiCameraSynchronizer(CAMS, tolerance_s=0.01, camera_info=cache, require_camera_info=True)
    msgs = _jittered(6)
    steps, _ = _feed(sync, msgs[:9])  # 3 steps, no info
    assert steps == []
    for c in CAMS:
        cache.update(c, {"K": c})
    steps, _ = _feed(sync, msgs[9:])
    assert len(steps) >= 2
    assert steps[0].camera_infos == {c: {"K": c} for c in CAMS}
    assert sync.stats["front"].dropped_no_info >= 2
    with pytest.raises(KeyError):
        sync.add("nope", 1.0, None)
