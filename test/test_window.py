"""SlidingWindow: stride, layout, keyframes, skip counting under a flood, jitter, WindowQueue."""

import threading

import numpy as np
import pytest

from vggt4d_ros.window.sync import TimeStep
from vggt4d_ros.window.window import KeyframeSelector, SlidingWindow, WindowQueue

CAMS = ("a", "b")


def _step(k, img=None, stamp=None, cams=CAMS):
    stamp = 10.0 + 0.1 * k if stamp is None else stamp
    frames = {c: (f"{c}{k}" if img is None else img) for c in cams}
    return TimeStep(stamp=stamp, frames=frames, stamps={c: stamp + 0.001 * i for i, c in enumerate(cams)})


def test_stride_and_time_major_layout():
    sw = SlidingWindow(CAMS, num_steps=4, stride=2, max_pending_windows=100)
    wins = [r.window for r in (sw.push(_step(k)) for k in range(10)) if r.window is not None]
    # Full after 4 steps, then every 2: windows end at steps 3, 5, 7, 9.
    assert [w.step_ids for w in wins] == [(0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7), (6, 7, 8, 9)]
    w = wins[1]
    assert w.num_views == 2 and w.num_steps == 4 and w.num_frames == 8
    assert w.frames[w.index(1, 1)] == "b3" and w.frames[5] == "b4" and w.step_and_view(5) == (2, 1)
    assert np.allclose(w.stamps, [10.2, 10.3, 10.4, 10.5])
    assert w.frame_stamps.shape == (4, 2) and abs(w.frame_stamps[0, 1] - 10.201) < 1e-9
    assert [x.window_id for x in wins] == [0, 1, 2, 3]


def test_missing_camera_is_none():
    sw = SlidingWindow(CAMS, num_steps=2, stride=1)
    sw.push(_step(0))
    r = sw.push(_step(1, cams=("a",)))
    assert r.window.frames == ("a0", "b0", "a1", None)
    assert np.isnan(r.window.frame_stamps[1, 1])


def test_flood_skips_windows_and_stays_bounded():
    sw = SlidingWindow(CAMS, num_steps=3, stride=1, max_pending_windows=1)
    for k in range(1000):
        sw.push(_step(k))
    assert len(sw) == 3 and len(sw.queue) == 1
    assert sw.windows_emitted == 998
    assert sw.windows_skipped == 997
    w = sw.queue.get(timeout=0)
    assert w.step_ids == (997, 998, 999)  # latest wins
    assert sw.queue.get(timeout=0.01) is None


def test_keyframes_by_image_motion():
    kf = KeyframeSelector(threshold=0.05, size=(16, 12))
    sw = SlidingWindow(CAMS, num_steps=2, stride=1, keyframe=kf)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, size=(48, 64, 3), dtype=np.uint8)
    accepted = []
    for k in range(8):
        # Steps 0-3 static (+-1 grey level noise), then a big change at 4, static again.
        img = base if k < 4 else 255 - base
        img = np.clip(img.astype(int) + rng.integers(-1, 2, img.shape), 0, 255).astype(np.uint8)
        accepted.append(sw.push(_step(k, img=img)).accepted)
    assert accepted == [True, False, False, False, True, False, False, False]
    assert sw.steps_rejected == 6 and sw.windows_emitted == 1
    forced = KeyframeSelector(threshold=0.05, max_skip=2)
    flags = [forced(_step(k, img=base)) for k in range(7)]
    assert flags == [True, False, False, True, False, False, True]


def test_jitter_reported_and_reset():
    sw = SlidingWindow(CAMS, num_steps=3, stride=3, jitter_threshold_s=0.15)
    rs = [sw.push(_step(k, stamp=s)) for k, s in enumerate([0.0, 0.1, 0.2, 0.5, 0.6])]
    assert [r.jitter for r in rs] == [False, False, False, True, False]
    assert sw.jitter_events == 1 and abs(sw.max_gap_s - 0.3) < 1e-9
    assert rs[2].window is not None
    assert sw.reset() == 1 and len(sw) == 0
    rs = [sw.push(_step(k)) for k in range(3)]
    assert rs[-1].window is not None and rs[-1].window.step_ids == (5, 6, 7)


def test_window_queue_threaded_handoff():
    q = WindowQueue(maxsize=2)
    got = []

    def worker():
        while True:
            item = q.get(timeout=2.0)
            if item is None:
                return
            got.append(item)

    th = threading.Thread(target=worker)
    th.start()
    for i in range(5):
        q.put(i)
    q.close()
    th.join(timeout=5)
    assert not th.is_alive()
    assert got == sorted(got) and got[-1] == 4 and len(got) + q.skipped == 5
    with pytest.raises(ValueError):
        SlidingWindow(CAMS, num_steps=2, stride=3)


def test_windows_chain_to_the_last_window_taken_when_the_consumer_is_slow():
    """A consumer slower than the input: the window it takes next starts with the newest steps of the window
    it took before (what the chain fits on), then steps picked by age up to the newest."""
    sw = SlidingWindow(CAMS, num_steps=4, stride=1, max_pending_windows=1)
    for i in range(4):
        sw.push(_step(i))
    first = sw.queue.get(timeout=0)
    assert first.step_ids == (0, 1, 2, 3)
    for i in range(4, 13):  # 9 more steps while the consumer is busy: 8 windows skipped
        sw.push(_step(i))
    assert sw.windows_skipped == 8
    nxt = sw.queue.get(timeout=0)
    assert nxt.step_ids[:2] == (2, 3)  # shares the last two steps of the window taken before
    assert nxt.step_ids[-1] == 12 and list(nxt.step_ids) == sorted(set(nxt.step_ids))
    assert nxt.step_ids == (2, 3, 8, 12)  # the other slots spread by age between them
    assert list(nxt.frames[::2]) == ["a2", "a3", "a8", "a12"] and list(nxt.frames[1::2]) == ["b2", "b3", "b8", "b12"]
    # Keeping up again: contiguous, overlap T - stride with the window taken.
    sw.push(_step(13))
    assert sw.queue.get(timeout=0).step_ids == (3, 8, 12, 13)
    sw.push(_step(14))
    assert sw.queue.get(timeout=0).step_ids == (8, 12, 13, 14)
    # After a reset nothing is chained to: the newest contiguous steps again.
    sw.reset()
    for i in range(15, 19):
        sw.push(_step(i))
    assert sw.queue.get(timeout=0).step_ids == (15, 16, 17, 18)


def test_a_consumer_behind_by_a_few_steps_gets_a_contiguous_window():
    sw = SlidingWindow(CAMS, num_steps=4, stride=1, max_pending_windows=1)
    for i in range(4):
        sw.push(_step(i))
    sw.queue.get(timeout=0)
    for i in range(4, 6):  # two new steps: still contiguous with the window taken
        sw.push(_step(i))
    assert sw.queue.get(timeout=0).step_ids == (2, 3, 4, 5)
