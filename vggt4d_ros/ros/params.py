"""The node's parameter table lives in :mod:`vggt4d_ros.frontend.params` (ROS-free, shared with the replay
and the pipeline); this module keeps the old import path."""
from vggt4d_ros.frontend.params import *  # noqa: F401,F403
from vggt4d_ros.frontend.params import __all__  # noqa: F401
