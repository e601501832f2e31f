"""Replay through the real node: ``vggt4d-node`` as a subprocess, the project's player and recorder, DDS on
this machine only (:mod:`vggt4d_ros.rosenv`).

Sequence: start the node with the effective params file; record every topic it publishes
(:class:`~vggt4d_ros.bag.record.Recorder`); wait until the node subscribes to the camera topics and the
recorder to its outputs; give the node each camera's first CameraInfo (so the first images are not
rejected for arriving before their CameraInfo, as the offline runner assumes too); play the camera
topics and ``/tf_static`` with :func:`~vggt4d_ros.bag.play.play_bag` in lock-step on ``/vggt4d/status``
(one window processed per time step, deterministic) or at ``rate`` times the bag's rate; stop the node
(SIGINT) and finalise the outputs. Runtime figures come from the recorded ``status`` messages (the
node's own window latency) and the recorder's receive times.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from vggt4d_ros.bag.io import bag_time_range, has_header, read_messages

from .config import CameraTopics
from .node_messages import NODE_NAMESPACE, output_topics
from .offline import RunStats, finalize_output

__all__ = ["run_through_ros", "node_command"]

NODE_NAME = "vggt4d"


def node_command(params_file: Path) -> List[str]:
    """``vggt4d-node --ros-args --params-file FILE`` (the console script beside this Python, else ``-m``)."""
    exe = shutil.which("vggt4d-node", path=os.path.dirname(sys.executable)) or shutil.which("vggt4d-node")
    base = [exe] if exe else [sys.executable, "-m", "vggt4d_ros.ros.node"]
    return base + ["--ros-args", "--params-file", str(params_file)]


def _tail(path: Path, n: int = 6) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def _stop_duration(bag: Path, cams: CameraTopics, max_steps: Optional[int]) -> Optional[float]:
    """Seconds of bag (from its first message) holding the first ``max_steps`` frames of camera 0."""
    if max_steps is None:
        return None
    topic = cams.image[cams.names[0]]
    logs = sorted(t for _tp, _mt, t, _raw in read_messages(bag, [topic]))
    if len(logs) <= max_steps:
        return None
    start, _end = bag_time_range(bag)
    return max(1e-9, (logs[max_steps] - start) * 1e-9)


def run_through_ros(bag: Path, params: Dict[str, Any], cams: CameraTopics, out_dir: Path, params_file: Path, *,
                    rate: float = 0.0, max_steps: Optional[int] = None, lock_step_timeout: float = 60.0,
                    startup_timeout: float = 180.0, settle_timeout: float = 10.0, progress: Optional[Callable[[int], None]] = None,
                    log: Callable[[str], None] = lambda s: None) -> Tuple[RunStats, Path]:
    """Run the node on ``bag``; returns the run's stats and the path of ``out_dir/outputs.mcap``.

    Raises RuntimeError (one line) when the node dies or never comes up. Ctrl-C ends the run cleanly
    (``stats.interrupted``) with the outputs recorded so far.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from vggt4d_ros.bag.play import play_bag
    from vggt4d_ros.bag.record import Recorder
    from vggt4d_ros.bag.rosutil import BackgroundSpinner, message_class, qos_profile
    from vggt4d_ros.rosenv import apply_localhost_env, localhost_env

    stats = RunStats(mode="through-ros", device=str(params["model.device"]))
    ns = NODE_NAMESPACE
    expected = output_topics(params, ns)
    bag_dir = out_dir / "outputs.bag"
    if bag_dir.exists():
        shutil.rmtree(bag_dir)
    node_log = out_dir / "node.log"
    duration = _stop_duration(bag, cams, max_steps)
    apply_localhost_env()
    env = localhost_env()
    own_init = not rclpy.ok()
    if own_init:
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("vggt4d_replay")
    spinner = BackgroundSpinner(node, name="vggt4d-replay-spin")
    acked: set = set()
    produced: set = set()  # stamps of the steps the node reported as output
    windows_done: set = set()
    diag: Dict[str, tuple] = {}  # "last": (receive time, the node's tracking counters)

    def on_diagnostics(msg) -> None:
        for st in msg.status:
            if st.name.endswith(": tracking"):
                vals = {}
                for kv in st.values:
                    try:
                        vals[kv.key] = int(float(kv.value))
                    except ValueError:
                        pass
                diag["last"] = (time.monotonic(), vals)

    def on_status(msg) -> None:
        st = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        acked.add(st)
        if msg.num_time_steps > 0:
            produced.add(st)
            windows_done.add(int(msg.window_index))
        if progress is not None:
            progress(len(acked) * len(cams.names))

    node.create_subscription(message_class("vggt4d_ros/msg/WindowStatus"), f"{ns}/status", on_status,
                             qos_profile(reliable=True, depth=100))
    node.create_subscription(message_class("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", on_diagnostics,
                             qos_profile(reliable=True, depth=10))
    logf = open(node_log, "wb")
    proc = subprocess.Popen(node_command(params_file), env=env, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log(f"started the node (pid {proc.pid}); its log: {node_log}")
    rec: Optional[Recorder] = None
    outputs = out_dir / "outputs.mcap"
    play = None
    t_start = time.monotonic()
    try:
        rec = Recorder(node, list(expected), bag_dir, log=log)
        depth_topic = str(params.get("scale.depth_topic") or "")
        inputs = list(cams.image.values()) + list(cams.info.values()) + (
            [depth_topic] if depth_topic and depth_topic in _bag_topic_names(bag) else [])
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the node exited with code {proc.returncode} before it was ready: "
                                   f"{_tail(node_log)}")
            node_subs = all(any(i.node_name == NODE_NAME for i in node.get_subscriptions_info_by_topic(t))
                            for t in inputs)
            # The node publishes a topic only while it sees a subscriber: wait until every recorder
            # subscription has matched the node's publisher (Recorder keeps them in ``_subs``).
            subs = getattr(rec, "_subs", {})
            rec_ready = set(expected) <= set(subs) and all(subs[t].get_publisher_count() >= 1 for t in expected)
            if node_subs and rec_ready:
                break
            if time.monotonic() > deadline:
                missing = sorted(set(expected) - set(rec.subscribed))
                raise RuntimeError(f"the node was not ready within {startup_timeout:g} s (inputs subscribed: "
                                   f"{node_subs}; outputs not seen: {', '.join(missing) or 'none'}): {_tail(node_log)}")
            time.sleep(0.1)
        time.sleep(1.0)  # matching is seen on both sides at slightly different times
        # Prime the node with each camera's first CameraInfo.
        info_cls = message_class("sensor_msgs/msg/CameraInfo")
        firsts: Dict[str, bytes] = {}
        for topic, _mt, _t, raw in read_messages(bag, list(cams.info.values())):
            firsts.setdefault(topic, raw)
            if len(firsts) == len(cams.info):
                break
        pubs = {t: node.create_publisher(info_cls, t, qos_profile(reliable=True, depth=1)) for t in firsts}
        t_match = time.monotonic() + 10.0
        while any(p.get_subscription_count() < 1 for p in pubs.values()) and time.monotonic() < t_match:
            time.sleep(0.05)
        for _ in range(3):
            for t, p in pubs.items():
                p.publish(firsts[t])
            time.sleep(0.1)
        t_start = time.monotonic()
        play_topics = inputs + (["/tf_static"] if "/tf_static" in _bag_topic_names(bag) else [])
        play = play_bag(bag, rate=rate if rate > 0 else 0.0, topics=play_topics, duration=duration,
                        lock_step=rate <= 0, lock_step_topic=f"{ns}/status",
                        lock_step_type="vggt4d_ros/msg/WindowStatus", trigger_topics=list(cams.image.values()),
                        lock_step_timeout=lock_step_timeout, wait_subscribers=True, wait_topics=inputs,
                        wait_timeout=30.0, node=node, log=log)
        stats.interrupted = play.interrupted
        # Outputs of the last step follow its status within milliseconds; at a fixed rate the node may
        # still be busy: wait until no status came for a while.
        # At a fixed rate the node may still be busy: wait (at most lock_step_timeout) until its
        # diagnostics, published after the last input arrived, show no window left to process.
        t_played = time.monotonic()
        t_end = t_played + (lock_step_timeout if rate > 0 else 0.0)
        while not stats.interrupted and proc.poll() is None and time.monotonic() < t_end:
            d = diag.get("last")
            if d is not None and d[0] > t_played + 1.5:
                pending = d[1].get("windows", 0) - d[1].get("windows_skipped", 0) - len(windows_done) - d[1].get("errors", 0)
                if pending <= 0:
                    break
            time.sleep(0.1)
        stats.wall_s = time.monotonic() - t_start
        # A sample can land well after the status that follows it (a reliable repair, or a large sample
        # delivered late: docs/reliability.md), so wait until every per-step topic has received the newest
        # output step's stamp before stopping the node. Delivery is in order per topic, so that topic then
        # holds every earlier step too. (Counting messages is not enough: steps acknowledged while the
        # window filled get no result status of their own, yet the first window outputs them.)
        per_step = [t for t, mt in expected.items() if t not in (f"{ns}/status", "/diagnostics") and has_header(mt)]
        last = max(produced) if produced else None

        def behind() -> Dict[str, Optional[int]]:
            newest = dict(rec.newest_stamp)
            return {t: newest.get(t) for t in per_step if last is not None and newest.get(t, -1) < last}

        t_end = time.monotonic() + settle_timeout
        while not stats.interrupted and time.monotonic() < t_end and proc.poll() is None:
            if not behind():
                break
            time.sleep(0.1)
        short = behind()
        if short:
            stats.notes.append(f"after {settle_timeout:g} s, {len(short)} output topics had not received the last "
                               "output step (a camera absent from that step, or a lost sample): "
                               + ", ".join(sorted(short)))
        log(f"settled in {time.monotonic() - t_end + settle_timeout:.2f} s")
    except KeyboardInterrupt:
        stats.interrupted = True
        stats.wall_s = time.monotonic() - t_start
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            if rec is not None:
                outputs = finalize_output(rec.close(), outputs)
        finally:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            logf.close()
            spinner.stop()
            node.destroy_node()
            if own_init:
                rclpy.try_shutdown()
    if play is not None:
        stats.frames_in = sum(play.per_topic.get(t, 0) for t in cams.image.values())
        if play.lock_step_timeouts:
            stats.notes.append(f"lock-step: {play.lock_step_timeouts} time steps were not acknowledged within "
                               f"{lock_step_timeout:g} s")
    _stats_from_outputs(outputs, stats, len(cams.names), ns)
    if "last" in diag:  # the node's own counters: steps of skipped windows are never acknowledged
        vals = diag["last"][1]
        stats.steps_in = max(stats.steps_in, vals.get("steps_in", 0))
        stats.frames_used = stats.steps_in * len(cams.names)
        stats.frames_dropped = max(stats.frames_dropped, vals.get("frames_dropped", 0))
        stats.windows_skipped = max(stats.windows_skipped, vals.get("windows_skipped", 0))
    return stats, outputs


def _bag_topic_names(bag: Path) -> set:
    from vggt4d_ros.bag.io import bag_topics

    return set(bag_topics(bag))


def _stats_from_outputs(outputs: Path, stats: RunStats, num_cameras: int, ns: str) -> None:
    """Counts and latencies from the recorded status / odometry messages."""
    if not outputs.exists():
        return
    from vggt4d_ros.bag.io import bag_topics

    topics = bag_topics(outputs)
    stats.messages = {t: s.count for t, s in topics.items()}
    wanted = [t for t in (f"{ns}/status", f"{ns}/odometry") if t in topics]
    steps, windows, lat = set(), {}, {}
    out_times: List[float] = []
    last = None
    for topic, _mt, log_ns, msg in read_messages(outputs, wanted, decode=True):
        st = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if topic.endswith("/odometry"):
            out_times.append(log_ns * 1e-9)
            continue
        steps.add(st)
        last = msg
        if msg.num_time_steps > 0:
            windows[int(msg.window_index)] = True
            if math.isfinite(msg.latency):
                lat[int(msg.window_index)] = float(msg.latency)
    stats.steps_in = len(steps)
    stats.frames_used = len(steps) * num_cameras
    stats.steps_out = len(out_times)
    stats.windows = len(windows)
    stats.latencies_s = [lat[k] for k in sorted(lat)]
    stats.output_times_s = out_times
    if last is not None:
        stats.frames_dropped = int(last.frames_dropped)
        stats.windows_skipped = int(last.windows_skipped)
