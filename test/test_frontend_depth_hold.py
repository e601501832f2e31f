"""The front end holds a time step until its first camera's depth image came (``scale.depth_wait_s``).

Without the hold a window could run before the depth image of its newest frame, and the offline replay
(depth read in log order, after the image) and the node (two DDS topics, whichever the executor serves
first) saw different depth: each window's metric scale differed by up to 0.7 %.
"""
from types import SimpleNamespace

import numpy as np

from vggt4d_ros.frontend import Config, FrontEnd

K = [100.0, 0.0, 32.0, 0.0, 100.0, 24.0, 0.0, 0.0, 1.0]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(wait_s=0.1, live=True):
    cfg = Config.from_params({"cameras": ["cam0"], "window.num_steps": 2, "window.stride": 1,
                              "scale.depth_topic": "/depth", "scale.depth_wait_s": wait_s,
                              "sync.require_camera_info": True})
    acks, windows, clock = [], [], Clock()
    fe = FrontEnd(cfg, lambda stamp, stamp_ns, *a: stamp_ns, lambda msg: acks.append(msg), clock=clock, live=live)
    fe.camera_info("cam0", SimpleNamespace(width=64, height=48, k=K))

    def image(i):
        fe.image("cam0", np.zeros((48, 64, 3), np.uint8), None, i * 100_000_000)

    def depth(i):
        fe.depth_image(i * 100_000_000, np.full((48, 64), 1.0 + i, np.float32))

    def drain():
        while len(fe.window.queue):
            windows.append(fe.take(timeout=0))
        return windows

    return fe, clock, image, depth, drain, acks


def sensor_depth(win):
    return [None if f.sensor_depth is None else float(f.sensor_depth[0, 0]) for f in win.frames]


def test_a_step_waits_for_its_depth_image_then_enters_the_window():
    fe, _clock, image, depth, drain, acks = make()
    for i in range(3):
        before = (len(acks), len(drain()))
        image(i)
        assert fe.counters["steps_in"] == i + 1
        assert (len(acks), len(drain())) == before  # held: neither a window nor an acknowledgement yet
        depth(i)  # the depth image after its colour image (a driver's alignment takes time)
    wins = drain()
    assert len(wins) == 2 and len(acks) == 1  # step 0 acknowledged (window filling), windows end at 1 and 2
    assert [sensor_depth(w) for w in wins] == [[1.0, 2.0], [2.0, 3.0]]  # every frame had its depth in time


def test_a_newer_step_releases_the_held_one_without_depth():
    fe, _clock, image, depth, drain, _acks = make()
    image(0)
    image(1)  # no depth for step 0: it goes on when step 1 comes (in order), step 1 is held
    assert fe.counters["steps_in"] == 2 and not drain()
    depth(1)
    (win,) = drain()
    assert sensor_depth(win) == [None, 2.0]


def test_live_wait_is_bounded_and_flush_ends_a_replay():
    fe, clock, image, _depth, drain, acks = make(wait_s=0.1)
    image(0)
    clock.t = 0.05
    assert not fe.release(now=clock()) and not acks  # still waiting
    clock.t = 0.11
    assert fe.release(now=clock()) and len(acks) == 1  # waited depth_wait_s: on without its depth
    image(1)
    fe.flush()  # end of the input
    assert len(drain()) == 1


def test_zero_wait_never_holds():
    fe, _clock, image, _depth, drain, acks = make(wait_s=0.0)
    image(0)
    image(1)
    assert len(acks) == 1 and len(drain()) == 1
