"""StatusSequencer: the node's ~/status stream in stamp order, one message per step at most."""
import threading
import time

from vggt4d_ros.window.status import StatusSequencer
from vggt4d_ros.window.sync import TimeStep
from vggt4d_ros.window.window import SlidingWindow


def _seq():
    out = []
    return StatusSequencer(lambda m: out.append(m)), out


def test_filling_acks_then_first_window_reports_only_new_steps():
    s, out = _seq()
    for k in range(3):  # window of 4 filling
        assert s.ack(k, ("ack", k))
    s.window_queued(0)
    s.window_done(0, [(k, ("res", k)) for k in range(4)])  # the first window outputs steps 0..3
    assert out == [("ack", 0), ("ack", 1), ("ack", 2), ("res", 3)]


def test_ack_during_inference_waits_behind_the_window_result():
    s, out = _seq()
    s.window_queued(7)  # window ending at step 10 is being inferred ...
    assert not s.ack(11, ("ack", 11))  # ... when step 11 (not a keyframe) is acknowledged
    assert out == [] and s.waiting == 1
    s.window_done(7, [(10, ("res", 10))])
    assert out == [("res", 10), ("ack", 11)] and s.waiting == 0


def test_acks_wait_for_every_queued_window_and_skips_are_counted():
    s, out = _seq()
    s.window_queued(1)
    s.window_queued(2)  # one processing, one waiting
    s.ack(30, "a30")
    s.window_queued(3, skipped=1)  # window 2 replaced by 3 (latest wins)
    s.ack(40, "a40")
    s.window_done(1, [(20, "r20")])
    assert out == ["r20"]  # window 3 still pending: acks wait
    s.window_done(3, [(25, "r25"), (35, "r35")])  # 25 < 30 is older than nothing published yet: kept
    assert out == ["r20", "r25", "r35", "a40"]  # a30 is not newer than r35: dropped
    assert s.dropped == 1 and s.pending_windows == 0


def test_restart_lets_the_stream_go_back_once_after_the_old_window():
    s, out = _seq()
    s.window_queued(5)  # old loop's window in flight
    s.restart(cleared=0)  # the bag looped
    s.ack(0, "a0")
    s.ack(1, "a1")
    assert out == []  # new stream waits behind the old window
    s.window_done(5, [(39, "r39")])
    assert out == ["r39", "a0", "a1"]
    s.window_queued(6)
    s.window_done(6, [(0, "r0"), (1, "r1"), (2, "r2")])
    assert out == ["r39", "a0", "a1", "r2"]


def test_restart_with_cleared_window_and_one_step_windows():
    s, out = _seq()
    s.window_queued(1)
    s.window_queued(2)
    s.window_done(1, [(50, "r50")])
    s.restart(cleared=1)  # window 2 was discarded from the queue by the reset
    assert s.pending_windows == 0
    s.window_queued(3)  # T = 1: the first new step is a window at once
    s.window_done(3, [(0, "r0")])
    assert out == ["r50", "r0"]


def test_result_of_a_window_queued_before_a_restart_is_not_published_after_the_new_stream():
    s, out = _seq()
    s.window_queued(1)
    s.restart(cleared=0)
    s.window_queued(2)
    s.window_done(1, [(90, "old")])  # still before any new-epoch status: published
    s.window_done(2, [(0, "new")])
    s.window_queued(3)
    s.restart(cleared=0)
    s.ack(0, "a0-epoch2")  # waits behind window 3
    s.window_done(3, [(5, "r5-epoch1")])
    assert out == ["old", "new", "r5-epoch1", "a0-epoch2"]


def test_dropped_window_status_then_acks():
    s, out = _seq()
    s.window_queued(1)
    s.ack(3, "a3")
    s.window_done(1, [(2, "dropped2")])
    assert out == ["dropped2", "a3"]


def _step(k: float) -> TimeStep:
    return TimeStep(stamp=k, frames={"cam0": {"stamp_ns": int(k * 1e9)}}, stamps={"cam0": k},
                    camera_infos={})


def test_threads_produce_a_strictly_increasing_stream():
    """Input thread (SlidingWindow + acks, stride 3) against a slow inference thread: the stream is
    strictly increasing and every window that was inferred reported its newest step."""
    out = []
    seq = StatusSequencer(lambda m: out.append(m))
    win = SlidingWindow(["cam0"], num_steps=4, stride=3, max_pending_windows=1)
    stop = threading.Event()
    inferred = []

    def worker():
        while not stop.is_set() or len(win.queue):
            w = win.queue.get(timeout=0.01)
            if w is None:
                continue
            time.sleep(0.004)
            inferred.append(w.stamps[-1])
            seq.window_done(w.window_id, [(int(st * 1e9), st) for st in w.stamps])

    th = threading.Thread(target=worker)
    th.start()
    for k in range(300):
        if k == 150:  # the bag loops: stamps start again
            with seq.lock:
                seq.restart(cleared=win.reset())
        st = round((k % 150) * 0.1, 1)
        with seq.lock:
            res = win.push(_step(st))
            if res.window is None:
                seq.ack(int(st * 1e9), st)
            else:
                seq.window_queued(res.window.window_id, res.skipped)
        time.sleep(0.001)
    stop.set()
    th.join(5)
    assert seq.pending_windows == 0 and seq.waiting == 0
    backs = [i for i in range(1, len(out)) if out[i] <= out[i - 1]]
    assert len(backs) == 1 and out[backs[0]] < 0.5  # the one restart
    assert set(inferred) <= set(out)  # every inferred window reported its newest step
