"""vggt4d_ros: a 4D visual-geometry transformer as a ROS 2 perception node.

The core (``model``, ``geometry``, ``inference``, ``data``, ``window``) imports without rclpy;
only ``vggt4d_ros.ros`` and the bag player/recorder need it.
"""
# The interface build (rosidl) installs ``vggt4d_ros/msg`` into site-packages, while the Python code
# may live elsewhere (a source checkout on sys.path): extend_path merges every ``vggt4d_ros`` directory
# on sys.path so ``vggt4d_ros.msg`` is found next to the sources.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)  # noqa: F821

__version__ = "0.1.0"
