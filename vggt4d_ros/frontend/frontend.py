"""The node's input path, once, without ROS: decoded images in, windows for the pipeline out.

Both drivers feed the same :class:`FrontEnd` with decoded messages: the lifecycle node
(:mod:`vggt4d_ros.ros.node`, from its subscriptions, with a worker thread taking windows) and the offline
replay (:mod:`vggt4d_ros.eval.offline`, from a bag in log order, taking each window at once: lock-step).
It owns, in this order on the way in:

- CameraInfo caching (absurd intrinsics rejected) and images waiting for their camera's first CameraInfo;
- size checks against the CameraInfo, the depth-topic matcher (``scale.depth_topic`` -> ``Frame.sensor_depth``)
  and the hold of a time step whose first-camera image waits for its depth image (``scale.depth_wait_s``);
- multi-camera sync (:class:`~vggt4d_ros.window.sync.MultiCameraSynchronizer`), time-jump and bag-loop resets;
- the sliding window (:class:`~vggt4d_ros.window.window.SlidingWindow`, latest-wins slot, windows chained to
  the last one taken) and the per-step status order (:class:`~vggt4d_ros.window.status.StatusSequencer`):
  acknowledgements of steps consumed without an inference, window results in stamp order;
- extrinsics ``base_frame <- optical frame`` from ``<camera>.extrinsics`` or /tf_static, waiting up to
  ``extrinsics_timeout_s`` before the first window;
- per-camera no-image warnings (throttled) and the counters the diagnostics report.

Threading: input methods run on one thread (the executor / the replay loop); :meth:`take`, :meth:`extrinsics`,
:meth:`done`, :meth:`failed` on the worker. The configuration is an immutable
:class:`~vggt4d_ros.frontend.config.Config`, replaced by :meth:`set_config`, never edited.
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from vggt4d_ros.extrinsics import resolve_extrinsics
from vggt4d_ros.perception.scale import SensorDepthMatcher
from vggt4d_ros.window.status import StatusSequencer
from vggt4d_ros.window.sync import CameraInfoCache, MultiCameraSynchronizer, TimeStep
from vggt4d_ros.window.window import KeyframeSelector, SlidingWindow, Window

from .config import Config
from .frames import Frame

__all__ = ["FrontEnd", "Throttle", "CAMERA_TIMEOUT_S", "valid_intrinsics"]

#: A camera that delivered no image for this long (since activation or its last image) is warned about
#: (throttled) and turns the diagnostics' tracking status to WARN while tracking has not started.
CAMERA_TIMEOUT_S = 5.0

#: Signature of the status builder a driver provides: (stamp, stamp_ns, num_views, message, tracking_state,
#: counters) -> status message (opaque to the front end).
AckBuilder = Callable[[Any, int, int, str, int, Dict[str, int]], Any]


class Throttle:
    """At most once per ``period`` seconds per key (bounded: keys are a fixed set of reasons)."""

    def __init__(self, period: float = 5.0, max_keys: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.max_keys = max_keys
        self.clock = clock
        self._last: Dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            return False
        if len(self._last) >= self.max_keys and key not in self._last:
            self._last.pop(next(iter(self._last)))
        self._last[key] = now
        return True


def valid_intrinsics(width: int, height: int, k: Iterable[float]) -> Optional[str]:
    """None when a CameraInfo's size and K are usable, else why not."""
    K = np.asarray(list(k), dtype=np.float64).reshape(3, 3)
    if (width <= 0 or height <= 0 or not np.all(np.isfinite(K)) or not 0 < K[0, 0] <= 1e6
            or not 0 < K[1, 1] <= 1e6):
        return f"camera_info: absurd intrinsics or size (fx={K[0, 0]}, fy={K[1, 1]}, {width}x{height})"
    return None


