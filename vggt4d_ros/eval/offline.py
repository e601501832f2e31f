"""Offline replay: the node's computation on a bag, directly, deterministically, as fast as the model goes.

A thin driver: the bag's messages are read in log-time order and fed to the node's own input front end
(:class:`~vggt4d_ros.frontend.FrontEnd` through :mod:`vggt4d_ros.ros.feed`: the same parameter snapshot,
CameraInfo cache, sync, window, resets, status order, extrinsics and ``scale.depth_topic`` matcher) and the
same :class:`~vggt4d_ros.perception.pipeline.Pipeline`; every window is processed as soon as it is queued (the node
in lock-step does the same), and the node's messages are written to the output bag with bag-time log
stamps. Differences from the node, on purpose: the synchroniser's clock is the bag's stamp clock
(deterministic), and the first CameraInfo of each camera and every /tf_static are known before the first
image (the through-ROS runner primes the node the same way, /tf_static is latched), so the first time step
is not lost to topic order.
"""
from __future__ import annotations

import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from vggt4d_ros.bag.io import BagWriter, bag_topics, make_qos, open_writer, read_messages

from .config import CameraTopics
from .node_messages import NODE_NAMESPACE, diagnostics_message, serialize, status_messages, step_messages

__all__ = ["RunStats", "OutputBag", "run_offline", "finalize_output", "pipeline_config"]


@dataclass
class RunStats:
    """What a run did (either mode); feeds :func:`vggt4d_ros.eval.metrics.runtime_metrics`."""

    mode: str = "offline"
    frames_in: int = 0
    frames_used: int = 0
    frames_rejected: int = 0
    steps_in: int = 0
    steps_out: int = 0
    windows: int = 0
    windows_skipped: int = 0
    frames_dropped: int = 0
    errors: int = 0
    resets: int = 0
    latencies_s: List[float] = field(default_factory=list)
    output_times_s: List[float] = field(default_factory=list)
    wall_s: float = 0.0
    interrupted: bool = False
    stopped_at_max_steps: bool = False
    device: str = ""
    messages: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


class OutputBag:
    """The outputs bag: ``DIR/outputs.mcap``, one self-describing MCAP file (rosbags, the mcap tools and
    ``ros2 bag`` open it) written with :class:`~vggt4d_ros.bag.io.BagWriter` with zstd chunk compression
    (:data:`~vggt4d_ros.bag.record.OUTPUT_COMPRESSION`); topics registered on first use, log time = the
    message's stamp. It appears at its path only once :meth:`close` succeeded."""

    def __init__(self, out_dir: Path, qos_depth: int = 10) -> None:
        from vggt4d_ros.bag.record import OUTPUT_COMPRESSION

        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "outputs.mcap"
        if self.path.exists():
            self.path.unlink()
        self.writer: BagWriter = open_writer(self.path, "mcap", compression=OUTPUT_COMPRESSION)
        self._qos = {"/tf": make_qos(reliable=True, depth=100)}
        self._default_qos = make_qos(reliable=True, depth=qos_depth)

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        if not self.writer.has_topic(topic):
            self.writer.add_topic(topic, msgtype, [self._qos.get(topic, self._default_qos)])
        self.writer.write(topic, int(stamp_ns), data)

    @property
    def counts(self) -> Dict[str, int]:
        return dict(self.writer.counts)

    def close(self) -> Path:
        return self.writer.close()


def finalize_output(bag: Path, target: Path) -> Path:
    """Move a recorded bag's MCAP to ``target`` (a self-describing MCAP file that rosbags, the mcap tools and
    ``ros2 bag`` open): ``bag`` is that file already, or a rosbag2 directory with one ``.mcap`` (removed)."""
    bag = Path(bag)
    files = [bag] if bag.is_file() else sorted(bag.glob("*.mcap"))
    if len(files) != 1:
        raise RuntimeError(f"expected one .mcap in {bag}, found {len(files)}")
    if target.exists():
        target.unlink()
    shutil.move(str(files[0]), str(target))
    if bag.is_dir():
        shutil.rmtree(bag, ignore_errors=True)
    return target


def pipeline_config(params: Mapping[str, Any]):
    """The :class:`~vggt4d_ros.perception.pipeline.PipelineConfig` the node builds from these parameters."""
    from vggt4d_ros.perception.pipeline import pipeline_config_from_params

    return pipeline_config_from_params(dict(params))


