"""Typed camera frames: what the front end hands to the window and the pipeline (no ROS)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np

__all__ = ["Frame"]


@dataclass(eq=False)
class Frame:
    """One decoded camera image.

    Attributes:
        camera: camera name (rig order in the config).
        rgb: (H, W, 3) uint8.
        stamp: the message's header stamp object, passed through untouched to the outputs.
        stamp_ns: the same stamp in integer nanoseconds.
        frame_id: optical frame (``<camera>.optical_frame`` or the header's frame_id).
        info: the camera's CameraInfo when the image was accepted (None when not required and unknown).
        arrival: monotonic clock at arrival (live latency), NaN offline.
        sensor_depth: (Hs, Ws) float32 metres registered to this image (``scale.depth_topic``), NaN = no
            data; set by :class:`~vggt4d_ros.perception.scale.SensorDepthMatcher`, possibly after the frame was queued.
    """

    camera: str
    rgb: np.ndarray
    stamp: Any
    stamp_ns: int
    frame_id: str
    info: Any = None
    arrival: float = float("nan")
    sensor_depth: Optional[np.ndarray] = None

    @classmethod
    def of(cls, obj: Union["Frame", Mapping[str, Any]]) -> "Frame":
        """A Frame as is, or one from a mapping with the same keys (windows built by hand in tests and
        benchmarks; only ``rgb`` is required, a missing ``stamp_ns`` is 0)."""
        if isinstance(obj, Frame):
            return obj
        return cls(camera=str(obj.get("camera", "")), rgb=obj["rgb"], stamp=obj.get("stamp"),
                   stamp_ns=int(obj.get("stamp_ns", 0)), frame_id=str(obj.get("frame_id", "")), info=obj.get("info"),
                   arrival=float(obj.get("arrival", float("nan"))), sensor_depth=obj.get("sensor_depth"))
