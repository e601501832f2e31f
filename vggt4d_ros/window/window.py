"""Sliding window of V views x T time steps, keyframe selection and a latest-wins worker queue.

Frames inside a :class:`Window` are time-major: frame ``s = t * V + v`` is view ``v`` at step ``t``
(the layout the model's ``[S, 3, H, W]`` input uses).

Windows chain to each other through shared time steps, so a window is built against the last window the
consumer TOOK from the queue (not the last one emitted): when the consumer keeps up, windows are the
newest ``T`` contiguous steps (overlap ``T - stride``); when it is slower than the input and windows are
skipped, the next window still starts with the newest steps of the last window taken (at least
``min(2, T - stride)``, what :class:`~vggt4d_ros.window.chain.WindowChainer` needs) and fills its other
slots with steps picked by age between that window and the newest step (always the newest, evenly spaced
before it). So tracking chains at any input rate; the steps in between are never output.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .sync import TimeStep

__all__ = ["Window", "WindowQueue", "KeyframeSelector", "PushResult", "SlidingWindow"]


@dataclass(frozen=True)
class Window:
    """V views x T steps handed to inference.

    Attributes:
        window_id: index of the window since creation (skipped windows also consume an id).
        camera_names: (V,) view order.
        step_ids: (T,) ids of the steps (monotonic, unique since creation).
        stamps: (T,) step stamps (seconds, the reference camera's acquisition stamp).
        frame_stamps: (T, V) float64 per-frame stamps, NaN where a camera was missing.
        frames: length S = T*V list, time-major, None where a camera was missing.
        camera_infos: length S list (None where unknown).
        time_steps: (T,) the :class:`TimeStep` objects (what the next window's overlap is built from).
    """

    window_id: int
    camera_names: Tuple[str, ...]
    step_ids: Tuple[int, ...]
    stamps: Tuple[float, ...]
    frame_stamps: np.ndarray
    frames: Tuple[Any, ...]
    camera_infos: Tuple[Any, ...]
    time_steps: Tuple[Any, ...] = ()

    @property
    def num_views(self) -> int:
        return len(self.camera_names)

    @property
    def num_steps(self) -> int:
        return len(self.step_ids)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def index(self, t: int, v: int) -> int:
        """Frame index s of view v at step t."""
        return t * self.num_views + v

    def step_and_view(self, s: int) -> Tuple[int, int]:
        return divmod(s, self.num_views)


class WindowQueue:
    """Thread-safe bounded hand-off; when full, the OLDEST item is discarded (latest wins).

    ``put`` never blocks (it runs on the executor thread); ``get`` blocks the worker until an item,
    a timeout, or :meth:`close`.
    """

    def __init__(self, maxsize: int = 1) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = int(maxsize)
        self._items: Deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.skipped = 0
        self.last_taken: Any = None  # the item the consumer took last (None after clear())

    def put(self, item: Any) -> int:
        """Enqueue; returns how many older items were discarded to make room."""
        return self.put_built(lambda _last: item)[1]

    def put_built(self, build: Callable[[Any], Any]) -> Tuple[Any, int]:
        """Build an item from the last item taken (``build(last_taken)``) and enqueue it, atomically with
        respect to :meth:`get`: an item waiting in the queue was always built against the last one taken.
        Returns (item, number of older items discarded)."""
        with self._cond:
            item = build(self.last_taken)
            dropped = 0
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self.skipped += dropped
            self._cond.notify()
            return item, dropped

    def get(self, timeout: Optional[float] = None) -> Optional[Any]:
        """Oldest waiting item, or None on timeout / when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout=timeout):
                return None
            if not self._items:
                return None
            self.last_taken = self._items.popleft()
            return self.last_taken

    def clear(self) -> int:
        """Drop waiting items and forget the last one taken (an input restart: nothing to chain to)."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self.last_taken = None
            return n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def _default_image(payload: Any) -> np.ndarray:
    return np.asarray(payload)


class KeyframeSelector:
    """Keyframe test by image motion: mean absolute difference of a small grey image.

    A step is a keyframe when the mean over its cameras of ``mean |g - g_key|`` (grey in [0, 1],
    resized to ``size`` with area averaging) is at least ``threshold``, compared with the last
    keyframe; the first step and any step after ``max_skip`` rejected steps are keyframes.

    Args:
        threshold: motion threshold in grey levels / 255 (e.g. 0.02).
        size: (width, height) of the downscaled image.
        image_fn: payload -> HxW or HxWx3 image (uint8 or float in [0,1]); default ``np.asarray``.
        max_skip: force a keyframe after this many rejected steps (None = never force).
    """

    def __init__(
        self,
        threshold: float,
        size: Tuple[int, int] = (64, 48),
        image_fn: Callable[[Any], np.ndarray] = _default_image,
        max_skip: Optional[int] = None,
    ) -> None:
        self.threshold = float(threshold)
        self.size = (int(size[0]), int(size[1]))
        self.image_fn = image_fn
        self.max_skip = max_skip
        self.reset()

    def reset(self) -> None:
        self._key: dict = {}
        self._skipped = 0
        self.last_motion: float = float("nan")

    def _small(self, payload: Any) -> np.ndarray:
        img = np.asarray(self.image_fn(payload))
        scale = 255.0 if img.dtype == np.uint8 else (65535.0 if img.dtype == np.uint16 else 1.0)
        img = img.astype(np.float32) / scale
        if img.ndim == 3:
            img = img.mean(axis=2, dtype=np.float32) if img.shape[2] != 1 else img[..., 0]
        return cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)

    def motion(self, step: TimeStep) -> float:
        """Mean image motion of ``step`` against the last keyframe (inf when no common camera)."""
        diffs = [
            float(np.abs(self._small(p) - self._key[c]).mean()) for c, p in step.frames.items() if c in self._key
        ]
        return float(np.mean(diffs)) if diffs else float("inf")

    def __call__(self, step: TimeStep) -> bool:
        """Decide and, on a keyframe, remember the step's images as the new reference."""
        m = self.motion(step)
        self.last_motion = m
        forced = self.max_skip is not None and self._skipped >= self.max_skip
        if m >= self.threshold or forced:
            self._key = {c: self._small(p) for c, p in step.frames.items()}
            self._skipped = 0
            return True
        self._skipped += 1
        return False


@dataclass
class PushResult:
    """Outcome of :meth:`SlidingWindow.push`."""

    window: Optional[Window] = None  # emitted window (also put on the queue)
    accepted: bool = True  # False when the step was not a keyframe
    step_id: Optional[int] = None
    gap_s: Optional[float] = None  # stamp gap to the previous step
    jitter: bool = False  # gap exceeded the jitter threshold
    skipped: int = 0  # windows discarded from the queue by this push


class SlidingWindow:
    """Accumulates TimeSteps into overlapping windows of ``num_steps`` steps every ``stride`` steps.

    Args:
        camera_names: (V,) view order in the windows.
        num_steps: T.
        stride: steps between consecutive windows (1 <= stride <= T; overlap = T - stride).
        max_pending_windows: windows allowed to wait for the consumer; older ones are skipped.
        keyframe: optional :class:`KeyframeSelector`; non-keyframe steps are not added.
        jitter_threshold_s: report a step whose stamp gap to the previous one exceeds this.

    Windows are built against the last window the consumer took (see the module docstring), so skipped
    windows never break the chain. Memory is bounded: ``history`` steps (default 3 T), the last window
    taken, plus ``max_pending_windows`` windows, whatever the input rate.
    """

    def __init__(
        self,
        camera_names: Sequence[str],
        num_steps: int,
        stride: int,
        max_pending_windows: int = 1,
        keyframe: Optional[KeyframeSelector] = None,
        jitter_threshold_s: Optional[float] = None,
        history: Optional[int] = None,
    ) -> None:
        if num_steps < 1 or not 1 <= stride <= num_steps:
            raise ValueError("need num_steps >= 1 and 1 <= stride <= num_steps")
        if history is not None and history < num_steps:
            raise ValueError("history must be >= num_steps")
        self.camera_names = tuple(camera_names)
        self.num_steps = int(num_steps)
        self.stride = int(stride)
        self.keyframe = keyframe
        self.jitter_threshold_s = jitter_threshold_s
        self.queue = WindowQueue(max_pending_windows)
        # Steps kept to pick a window from (newest last): the newest T, and older ones for a consumer behind.
        self._buf: Deque[Tuple[int, TimeStep]] = deque(maxlen=int(history or 3 * self.num_steps))
        self._next_step_id = 0
        self._next_window_id = 0
        self._since_emit = 0
        self._since_reset = 0
        self._last_stamp: Optional[float] = None
        self.windows_emitted = 0
        self.steps_pushed = 0
        self.steps_rejected = 0
        self.jitter_events = 0
        self.max_gap_s = 0.0
        self.lock = threading.Lock()

    @property
    def windows_skipped(self) -> int:
        return self.queue.skipped

    def __len__(self) -> int:
        return min(len(self._buf), self.num_steps)

    def reset(self) -> int:
        """Forget buffered steps and waiting windows (e.g. after a bag loop). Returns windows dropped."""
        with self.lock:
            self._buf.clear()
            self._since_emit = 0
            self._since_reset = 0
            self._last_stamp = None
            if self.keyframe is not None:
                self.keyframe.reset()
            return self.queue.clear()

    def push(self, step: TimeStep) -> PushResult:
        """Add one step; emits (and enqueues) a window when due."""
        with self.lock:
            res = PushResult()
            self.steps_pushed += 1
            if self._last_stamp is not None:
                res.gap_s = step.stamp - self._last_stamp
                self.max_gap_s = max(self.max_gap_s, res.gap_s)
                if self.jitter_threshold_s is not None and res.gap_s > self.jitter_threshold_s:
                    res.jitter = True
                    self.jitter_events += 1
            self._last_stamp = step.stamp
            if self.keyframe is not None and not self.keyframe(step):
                res.accepted = False
                self.steps_rejected += 1
                return res
            res.step_id = self._next_step_id
            self._next_step_id += 1
            self._buf.append((res.step_id, step))
            self._since_emit += 1
            self._since_reset += 1
            # The first window (or the first after a reset) comes when the buffer is full; later
            # ones every ``stride`` accepted steps.
            if self._since_emit >= self.stride and (self._since_reset >= self.num_steps):
                res.window, res.skipped = self.queue.put_built(self._build)
                self._since_emit = 0
                self.windows_emitted += 1
            return res

    def select(self, last: Optional[Window]) -> List[Tuple[int, TimeStep]]:
        """The (step id, step) pairs of the next window, oldest first, given the last window taken."""
        T = self.num_steps
        hist = list(self._buf)
        if last is None or not last.time_steps:
            return hist[-T:]
        newest_taken = last.step_ids[-1]
        new = [(i, st) for i, st in hist if i > newest_taken]
        keep_max = T - self.stride
        keep = max(min(2, keep_max), min(keep_max, T - len(new)))
        old = list(zip(last.step_ids, last.time_steps))[len(last.step_ids) - keep:] if keep > 0 else []
        slots = T - len(old)
        if len(new) <= slots:  # the consumer keeps up: contiguous
            return (old + new)[-T:] if len(old) + len(new) >= T else hist[-T:]
        n = len(new)
        picked = sorted({n - 1 - (j * n) // slots for j in range(slots)})
        return old + [new[k] for k in picked]

    def _build(self, last: Optional[Window] = None) -> Window:
        V = len(self.camera_names)
        frames: List[Any] = []
        infos: List[Any] = []
        sel = self.select(last)
        fst = np.full((self.num_steps, V), np.nan)
        for t, (_, st) in enumerate(sel):
            for v, c in enumerate(self.camera_names):
                frames.append(st.frames.get(c))
                infos.append(st.camera_infos.get(c))
                if c in st.stamps:
                    fst[t, v] = st.stamps[c]
        w = Window(
            window_id=self._next_window_id,
            camera_names=self.camera_names,
            step_ids=tuple(i for i, _ in sel),
            stamps=tuple(st.stamp for _, st in sel),
            frame_stamps=fst,
            frames=tuple(frames),
            camera_infos=tuple(infos),
            time_steps=tuple(st for _, st in sel),
        )
        self._next_window_id += 1
        return w
