"""Start the vggt4d_ros node (real ROS 2 installs: `ros2 launch vggt4d_ros vggt4d.launch.py`).

Arguments:
  config        parameter file (default: the package's config/default.yaml: VGGT-1B, needs checkpoint:=)
  checkpoint    model.checkpoint override (weights file; empty = the config file's value)
  namespace     namespace of the node (default: none); RViz is started in the same namespace
  use_sim_time  use /clock (bag replay)
  remappings    extra remappings "from:=to;from2:=to2", e.g. "/cam0/image_raw:=/front/image_raw"
  log_level     rclcpp/rclpy log level
  rviz          also start RViz with config/vggt4d.rviz: its topics are relative (vggt4d/odometry, ...), so
                they resolve in RViz's namespace, which is the node's `namespace` here
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def _parse_remappings(text):
    pairs = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        if ":=" not in item:
            raise RuntimeError(f"remapping {item!r} must look like from:=to")
        src, dst = item.split(":=", 1)
        pairs.append((src.strip(), dst.strip()))
    return pairs


def _node(context):
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    if checkpoint:
        overrides["model.checkpoint"] = checkpoint
    return [LifecycleNode(
        package="vggt4d_ros",
        executable="vggt4d_node",
        name="vggt4d",
        namespace=LaunchConfiguration("namespace").perform(context),
        output="screen",
        parameters=[LaunchConfiguration("config").perform(context), overrides],
        remappings=_parse_remappings(LaunchConfiguration("remappings").perform(context)),
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level").perform(context)],
    )]


def generate_launch_description():
    share = get_package_share_directory("vggt4d_ros")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "default.yaml"),
                              description="node parameter file"),
        DeclareLaunchArgument("checkpoint", default_value="", description="model.checkpoint (weights file)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace (RViz's too)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock"),
        DeclareLaunchArgument("remappings", default_value="", description='"from:=to;from2:=to2"'),
        DeclareLaunchArgument("log_level", default_value="info", description="log level"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz"),
        OpaqueFunction(function=_node),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
             namespace=LaunchConfiguration("namespace"),
             arguments=["-d", os.path.join(share, "config", "vggt4d.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
