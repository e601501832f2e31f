"""The ROS-free input front end shared by the node and the replay: typed frames, the parameter table, an
immutable configuration snapshot and :class:`FrontEnd` (CameraInfo, sync, window, resets, status order,
extrinsics, the depth-topic matcher). See docs/architecture.md."""
from .config import Config, ParamError
from .frames import Frame
from .frontend import CAMERA_TIMEOUT_S, FrontEnd, Throttle

__all__ = ["Config", "ParamError", "Frame", "FrontEnd", "Throttle", "CAMERA_TIMEOUT_S"]
