"""The rosbags type store used by every bag reader and writer of this project.

Jazzy's message set (tf2_msgs included) plus this package's own messages, registered from the
``.msg`` files in ``msg/`` so their type hashes equal the ones rosidl computes. No ROS import.
"""
from __future__ import annotations

import functools
from pathlib import Path

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
def get_typestore():
    """Return the Jazzy type store with ``vggt4d_ros/msg/*`` registered."""
    store = _rosbags_typestore(Stores.ROS2_JAZZY)
    types = {}
    folder = msg_dir()
    for name in _MSG_NAMES:
        text = (folder / f"{name}.msg").read_text()
        types.update(get_types_from_msg(text, f"{PACKAGE}/msg/{name}"))
    store.register(types)
    return store
