"""Replay a rosbag2 through the node and record its outputs (real ROS 2 installs).

  ros2 launch vggt4d_ros replay.launch.py bag:=/path/to/bag out:=/tmp/vggt4d_out config:=<yaml>

The project's own player (`vggt4d_bag play`) publishes the bag in lock-step with the node's ~/status
(deterministic: every time step is processed) and /clock for use_sim_time; `vggt4d_bag record` writes
every output topic to <out>. Without ROS, `vggt4d-replay BAG --through-ros` runs the same scenario.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def _actions(context):
    ns = LaunchConfiguration("namespace").perform(context).strip("/")
    status_topic = f"/{ns}/vggt4d/status" if ns else "/vggt4d/status"
    node = LifecycleNode(
        package="vggt4d_ros", executable="vggt4d_node", name="vggt4d", namespace=ns, output="screen",
        parameters=[LaunchConfiguration("config").perform(context), {"use_sim_time": True}])
    recorder = Node(
        package="vggt4d_ros", executable="vggt4d_bag", name="vggt4d_recorder", output="screen",
        arguments=["record", "-o", LaunchConfiguration("out").perform(context), "-a",
                   "--exclude", "/rosout", "/parameter_events", "/clock"])
    player = Node(
        package="vggt4d_ros", executable="vggt4d_bag", name="vggt4d_player", output="screen",
        arguments=["play", LaunchConfiguration("bag").perform(context), "--clock", "--lock-step",
                   "--lock-step-topic", status_topic, "--lock-step-type", "vggt4d_ros/msg/WindowStatus",
                   "--lock-step-timeout", LaunchConfiguration("lock_step_timeout").perform(context),
                   "--wait-subscribers", "--wait-timeout", "60",
                   "--rate", LaunchConfiguration("rate").perform(context)])
    # When the player is done, give the recorder time to drain, then shut everything down (the recorder
    # finalises its bag on SIGINT).
    done = RegisterEventHandler(OnProcessExit(
        target_action=player, on_exit=[TimerAction(period=5.0, actions=[EmitEvent(event=Shutdown())])]))
    return [node, recorder, player, done]


def generate_launch_description():
    share = get_package_share_directory("vggt4d_ros")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory (or .mcap/.db3 file) to replay"),
        DeclareLaunchArgument("out", default_value="/tmp/vggt4d_replay_out", description="output bag directory"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "default.yaml"),
                              description="node parameter file"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("rate", default_value="0", description="player speed factor (0 = lock-step only)"),
        DeclareLaunchArgument("lock_step_timeout", default_value="60", description="seconds per step"),
        OpaqueFunction(function=_actions),
    ])
