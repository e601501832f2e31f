"""Small rclpy helpers shared by the bag player and recorder (ROS side only).

* :func:`message_class` - ``'pkg/msg/Name'`` -> the generated Python class, via importlib.
* :func:`ros_session` - init rclpy with the localhost-only DDS environment when nobody did, and
  give back a node (owned or the caller's) plus a background executor when the node is not spun.
* :func:`qos_profile` / :func:`rosbags_qos` - conversions between rclpy and rosbags QoS records.
* :func:`publish_spaced` - publish, pausing briefly after a large message (see there why).
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import time
from typing import Any, Iterator, Optional, Tuple

from .io import BagError, make_qos


#: Messages of at least this many bytes (Image / PointCloud2 data, or a serialised message) are followed by
#: a pause of :data:`LARGE_MESSAGE_GAP_S` when published back to back by :func:`publish_spaced`.
LARGE_MESSAGE_BYTES = 65536
LARGE_MESSAGE_GAP_S = 0.0005


def message_bytes(msg: Any) -> int:
    """Payload size of ``msg``: its length when serialised bytes, else the length of its ``data`` field."""
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return len(msg)
    data = getattr(msg, "data", None)
    try:
        return len(data) if data is not None and not isinstance(data, (int, float, str)) else 0
    except TypeError:
        return 0


def publish_spaced(pub: Any, msg: Any, gap_s: float = LARGE_MESSAGE_GAP_S) -> None:
    """``pub.publish(msg)``, then a pause of ``gap_s`` when ``msg`` is large.

    Why (measured with bench/transport.py on Jazzy wheels, rmw_fastrtps, this project's localhost
    profile, shared memory or UDP alike): when one process publishes two large samples (640x360 rgb8
    images) on two topics back to back, the first one regularly reaches the subscriber only when that
    topic's next sample is written (0.5-2.5 s late at 2 Hz, some lost with a shallow history), while a
    pause of 0.5 ms between the two publishes removes the stalls entirely (40/40 samples, max 17 ms).
    The pause costs 0.5 ms per large message; ``gap_s <= 0`` disables it.
    """
    pub.publish(msg)
    if gap_s > 0 and message_bytes(msg) >= LARGE_MESSAGE_BYTES:
        time.sleep(gap_s)


class UnknownMessageType(BagError):
    """A message type whose Python interface package is not importable here."""


def message_class(msgtype: str):
    """Return the rclpy message class of ``'pkg/msg/Name'`` (also accepts ``'pkg/Name'``)."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise UnknownMessageType(f"malformed message type {msgtype!r} (expected 'pkg/msg/Name')")
    pkg, sub, name = parts
    try:
        module = importlib.import_module(f"{pkg}.{sub}")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise UnknownMessageType(
            f"message type {msgtype} is not importable here ({type(exc).__name__}: {exc}); "
            f"build/install the {pkg} interface package or skip the topic"
        ) from None


def qos_profile(*, reliable: bool = True, transient_local: bool = False, depth: int = 10):
    """An rclpy ``QoSProfile`` with keep-last history."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, int(depth)),
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


def rosbags_qos(profile):
    """Convert an rclpy ``QoSProfile`` into the rosbags ``Qos`` record stored in bag metadata."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    return make_qos(
        reliable=profile.reliability == ReliabilityPolicy.RELIABLE,
        transient_local=profile.durability == DurabilityPolicy.TRANSIENT_LOCAL,
        depth=profile.depth or 1,
    )


def publishers_qos(node, topic: str) -> Tuple[Optional[bool], Optional[bool], list]:
    """``(all_reliable, all_transient_local, profiles)`` of the publishers the graph knows for ``topic``.

    The first two are None when no publisher is known yet.
    """
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    infos = node.get_publishers_info_by_topic(topic)
    profiles = [i.qos_profile for i in infos]
    if not profiles:
        return None, None, []
    reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
    latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
    return reliable, latched, profiles


@contextlib.contextmanager
def signals_set(stop: threading.Event, on_signal=None) -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM set ``stop`` (the caller's loops check it and wind down
    through their normal teardown) instead of raising KeyboardInterrupt wherever the main thread happens to be;
    a second signal raises KeyboardInterrupt. ``on_signal(name)`` is called with the first signal's name.
    Outside the main thread (where Python cannot install handlers) this does nothing."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum, _frame):
        if stop.is_set():  # a second signal: give up waiting
            raise KeyboardInterrupt
        if on_signal is not None:
            on_signal(signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class BackgroundSpinner:
    """Spin one node in a daemon thread with its own executor until :meth:`stop` (the bag tools, the
    replay, the soak monitor and the node benchmark all use this one)."""

    def __init__(self, node, name: str = "vggt4d-bag-spin", join_timeout: float = 2.0) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.node = node
        self.join_timeout = join_timeout
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.node.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception as exc:  # noqa: BLE001 - keep spinning after a failing callback
                if self._stop.is_set() or not self.node.context.ok():
                    break
                print(f"[vggt4d-bag] callback failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=self.join_timeout)
        try:
            self.executor.remove_node(self.node)
        except Exception:  # noqa: BLE001
            pass
        self.executor.shutdown(timeout_sec=0.5)


def stop_process(proc, timeout: float, kill_timeout: float = 10.0) -> Optional[int]:
    """Stop a ROS process as Ctrl-C would (SIGINT, so it flushes and finalises), waiting up to ``timeout``
    seconds; kill it after that. Returns its exit code when it stopped by itself, None when killed."""
    import signal
    import subprocess

    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=kill_timeout)
        return None


@contextlib.contextmanager
def ros_session(node=None, name: str = "vggt4d_bag", *, spin: bool = True) -> Iterator[object]:
    """Yield a node ready to use; everything created here is torn down on exit.

    With ``node=None`` rclpy is initialised if needed (after applying the localhost-only DDS
    environment, without rclpy's signal handlers so Ctrl-C raises KeyboardInterrupt) and a node
    named ``name`` is created. A node that is not attached to an executor is spun in a background
    thread while the block runs (``spin=True``); a node the caller already spins is left alone.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from vggt4d_ros.rosenv import apply_localhost_env

    own_init = False
    own_node = node is None
    if own_node:
        if not rclpy.ok():
            apply_localhost_env()
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
            own_init = True
        node = rclpy.create_node(name)
    spinner = None
    try:
        if spin and node.executor is None:
            spinner = BackgroundSpinner(node)
        yield node
    finally:
        if spinner is not None:
            spinner.stop()
        if own_node:
            with contextlib.suppress(Exception):
                node.destroy_node()
        if own_init:
            with contextlib.suppress(Exception):
                rclpy.try_shutdown()
