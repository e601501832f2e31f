"""Write a :class:`~vggt4d_ros.data.synth.SynthSequence` as a rosbag2 bag with its ground truth.

Topics (``<cam>`` is ``cam0``, ``cam1``, ...; every per-camera message of a time step carries that
camera's acquisition stamp, and each message's bag log time equals its header stamp):

=================================  ==================================  =======================================
topic                              type                                content
=================================  ==================================  =======================================
``/<cam>/image_raw``               sensor_msgs/msg/Image               rgb8 (unless ``raw=False``)
``/<cam>/image_raw/compressed``    sensor_msgs/msg/CompressedImage     JPEG (only with ``compressed=True``)
``/<cam>/camera_info``             sensor_msgs/msg/CameraInfo          plumb_bob, zero distortion
``/tf_static``                     tf2_msgs/msg/TFMessage              base_link -> <cam>_optical_frame
``/gt/<cam>/depth``                sensor_msgs/msg/Image               32FC1 metres along the optical axis
``/gt/<cam>/dynamic_mask``         sensor_msgs/msg/Image               mono8, 255 = moving object
``/gt/<cam>/pose``                 geometry_msgs/msg/PoseStamped       world <- <cam>_optical_frame
``/gt/<cam>/tracks``               vggt4d_ros/msg/TrackedKeypoints     ground-truth point tracks
``/gt/odom``                       nav_msgs/msg/Odometry               world -> base_link, twist in base_link
``/gt/synth_config``               std_msgs/msg/String                 the SynthConfig as JSON (once)
=================================  ==================================  =======================================

``OUT.mcap`` / ``OUT.db3`` is written as that single file (as ``ros2 bag info OUT.mcap`` reads it), any other
path as a rosbag2 bag directory. The bag is written to a hidden temporary directory and moved into place only
when complete (:class:`vggt4d_ros.bag.io.BagWriter`), so an interrupted run leaves nothing that looks like a
bag.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from ..bag.io import STORAGE_SUFFIX as _SUFFIX_OF, BagError, make_qos, open_writer
from ..bag.typestore import get_typestore
from .synth import BASE_FRAME, WORLD_FRAME, CameraFrame, SynthFrame, SynthSequence

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
INFO = "sensor_msgs/msg/CameraInfo"
TF = "tf2_msgs/msg/TFMessage"
POSE = "geometry_msgs/msg/PoseStamped"
ODOM = "nav_msgs/msg/Odometry"
TRACKS = "vggt4d_ros/msg/TrackedKeypoints"
STRING = "std_msgs/msg/String"
GT_COVARIANCE = 1e-6  # diagonal of the ground-truth covariances (non-zero: zeros break robot_localization)
STORAGE_SUFFIX = {suffix: storage for storage, suffix in _SUFFIX_OF.items()}  # ".mcap" -> "mcap", ...


def resolve_bag_path(out: Union[str, Path], storage: Optional[str] = None) -> Tuple[Path, str]:
    """Output path and storage for a user-supplied output path.

    ``OUT.mcap`` / ``OUT.db3`` is the single storage file of that name (it picks the storage when ``storage``
    is None; rosbag2 reads such a file on its own: ``ros2 bag info OUT.mcap``); any other path is a rosbag2
    bag directory (``metadata.yaml`` plus ``OUT/OUT.mcap`` or ``OUT/OUT.db3``).

    Raises:
        ValueError: the suffix contradicts ``storage`` or the storage is unknown.
    """
    path = Path(out)
    suffix_storage = STORAGE_SUFFIX.get(path.suffix.lower())
    if suffix_storage is not None:
        if storage is not None and storage != suffix_storage:
            raise ValueError(f"output {path.name} implies storage {suffix_storage}, but storage {storage} was asked")
        storage = suffix_storage
    storage = storage or "mcap"
    if storage not in STORAGE_SUFFIX.values():
        raise ValueError(f"unknown storage {storage!r} (use mcap or sqlite3)")
    return path, storage


@dataclass
class BagSummary:
    """What :func:`write_synth_bag` wrote."""

    path: Path
    storage: str
    frames: int
    cameras: int
    messages: int
    bytes: int
    seconds: float


class _Msgs:
    """Builders of the ROS messages (rosbags type-store classes) and their CDR serialisation."""

    def __init__(self) -> None:
        self.store = get_typestore()
        self.T = self.store.types

    def ser(self, msg, msgtype: str) -> bytes:
        return self.store.serialize_cdr(msg, msgtype)

    def header(self, stamp_ns: int, frame: str):
        t = self.T["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        return self.T["std_msgs/msg/Header"](stamp=t, frame_id=frame)

    def pose(self, T: np.ndarray):
        q = Rotation.from_matrix(T[:3, :3]).as_quat()  # x, y, z, w
        return self.T["geometry_msgs/msg/Pose"](
            position=self.T["geometry_msgs/msg/Point"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            orientation=self.T["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                                w=float(q[3])))

    def transform(self, T: np.ndarray):
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        return self.T["geometry_msgs/msg/Transform"](
            translation=self.T["geometry_msgs/msg/Vector3"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            rotation=self.T["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                             w=float(q[3])))

    def image(self, header, array: np.ndarray, encoding: str):
        """Image from (H, W, 3) uint8 rgb8, (H, W) uint8 mono8 or (H, W) float32 32FC1 (little endian)."""
        h, w = array.shape[:2]
        data = np.ascontiguousarray(array)
        if data.dtype != np.uint8:
            data = data.astype(data.dtype.newbyteorder("<"), copy=False)
        raw = data.view(np.uint8).reshape(-1)
        return self.T[IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                             step=raw.size // h, data=raw)

    def camera_info(self, header, K: np.ndarray, width: int, height: int):
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.T[INFO](header=header, height=height, width=width, distortion_model="plumb_bob",
                            d=np.zeros(5), k=K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1),
                            p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def _covariance() -> np.ndarray:
    return (np.eye(6) * GT_COVARIANCE).reshape(-1)


def _camera_messages(m: _Msgs, seq: SynthSequence, cam: str, cf: CameraFrame, *, raw: bool, compressed: bool,
                     jpeg_quality: int, ground_truth: bool) -> List[Tuple[str, bytes]]:
    """(topic, CDR bytes) of one camera at one time step."""
    cfg = seq.config
    header = m.header(cf.stamp_ns, seq.optical_frames[cam])
    out: List[Tuple[str, bytes]] = []
    if raw:
        out.append((f"/{cam}/image_raw", m.ser(m.image(header, cf.rgb, "rgb8"), IMAGE)))
    if compressed:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(cf.rgb[:, :, ::-1]),
                               [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)])
        if not ok:
            raise BagError(f"JPEG encoding failed for {cam}")
        msg = m.T[COMPRESSED](header=header, format="rgb8; jpeg compressed bgr8", data=buf.reshape(-1))
        out.append((f"/{cam}/image_raw/compressed", m.ser(msg, COMPRESSED)))
    out.append((f"/{cam}/camera_info", m.ser(m.camera_info(header, cf.K, cfg.width, cfg.height), INFO)))
    if not ground_truth:
        return out
    out.append((f"/gt/{cam}/depth", m.ser(m.image(header, cf.depth, "32FC1"), IMAGE)))
    mask = np.where(cf.dynamic_mask, 255, 0).astype(np.uint8)
    out.append((f"/gt/{cam}/dynamic_mask", m.ser(m.image(header, mask, "mono8"), IMAGE)))
    pose = m.T[POSE](header=m.header(cf.stamp_ns, WORLD_FRAME), pose=m.pose(cf.T_world_cam))
    out.append((f"/gt/{cam}/pose", m.ser(pose, POSE)))
    tr = cf.tracks
    sel = np.nonzero(tr.in_image)[0]
    kp_t, pt_t = m.T["vggt4d_ros/msg/TrackedKeypoint"], m.T["geometry_msgs/msg/Point"]
    cam_index = seq.camera_names.index(cam)
    uv = tr.uv[sel].astype(np.float64)
    xyz = tr.xyz_cam[sel].astype(np.float64)
    keypoints = [
        kp_t(id=int(tr.ids[k]), camera_index=cam_index, u=float(uv[j, 0]), v=float(uv[j, 1]), confidence=1.0,
             visible=bool(tr.visible[k]), age=int(tr.age[k]), reprojection_error=float("nan"),  # not checked
             position=pt_t(x=float(xyz[j, 0]), y=float(xyz[j, 1]), z=float(xyz[j, 2])))
        for j, k in enumerate(sel)
    ]
    msg = m.T[TRACKS](header=header, camera_index=cam_index, width=cfg.width, height=cfg.height, keypoints=keypoints)
    out.append((f"/gt/{cam}/tracks", m.ser(msg, TRACKS)))
    return out


def _odom_message(m: _Msgs, seq: SynthSequence, frame: SynthFrame) -> bytes:
    v, w = seq.base_twist(frame.time_s)
    v3 = m.T["geometry_msgs/msg/Vector3"]
    twist = m.T["geometry_msgs/msg/Twist"](linear=v3(x=float(v[0]), y=float(v[1]), z=float(v[2])),
                                           angular=v3(x=float(w[0]), y=float(w[1]), z=float(w[2])))
    msg = m.T[ODOM](
        header=m.header(frame.stamp_ns, WORLD_FRAME), child_frame_id=BASE_FRAME,
        pose=m.T["geometry_msgs/msg/PoseWithCovariance"](pose=m.pose(frame.T_world_base), covariance=_covariance()),
        twist=m.T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=_covariance()))
    return m.ser(msg, ODOM)


def write_synth_bag(
    seq: SynthSequence,
    out: Union[str, Path],
    *,
    storage: Optional[str] = None,
    raw: bool = True,
    compressed: bool = False,
    jpeg_quality: int = 90,
    ground_truth: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> BagSummary:
    """Render every frame of ``seq`` and write the bag (see the module docstring for the topics).

    Args:
        out: bag path, resolved by :func:`resolve_bag_path` (``x.mcap``: that file; ``x``: a bag directory).
        storage: ``"mcap"`` (default) or ``"sqlite3"``.
        raw / compressed: write ``image_raw`` / ``image_raw/compressed`` (at least one of them).
        ground_truth: write the ``/gt/...`` topics.
        progress: called as ``progress(done, total)`` after each time step; an exception raised there
            aborts the run and removes the partial bag.
    Raises:
        ValueError: bad arguments; BagError: the bag cannot be written (e.g. it exists already).
    """
    if not (raw or compressed):
        raise ValueError("nothing to write: both raw and compressed images are disabled")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100] (got {jpeg_quality})")
    path, storage = resolve_bag_path(out, storage)
    t_start = time.perf_counter()
    m = _Msgs()
    reliable = make_qos(reliable=True, depth=10)
    latched = make_qos(reliable=True, transient_local=True, depth=1)
    topics: Dict[str, str] = {}
    for cam in seq.camera_names:
        if raw:
            topics[f"/{cam}/image_raw"] = IMAGE
        if compressed:
            topics[f"/{cam}/image_raw/compressed"] = COMPRESSED
        topics[f"/{cam}/camera_info"] = INFO
        if ground_truth:
            topics.update({f"/gt/{cam}/depth": IMAGE, f"/gt/{cam}/dynamic_mask": IMAGE,
                           f"/gt/{cam}/pose": POSE, f"/gt/{cam}/tracks": TRACKS})
    if ground_truth:
        topics["/gt/odom"] = ODOM
    n_msgs = 0
    with open_writer(path, storage) as writer:
        writer.add_topic("/tf_static", TF, [latched])
        if ground_truth:
            writer.add_topic("/gt/synth_config", STRING, [latched])
        for topic, msgtype in topics.items():
            writer.add_topic(topic, msgtype, [reliable])
        first_stamp = min(seq.stamp_ns(seq.camera_time(0, c)) for c in seq.camera_names)
        first_stamp = min(first_stamp, seq.stamp_ns(0.0))
        tfs = [m.T["geometry_msgs/msg/TransformStamped"](header=m.header(first_stamp, BASE_FRAME),
                                                         child_frame_id=seq.optical_frames[c],
                                                         transform=m.transform(seq.T_base_cam[c]))
               for c in seq.camera_names]
        writer.write("/tf_static", first_stamp, m.ser(m.T[TF](transforms=tfs), TF))
        n_msgs += 1
        if ground_truth:
            cfg_json = json.dumps(seq.config.to_dict(), sort_keys=True)
            writer.write("/gt/synth_config", first_stamp, m.ser(m.T[STRING](data=cfg_json), STRING))
            n_msgs += 1
        for i in range(seq.num_frames):
            frame = seq.frame(i)
            batch: List[Tuple[int, int, str, bytes]] = []
            if ground_truth:
                batch.append((frame.stamp_ns, 0, "/gt/odom", _odom_message(m, seq, frame)))
            for ci, cam in enumerate(seq.camera_names):
                cf = frame.cameras[cam]
                for k, (topic, data) in enumerate(_camera_messages(
                        m, seq, cam, cf, raw=raw, compressed=compressed, jpeg_quality=jpeg_quality,
                        ground_truth=ground_truth)):
                    batch.append((cf.stamp_ns, 1 + ci * 100 + k, topic, data))
            batch.sort(key=lambda x: (x[0], x[1]))
            for stamp, _, topic, data in batch:
                writer.write(topic, stamp, data)
            n_msgs += len(batch)
            if progress is not None:
                progress(i + 1, seq.num_frames)
    size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return BagSummary(path=path, storage=storage, frames=seq.num_frames, cameras=len(seq.camera_names),
                      messages=n_msgs, bytes=size, seconds=time.perf_counter() - t_start)
