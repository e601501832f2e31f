"""The rosbags type store used by every bag reader and writer of this project.

Jazzy's message set (tf2_msgs included) plus this package's own messages, registered from the
``.msg`` files in ``msg/`` so their type hashes equal the ones rosidl computes. No ROS import.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable, Tuple

from rosbags.typesys import Stores, get_typestore as _rosbags_typestore
from rosbags.typesys import get_types_from_msg

PACKAGE = "vggt4d_ros"
_MSG_NAMES = ("TrackedKeypoint", "TrackedKeypoints", "WindowStatus")


def msg_dir() -> Path:
    """Directory holding the project's ``.msg`` files (source tree or installed share/)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "msg"]
    try:  # installed with colcon/ament: share/vggt4d_ros/msg
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "msg")
    except Exception:  # noqa: BLE001 - ament index absent or package not installed there
        pass
    for cand in candidates:
        if (cand / "TrackedKeypoints.msg").is_file():
            return cand
    raise FileNotFoundError(f"cannot find the {PACKAGE} .msg files (looked in {', '.join(map(str, candidates))})")


@functools.lru_cache(maxsize=1)
def _package_definitions() -> Tuple[Tuple[str, str], ...]:
    """``((pkg/msg/Name, .msg text), ...)`` of this package's messages."""
    folder = msg_dir()
    return tuple((f"{PACKAGE}/msg/{name}", (folder / f"{name}.msg").read_text()) for name in _MSG_NAMES)


def _store_of(definitions: Iterable[Tuple[str, str]]):
    """Jazzy's type store plus these ``(name, definition)`` types."""
    store = _rosbags_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, text in definitions:
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


@functools.lru_cache(maxsize=1)
def get_typestore():
    """Return the Jazzy type store with ``vggt4d_ros/msg/*`` registered."""
    return _store_of(_package_definitions())


_SEPARATOR = "=" * 80


def _project_definitions(msgtype: str, text: str) -> Tuple[Tuple[str, str], ...]:
    """``((name, definition), ...)`` of this package's types in a bag's concatenated message definition
    (ROS 2 ``ros2msg`` format: the top type, then ``MSG: pkg/Name`` blocks between 80 ``=`` lines)."""
    out = []
    for i, block in enumerate(text.split(_SEPARATOR)):
        lines = block.strip("\n").splitlines()
        if i == 0:
            name, body = msgtype, "\n".join(lines)
        elif lines and lines[0].startswith("MSG: "):
            name, body = lines[0][5:].strip(), "\n".join(lines[1:])
        else:
            continue
        parts = name.split("/")
        if parts[0] == PACKAGE:
            out.append((f"{PACKAGE}/msg/{parts[-1]}", body))
    return tuple(sorted(set(out)))


def typestore_for(connections: Iterable) -> object:
    """The type store to decode a bag's messages with: :func:`get_typestore`, except that this package's
    types come from the bag's own stored definitions when it has them (a bag recorded by an older version of
    the node, with fewer fields, still decodes)."""
    defs = []
    for conn in connections:
        msgdef = getattr(conn, "msgdef", None)
        data = getattr(msgdef, "data", None) if msgdef is not None else None
        if isinstance(data, str) and data and str(conn.msgtype).startswith(PACKAGE + "/"):
            defs.extend(_project_definitions(str(conn.msgtype), data))
    if not defs:
        return get_typestore()
    return _store_with(tuple(sorted(set(defs))))


@functools.lru_cache(maxsize=8)
def _store_with(defs: Tuple[Tuple[str, str], ...]) -> object:
    current = dict(_package_definitions())
    bag = dict(defs)
    if all(_fields(bag[n]) == _fields(current.get(n, "")) for n in bag):
        return get_typestore()
    return _store_of((name, bag.get(name, text)) for name, text in current.items())


def _fields(text: str) -> Tuple[str, ...]:
    """Field lines of a definition without comments, blank lines, spacing and package prefixes of this
    package's own types (``TrackedKeypoint`` = ``vggt4d_ros/TrackedKeypoint`` inside the package)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            line = line.replace(f"{PACKAGE}/msg/", "").replace(f"{PACKAGE}/", "")
            out.append(" ".join(line.split()))
    return tuple(out)
