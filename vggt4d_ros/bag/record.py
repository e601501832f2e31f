"""Record topics of the ROS graph into a rosbag2 bag (MCAP default, sqlite3 option) with rclpy.

Subscriptions are raw (serialized CDR bytes go straight to the bag, never decoded); the message
definitions written into the bag come from the project's rosbags type store, so rosbags, the
``mcap`` tools, evo and Foxglove can open it. Log times are the DDS receive times (the node's
clock when it runs with ``use_sim_time``); header stamps are untouched inside the payloads.

The bag is written under a hidden ``.<name>.partial`` directory and renamed to its final path only
once finalised (index + metadata.yaml), so a recorder that dies hard never leaves a bag that looks
complete; SIGINT/SIGTERM and every normal stop finalise it. An output path ending in ``.mcap`` (``.db3``)
is written as that single file. MCAP bags use zstd chunk compression (:data:`OUTPUT_COMPRESSION`) unless
``compression="none"``: the node's outputs (float depth, clouds) shrink to about a third.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Union

from .io import COMPRESSIONS, BagError, BagWriter, header_stamp_ns, open_writer
from .typestore import get_typestore

QOS_MODES = ("auto", "best_effort", "reliable")
#: MCAP chunk compression of recorded bags and of the replay's outputs.mcap (``"none"`` to switch it off)
OUTPUT_COMPRESSION = "zstd"


def resolve_compression(storage: str, compression: Optional[str]) -> str:
    """``compression`` as given, or (None) :data:`OUTPUT_COMPRESSION` for MCAP and ``"none"`` for sqlite3."""
    if compression is None:
        return OUTPUT_COMPRESSION if storage == "mcap" else "none"
    if compression not in COMPRESSIONS:
        raise BagError(f"unsupported compression {compression!r} (use one of: {', '.join(COMPRESSIONS)})")
    return compression
# Graph topics never recorded by "all topics" discovery.
_IGNORED = {"/rosout", "/parameter_events"}


@dataclass
class RecordResult:
    """What :func:`record` wrote."""

    path: Optional[Path] = None
    messages: int = 0
    per_topic: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stop_reason: str = ""

    def summary(self) -> str:
        return (
            f"recorded {self.messages} messages on {len(self.per_topic)} topics in {self.seconds:.2f} s"
            f" to {self.path} ({self.stop_reason})"
        )


class Recorder:
    """Subscribe to topics of the graph with raw subscriptions and write them to a bag.

    Args:
        node: rclpy node the subscriptions live on; it must be spun (by the caller or by
            :func:`record`) for messages and topic discovery to happen.
        topics: explicit topic names to record (subscribed as soon as a publisher appears).
        path: output bag directory (must not exist).
        types: also record every topic whose type is in this list (``pkg/msg/Name``).
        all_topics: record every topic discovered (except /rosout, /parameter_events, ``exclude``).
        storage: ``"mcap"`` or ``"sqlite3"``.
        compression: MCAP chunk compression, ``"zstd"`` or ``"none"``; None: :func:`resolve_compression`.
        qos: ``"auto"`` (reliable when every known publisher is reliable, else best effort;
            transient local when every publisher is), ``"best_effort"`` or ``"reliable"``.
        depth: keep-last depth of the subscriptions.
        discovery_period: seconds between graph scans for new topics.
        max_messages: set :attr:`done` after this many messages (further ones are dropped).
    """

    def __init__(
        self,
        node,
        topics: Optional[Sequence[str]],
        path: Union[str, Path],
        *,
        types: Optional[Iterable[str]] = None,
        all_topics: bool = False,
        exclude: Iterable[str] = (),
        storage: str = "mcap",
        compression: Optional[str] = None,
        qos: str = "auto",
        depth: int = 100,
        discovery_period: float = 0.2,
        max_messages: Optional[int] = None,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        if qos not in QOS_MODES:
            raise BagError(f"unsupported qos mode {qos!r} (use one of: {', '.join(QOS_MODES)})")
        self.node = node
        self.topics: Set[str] = set(topics or ())
        self.types: Set[str] = {_full_type(t) for t in (types or ())}
        self.all_topics = all_topics
        if not (self.topics or self.types or self.all_topics):
            raise BagError("nothing to record: give topics, types or all_topics")
        self.exclude = set(exclude) | _IGNORED
        self.qos = qos
        self.depth = depth
        self.max_messages = max_messages
        self.say = log or (lambda text: print(f"[vggt4d-bag record] {text}", file=sys.stderr, flush=True))
        self.done = threading.Event()
        self.last_receive: Optional[float] = None
        self.first_receive: Optional[float] = None
        self._subs: Dict[str, object] = {}
        self._rejected: Set[str] = set()
        self._lock = threading.Lock()
        self._received = 0
        self._types: Dict[str, str] = {}
        #: newest header stamp (ns) received per topic whose type starts with a Header
        self.newest_stamp: Dict[str, int] = {}
        self._use_sim_time = bool(node.get_parameter("use_sim_time").value)
        self._writer: BagWriter = open_writer(path, storage, resolve_compression(storage, compression))
        self.path = Path(path)
        self._timer = node.create_timer(discovery_period, self.discover)
        self.discover()

    # ---------------------------------------------------------------- discovery / subscription
    def _wanted(self, topic: str, msgtype: str) -> bool:
        if topic in self.topics:
            return True
        if topic in self.exclude:
            return False
        return self.all_topics or msgtype in self.types

    def discover(self) -> None:
        """Scan the graph and subscribe to every wanted topic that has a publisher."""
        if self._writer.closed:
            return
        for topic, msgtypes in self.node.get_topic_names_and_types():
            if topic in self._subs or topic in self._rejected or not msgtypes:
                continue
            msgtype = msgtypes[0]
            if not self._wanted(topic, msgtype):
                continue
            self._subscribe(topic, msgtype)

    def _subscribe(self, topic: str, msgtype: str) -> None:
        from .rosutil import UnknownMessageType, message_class, publishers_qos, qos_profile, rosbags_qos

        reliable, latched, profiles = publishers_qos(self.node, topic)
        if reliable is None:
            return  # only subscribers known so far; wait for a publisher to learn its QoS
        try:
            cls = message_class(msgtype)
            get_typestore().get_msgdef(msgtype)
        except UnknownMessageType as exc:
            self._reject(topic, str(exc))
            return
        except Exception:  # noqa: BLE001 - rosbags raises its own TypesysError
            self._reject(topic, f"type {msgtype} has no definition in the project's type store")
            return
        if self.qos == "reliable":
            rel = True
        elif self.qos == "best_effort":
            rel = False
        else:
            rel = bool(reliable)
        transient = bool(latched) and rel
        try:
            self._writer.add_topic(topic, msgtype, [rosbags_qos(p) for p in profiles])
        except BagError as exc:
            self._reject(topic, str(exc))
            return
        self._types[topic] = msgtype
        sub = self.node.create_subscription(
            cls,
            topic,
            lambda raw, info, _t=topic: self._on_message(_t, raw, info),
            qos_profile(reliable=rel, transient_local=transient, depth=self.depth),
            raw=True,
        )
        self._subs[topic] = sub
        self.say(
            f"subscribed {topic} [{msgtype}] ({'reliable' if rel else 'best effort'}"
            f"{', transient local' if transient else ''})"
        )

    def _reject(self, topic: str, why: str) -> None:
        self._rejected.add(topic)
        self.say(f"warning: not recording {topic}: {why}")

    def _on_message(self, topic: str, raw: bytes, info) -> None:
        with self._lock:
            if self.max_messages is not None and self._received >= self.max_messages:
                return
            self._received += 1
            if self.max_messages is not None and self._received >= self.max_messages:
                self.done.set()
        if self._use_sim_time:
            stamp = self.node.get_clock().now().nanoseconds
        else:
            stamp = (info or {}).get("received_timestamp") or time.time_ns()
        self._writer.write(topic, stamp, raw)
        mt = self._types.get(topic)
        hs = header_stamp_ns(raw, mt) if mt is not None else None
        if hs is not None and hs > self.newest_stamp.get(topic, -1):
            self.newest_stamp[topic] = hs
        now = time.monotonic()
        self.last_receive = now
        if self.first_receive is None:
            self.first_receive = now

    # ------------------------------------------------------------------------- lifecycle
    @property
    def subscribed(self) -> List[str]:
        return sorted(self._subs)

    @property
    def counts(self) -> Dict[str, int]:
        return dict(self._writer.counts)

    @property
    def message_count(self) -> int:
        return self._writer.message_count

    def _teardown(self) -> None:
        try:
            self.node.destroy_timer(self._timer)
        except Exception:  # noqa: BLE001
            pass
        for sub in list(self._subs.values()):
            try:
                self.node.destroy_subscription(sub)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> Path:
        """Stop recording and finalise the bag; returns its final path."""
        self._teardown()
        return self._writer.close()

    def abort(self) -> None:
        """Stop recording and delete what was written."""
        self._teardown()
        self._writer.abort()


def _full_type(name: str) -> str:
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


def record(
    path: Union[str, Path],
    *,
    topics: Optional[Sequence[str]] = None,
    types: Optional[Iterable[str]] = None,
    all_topics: bool = False,
    exclude: Iterable[str] = (),
    storage: str = "mcap",
    compression: Optional[str] = None,
    qos: str = "auto",
    duration: Optional[float] = None,
    max_messages: Optional[int] = None,
    until_topic_idle: Optional[float] = None,
    node=None,
    stop_event: Optional[threading.Event] = None,
    handle_signals: bool = False,
    on_ready: Optional[Callable[[Recorder], None]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> RecordResult:
    """Record until ``duration`` s, ``max_messages``, ``until_topic_idle`` s without a message
    (counted from the first message), ``stop_event``, or SIGINT/SIGTERM (``handle_signals``, main
    thread only); the bag is always finalised. Returns a :class:`RecordResult`.
    """
    from .io import STORAGES
    from .rosutil import ros_session, signals_set

    if storage not in STORAGES:  # fail before starting ROS
        raise BagError(f"unsupported storage {storage!r} (use one of: {', '.join(STORAGES)})")
    compression = resolve_compression(storage, compression)
    if qos not in QOS_MODES:
        raise BagError(f"unsupported qos mode {qos!r} (use one of: {', '.join(QOS_MODES)})")
    if Path(path).exists():
        raise BagError(f"output exists already, not overwriting: {path}")
    stop = stop_event or threading.Event()
    result = RecordResult()
    reason = ["stopped"]

    t0 = time.monotonic()
    with (signals_set(stop, lambda name: reason.__setitem__(0, name)) if handle_signals
          else contextlib.nullcontext()):
        with ros_session(node, "vggt4d_bag_recorder") as nd:
            rec = Recorder(
                nd, topics, path, types=types, all_topics=all_topics, exclude=exclude,
                storage=storage, compression=compression, qos=qos, max_messages=max_messages, log=log,
            )
            try:
                if on_ready is not None:
                    on_ready(rec)
                while True:
                    if stop.is_set():
                        break
                    now = time.monotonic()
                    if rec.done.is_set():
                        reason[0] = f"max messages {max_messages}"
                        break
                    if duration is not None and now - t0 >= duration:
                        reason[0] = f"duration {duration:g} s"
                        break
                    last = rec.last_receive
                    if until_topic_idle is not None and last is not None and now - last >= until_topic_idle:
                        reason[0] = f"idle {until_topic_idle:g} s"
                        break
                    stop.wait(0.02)
            except KeyboardInterrupt:
                reason[0] = "interrupted"
            except BaseException:
                rec.abort()
                raise
            result.path = rec.close()
            result.per_topic = rec.counts
            result.messages = rec.message_count
    result.seconds = time.monotonic() - t0
    result.stop_reason = reason[0]
    return result
