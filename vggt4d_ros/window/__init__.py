"""Windowing core (no ROS): multi-camera sync, sliding windows, window chaining, keypoint detection."""

from .chain import ChainResult, TrackingState, WindowChainer, metric_scale_from_rig
from .sync import CameraInfoCache, CameraStats, MultiCameraSynchronizer, SyncOutput, TimeStep
from .tracks import detect_features
from .window import KeyframeSelector, PushResult, SlidingWindow, Window, WindowQueue

__all__ = [
    "CameraInfoCache",
    "CameraStats",
    "ChainResult",
    "KeyframeSelector",
    "MultiCameraSynchronizer",
    "PushResult",
    "SlidingWindow",
    "SyncOutput",
    "TimeStep",
    "TrackingState",
    "Window",
    "WindowChainer",
    "WindowQueue",
    "detect_features",
    "metric_scale_from_rig",
]
