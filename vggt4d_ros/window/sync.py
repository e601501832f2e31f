"""Multi-camera time synchronisation without ROS.

Feed ``(camera, stamp, payload)`` in any order; :class:`MultiCameraSynchronizer` emits
:class:`TimeStep` objects (one frame per camera whose stamps agree within a tolerance), in stamp
order. Only images are synchronised; the latest CameraInfo per camera lives in a
:class:`CameraInfoCache` beside it.

Matching rule: the oldest buffered frame is the anchor; every other camera contributes its buffered
frame closest to the anchor within ``tolerance_s``. A camera is *decided* when it has such a frame or
when it has already delivered a frame newer than ``anchor + tolerance_s`` (per-camera stamps are
assumed to increase; small reorderings are absorbed by the sorted buffers). When all cameras are
decided, a step is emitted if at least ``min_cameras`` take part, otherwise the anchor is dropped.
While a camera is undecided the synchroniser waits, unless the newest stamp seen is more than
``slack_s`` past the anchor (a stopped or very late camera), in which case undecided cameras count as
missing. Stamp-based (not wall-clock) decisions make the output deterministic for bag replay.

Written by hand: message_filters' ApproximateTime policy needs rclpy and grows combinatorially with
the number of inputs; this is linear in the buffered frames.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

__all__ = ["TimeStep", "CameraInfoCache", "CameraStats", "SyncOutput", "MultiCameraSynchronizer"]


@dataclass
class TimeStep:
    """Frames of several cameras taken at (about) the same time.

    Attributes:
        stamp: seconds; the stamp of the first configured camera present in the step (the reference
            camera), so outputs carry a real acquisition stamp.
        frames: camera name -> payload (only cameras present in this step).
        stamps: camera name -> that frame's own stamp (seconds).
        camera_infos: camera name -> latest CameraInfo when a cache is attached (else empty).
        seq: index of the step since the synchroniser was created (monotonic across resets).
    """

    stamp: float
    frames: Dict[str, Any]
    stamps: Dict[str, float]
    camera_infos: Dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    complete: bool = True  # every configured camera present


class CameraInfoCache:
    """Latest CameraInfo (any object) per camera, with the stamp it arrived with."""

    def __init__(self) -> None:
        self._info: Dict[str, Tuple[Any, Optional[float]]] = {}

    def update(self, camera: str, info: Any, stamp: Optional[float] = None) -> None:
        self._info[camera] = (info, stamp)

    def get(self, camera: str) -> Optional[Any]:
        item = self._info.get(camera)
        return None if item is None else item[0]

    def has(self, camera: str) -> bool:
        return camera in self._info

    def missing(self, cameras: Sequence[str]) -> List[str]:
        return [c for c in cameras if c not in self._info]

    def clear(self) -> None:
        self._info.clear()


@dataclass
class CameraStats:
    """Per-camera diagnostics (counts since creation)."""

    received: int = 0
    used: int = 0
    dropped_overflow: int = 0  # buffer full, oldest dropped
    dropped_unmatched: int = 0  # no partner within tolerance
    dropped_late: int = 0  # arrived after its time was already emitted
    dropped_no_info: int = 0  # frame excluded because no CameraInfo was cached
    duplicates: int = 0
    last_stamp: Optional[float] = None
    last_arrival: Optional[float] = None  # wall/monotonic clock of the last arrival
    rate_hz: float = 0.0  # arrival rate over the recent arrivals
    stale: bool = False


@dataclass
class SyncOutput:
    """What one :meth:`MultiCameraSynchronizer.add` call produced."""

    steps: List[TimeStep]
    reset_reason: Optional[str] = None
    duplicate: bool = False
    dropped: int = 0  # frames dropped (any reason) during this call


class MultiCameraSynchronizer:
    """Approximate-time synchroniser for N cameras with bounded buffers.

    Args:
        camera_names: the cameras, in rig order (the first is the reference for ``TimeStep.stamp``).
        tolerance_s: maximum stamp difference between a camera's frame and the anchor frame.
        min_cameras: emit partial steps with at least this many cameras (default: all cameras).
        max_pending: frames buffered per camera; the oldest is dropped (and counted) beyond it.
        slack_s: stamp time after which an undecided camera counts as missing (default 3 tolerances
            or 0.1 s, whichever is larger).
        reset_threshold_s: a camera's stamp this far behind that camera's own newest stamp means the
            source restarted or a bag looped: all buffers are cleared and the reason is reported. (A
            camera lagging behind the others is not a restart: its late frames are dropped.)
        reorder_s: how far (stamp seconds) one camera's own frames may arrive out of order; a camera
            is only judged missing for an anchor once it delivered a frame this much past the
            tolerance (0 = per-topic order is kept, as DDS does for one publisher).
        reset_grace_s: after a reset, cameras still sending old-epoch stamps (far ahead of the new
            epoch) are ignored for this long (wall clock) instead of triggering another reset.
        stale_timeout_s: a camera with no arrival for this long (wall clock) is reported stale.
        camera_info: optional cache; with ``require_camera_info`` a camera without a cached info is
            left out of steps (and counted), like a missing camera.
        rate_window: number of recent arrivals used for the rate estimate.
    """

    def __init__(
        self,
        camera_names: Sequence[str],
        tolerance_s: float,
        min_cameras: Optional[int] = None,
        max_pending: int = 30,
        slack_s: Optional[float] = None,
        reset_threshold_s: float = 1.0,
        reorder_s: float = 0.0,
        reset_grace_s: float = 2.0,
        stale_timeout_s: float = 1.0,
        camera_info: Optional[CameraInfoCache] = None,
        require_camera_info: bool = False,
        rate_window: int = 30,
    ) -> None:
        self.cameras: Tuple[str, ...] = tuple(camera_names)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError("camera_names must be non-empty and unique")
        if tolerance_s < 0:
            raise ValueError("tolerance_s must be >= 0")
        self.tolerance_s = float(tolerance_s)
        self.min_cameras = len(self.cameras) if min_cameras is None else int(min_cameras)
        if not 1 <= self.min_cameras <= len(self.cameras):
            raise ValueError("min_cameras must be in [1, number of cameras]")
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending = int(max_pending)
        self.reorder_s = float(reorder_s)
        self.slack_s = (
            max(3.0 * self.tolerance_s, 0.1, self.reorder_s + 2.0 * self.tolerance_s) if slack_s is None else float(slack_s)
        )
        self.reset_threshold_s = float(reset_threshold_s)
        self.reset_grace_s = float(reset_grace_s)
        self.stale_timeout_s = float(stale_timeout_s)
        self.camera_info = camera_info
        self.require_camera_info = bool(require_camera_info)
        self.stats: Dict[str, CameraStats] = {c: CameraStats() for c in self.cameras}
        self.resets = 0
        self.last_reset_reason: Optional[str] = None
        self.steps_emitted = 0
        self.partial_steps = 0
        self._arrivals: Dict[str, Deque[float]] = {c: deque(maxlen=max(2, rate_window)) for c in self.cameras}
        self._created = time.monotonic()
        self._seq = 0
        self._clear()

    # ------------------------------------------------------------------ state
    def _clear(self) -> None:
        # Per camera: sorted lists of stamps and payloads.
        self._stamps: Dict[str, List[float]] = {c: [] for c in self.cameras}
        self._payloads: Dict[str, List[Any]] = {c: [] for c in self.cameras}
        self._cam_newest: Dict[str, float] = {}
        self._newest: Optional[float] = None
        self._last_emitted: Optional[float] = None
        self._last_emitted_cam: Dict[str, float] = {}
        self._grace_until: float = -float("inf")
        self._joined: set = set(self.cameras)

    def reset(self, reason: str = "manual reset", now: Optional[float] = None) -> None:
        """Drop every buffered frame (stats are kept)."""
        self._clear()
        self.resets += 1
        self.last_reset_reason = reason

    @property
    def pending(self) -> Dict[str, int]:
        """Buffered frame count per camera."""
        return {c: len(v) for c, v in self._stamps.items()}

    # ------------------------------------------------------------------ input
    def add(self, camera: str, stamp: float, payload: Any, now: Optional[float] = None) -> SyncOutput:
        """Add one frame; returns the steps that became complete (in stamp order) and events.

        Args:
            camera: one of ``camera_names``.
            stamp: acquisition stamp in seconds.
            payload: anything (image message, array); handed back in ``TimeStep.frames``.
            now: wall/monotonic clock for rate and staleness (default ``time.monotonic()``).
        """
        if camera not in self.stats:
            raise KeyError(f"unknown camera {camera!r}; configured: {self.cameras}")
        now = time.monotonic() if now is None else float(now)
        stamp = float(stamp)
        st = self.stats[camera]
        st.received += 1
        st.last_arrival = now
        st.stale = False
        arr = self._arrivals[camera]
        arr.append(now)
        if len(arr) >= 2 and arr[-1] > arr[0]:
            st.rate_hz = (len(arr) - 1) / (arr[-1] - arr[0])
        out = SyncOutput(steps=[])

        # Old-epoch frames after a reset: ignore during the grace period.
        if camera not in self._joined:
            if now <= self._grace_until and self._newest is not None and stamp > self._newest + self.reset_threshold_s:
                st.dropped_late += 1
                out.dropped += 1
                return out
            self._joined.add(camera)

        # Backward jump of this camera's own stamps -> reset. (Against its own newest stamp, not the newest of
        # all cameras: a camera whose frames arrive late - a transport stall - is not a restart; its late
        # frames are dropped below or time out unmatched.)
        own = self._cam_newest.get(camera)
        if own is not None and stamp < own - self.reset_threshold_s:
            reason = (
                f"camera {camera}: stamp went back {own - stamp:.3f} s "
                f"({own:.3f} -> {stamp:.3f}); bag loop or source restart, buffers cleared"
            )
            self.reset(reason, now)
            self._grace_until = now + self.reset_grace_s
            self._joined = {camera}
            out.reset_reason = reason

        stamps = self._stamps[camera]
        i = bisect.bisect_left(stamps, stamp)
        if (i < len(stamps) and stamps[i] == stamp) or self._last_emitted_cam.get(camera) == stamp:
            st.duplicates += 1
            out.duplicate = True
            return out
        if self._last_emitted is not None and stamp <= self._last_emitted - self.tolerance_s:
            st.dropped_late += 1
            out.dropped += 1
            return out
        stamps.insert(i, stamp)
        self._payloads[camera].insert(i, payload)
        if len(stamps) > self.max_pending:
            stamps.pop(0)
            self._payloads[camera].pop(0)
            st.dropped_overflow += 1
            out.dropped += 1
        st.last_stamp = stamp if st.last_stamp is None else max(st.last_stamp, stamp)
        self._cam_newest[camera] = max(self._cam_newest.get(camera, stamp), stamp)
        self._newest = stamp if self._newest is None else max(self._newest, stamp)

        dropped_before = sum(self._drop_count(c) for c in self.cameras)
        out.steps = self._match()
        out.dropped += sum(self._drop_count(c) for c in self.cameras) - dropped_before
        return out

    def _drop_count(self, c: str) -> int:
        s = self.stats[c]
        return s.dropped_unmatched + s.dropped_no_info

    def _has_info(self, camera: str) -> bool:
        return not self.require_camera_info or (self.camera_info is not None and self.camera_info.has(camera))

    def _match(self) -> List[TimeStep]:
        steps: List[TimeStep] = []
        tol = self.tolerance_s
        while True:
            heads = [(v[0], c) for c, v in self._stamps.items() if v]
            if not heads:
                return steps
            anchor, anchor_cam = min(heads)
            chosen: Dict[str, int] = {anchor_cam: 0}
            undecided = []
            for c in self.cameras:
                if c == anchor_cam:
                    continue
                v = self._stamps[c]
                # Every buffered stamp is >= anchor (the global oldest), so the closest is v[0].
                if v and v[0] - anchor <= tol:
                    chosen[c] = 0
                elif self._cam_newest.get(c, -float("inf")) > anchor + tol + self.reorder_s:
                    continue  # decided: missing
                else:
                    undecided.append(c)
            if undecided and not (self._newest is not None and self._newest - anchor > self.slack_s):
                return steps  # wait for the undecided cameras
            present = [c for c in self.cameras if c in chosen and self._has_info(c)]
            for c in chosen:
                if c not in present:
                    self.stats[c].dropped_no_info += 1
            if len(present) >= self.min_cameras:
                steps.append(self._emit(chosen, present))
            else:
                # The anchor cannot form a step: drop it (other chosen frames stay for later anchors).
                self._stamps[anchor_cam].pop(0)
                self._payloads[anchor_cam].pop(0)
                if self._has_info(anchor_cam):
                    self.stats[anchor_cam].dropped_unmatched += 1

    def _emit(self, chosen: Dict[str, int], present: List[str]) -> TimeStep:
        frames, stamps, infos = {}, {}, {}
        newest_used = -float("inf")
        for c, j in chosen.items():
            st = self._stamps[c][j]
            if c in present:
                frames[c] = self._payloads[c][j]
                stamps[c] = st
                self.stats[c].used += 1
                if self.camera_info is not None and self.camera_info.has(c):
                    infos[c] = self.camera_info.get(c)
            self._last_emitted_cam[c] = st
            newest_used = max(newest_used, st)
            # Frames older than the chosen one can no longer be used.
            if j > 0:
                self.stats[c].dropped_unmatched += j
            del self._stamps[c][: j + 1]
            del self._payloads[c][: j + 1]
        ref = next(c for c in self.cameras if c in frames)
        self._last_emitted = newest_used
        step = TimeStep(stamp=stamps[ref], frames=frames, stamps=stamps, camera_infos=infos, seq=self._seq)
        step.complete = len(frames) == len(self.cameras)
        self._seq += 1
        self.steps_emitted += 1
        if not step.complete:
            self.partial_steps += 1
        return step

    # ------------------------------------------------------------------ diagnostics
    def stale_cameras(self, now: Optional[float] = None) -> List[str]:
        """Cameras with no arrival for ``stale_timeout_s`` (never-seen cameras count from creation)."""
        now = time.monotonic() if now is None else float(now)
        out = []
        for c in self.cameras:
            last = self.stats[c].last_arrival
            ref = self._created if last is None else last
            stale = now - ref > self.stale_timeout_s
            self.stats[c].stale = stale
            if stale:
                out.append(c)
        return out

    def diagnostics(self, now: Optional[float] = None) -> Dict[str, Dict[str, Any]]:
        """Per-camera stats as plain dicts (rate, drops, staleness), refreshed at ``now``."""
        self.stale_cameras(now)
        return {c: dict(vars(s)) for c, s in self.stats.items()}

    @property
    def total_dropped(self) -> int:
        return sum(
            s.dropped_overflow + s.dropped_unmatched + s.dropped_late + s.dropped_no_info for s in self.stats.values()
        )
