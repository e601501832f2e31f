"""Write small synthetic rosbag2 bags (images, CameraInfo, /tf_static) for tests and demos; no ROS import.

:func:`write_synthetic_bag` makes a rig of ``cameras`` cameras at ``hz`` Hz: per camera an
``rgb8`` Image with random content and a CameraInfo with the same header, camera ``c``'s stamp
offset by ``c * skew`` s (so a lock-step tolerance is exercised), log times a little after the
stamps, and ``/tf_static`` split over several messages (one per camera) the way several static
broadcasters would record it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from .io import make_qos, open_writer
from .typestore import get_typestore

IMAGE = "sensor_msgs/msg/Image"
INFO = "sensor_msgs/msg/CameraInfo"
TFMSG = "tf2_msgs/msg/TFMessage"


def _time(ns: int):
    return get_typestore().types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns: int, frame: str):
    return get_typestore().types["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame)


def write_synthetic_bag(
    path: Union[str, Path],
    *,
    cameras: int = 2,
    steps: int = 10,
    hz: float = 20.0,
    height: int = 24,
    width: int = 32,
    skew: float = 0.001,
    tf_static: bool = True,
    storage: str = "mcap",
    t0_ns: int = 1_700_000_000 * 1_000_000_000,
    seed: int = 0,
    namespace: str = "",
) -> Dict[str, List[int]]:
    """Write the bag and return ``{topic: [header stamp ns, ...]}`` in write order.

    Topics: ``{namespace}/cam{c}/image_raw`` (Image), ``{namespace}/cam{c}/camera_info`` (CameraInfo) and, with
    ``tf_static``, ``/tf_static`` (one TFMessage per camera: ``base_link -> cam{c}_optical``,
    translation x = 0.1 * c; recorded as transient local like a static broadcaster). Camera topics
    are prefixed with ``namespace`` (e.g. ``"/run42"``) so parallel tests never share names.
    """
    store = get_typestore()
    T = store.types
    rng = np.random.default_rng(seed)
    period = int(round(1e9 / hz))
    stamps: Dict[str, List[int]] = {}
    with open_writer(path, storage) as writer:
        if tf_static:
            writer.add_topic("/tf_static", TFMSG, [make_qos(transient_local=True, depth=1)])
            stamps["/tf_static"] = []
            for c in range(cameras):
                tf = T["geometry_msgs/msg/TransformStamped"](
                    header=_header(t0_ns, "base_link"),
                    child_frame_id=f"cam{c}_optical",
                    transform=T["geometry_msgs/msg/Transform"](
                        translation=T["geometry_msgs/msg/Vector3"](x=0.1 * c, y=0.0, z=0.0),
                        rotation=T["geometry_msgs/msg/Quaternion"](x=-0.5, y=0.5, z=-0.5, w=0.5),
                    ),
                )
                writer.write("/tf_static", t0_ns + c, store.serialize_cdr(T[TFMSG](transforms=[tf]), TFMSG))
                stamps["/tf_static"].append(t0_ns)
        for c in range(cameras):
            for topic, typ in ((f"{namespace}/cam{c}/image_raw", IMAGE), (f"{namespace}/cam{c}/camera_info", INFO)):
                writer.add_topic(topic, typ, [make_qos(depth=10)])
                stamps[topic] = []
        fx = 0.8 * width
        k = np.array([fx, 0.0, width / 2, 0.0, fx, height / 2, 0.0, 0.0, 1.0])
        p = np.array([fx, 0.0, width / 2, 0.0, 0.0, fx, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0])
        roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        for s in range(steps):
            for c in range(cameras):
                stamp = t0_ns + 10_000_000 + s * period + int(c * skew * 1e9)
                frame = f"cam{c}_optical"
                img = T[IMAGE](
                    header=_header(stamp, frame), height=height, width=width, encoding="rgb8",
                    is_bigendian=0, step=3 * width,
                    data=rng.integers(0, 256, height * width * 3, dtype=np.uint8),
                )
                info = T[INFO](
                    header=_header(stamp, frame), height=height, width=width, distortion_model="plumb_bob",
                    d=np.zeros(5), k=k, r=np.eye(3).ravel(), p=p, binning_x=0, binning_y=0, roi=roi,
                )
                log = stamp + 2_000_000  # "received" 2 ms after acquisition
                cam = f"{namespace}/cam{c}"
                writer.write(f"{cam}/image_raw", log, store.serialize_cdr(img, IMAGE))
                writer.write(f"{cam}/camera_info", log + 1000, store.serialize_cdr(info, INFO))
                stamps[f"{cam}/image_raw"].append(stamp)
                stamps[f"{cam}/camera_info"].append(stamp)
    return stamps
