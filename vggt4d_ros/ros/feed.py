"""ROS messages into the :class:`~vggt4d_ros.frontend.FrontEnd`: decoding shared by the node and the replay.

The node calls these from its subscription callbacks, the offline replay from the bag's decoded messages,
so an image, a CameraInfo, a depth image or /tf_static goes through the same conversion and the same front
end either way.
"""
from __future__ import annotations

from typing import Any, Dict

from vggt4d_ros.frontend import Config, FrontEnd
from vggt4d_ros.ros import conversions as conv
from vggt4d_ros.ros import messages as outmsg
from vggt4d_ros.ros.transforms import transform_to_matrix

__all__ = ["feed_image", "feed_info", "feed_depth", "feed_tf_static", "ack_builder"]


def feed_image(fe: FrontEnd, cam: str, msg: Any, compressed: bool, now: float = None) -> None:
    """sensor_msgs Image / CompressedImage -> RGB -> the front end (undecodable ones are rejected)."""
    try:
        max_px = int(fe.cfg["max_image_pixels"])
        rgb = conv.compressed_to_rgb(msg, max_pixels=max_px) if compressed else conv.image_to_rgb(msg, max_pixels=max_px)
    except conv.ImageConversionError as exc:
        fe.reject(cam, str(exc))
        return
    stamp_ns = conv.stamp_to_ns(msg.header.stamp)
    fe.image(cam, rgb, conv.ns_to_stamp(stamp_ns), stamp_ns, msg.header.frame_id, now=now)


def feed_info(fe: FrontEnd, cam: str, msg: Any) -> bool:
    return fe.camera_info(cam, msg)


def feed_depth(fe: FrontEnd, msg: Any) -> None:
    """``scale.depth_topic``: 16UC1 mm / 32FC1 m -> float32 m (NaN invalid), paired by stamp."""
    try:
        depth = conv.depth_from_msg(msg)
    except conv.ImageConversionError as exc:
        fe.reject(f"{fe.cameras[0]} depth", str(exc))
        return
    fe.depth_image(conv.stamp_to_ns(msg.header.stamp), depth)


def feed_tf_static(fe: FrontEnd, msg: Any) -> None:
    fe.tf_static((t.child_frame_id, t.header.frame_id, transform_to_matrix(t.transform)) for t in msg.transforms)


def ack_builder(get_cfg, ns: str = "~"):
    """The front end's status builder for steps consumed without an inference (``messages.ack_message``);
    ``get_cfg()`` returns the current :class:`Config` (live parameters)."""

    def build(stamp: Any, stamp_ns: int, num_views: int, message: str, state: int, counters: Dict[str, int]):
        return outmsg.ack_message(get_cfg(), stamp, num_views, state, int(counters["windows"]),
                                  int(counters["frames_dropped"]), int(counters["windows_skipped"]), message,
                                  ns=ns)[2]

    return build
