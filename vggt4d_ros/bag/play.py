"""Play a rosbag2 bag into the ROS graph with rclpy: raw CDR bytes, paced by the bag's log times.

Features: rate factor (``rate <= 0``: as fast as possible), ``/clock`` for ``use_sim_time``, topic
remapping, ``--start/--duration`` window, topic selection, looping, waiting for subscribers, and
a lock-step mode for deterministic evaluation (see :func:`play_bag`).

QoS: sensor topics are published reliable keep-last (a reliable publisher serves both reliable
and best-effort subscribers), or best effort on request; ``/tf`` reliable depth 100;
``/tf_static`` reliable + transient local + depth 1 carrying ONE TFMessage that merges every
static transform of the bag (as a tf2 static broadcaster does), published before anything else so
late subscribers get all of them. Other topics recorded with transient-local publishers are
replayed transient local.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .io import BagError, bag_time_range, bag_topics, header_stamp_ns, read_messages
from .typestore import get_typestore

TF_STATIC = "/tf_static"
TF = "/tf"
TFMESSAGE = "tf2_msgs/msg/TFMessage"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class PlayResult:
    """What :func:`play_bag` did."""

    published: int = 0
    per_topic: Dict[str, int] = field(default_factory=dict)
    skipped_topics: List[str] = field(default_factory=list)
    static_transforms: int = 0
    steps: int = 0
    lock_step_timeouts: int = 0
    bag_seconds: float = 0.0
    wall_seconds: float = 0.0
    loops: int = 0
    interrupted: bool = False

    def summary(self) -> str:
        """One line for the CLI."""
        text = (
            f"played {self.published} messages on {len(self.per_topic)} topics"
            f" ({self.bag_seconds:.2f} s of bag in {self.wall_seconds:.2f} s, {self.loops} loop(s))"
        )
        if self.static_transforms:
            text += f", {self.static_transforms} static transforms latched on {TF_STATIC}"
        if self.steps:
            text += f", lock-step: {self.steps} steps, {self.lock_step_timeouts} timeouts"
        if self.skipped_topics:
            text += f", skipped: {', '.join(self.skipped_topics)}"
        if self.interrupted:
            text += " [interrupted]"
        return text


def parse_remaps(items: Union[None, Mapping[str, str], Iterable[str]]) -> Dict[str, str]:
    """``['/a:=/b', ...]`` or a mapping -> ``{'/a': '/b'}``."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in items:
        if ":=" not in item:
            raise BagError(f"bad remap {item!r} (expected FROM:=TO)")
        src, dst = item.split(":=", 1)
        if not src or not dst:
            raise BagError(f"bad remap {item!r} (expected FROM:=TO)")
        out[src] = dst
    return out


