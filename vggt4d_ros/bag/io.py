"""Reading and writing rosbag2 bags (MCAP or sqlite3) with rosbags; no ROS import.

Everything here works on serialized CDR bytes so that the player and the recorder never decode
image payloads. Errors are raised as :class:`BagError` whose message is one line naming the problem
(the CLI prints it as is).

* :func:`read_messages` - iterate ``(topic, msgtype, stamp_ns, data)`` in log-time order.
* :func:`bag_topics` - ``{topic: TopicSummary}`` of a bag.
* :func:`open_writer` - a :class:`BagWriter` that writes into a hidden temporary directory and
  renames it to the requested path only when closed cleanly (a crashed writer never leaves
  something that looks complete). A path ending in the storage's suffix (``x.mcap``, ``x.db3``) is
  written as that single file (what ``ros2 bag info x.mcap`` opens), any other path as a rosbag2
  directory; MCAP files can use zstd chunk compression.
* :func:`header_stamp_ns` - the ``header.stamp`` of a serialized message without decoding it.
"""
from __future__ import annotations

import contextlib
import queue
import shutil
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Union

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError, WriterError
from rosbags.rosbag2.reader import Reader

from .typestore import get_typestore, typestore_for

PathLike = Union[str, Path]

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: file suffix of each storage: an output path with it is written as one file, not a bag directory
STORAGE_SUFFIX = {"mcap": ".mcap", "sqlite3": ".db3"}
#: chunk compressions of MCAP storage (zstd, in the file's chunks, as rosbag2's zstd storage presets; every
#: MCAP reader decompresses them transparently) and ``"none"``
COMPRESSIONS = ("none", "zstd")


class BagError(RuntimeError):
    """A bag could not be read or written; ``str(err)`` is a one-line explanation."""


class BagMessage(NamedTuple):
    """One message of a bag; unpacks as ``topic, msgtype, stamp_ns, data``.

    ``stamp_ns`` is the bag's log time (the recorder's receive time), ``data`` the serialized CDR
    bytes, or the decoded rosbags message when ``decode=True``.
    """

    topic: str
    msgtype: str
    stamp_ns: int
    data: object


