"""Ground truth (and published outputs) read back from rosbag2 bags with rosbags (no rclpy; the
depth decoder is the node's, from :mod:`vggt4d_ros.ros.conversions`).

Ground-truth topics are those written by :mod:`vggt4d_ros.data.bagwriter` (``/gt/<cam>/depth``,
``/gt/<cam>/dynamic_mask``, ``/gt/<cam>/pose``, ``/gt/<cam>/tracks``, ``/gt/odom``).
:func:`find_ground_truth` says which exist for the evaluated cameras and, for each missing piece, why.
The readers below are duck-typed on the message fields, so they read the node's outputs too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.spatial.transform import Rotation

from vggt4d_ros.bag.io import read_messages

__all__ = ["GroundTruthTopics", "find_ground_truth", "pose_matrix", "read_poses", "iter_depth", "iter_masks",
           "iter_keypoints", "stamp_ns"]

PathLike = Union[str, Path]
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseWithCovarianceStamped")


@dataclass
class GroundTruthTopics:
    """Ground-truth topics found for the evaluated cameras; ``missing`` maps a metric to the reason."""

    odom: Optional[str] = None
    poses: Dict[str, str] = field(default_factory=dict)  # camera -> PoseStamped topic (world <- optical)
    depth: Dict[str, str] = field(default_factory=dict)
    mask: Dict[str, str] = field(default_factory=dict)
    tracks: Dict[str, str] = field(default_factory=dict)
    missing: Dict[str, str] = field(default_factory=dict)


def _gt_keys(camera: str, image_topic: Optional[str]) -> List[str]:
    """Names a camera may have under ``/gt/``: its own, and the namespace of its image topic."""
    keys = [camera]
    if image_topic:
        parts = [p for p in image_topic.split("/") if p]
        if parts and parts[-1] == "compressed":
            parts = parts[:-1]
        if len(parts) >= 2 and parts[-2] not in keys:
            keys.append(parts[-2])
    return keys


def find_ground_truth(topics: Mapping[str, object], cameras: Sequence[str],
                      image_topics: Optional[Mapping[str, str]] = None) -> GroundTruthTopics:
    """Look up the ``/gt/...`` topics of a bag (``topics``: ``{name: summary with .msgtype}``)."""
    gt = GroundTruthTopics()
    image_topics = dict(image_topics or {})
    types = {t: getattr(s, "msgtype", "") for t, s in topics.items()}
    if types.get("/gt/odom") in POSE_TYPES:
        gt.odom = "/gt/odom"
    for cam in cameras:
        for key in _gt_keys(cam, image_topics.get(cam)):
            for kind, store, want in (("pose", gt.poses, POSE_TYPES), ("depth", gt.depth, ("sensor_msgs/msg/Image",)),
                                      ("dynamic_mask", gt.mask, ("sensor_msgs/msg/Image",)),
                                      ("tracks", gt.tracks, ("vggt4d_ros/msg/TrackedKeypoints",))):
                topic = f"/gt/{key}/{kind}"
                if cam not in store and types.get(topic) in want:
                    store[cam] = topic
    names = ", ".join(f"/gt/<{c}>/..." for c in cameras)
    if gt.odom is None and not gt.poses:
        gt.missing["trajectory"] = f"the bag has no ground-truth poses (/gt/odom or {names.replace('...', 'pose')})"
    if not gt.depth:
        gt.missing["depth"] = f"the bag has no ground-truth depth ({names.replace('...', 'depth')})"
    if not gt.mask:
        gt.missing["dynamic_mask"] = f"the bag has no ground-truth dynamic masks ({names.replace('...', 'dynamic_mask')})"
    if not gt.tracks:
        gt.missing["tracks"] = f"the bag has no ground-truth point tracks ({names.replace('...', 'tracks')})"
    return gt


def stamp_ns(header) -> int:
    """``header.stamp`` in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def pose_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4) float64."""
    q = pose.orientation
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


def read_poses(bag: PathLike, topic: str) -> Tuple[np.ndarray, np.ndarray, str]:
    """Poses of a PoseStamped / Odometry / PoseWithCovarianceStamped topic, sorted by header stamp.

    Returns (N,) int64 stamps, (N, 4, 4) parent-from-child poses and the child frame id ("" when the
    message type has none).
    """
    stamps, poses, child = [], [], ""
    for _t, msgtype, _log, msg in read_messages(bag, [topic], decode=True):
        p = msg.pose.pose if msgtype != "geometry_msgs/msg/PoseStamped" else msg.pose
        stamps.append(stamp_ns(msg.header))
        poses.append(pose_matrix(p))
        child = getattr(msg, "child_frame_id", child)
    if not stamps:
        return np.zeros(0, np.int64), np.zeros((0, 4, 4)), child
    s = np.asarray(stamps, dtype=np.int64)
    order = np.argsort(s, kind="stable")
    return s[order], np.stack(poses)[order], child


def _image_array(msg) -> np.ndarray:
    """(H, W) array of a single-channel Image (mono8 / 32FC1 / 16UC1), honouring step and endianness."""
    from vggt4d_ros.ros.conversions import depth_from_msg  # duck-typed; rclpy message modules only

    enc = str(msg.encoding).upper()
    if enc in ("32FC1", "16UC1"):
        return depth_from_msg(msg)
    if enc in ("MONO8", "8UC1"):
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
        buf = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
        return buf[: h * step].reshape(h, step)[:, :w].copy()
    raise ValueError(f"unsupported single-channel encoding {msg.encoding!r}")


def _iter_images(bag: PathLike, topics: Mapping[str, str]) -> Iterator[Tuple[str, int, np.ndarray]]:
    by_topic = {t: c for c, t in topics.items()}
    if not by_topic:
        return
    for topic, _mt, _log, msg in read_messages(bag, list(by_topic), decode=True):
        yield by_topic[topic], stamp_ns(msg.header), _image_array(msg)


def iter_depth(bag: PathLike, topics: Mapping[str, str]) -> Iterator[Tuple[str, int, np.ndarray]]:
    """``(camera, stamp_ns, depth (H, W) float32 metres, NaN invalid)`` of ``{camera: topic}``."""
    for cam, st, arr in _iter_images(bag, topics):
        yield cam, st, arr.astype(np.float32, copy=False)


def iter_masks(bag: PathLike, topics: Mapping[str, str]) -> Iterator[Tuple[str, int, np.ndarray]]:
    """``(camera, stamp_ns, mask (H, W) bool)`` of mono8 masks (> 127 = dynamic)."""
    for cam, st, arr in _iter_images(bag, topics):
        yield cam, st, arr > 127


def iter_keypoints(bag: PathLike, topics: Mapping[str, str]):
    """``(camera, stamp_ns, ids (N,), uv (N, 2), visible (N,))`` of TrackedKeypoints topics."""
    by_topic = {t: c for c, t in topics.items()}
    if not by_topic:
        return
    for topic, _mt, _log, msg in read_messages(bag, list(by_topic), decode=True):
        kps = list(msg.keypoints)
        ids = np.array([k.id for k in kps], dtype=np.int64)
        uv = np.array([[k.u, k.v] for k in kps], dtype=np.float64).reshape(-1, 2)
        vis = np.array([bool(k.visible) for k in kps], dtype=bool)
        yield by_topic[topic], stamp_ns(msg.header), ids, uv, vis