class FrontEnd:
    """See the module docstring.

    Args:
        cfg: the parameter snapshot.
        make_ack: builds a status message for a step consumed without an inference (see :data:`AckBuilder`).
        publish_status: sends one status message (called in stamp order, under the sequencer's lock).
        log: ``log(level, text)`` with level "info" / "warn" / "error".
        on_reset: called with the reason when the input restarts (the pipeline's ``request_reset``).
        clock: monotonic clock (arrival times, staleness); the replay passes bag time.
        live: a real-time source (cameras can go stale); False for a bag replay.
        on_window: lock-step: called right after a window was queued, before the next step is taken in
            (the replay processes it there); None when a worker thread calls :meth:`take`.
    """

    def __init__(self, cfg: Config, make_ack: AckBuilder, publish_status: Callable[[Any], None],
                 log: Callable[[str, str], None] = lambda level, text: None,
                 on_reset: Callable[[str], None] = lambda reason: None,
                 clock: Callable[[], float] = time.monotonic, live: bool = True,
                 on_window: Optional[Callable[[], None]] = None) -> None:
        self._cfg = cfg
        self.cameras: Tuple[str, ...] = cfg.cameras
        self.make_ack = make_ack
        self.log = log
        self.on_reset = on_reset
        self.clock = clock
        self.live = live
        self.on_window = on_window
        self.throttle = Throttle(5.0, clock=clock)
        self.infos = CameraInfoCache()
        self.sync = MultiCameraSynchronizer(
            list(self.cameras), tolerance_s=float(cfg["sync.tolerance_ms"]) * 1e-3, min_cameras=cfg.min_cameras,
            max_pending=int(cfg["sync.max_pending"]), camera_info=self.infos)
        motion = float(cfg["window.keyframe_motion"])
        keyframe = KeyframeSelector(motion / 255.0, image_fn=lambda f: f.rgb) if motion > 0 else None
        self.window = SlidingWindow(list(self.cameras), num_steps=int(cfg["window.num_steps"]),
                                    stride=int(cfg["window.stride"]), max_pending_windows=1, keyframe=keyframe,
                                    jitter_threshold_s=float(cfg["window.max_gap_s"]) or None)
        self.status = StatusSequencer(publish_status)
        self.depth: Optional[SensorDepthMatcher] = (
            SensorDepthMatcher(float(cfg["scale.depth_sync_tolerance_s"])) if str(cfg["scale.depth_topic"]) else None)
        self.static_tf: Dict[str, Tuple[str, np.ndarray]] = {}
        self.rejected: Dict[str, int] = {}
        self.counters: Dict[str, int] = {"steps_in": 0, "windows": 0, "windows_skipped": 0, "frames_dropped": 0,
                                         "resets": 0, "errors": 0}
        self.tracking_state = 0
        self.tracking_message = ""
        #: the last processed window's output sources (mask_source, keypoint_source, pose_source, depth_source),
        #: for the diagnostics
        self.output_sources: Dict[str, str] = {}
        self._waiting_info: Dict[str, tuple] = {}
        self._last_step_ns: Optional[int] = None
        self._started_at = clock()
        self._last_image: Dict[str, float] = {}
        self._extrinsics_warned = False
        #: a time step waiting for its first-camera depth image: (step, clock time it was held)
        self._held: Optional[Tuple[TimeStep, float]] = None

    # ------------------------------------------------------------------ configuration
    @property
    def cfg(self) -> Config:
        return self._cfg

    def set_config(self, cfg: Config) -> None:
        """Swap in a new snapshot (live parameters; the static ones are read-only while running)."""
        self._cfg = cfg

    # ------------------------------------------------------------------ inputs (one thread)
    def reject(self, cam: str, reason: str) -> None:
        """A message of ``cam`` that cannot be used (counted, warned about throttled per reason); the camera
        is not silent (:meth:`silent_cameras` is about cameras that send nothing)."""
        if cam in self.cameras:
            self._last_image[cam] = self.clock()
        self.rejected[cam] = self.rejected.get(cam, 0) + 1
        # Throttled per kind of reason: its text before any ':' detail, numbers (sizes, steps) left out.
        if self.throttle.ready(f"{cam}: {re.sub(r'[0-9]+', '#', reason.split(':')[0])}"):
            self.log("warn", f"rejected a message from camera {cam}: {reason}")

    def camera_info(self, cam: str, info: Any) -> bool:
        """A CameraInfo (any object with width, height, k); False when rejected."""
        why = valid_intrinsics(int(info.width), int(info.height), info.k)
        if why:
            self.reject(cam, why)
            return False
        self.infos.update(cam, info)
        pending = self._waiting_info.pop(cam, None)
        if pending is not None:  # an image that arrived just before its camera's first CameraInfo
            self.image(cam, *pending)
        return True

    def depth_image(self, stamp_ns: int, depth: np.ndarray) -> None:
        """``scale.depth_topic``: (H, W) float32 metres (NaN invalid), paired with camera 0's image by stamp."""
        if self.depth is not None:
            self.depth.add_depth(int(stamp_ns), depth)
            if self._held is not None and self._ref_frame(self._held[0]).sensor_depth is not None:
                self.release()

    def tf_static(self, transforms: Iterable[Tuple[str, str, np.ndarray]]) -> None:
        """(child, parent, (4, 4) T_parent_child) from /tf_static."""
        for child, parent, T in transforms:
            self.static_tf[str(child)] = (str(parent), np.asarray(T, dtype=np.float64))

    def image(self, cam: str, rgb: np.ndarray, stamp: Any, stamp_ns: int, header_frame_id: str = "",
              now: Optional[float] = None) -> None:
        """A decoded image (H, W, 3) uint8 of camera ``cam``."""
        now = self.clock() if now is None else float(now)
        self._last_image[cam] = now
        info = self.infos.get(cam)
        if info is None and self._cfg["sync.require_camera_info"]:
            if cam in self._waiting_info:  # a second image without CameraInfo: the older one is dropped
                self.reject(cam, f"no CameraInfo received yet on {self._cfg.info_topic(cam)}")
            self._waiting_info[cam] = (rgb, stamp, stamp_ns, header_frame_id, now)  # newest only: bounded
            return
        if info is not None and (int(info.width) != rgb.shape[1] or int(info.height) != rgb.shape[0]):
            self.reject(cam, f"image size {rgb.shape[1]}x{rgb.shape[0]} differs from its CameraInfo "
                             f"{info.width}x{info.height}")
            return
        frame = Frame(camera=cam, rgb=rgb, stamp=stamp, stamp_ns=int(stamp_ns),
                      frame_id=str(self._cfg.cam(cam, "optical_frame")) or header_frame_id, info=info,
                      arrival=now if self.live else float("nan"))
        if cam == self.cameras[0] and self.depth is not None:
            self.depth.add_frame(frame)  # sensor depth now, or when the depth image comes
        out = self.sync.add(cam, stamp_ns * 1e-9, frame, now=now)
        if out.reset_reason:
            self.reset(out.reset_reason)
        self.counters["frames_dropped"] += out.dropped
        for step in out.steps:
            self._on_step(step)

    def release(self, now: Optional[float] = None) -> bool:
        """Let a held time step into the window: always when ``now`` is None (its depth came, a newer step came,
        the input ends), else when it has waited ``scale.depth_wait_s`` (the node's timer). True if released."""
        held = self._held
        if held is None or (now is not None and now - held[1] < float(self._cfg["scale.depth_wait_s"])):
            return False
        self._held = None
        self._push(held[0])
        return True

    def flush(self) -> None:
        """The input ended (end of a bag): a step still waiting for its depth image goes on without it."""
        self.release()

    def reset(self, reason: str) -> None:
        """Input discontinuity: window and tracking restart (odom stays continuous)."""
        self.release()  # the held step belongs to the input before the discontinuity
        self.counters["resets"] += 1
        self.log("warn", f"input reset ({reason}): window and tracking restart")
        with self.status.lock:
            self.status.restart(cleared=self.window.reset())
        self._last_step_ns = None
        self.on_reset(reason)

    def _ref_frame(self, step: TimeStep) -> Frame:
        return step.frames[self.cameras[0]] if self.cameras[0] in step.frames else next(iter(step.frames.values()))

    def _on_step(self, step: TimeStep) -> None:
        stamp_ns = self._ref_frame(step).stamp_ns
        last = self._last_step_ns
        if last is not None:
            gap = (stamp_ns - last) * 1e-9
            jump = float(self._cfg["window.reset_on_time_jump_s"])
            if jump > 0 and gap > jump:
                self.reset(f"stamps jumped forward by {gap:.3f} s")
            elif gap > float(self._cfg["window.max_gap_s"]) and self.throttle.ready("gap"):
                self.log("warn", f"{gap:.3f} s between time steps (window.max_gap_s {self._cfg['window.max_gap_s']})")
        self._last_step_ns = stamp_ns
        self.counters["steps_in"] += 1
        self.release()  # the step before, if it still waits for its depth image: in order, without it
        if (self.depth is not None and float(self._cfg["scale.depth_wait_s"]) > 0
                and self._ref_frame(step).camera == self.cameras[0] and self._ref_frame(step).sensor_depth is None):
            self._held = (step, self.clock())  # one at a time: bounded
            return
        self._push(step)

    def _push(self, step: TimeStep) -> None:
        # Queueing and its status bookkeeping are one step for the worker (see StatusSequencer).
        with self.status.lock:
            res = self.window.push(step)
            self.counters["windows_skipped"] += int(res.skipped)
            if res.window is None:
                self.ack(self._ref_frame(step), len(step.frames), "" if res.accepted else "not a keyframe")
                return
            self.status.window_queued(res.window.window_id, res.skipped)
            self.counters["windows"] += 1
        if self.on_window is not None:
            self.on_window()

    def ack(self, frame: Frame, num_views: int, message: str) -> None:
        """Status of a step consumed without an inference (in order through the sequencer)."""
        self.status.ack(frame.stamp_ns, self.make_ack(frame.stamp, frame.stamp_ns, num_views, message,
                                                       self.tracking_state, dict(self.counters)))

    # ------------------------------------------------------------------ worker side
    def take(self, timeout: Optional[float] = None) -> Optional[Window]:
        """The next window for inference (None on timeout or after :meth:`close`)."""
        return self.window.queue.get(timeout=timeout)

    @staticmethod
    def newest_frames(win: Window) -> List[Frame]:
        return [f for f in win.frames[(win.num_steps - 1) * win.num_views:] if f is not None]

    def extrinsics(self, win: Window, started: bool, stop: Optional[threading.Event] = None,
                   sleep: Callable[[float], None] = time.sleep) -> Dict[str, np.ndarray]:
        """``{camera: T_base_optical}`` for the window; before tracking starts, wait up to
        ``extrinsics_timeout_s`` for /tf_static to provide every camera (the odom frame is fixed by the first
        window), then warn once and go on without the missing ones."""
        cfg = self._cfg
        frames = {c: f.frame_id for c, f in zip(win.camera_names, win.frames[(win.num_steps - 1) * win.num_views:])
                  if f is not None}
        ext = resolve_extrinsics(cfg, self.static_tf, frames)
        if started or not str(cfg["base_frame"]):
            return ext
        deadline = time.monotonic() + float(cfg["extrinsics_timeout_s"])
        while len(ext) < len(self.cameras) and time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            sleep(0.05)
            ext = resolve_extrinsics(cfg, self.static_tf, frames)
        missing = [c for c in self.cameras if c not in ext]
        if missing and not self._extrinsics_warned:
            self._extrinsics_warned = True
            self.log("warn", f"no extrinsics base_frame '{cfg['base_frame']}' <- optical frame for {missing} after "
                             f"{cfg['extrinsics_timeout_s']} s (from /tf_static or <camera>.extrinsics): assuming "
                             "camera 0 at the body origin looking along x; scale stays up to the model's unit")
        return ext

    def run(self, pipeline: Any, win: Window, stop: Optional[threading.Event] = None) -> Tuple[Any, str]:
        """Extrinsics (with the wait) and ``pipeline.process``: (result, "") or (None, why it was dropped)."""
        try:
            return pipeline.process(win, self.extrinsics(win, bool(pipeline.started), stop)), ""
        except Exception as exc:  # noqa: BLE001 - the window is dropped, the caller says why and goes on
            return None, f"window dropped: inference failed: {exc!r}"

    def done(self, win: Window, result: Any, statuses: List[Tuple[int, Any]]) -> None:
        """The window's outputs were published; ``statuses`` (stamp_ns, msg) per output step go out in order."""
        if result is not None:
            self.tracking_state = int(result.tracking_state)
            self.tracking_message = str(result.message)
            self.output_sources = {k: str(getattr(result, k, "none")) for k in ("mask_source", "keypoint_source",
                                                                           "pose_source", "depth_source")}
        self.status.window_done(win.window_id, statuses)

    def failed(self, win: Window, message: str) -> None:
        """The window was dropped: one status (its newest step) saying why, in order."""
        self.counters["errors"] += 1
        newest = self.newest_frames(win)
        statuses = []
        if newest:
            f = newest[0]
            statuses = [(f.stamp_ns, self.make_ack(f.stamp, f.stamp_ns, win.num_views, message, self.tracking_state,
                                                   dict(self.counters)))]
        self.status.window_done(win.window_id, statuses)

    def close(self) -> None:
        """Wake and stop the worker's :meth:`take`."""
        self.window.queue.close()

    # ------------------------------------------------------------------ health
    def silent_cameras(self, now: Optional[float] = None) -> Dict[str, float]:
        """Cameras without an image for :data:`CAMERA_TIMEOUT_S` -> seconds since their last one (or start)."""
        if not self.live:
            return {}
        now = self.clock() if now is None else float(now)
        out = {}
        for c in self.cameras:
            since = now - self._last_image.get(c, self._started_at)
            if since > CAMERA_TIMEOUT_S:
                out[c] = since
        return out

    def check_cameras(self, now: Optional[float] = None) -> Dict[str, float]:
        """Warn (throttled per camera) about silent cameras; returns them."""
        silent = self.silent_cameras(now)
        for c, since in silent.items():
            if self.throttle.ready(f"silent {c}"):
                topic = self._cfg.image_topic(c) + ("/compressed" if self._cfg.cam(c, "compressed") else "")
                self.log("warn", f"no images from camera {c} on {topic} for {since:.0f} s"
                                 + ("" if self.infos.has(c) else f" (and no CameraInfo on {self._cfg.info_topic(c)})"))
        return silent

    def diagnostics(self, now: Optional[float] = None) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, int], str]:
        """(per-camera sync figures with pending counts, counters with the inference queue, health note)."""
        now = self.clock() if now is None else float(now)
        sync_diag = self.sync.diagnostics(now=now)
        pending = self.sync.pending
        sync_diag = {c: dict(sync_diag.get(c, {}), pending=int(pending.get(c, 0))) for c in self.cameras}
        counters = dict(self.counters, inference_queue=len(self.window.queue))
        silent = self.silent_cameras(now)
        note = ", ".join(f"no images from {c} for {s:.0f} s" for c, s in silent.items())
        return sync_diag, counters, note