@dataclass
class TopicSummary:
    """What a bag holds for one topic."""

    msgtype: str
    count: int
    qos: List[Qos] = field(default_factory=list)

    @property
    def latched(self) -> bool:
        """True when the recorded publisher offered transient-local durability."""
        return any(q.durability == QosDurability.TRANSIENT_LOCAL for q in self.qos)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _open_reader(path: PathLike) -> Reader:
    p = Path(path)
    if not p.exists():
        raise BagError(f"bag not found: {p}")
    try:
        reader = Reader(p)
        reader.open()
    except (ReaderError, WriterError, OSError, ValueError, KeyError, IndexError, struct.error) as exc:
        raise BagError(f"cannot read bag {p}: {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party parser on a bad file
        raise BagError(f"cannot read bag {p}: {type(exc).__name__}: {_one_line(exc)}") from None
    return reader


def bag_topics(path: PathLike) -> Dict[str, TopicSummary]:
    """Return ``{topic: TopicSummary(msgtype, count, qos)}`` for every topic of the bag at ``path``."""
    reader = _open_reader(path)
    try:
        out: Dict[str, TopicSummary] = {}
        for conn in reader.connections:
            qos = list(getattr(conn.ext, "offered_qos_profiles", []) or [])
            if conn.topic in out:
                out[conn.topic].count += conn.msgcount
                out[conn.topic].qos.extend(qos)
            else:
                out[conn.topic] = TopicSummary(conn.msgtype, conn.msgcount, qos)
        return out
    finally:
        reader.close()


def bag_time_range(path: PathLike) -> tuple:
    """Return the log times ``(first_ns, last_ns)`` of the bag's first and last message (``(0, 0)`` if empty)."""
    reader = _open_reader(path)
    try:
        if reader.message_count == 0:
            return 0, 0
        return reader.start_time, reader.end_time - 1  # rosbags' end_time is exclusive
    finally:
        reader.close()


def read_messages(
    path: PathLike,
    topics: Optional[Iterable[str]] = None,
    *,
    decode: bool = False,
    start_ns: Optional[int] = None,
    stop_ns: Optional[int] = None,
) -> Iterator[BagMessage]:
    """Yield the messages of a bag in log-time order.

    Args:
        path: bag directory (with ``metadata.yaml``) or a single ``.mcap`` / ``.db3`` file.
        topics: keep only these topics; a name the bag does not hold raises :class:`BagError`.
        decode: yield rosbags-decoded messages instead of raw CDR bytes.
        start_ns, stop_ns: absolute log-time window ``[start_ns, stop_ns)``.
    """
    reader = _open_reader(path)
    try:
        conns = reader.connections
        if topics is not None:
            wanted = set(topics)
            missing = sorted(wanted - {c.topic for c in conns})
            if missing:
                raise BagError(f"topic(s) not in bag {path}: {', '.join(missing)}")
            conns = [c for c in conns if c.topic in wanted]
            if not conns:
                return
        store = typestore_for(conns) if decode else None  # the bag's own definitions of this package's types
        it = reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        while True:
            try:
                conn, stamp, raw = next(it)
            except StopIteration:
                break
            except BagError:
                raise
            except Exception as exc:  # noqa: BLE001 - a truncated or corrupt chunk
                raise BagError(f"cannot read bag {path}: {type(exc).__name__}: {_one_line(exc)}") from None
            data: object = raw
            if store is not None:
                data = store.deserialize_cdr(raw, conn.msgtype)
            yield BagMessage(conn.topic, conn.msgtype, stamp, data)
    finally:
        reader.close()


# --------------------------------------------------------------------------------------------
# header stamps straight from CDR bytes
# --------------------------------------------------------------------------------------------

_HEADER_CACHE: Dict[str, bool] = {}


def has_header(msgtype: str) -> bool:
    """True when the first field of ``msgtype`` is a ``std_msgs/msg/Header`` (per the type store)."""
    if msgtype not in _HEADER_CACHE:
        ok = False
        try:
            _consts, fields = get_typestore().fielddefs[msgtype]
            if fields:
                _name, desc = fields[0]
                ok = desc[1] == "std_msgs/msg/Header"
        except (KeyError, IndexError, TypeError, ValueError):
            ok = False
        _HEADER_CACHE[msgtype] = ok
    return _HEADER_CACHE[msgtype]


def header_stamp_ns(raw: Union[bytes, memoryview], msgtype: str) -> Optional[int]:
    """Return ``header.stamp`` in ns of a serialized message whose first field is a Header, else None.

    Reads the 8 bytes after the 4-byte CDR encapsulation header (``int32 sec``, ``uint32 nanosec``),
    so an image is never decoded: this is why it is written by hand instead of calling
    ``deserialize_cdr``.
    """
    if not has_header(msgtype) or len(raw) < 12:
        return None
    endian = "<" if raw[1] & 1 else ">"
    sec, nsec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 1_000_000_000 + nsec


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def make_qos(
    *,
    reliable: bool = True,
    transient_local: bool = False,
    depth: int = 10,
) -> Qos:
    """A rosbags ``Qos`` record for the ``offered_qos_profiles`` metadata of a topic."""
    zero = QosTime(0, 0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=int(depth),
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=zero,
        lifespan=zero,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero,
        avoid_ros_namespace_conventions=False,
    )


class BagWriter:
    """rosbag2 writer that only appears at its final path once :meth:`close` succeeded.

    Data goes to ``<parent>/.<name>.partial/<stem>`` (so the storage file inside is ``<stem>.mcap``);
    :meth:`close` finalises the storage (index, metadata.yaml) and renames the inner directory to ``path``,
    or, when ``path`` ends in the storage's suffix (``x.mcap`` / ``x.db3``: :attr:`single_file`), moves the
    storage file alone to ``path`` (its metadata lives inside the file: rosbag2's ``ros2 bag info x.mcap``,
    rosbags and the mcap tools read it). :meth:`abort` deletes everything.

    ``compression="zstd"`` (MCAP only) compresses every chunk (about 1 MB of messages) with zstd.

    Thread-safe: every storage operation runs on one private I/O thread (sqlite3 connections are
    bound to the thread that made them, and subscription callbacks should not wait for the disk);
    :meth:`write` only queues the bytes, :meth:`add_topic`, :meth:`close` and :meth:`abort` wait.
    """

    def __init__(self, path: PathLike, storage: str = "mcap", compression: Optional[str] = None) -> None:
        if storage not in STORAGES:
            raise BagError(f"unsupported storage {storage!r} (use one of: {', '.join(STORAGES)})")
        compression = compression or "none"
        if compression not in COMPRESSIONS:
            raise BagError(f"unsupported compression {compression!r} (use one of: {', '.join(COMPRESSIONS)})")
        if compression != "none" and storage != "mcap":
            raise BagError(f"chunk compression {compression} needs storage mcap (not {storage})")
        self.compression = compression
        self.path = Path(path)
        self.single_file = self.path.suffix.lower() == STORAGE_SUFFIX[storage]
        self._inner = self.path.stem if self.single_file else self.path.name
        if self.path.exists():
            raise BagError(f"output exists already, not overwriting: {self.path}")
        if not self.path.parent.is_dir():
            raise BagError(f"output directory does not exist: {self.path.parent}")
        self.storage = storage
        self._tmp_root = self.path.parent / f".{self.path.name}.partial"
        if self._tmp_root.exists():
            shutil.rmtree(self._tmp_root)
        self._tmp_root.mkdir()
        self._store = get_typestore()
        self._cond = threading.Condition()
        self._conns: Dict[str, object] = {}
        self.counts: Dict[str, int] = {}
        self.closed = False
        self._error: Optional[str] = None
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._io_loop, name="vggt4d-bag-writer", daemon=True)
        self._thread.start()
        self._writer = None
        def make_writer():
            w = Writer(self._tmp_root / self._inner, version=9, storage_plugin=STORAGES[storage])
            if compression == "zstd":
                w.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            return w

        try:
            self._writer = self._call(make_writer)
            self._call(self._writer.open)
        except Exception as exc:  # noqa: BLE001
            self._queue.put(None)
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            raise BagError(f"cannot create bag {self.path}: {_one_line(exc)}") from None

    # -------------------------------------------------------------------------- I/O thread
    def _io_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, done = item
            try:
                value = fn()
                if done is not None:
                    done.append((True, value))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                if done is not None:
                    done.append((False, exc))
                elif self._error is None:
                    self._error = _one_line(exc)
            finally:
                if done is not None:
                    with self._cond:
                        self._cond.notify_all()

    def _call(self, fn):
        """Run ``fn`` on the I/O thread and return its result (re-raising its exception)."""
        done: list = []
        self._queue.put((fn, done))
        with self._cond:
            while not done:
                self._cond.wait(0.1)
        ok, value = done[0]
        if not ok:
            raise value
        return value

    # ------------------------------------------------------------------------------ API
    def add_topic(
        self,
        topic: str,
        msgtype: str,
        qos: Sequence[Qos] = (),
        *,
        msgdef: Optional[str] = None,
        rihs01: Optional[str] = None,
    ) -> None:
        """Register ``topic`` with its type definition (from the project's type store unless given)."""
        if topic in self._conns:
            return
        if self.closed:
            raise BagError(f"cannot add topic {topic}: bag {self.path} is closed")

        def add():
            if msgdef is None:
                self._store.get_msgdef(msgtype)  # raises for unknown types
                return self._writer.add_connection(
                    topic, msgtype, typestore=self._store, offered_qos_profiles=list(qos)
                )
            return self._writer.add_connection(
                topic, msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=list(qos)
            )

        try:
            conn = self._call(add)
        except Exception as exc:  # noqa: BLE001
            raise BagError(f"cannot add topic {topic} ({msgtype}): {_one_line(exc)}") from None
        self._conns[topic] = conn
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        return topic in self._conns

    def write(self, topic: str, stamp_ns: int, data: Union[bytes, memoryview]) -> None:
        """Queue one serialized message with log time ``stamp_ns`` (ignored once closed)."""
        if self.closed:
            return
        conn = self._conns[topic]
        self.counts[topic] += 1
        self._queue.put((lambda: self._writer.write(conn, int(stamp_ns), data), None))

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    def close(self) -> Path:
        """Write the queued messages, finalise the bag and move it to its final path; returns it."""
        if self.closed:
            return self.path
        self.closed = True

        def finish():
            if self._error is not None:
                raise RuntimeError(f"a write failed: {self._error}")
            self._writer.close()
            inner = self._tmp_root / self._inner
            if self.single_file:
                (inner / f"{self._inner}{STORAGE_SUFFIX[self.storage]}").rename(self.path)
            else:
                inner.rename(self.path)

        try:
            self._call(finish)
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(Exception):
                self._call(self._writer.abort)
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            raise BagError(f"cannot finalise bag {self.path}: {_one_line(exc)}") from None
        finally:
            self._queue.put(None)
        shutil.rmtree(self._tmp_root, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        if self.closed:
            return
        self.closed = True
        try:
            self._call(self._writer.abort)
        except Exception:  # noqa: BLE001
            pass
        finally:
            self._queue.put(None)
            shutil.rmtree(self._tmp_root, ignore_errors=True)

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def open_writer(path: PathLike, storage: str = "mcap", compression: Optional[str] = None) -> BagWriter:
    """Create a rosbag2 bag at ``path`` (``storage``: ``"mcap"`` or ``"sqlite3"``; ``x.mcap`` / ``x.db3``: one
    file, else a bag directory; ``compression``: ``"zstd"`` MCAP chunks or None); see :class:`BagWriter`."""
    return BagWriter(path, storage, compression)