class _Stepper:
    """Groups trigger messages into time steps by header stamp and waits for acknowledgements.

    ``ack(stamp_ns)`` is called from the subscription callback; :meth:`before` is called before
    each trigger message is published and blocks (up to ``timeout``) when that message opens a
    new step, until an ack with ``stamp >= previous step's stamp`` arrived.
    """

    def __init__(self, tolerance_ns: int, timeout: float, stop: threading.Event, warn: Callable[[str], None]):
        self.tolerance_ns = tolerance_ns
        self.timeout = timeout
        self.stop = stop
        self.warn = warn
        self.cond = threading.Condition()
        self.last_ack: Optional[int] = None
        self.step_stamp: Optional[int] = None  # first (smallest) stamp of the current step
        self.steps = 0
        self.timeouts = 0

    def ack(self, stamp_ns: int) -> None:
        with self.cond:
            self.last_ack = stamp_ns
            self.cond.notify_all()

    def reset(self) -> None:
        with self.cond:
            self.last_ack = None
            self.step_stamp = None

    def wait_for(self, stamp_ns: int) -> float:
        """Block until an ack >= ``stamp_ns`` (or timeout / stop); return seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        with self.cond:
            while not (self.last_ack is not None and self.last_ack >= stamp_ns):
                if self.stop.is_set():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    self.timeouts += 1
                    self.warn(
                        f"lock-step: no ack with stamp >= {stamp_ns / 1e9:.6f} within {self.timeout:g} s"
                        f" (last ack {'none' if self.last_ack is None else f'{self.last_ack / 1e9:.6f}'}),"
                        " continuing"
                    )
                    break
                self.cond.wait(min(left, 0.05))
        return time.monotonic() - t0

    def before(self, stamp_ns: int) -> float:
        """Call before publishing a trigger message stamped ``stamp_ns``; returns seconds waited."""
        if self.step_stamp is None:
            self.step_stamp = stamp_ns
            self.steps += 1
            return 0.0
        if stamp_ns <= self.step_stamp + self.tolerance_ns:
            return 0.0  # same step (or a late camera of an older one)
        waited = self.wait_for(self.step_stamp)
        self.step_stamp = stamp_ns
        self.steps += 1
        return waited

    def finish(self) -> float:
        """Wait for the ack of the last step."""
        if self.step_stamp is None:
            return 0.0
        return self.wait_for(self.step_stamp)


def _merge_static(path, topic: str, msgtype: str) -> Optional[tuple]:
    """Merge all TFMessages of ``topic`` into one: ``(cdr_bytes, n_transforms)`` or None.

    The last transform seen per child frame wins, as with a tf2 static broadcaster.
    """
    store = get_typestore()
    by_child: Dict[str, object] = {}
    for msg in read_messages(path, [topic], decode=True):
        for tf in msg.data.transforms:
            by_child[tf.child_frame_id] = tf
    if not by_child:
        return None
    cls = store.types[msgtype]
    return bytes(store.serialize_cdr(cls(transforms=list(by_child.values())), msgtype)), len(by_child)


def _wait_acked(publishers, timeout: float) -> None:
    from rclpy.duration import Duration

    deadline = time.monotonic() + timeout
    for pub in publishers:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
        except Exception:  # noqa: BLE001 - best-effort publishers do not support it everywhere
            pass


def _discover_type(node, topic: str, timeout: float, stop: threading.Event) -> Optional[str]:
    deadline = time.monotonic() + timeout
    while True:
        for name, types in node.get_topic_names_and_types():
            if name == topic and types:
                return types[0]
        if time.monotonic() >= deadline or stop.is_set():
            return None
        time.sleep(0.05)


def play_bag(
    path: Union[str, Path],
    *,
    rate: float = 1.0,
    start: float = 0.0,
    duration: Optional[float] = None,
    topics: Optional[Sequence[str]] = None,
    remap: Union[None, Mapping[str, str], Iterable[str]] = None,
    clock: bool = False,
    clock_hz: float = 100.0,
    loop: int = 1,
    best_effort: bool = False,
    qos_depth: int = 100,
    latched_topics: Optional[Sequence[str]] = None,
    wait_subscribers: bool = False,
    wait_topics: Optional[Sequence[str]] = None,
    wait_timeout: float = 10.0,
    lock_step: bool = False,
    lock_step_topic: str = "/vggt4d/status",
    lock_step_type: Optional[str] = None,
    trigger_topics: Optional[Sequence[str]] = None,
    step_tolerance: float = 0.005,
    lock_step_timeout: float = 5.0,
    skip_unknown: bool = False,
    node=None,
    stop_event: Optional[threading.Event] = None,
    handle_signals: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> PlayResult:
    """Publish the messages of the bag at ``path`` into the graph.

    Args:
        rate: playback speed factor on the bag's log times; ``<= 0`` publishes as fast as possible.
        start, duration: seconds from the bag's first message, and length of the window to play.
        topics: bag topics to play (default all); a name not in the bag is an error.
        remap: ``{'/bag/topic': '/graph/topic'}`` or ``['/a:=/b', ...]`` (names in the bag).
        clock: publish ``rosgraph_msgs/Clock`` on ``/clock`` with the bag time (``clock_hz`` while
            waiting, and before every message) for nodes with ``use_sim_time``.
        loop: number of passes over the bag (``0``: forever, until Ctrl-C / ``stop_event``).
        best_effort: publish sensor topics best effort instead of reliable (depth ``qos_depth``).
        latched_topics: topics published reliable + transient local (default: every topic the bag
            recorded with transient-local publishers, always ``/tf_static``).
        wait_subscribers: before the first message wait until each topic of ``wait_topics``
            (default: every played topic except ``/clock``) has a subscriber, at most
            ``wait_timeout`` s (then warn and go).
        lock_step: group messages of ``trigger_topics`` (default: all Image/CompressedImage
            topics) into time steps by header stamp (within ``step_tolerance`` s); before
            publishing step k+1 wait until a message on ``lock_step_topic`` (type
            ``lock_step_type`` or discovered from the graph) carries ``header.stamp >=`` step k's
            stamp, at most ``lock_step_timeout`` s (then warn and continue). The last step is
            awaited too before returning. Time spent waiting shifts the playback clock.
        skip_unknown: skip topics whose message class is not importable (warning) instead of
            raising :class:`~vggt4d_ros.bag.io.BagError`.
        node: an rclpy node to publish with (spun here if it is not already in an executor);
            by default a node is created (and rclpy initialised with the localhost DDS env).
        stop_event: set it to stop playback early (returns with ``interrupted=True``).
        handle_signals: SIGINT / SIGTERM set the stop event (main thread only; the command line's player), so
            playback winds down through its normal teardown wherever it is; a second signal interrupts.
        log: callable for warnings and progress (default: print to stderr).

    Returns:
        :class:`PlayResult`. KeyboardInterrupt stops playback cleanly (``interrupted=True``).
    """
    import sys

    from .rosutil import UnknownMessageType, message_class, publish_spaced, qos_profile, ros_session, signals_set

    say = log or (lambda text: print(f"[vggt4d-bag play] {text}", file=sys.stderr, flush=True))
    stop = stop_event or threading.Event()
    remaps = parse_remaps(remap)
    result = PlayResult()

    info = bag_topics(path)
    if topics is not None:
        missing = sorted(set(topics) - set(info))
        if missing:
            raise BagError(f"topic(s) not in bag {path}: {', '.join(missing)}")
        info = {t: info[t] for t in topics}
    for src in remaps:
        if src not in info:
            raise BagError(f"remapped topic not in bag {path}: {src}")
    bag_start, bag_end = bag_time_range(path)
    t_lo = bag_start + int(max(0.0, start) * 1e9)
    t_hi = None if duration is None else t_lo + int(duration * 1e9)
    if t_hi is not None and t_hi <= t_lo:
        raise BagError(f"empty time window: --duration {duration} must be > 0")

    classes = {}
    for topic, summary in sorted(info.items()):
        try:
            classes[topic] = message_class(summary.msgtype)
        except UnknownMessageType as exc:
            if not skip_unknown:
                raise BagError(f"topic {topic}: {exc}") from None
            say(f"warning: skipping {topic}: {exc}")
            result.skipped_topics.append(topic)
    play_topics = [t for t in sorted(info) if t in classes]
    latched = set(latched_topics) if latched_topics is not None else {t for t in play_topics if info[t].latched}
    if TF_STATIC in play_topics:
        latched.add(TF_STATIC)

    if trigger_topics is None:
        triggers = {t for t in play_topics if info[t].msgtype in IMAGE_TYPES}
    else:
        unknown = sorted(set(trigger_topics) - set(play_topics))
        if unknown:
            raise BagError(f"lock-step trigger topic(s) not played: {', '.join(unknown)}")
        triggers = set(trigger_topics)
    if lock_step and not triggers:
        raise BagError("lock-step needs trigger topics, and the bag has no Image/CompressedImage topic")

    merged_static = None
    if TF_STATIC in play_topics and info[TF_STATIC].msgtype == TFMESSAGE:
        merged_static = _merge_static(path, TF_STATIC, TFMESSAGE)

    loops_wanted = int(loop)
    t_wall0 = time.monotonic()
    with (signals_set(stop) if handle_signals else contextlib.nullcontext()), \
            ros_session(node, "vggt4d_bag_player") as nd:
        pubs = {}
        for topic in play_topics:
            out = remaps.get(topic, topic)
            if topic in latched:
                depth = 1 if topic == TF_STATIC else max(1, info[topic].count)
                prof = qos_profile(reliable=True, transient_local=True, depth=depth)
            elif topic == TF:
                prof = qos_profile(reliable=True, depth=100)
            else:
                prof = qos_profile(reliable=not best_effort, depth=qos_depth)
            pubs[topic] = nd.create_publisher(classes[topic], out, prof)
        clock_pub = None
        clock_cls = None
        if clock:
            from rosgraph_msgs.msg import Clock as clock_cls  # noqa: N813

            clock_pub = nd.create_publisher(clock_cls, "/clock", qos_profile(reliable=True, depth=1))

        stepper = None
        if lock_step:
            stepper = _Stepper(int(step_tolerance * 1e9), lock_step_timeout, stop, say)
            ack_type = lock_step_type or _discover_type(nd, lock_step_topic, lock_step_timeout, stop)
            if ack_type is None:
                raise BagError(
                    f"lock-step topic {lock_step_topic} not found in the graph within {lock_step_timeout:g} s;"
                    " pass its type with --lock-step-type"
                )
            try:
                ack_cls = message_class(ack_type)
            except UnknownMessageType as exc:
                raise BagError(f"lock-step topic {lock_step_topic}: {exc}") from None
            if not hasattr(ack_cls, "_fields_and_field_types") or "header" not in ack_cls.get_fields_and_field_types():
                raise BagError(f"lock-step topic {lock_step_topic} ({ack_type}) has no header to compare stamps")
            from .rosutil import publishers_qos

            # Wait for the ack publisher to be discovered, so the subscription matches its QoS and the
            # first ack (often sent right after the first step) is not lost to discovery.
            deadline = time.monotonic() + max(wait_timeout, lock_step_timeout)
            while not stop.is_set() and nd.count_publishers(lock_step_topic) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            if nd.count_publishers(lock_step_topic) < 1:
                say(f"warning: no publisher on {lock_step_topic} yet; lock-step acks may be missed")
            reliable, _latched, _ = publishers_qos(nd, lock_step_topic)
            nd.create_subscription(
                ack_cls,
                lock_step_topic,
                lambda m: stepper.ack(m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec),
                qos_profile(reliable=bool(reliable), depth=50),
            )
            time.sleep(0.3)  # let the new subscription finish matching before the first step

        def publish_clock(t_ns: int) -> None:
            if clock_pub is not None:
                msg = clock_cls()
                msg.clock.sec, msg.clock.nanosec = divmod(int(t_ns), 1_000_000_000)
                clock_pub.publish(msg)

        try:
            if merged_static is not None:
                raw, n = merged_static
                pubs[TF_STATIC].publish(raw)
                result.static_transforms = n
                result.per_topic[TF_STATIC] = 1
                result.published += 1
                say(f"latched {n} static transforms on {remaps.get(TF_STATIC, TF_STATIC)}")
            if wait_subscribers:
                names = [t for t in (wait_topics or play_topics) if t in pubs]
                deadline = time.monotonic() + wait_timeout
                while not stop.is_set():
                    waiting = [t for t in names if pubs[t].get_subscription_count() < 1]
                    if not waiting:
                        time.sleep(0.2)  # let the subscriber side finish matching too
                        break
                    if time.monotonic() >= deadline:
                        say(f"warning: no subscriber after {wait_timeout:g} s on: {', '.join(waiting)}; playing anyway")
                        break
                    time.sleep(0.05)

            clock_period = 1.0 / clock_hz if clock_hz > 0 else math.inf
            say(f"playing {len(play_topics)} topics from {path}")
            n_pass = 0
            while not stop.is_set() and (loops_wanted <= 0 or n_pass < loops_wanted):
                n_pass += 1
                if stepper is not None:
                    stepper.reset()
                wall0 = time.monotonic()
                t0 = None
                t_last = t_lo
                for topic, msgtype, t_ns, raw in read_messages(path, play_topics, start_ns=t_lo, stop_ns=t_hi):
                    if stop.is_set():
                        break
                    if topic == TF_STATIC and merged_static is not None:
                        continue  # already published, merged and latched
                    if t0 is None:
                        t0 = t_ns
                    if stepper is not None and topic in triggers:
                        stamp = header_stamp_ns(raw, msgtype)
                        waited = stepper.before(t_ns if stamp is None else stamp)
                        wall0 += waited
                    if rate > 0:
                        target = wall0 + (t_ns - t0) / 1e9 / rate
                        while not stop.is_set():
                            left = target - time.monotonic()
                            if left <= 0:
                                break
                            if clock_pub is not None:
                                publish_clock(t0 + int((time.monotonic() - wall0) * rate * 1e9))
                            time.sleep(min(left, clock_period, 0.05))
                    if stop.is_set():
                        break
                    publish_clock(t_ns)
                    publish_spaced(pubs[topic], raw)
                    result.published += 1
                    result.per_topic[topic] = result.per_topic.get(topic, 0) + 1
                    t_last = t_ns
                if stepper is not None and not stop.is_set():
                    stepper.finish()
                if t0 is not None:
                    result.bag_seconds += (t_last - t0) / 1e9
                result.loops = n_pass
        except KeyboardInterrupt:
            result.interrupted = True
        if stop.is_set():
            result.interrupted = True
        if stepper is not None:
            result.steps = stepper.steps
            result.lock_step_timeouts = stepper.timeouts
        # let reliable subscribers acknowledge the last samples before the publishers go away
        try:
            _wait_acked(pubs.values(), 2.0)
        except KeyboardInterrupt:
            result.interrupted = True
    result.wall_seconds = time.monotonic() - t_wall0
    return result
