"""Ordering of the node's per-step status stream (``~/status``), without ROS.

Two threads produce status messages: the input thread acknowledges time steps consumed without an
inference (window filling, non-keyframes, stride), the inference thread reports the steps a window output
(or that it dropped a window). Published as they come, an acknowledgement of step k+1 overtakes the
result of the window ending at step k whenever inference is slower than the frame period, and the first
window after a (re)start re-reports the steps its filling already acknowledged. :class:`StatusSequencer`
makes the stream what a subscriber (and the lock-step player) expects: one message per time step at most,
stamps strictly increasing between input restarts.

- While a window is queued or being inferred, acknowledgements wait behind it and go out right after its
  result (an inference delays them by at most its own duration).
- A status whose stamp is not newer than the last one published is dropped, except for the first one
  after an input restart (the stamps of a looping bag or a restarted driver go back once).

Every method is thread-safe; the caller passes ``publish`` (called under the sequencer's lock, so
messages leave in the order decided here).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, Optional, Tuple


class StatusSequencer:
    """Per-step status in stamp order.

    Args:
        publish: ``publish(msg)`` for one status message.
        max_deferred: bound on acknowledgements waiting behind windows (the oldest is dropped beyond it;
            only reachable when the inference thread is stuck).
    """

    def __init__(self, publish: Callable[[Any], None], max_deferred: int = 1000) -> None:
        self._publish = publish
        # Re-entrant: the node holds it around "push the step into the window + account for it", so the
        # inference thread cannot finish a window between the queueing and its bookkeeping.
        self.lock = threading.RLock()
        self._epoch = 0
        self._last: Optional[Tuple[int, int]] = None  # (epoch, stamp_ns) of the last published status
        self._pending = 0  # windows queued or being inferred
        self._window_epoch: Dict[int, int] = {}
        self._deferred: Deque[Tuple[int, int, Any]] = deque(maxlen=max_deferred)
        self.published = 0
        self.dropped = 0

    # ------------------------------------------------------------------ input thread
    def ack(self, stamp_ns: int, msg: Any) -> bool:
        """A step consumed without an inference. Returns True when it was published now (False: it waits
        behind a window, or it was dropped as not newer than the last status)."""
        with self.lock:
            if self._pending > 0:
                self._deferred.append((self._epoch, int(stamp_ns), msg))
                return False
            return self._emit(self._epoch, int(stamp_ns), msg)

    def window_queued(self, window_id: int, skipped: int = 0) -> None:
        """A window was put on the inference queue, replacing ``skipped`` older queued windows."""
        with self.lock:
            self._pending = max(0, self._pending - int(skipped)) + 1
            self._window_epoch[int(window_id)] = self._epoch
            if len(self._window_epoch) > 64:  # skipped windows never come back: keep the newest few
                for k in sorted(self._window_epoch)[:-32]:
                    del self._window_epoch[k]

    def restart(self, cleared: int = 0) -> None:
        """The input restarted (stamps went back or jumped); ``cleared`` queued windows were discarded.
        The next status may go back in time once."""
        with self.lock:
            self._epoch += 1
            self._pending = max(0, self._pending - int(cleared))

    # ------------------------------------------------------------------ inference thread
    def window_done(self, window_id: int, statuses: Iterable[Tuple[int, Any]]) -> None:
        """The window ``window_id`` was published (``statuses``: ``(stamp_ns, msg)`` per output step, in
        order) or dropped (one status saying why); then the acknowledgements that waited go out."""
        with self.lock:
            epoch = self._window_epoch.pop(int(window_id), self._epoch)
            for stamp_ns, msg in statuses:
                self._emit(epoch, int(stamp_ns), msg)
            self._pending = max(0, self._pending - 1)
            if self._pending == 0:
                self._flush()

    # ------------------------------------------------------------------ internals
    def _flush(self) -> None:
        while self._deferred:
            epoch, stamp_ns, msg = self._deferred.popleft()
            self._emit(epoch, stamp_ns, msg)

    def _emit(self, epoch: int, stamp_ns: int, msg: Any) -> bool:
        last = self._last
        # Older epoch: a window queued before a restart whose result comes after the new stream began
        # (its stamps would go back a second time). Same epoch: only newer stamps.
        if last is not None and (epoch < last[0] or (epoch == last[0] and stamp_ns <= last[1])):
            self.dropped += 1
            return False
        self._last = (epoch, stamp_ns)
        self.published += 1
        self._publish(msg)
        return True

    @property
    def waiting(self) -> int:
        """Acknowledgements waiting behind a window."""
        with self.lock:
            return len(self._deferred)

    @property
    def pending_windows(self) -> int:
        with self.lock:
            return self._pending

