"""The node's output messages for one pipeline result, built without a node (offline replay).

The builders live in :mod:`vggt4d_ros.ros.messages` (the node uses the same ones); here every topic is
"subscribed" (as under the recorder of a ``--through-ros`` run) and messages are serialised to CDR with
``rclpy.serialization`` so the bytes equal what the node puts on the wire. Needs the ROS message packages
(rclpy itself is never initialised).
"""
from __future__ import annotations

from typing import Any

from vggt4d_ros.ros.messages import (NODE_NAMESPACE, ack_message, diagnostics_message, output_topics,
                                     status_messages, step_messages)

__all__ = ["NODE_NAMESPACE", "output_topics", "step_messages", "status_messages", "ack_message",
           "diagnostics_message", "serialize"]


def serialize(msg: Any) -> bytes:
    """CDR bytes of an rclpy message (what the node sends over DDS)."""
    from rclpy.serialization import serialize_message

    return serialize_message(msg)
