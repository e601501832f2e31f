"""Bag tools: play and record rosbag2 bags with rclpy (raw CDR bytes) and rosbags; no ros2cli.

Importing this package does not import rclpy (only :func:`play_bag` and :class:`Recorder` use it,
when called). Console script: ``vggt4d-bag`` (:func:`vggt4d_ros.bag.cli.main`); see docs/bag-tools.md.
"""
from .io import BagError, BagMessage, BagWriter, bag_time_range, bag_topics, header_stamp_ns, open_writer, read_messages
from .play import PlayResult, play_bag
from .record import Recorder, RecordResult, record
from .typestore import get_typestore

__all__ = [
    "BagError",
    "BagMessage",
    "BagWriter",
    "PlayResult",
    "RecordResult",
    "Recorder",
    "bag_time_range",
    "bag_topics",
    "get_typestore",
    "header_stamp_ns",
    "open_writer",
    "play_bag",
    "read_messages",
    "record",
]
