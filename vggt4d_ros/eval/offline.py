"""Offline replay: the node's computation on a bag, directly, deterministically, as fast as the model goes.

The bag is read in log-time order and fed exactly as the node feeds its inputs (same parameter set,
same :class:`~vggt4d_ros.window.sync.MultiCameraSynchronizer`, :class:`~vggt4d_ros.window.window.SlidingWindow`
and :class:`~vggt4d_ros.pipeline.Pipeline`); every complete window is processed at once (the node in
lock-step does the same), and the node's messages are built and written to the output bag with bag-time
log stamps. Differences from the node, on purpose: the synchroniser's wall clock is the bag's stamp
clock (deterministic), and the first CameraInfo of each camera is known before the first image (the
through-ROS runner primes the node the same way), so the first time step is not lost to topic order.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from vggt4d_ros.bag.io import BagWriter, bag_topics, make_qos, open_writer, read_messages

from .config import CameraTopics
from .node_messages import (ack_message, diagnostics_message, serialize, status_messages,
                            step_messages)

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
    """The outputs bag: a rosbag2 MCAP written with :class:`~vggt4d_ros.bag.io.BagWriter` (topics registered
    on first use, log time = the message's stamp) and moved to ``DIR/outputs.mcap`` when finalised."""

    def __init__(self, out_dir: Path, qos_depth: int = 10) -> None:
        self.out_dir = Path(out_dir)
        self.bag_dir = self.out_dir / "outputs.bag"
        if self.bag_dir.exists():
            shutil.rmtree(self.bag_dir)
        self.writer: BagWriter = open_writer(self.bag_dir, "mcap")
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
        return finalize_output(self.writer.close(), self.out_dir / "outputs.mcap")


def finalize_output(bag_dir: Path, target: Path) -> Path:
    """Move the single ``.mcap`` of a rosbag2 directory to ``target`` (a self-describing MCAP file that
    rosbags, the mcap tools and ``ros2 bag`` open) and remove the directory."""
    files = sorted(Path(bag_dir).glob("*.mcap"))
    if len(files) != 1:
        raise RuntimeError(f"expected one .mcap in {bag_dir}, found {len(files)}")
    if target.exists():
        target.unlink()
    shutil.move(str(files[0]), str(target))
    shutil.rmtree(bag_dir, ignore_errors=True)
    return target


def pipeline_config(params: Mapping[str, Any]):
    """The :class:`~vggt4d_ros.pipeline.PipelineConfig` the node builds from these parameters."""
    from vggt4d_ros.pipeline import pipeline_config_from_params

    return pipeline_config_from_params(dict(params))


def _valid_info(info) -> bool:
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    return bool(info.width > 0 and info.height > 0 and np.all(np.isfinite(K)) and 0 < K[0, 0] <= 1e6
                and 0 < K[1, 1] <= 1e6)


def _extrinsics(params: Mapping[str, Any], static_tf: Mapping[str, tuple], frames: Mapping[str, str]
                ) -> Dict[str, np.ndarray]:
    """base_frame <- optical frame per camera (the node's rule, :func:`vggt4d_ros.extrinsics.resolve_extrinsics`)."""
    from vggt4d_ros.extrinsics import resolve_extrinsics

    return resolve_extrinsics(params, static_tf, frames)


def run_offline(bag: Path, params: Dict[str, Any], cams: CameraTopics, out: OutputBag, *,
                pipeline: Any = None, max_steps: Optional[int] = None,
                progress: Optional[Callable[[int], None]] = None,
                log: Callable[[str], None] = lambda s: None) -> RunStats:
    """Replay ``bag`` through the pipeline, writing the node's messages to ``out``.

    Args:
        params: effective node parameters (dotted names), cameras resolved.
        pipeline: a ready :class:`~vggt4d_ros.pipeline.Pipeline` (built from ``params`` when None).
        max_steps: stop after this many synchronised time steps.
        progress: called with the number of image messages consumed so far.

    KeyboardInterrupt stops the run cleanly (``stats.interrupted``); ``out`` is left open for the caller.
    """
    from vggt4d_ros.pipeline import Pipeline
    from vggt4d_ros.ros import conversions as conv
    from vggt4d_ros.window.sync import CameraInfoCache, MultiCameraSynchronizer
    from vggt4d_ros.window.window import KeyframeSelector, SlidingWindow

    stats = RunStats(mode="offline")
    names = list(cams.names)
    if pipeline is None:
        pipeline = Pipeline(pipeline_config(params))
    stats.device = str(getattr(pipeline, "device_name", ""))
    min_cams = int(params["sync.min_cameras"]) or len(names)
    infos = CameraInfoCache()
    sync = MultiCameraSynchronizer(names, tolerance_s=float(params["sync.tolerance_ms"]) * 1e-3,
                                   min_cameras=min(min_cams, len(names)), max_pending=int(params["sync.max_pending"]),
                                   camera_info=infos)
    motion = float(params["window.keyframe_motion"])
    keyframe = KeyframeSelector(motion / 255.0, image_fn=lambda payload: payload["rgb"]) if motion > 0 else None
    T = int(params["window.num_steps"])
    window = SlidingWindow(names, num_steps=T, stride=min(int(params["window.stride"]), T), max_pending_windows=1,
                           keyframe=keyframe, jitter_threshold_s=float(params["window.max_gap_s"]) or None)
    pipeline.reset("replay")
    by_image = {t: c for c, t in cams.image.items()}
    by_info = {t: c for c, t in cams.info.items()}
    available = bag_topics(bag)
    topics = list(by_image) + list(by_info) + [t for t in ("/tf_static",) if t in available]
    static_tf: Dict[str, tuple] = {}
    rejected: Dict[str, int] = {}
    counters = {"steps_in": 0, "windows": 0, "windows_skipped": 0, "frames_dropped": 0, "resets": 0, "errors": 0}
    state = {"tracking": 0, "message": "", "last_step_ns": None}
    max_px = int(params["max_image_pixels"])
    require_info = bool(params["sync.require_camera_info"])

    # Prime: the first valid CameraInfo of every camera (see the module docstring).
    for _t, _mt, _log, msg in read_messages(bag, list(by_info), decode=True):
        cam = by_info[_t]
        if not infos.has(cam) and _valid_info(msg):
            infos.update(cam, msg)
        if all(infos.has(c) for c in names):
            break

    def emit(items, stamp_ns: int) -> None:
        for topic, msgtype, msg in items:
            out.write(topic, msgtype, stamp_ns, serialize(msg))

    def process_window(win) -> None:
        t0 = time.perf_counter()
        V = win.num_views
        newest = win.frames[(win.num_steps - 1) * V:]
        frames = {c: f["frame_id"] for c, f in zip(win.camera_names, newest) if f is not None}
        try:
            result = pipeline.process(win, _extrinsics(params, static_tf, frames))
        except Exception as exc:  # noqa: BLE001 - as the node: drop the window, say why, keep going
            counters["errors"] += 1
            log(f"window dropped: inference failed: {exc!r}")
            f = next(f for f in newest if f is not None)
            emit([ack_message(params, f["stamp"], V, state["tracking"], counters["windows"],
                              counters["frames_dropped"], counters["windows_skipped"],
                              f"window dropped: {exc!r}")], f["stamp_ns"])
            return
        msgs = []
        for step in result.steps:
            msgs.append((step.stamp_ns, step_messages(params, step)))
        latency = time.perf_counter() - t0
        for step, (st_ns, items) in zip(result.steps, msgs):
            emit(items, st_ns)
        for step, item in zip(result.steps, status_messages(params, result, latency, counters["frames_dropped"],
                                                            counters["windows_skipped"])):
            emit([item], step.stamp_ns)
        state["tracking"], state["message"] = int(result.tracking_state), result.message
        stats.latencies_s.append(latency)
        now = time.perf_counter()
        stats.output_times_s.extend([now] * len(result.steps))
        stats.steps_out += len(result.steps)
        end_ns = max(s.stamp_ns for s in result.steps) if result.steps else newest[0]["stamp_ns"]
        emit([diagnostics_message(end_ns, names, sync.diagnostics(now=0.0), rejected, counters, state["tracking"],
                                  state["message"], stats.latencies_s)], end_ns)

    def reset(reason: str) -> None:
        counters["resets"] += 1
        log(f"input reset ({reason}): window and tracking restart")
        window.reset()
        state["last_step_ns"] = None
        pipeline.request_reset(reason)

    def on_step(step) -> bool:
        ref = names[0] if names[0] in step.frames else next(iter(step.frames))
        stamp_ns = step.frames[ref]["stamp_ns"]
        last = state["last_step_ns"]
        if last is not None:
            jump = float(params["window.reset_on_time_jump_s"])
            if jump > 0 and (stamp_ns - last) * 1e-9 > jump:
                reset(f"stamps jumped forward by {(stamp_ns - last) * 1e-9:.3f} s")
        state["last_step_ns"] = stamp_ns
        counters["steps_in"] += 1
        stats.steps_in += 1
        stats.frames_used += len(step.frames)
        res = window.push(step)
        counters["windows_skipped"] += int(res.skipped)
        if res.window is None:
            emit([ack_message(params, step.frames[ref]["stamp"], len(step.frames), state["tracking"],
                              counters["windows"], counters["frames_dropped"], counters["windows_skipped"],
                              "" if res.accepted else "not a keyframe")], stamp_ns)
        else:
            counters["windows"] += 1
            stats.windows += 1
            window.queue.get(timeout=0)  # processed right here (lock-step), not by a worker
            process_window(res.window)
        return max_steps is not None and stats.steps_in >= max_steps

    t_start = time.perf_counter()
    done = False
    try:
        for topic, _mt, _log, msg in read_messages(bag, topics, decode=True):
            if topic == "/tf_static":
                from vggt4d_ros.ros.transforms import transform_to_matrix

                for tf in msg.transforms:
                    static_tf[tf.child_frame_id] = (tf.header.frame_id, transform_to_matrix(tf.transform))
                continue
            if topic in by_info:
                cam = by_info[topic]
                if _valid_info(msg):
                    infos.update(cam, msg)
                else:
                    rejected[cam] = rejected.get(cam, 0) + 1
                continue
            cam = by_image[topic]
            stats.frames_in += 1
            if progress is not None:
                progress(stats.frames_in)
            try:
                rgb = conv.compressed_to_rgb(msg, max_pixels=max_px) if cams.compressed[cam] else \
                    conv.image_to_rgb(msg, max_pixels=max_px)
            except conv.ImageConversionError as exc:
                rejected[cam] = rejected.get(cam, 0) + 1
                stats.frames_rejected += 1
                if rejected[cam] == 1:
                    log(f"rejected a message from camera {cam}: {exc}")
                continue
            info = infos.get(cam)
            if (info is None and require_info) or (info is not None and (info.width != rgb.shape[1]
                                                                         or info.height != rgb.shape[0])):
                rejected[cam] = rejected.get(cam, 0) + 1
                stats.frames_rejected += 1
                continue
            stamp_ns = conv.stamp_to_ns(msg.header.stamp)
            frame_id = str(params.get(f"{cam}.optical_frame") or "") or msg.header.frame_id
            payload = {"rgb": rgb, "stamp": conv.ns_to_stamp(stamp_ns), "stamp_ns": stamp_ns, "frame_id": frame_id,
                       "info": info}
            res = sync.add(cam, stamp_ns * 1e-9, payload, now=stamp_ns * 1e-9)
            if res.reset_reason:
                reset(res.reset_reason)
            counters["frames_dropped"] += res.dropped
            for step in res.steps:
                if on_step(step):
                    done = True
                    break
            if done:
                stats.stopped_at_max_steps = True
                break
    except KeyboardInterrupt:
        stats.interrupted = True
    stats.wall_s = time.perf_counter() - t_start
    stats.frames_dropped = counters["frames_dropped"]
    stats.windows_skipped = counters["windows_skipped"]
    stats.errors = counters["errors"]
    stats.resets = counters["resets"]
    stats.messages = out.counts
    return stats