@contextmanager
def _deferred_interrupt():
    """Turn the first Ctrl-C into a flag checked between messages, so a window's outputs are written whole.

    Yields a one-element list that becomes ``[True]`` on SIGINT; a second Ctrl-C raises KeyboardInterrupt at
    once. Off the main thread (where Python cannot install handlers) Ctrl-C stays a plain KeyboardInterrupt.
    """
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(_signum, _frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def run_offline(bag: Path, params: Dict[str, Any], cams: CameraTopics, out: OutputBag, *,
                pipeline: Any = None, max_steps: Optional[int] = None,
                progress: Optional[Callable[[int], None]] = None,
                log: Callable[[str], None] = lambda s: None, slowdown: int = 1) -> RunStats:
    """Replay ``bag`` through the front end and the pipeline, writing the node's messages to ``out``.

    Args:
        params: effective node parameters (dotted names), cameras resolved.
        pipeline: a ready :class:`~vggt4d_ros.perception.pipeline.Pipeline` (built from ``params`` when None).
        max_steps: stop after this many synchronised time steps.
        progress: called with the number of image messages consumed so far.
        slowdown: process only every ``slowdown``-th queued window (the rest are replaced in the front end's
            latest-wins slot and counted as skipped): a model that slow, deterministically.

    Ctrl-C stops the run cleanly after the message being fed (``stats.interrupted``): every window whose outputs
    were started is written whole, so ``stats.steps_out`` matches the output bag. ``out`` is left open for the
    caller.
    """
    from vggt4d_ros.frontend import Config, FrontEnd
    from vggt4d_ros.perception.pipeline import Pipeline
    from vggt4d_ros.ros import feed

    cfg = Config.from_params(params)
    stats = RunStats(mode="offline")
    names = list(cams.names)
    if pipeline is None:
        pipeline = Pipeline(pipeline_config(cfg))
    stats.device = str(getattr(pipeline, "device_name", ""))
    pipeline.reset("replay")
    ns = NODE_NAMESPACE
    clock = [0.0]  # bag stamp clock (seconds) of the message being fed

    def emit(items, stamp_ns: int) -> None:
        for topic, msgtype, msg in items:
            out.write(topic, msgtype, stamp_ns, serialize(msg))

    def publish_status(msg) -> None:
        emit([(f"{ns}/status", "vggt4d_ros/msg/WindowStatus", msg)],
             msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

    queued = [0]

    def process(last: bool = False) -> None:
        queued[0] += 0 if last else 1
        if not last and (queued[0] - 1) % max(1, int(slowdown)):
            return  # "still busy with an earlier window": the next one replaces this one in the slot
        win = fe.take(timeout=0)
        if win is None:
            return
        stats.windows += 1
        t0 = time.perf_counter()
        result, error = fe.run(pipeline, win)
        if result is None:
            log(error)
            fe.failed(win, error)
            return
        for step in result.steps:
            emit(step_messages(cfg, step, ns=ns), step.stamp_ns)
            stats.steps_out += 1  # per step written, so an interrupted run's count matches its bag
        latency = time.perf_counter() - t0
        statuses = status_messages(cfg, result, latency, fe.counters["frames_dropped"], fe.counters["windows_skipped"],
                                   ns=ns)
        fe.done(win, result, [(int(step.stamp_ns), st) for step, (_, _, st) in zip(result.steps, statuses)])
        stats.latencies_s.append(latency)
        stats.output_times_s.extend([time.perf_counter()] * len(result.steps))
        end_ns = max(s.stamp_ns for s in result.steps) if result.steps else fe.newest_frames(win)[0].stamp_ns
        sync_diag, counters, health = fe.diagnostics(now=0.0)
        emit([diagnostics_message(end_ns, names, sync_diag, fe.rejected, counters, fe.tracking_state,
                                  fe.tracking_message, stats.latencies_s, ns=ns, health=health,
                                  sources=fe.output_sources)], end_ns)

    fe = FrontEnd(cfg, feed.ack_builder(lambda: cfg, ns=ns), publish_status, log=lambda level, text: log(text),
                  on_reset=pipeline.request_reset, clock=lambda: clock[0], live=False, on_window=process)
    by_image = {t: c for c, t in cams.image.items()}
    by_info = {t: c for c, t in cams.info.items()}
    available = bag_topics(bag)
    depth_topic = str(cfg["scale.depth_topic"])
    if depth_topic and depth_topic not in available:
        stats.notes.append(f"scale.depth_topic {depth_topic} is not in the bag")
    extra = [t for t in ("/tf_static", depth_topic) if t and t in available]
    topics = list(by_image) + list(by_info) + extra

    # Prime: the first valid CameraInfo of every camera and every static transform (see the module docstring).
    for topic, _mt, _log, msg in read_messages(bag, list(by_info), decode=True):
        cam = by_info[topic]
        if not fe.infos.has(cam):
            feed.feed_info(fe, cam, msg)
        if all(fe.infos.has(c) for c in names):
            break
    fe.rejected.clear()
    if "/tf_static" in available:
        for _t, _mt, _log, msg in read_messages(bag, ["/tf_static"], decode=True):
            feed.feed_tf_static(fe, msg)

    t_start = time.perf_counter()
    with _deferred_interrupt() as stop:
        try:
            for topic, _mt, _log, msg in read_messages(bag, topics, decode=True):
                if stop[0]:
                    stats.interrupted = True
                    break
                if topic == "/tf_static":
                    feed.feed_tf_static(fe, msg)
                elif topic in by_info:
                    feed.feed_info(fe, by_info[topic], msg)
                elif topic == depth_topic:
                    feed.feed_depth(fe, msg)
                else:
                    cam = by_image[topic]
                    stats.frames_in += 1
                    if progress is not None:
                        progress(stats.frames_in)
                    clock[0] = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                    feed.feed_image(fe, cam, msg, cams.compressed[cam])
                    if max_steps is not None and fe.counters["steps_in"] >= max_steps:
                        stats.stopped_at_max_steps = True
                        break
        except KeyboardInterrupt:  # a second Ctrl-C, or Ctrl-C off the main thread
            stats.interrupted = True
        if not stats.interrupted:
            fe.flush()  # a last step still waiting for its depth image
            if len(fe.window.queue):  # --slowdown: the window left in the slot is processed, as the node would
                process(last=True)
    stats.wall_s = time.perf_counter() - t_start
    c = fe.counters
    stats.steps_in = c["steps_in"]
    stats.frames_used = sum(s.used for s in fe.sync.stats.values())
    stats.frames_rejected = sum(n for k, n in fe.rejected.items() if k in names)
    stats.frames_dropped, stats.windows_skipped = c["frames_dropped"], c["windows_skipped"]
    stats.errors, stats.resets = c["errors"], c["resets"]
    stats.messages = out.counts
    return stats
