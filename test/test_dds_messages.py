"""Every message type the node publishes crosses real DDS between two processes, field-identical.

The test process publishes each message on ``<prefix>/in_<i>``; test/helpers/dds_echo.py, a separate
process started with the localhost-only DDS environment, deserialises it and publishes it back on
``<prefix>/out_<i>``; the test compares what comes back with what it sent (``==`` and the serialised
CDR bytes). All traffic stays on this machine (vggt4d_ros.rosenv).
"""
import array
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import rclpy.executors
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from vggt4d_ros.msg import TrackedKeypoint, TrackedKeypoints, WindowStatus
from vggt4d_ros.rosenv import apply_localhost_env, localhost_env
from vggt4d_ros.ros.conversions import (camera_info_msg, confidence_to_msg, depth_to_msg, make_header,
                                        mask_to_msg, rgb_to_image_msg, scale_camera_info)
from vggt4d_ros.ros.diagnostics import diagnostic_array
from vggt4d_ros.ros.pointcloud import points_to_cloud
from vggt4d_ros.ros.transforms import odometry_msg, tf_message, transform_stamped

ROOT = Path(__file__).resolve().parents[1]
ECHO = ROOT / "test" / "helpers" / "dds_echo.py"
STAMP = 1_700_000_123_456_789_012


def field_diff(a, b, path="msg"):
    """First difference between two rclpy messages, field by field and bit-exact ('' if identical).

    Serialised bytes cannot be compared directly: CDR alignment padding is not zeroed. Floats are
    compared by their bits (NaN == NaN when the payload is the same), sequences element-wise.
    """
    if hasattr(a, "get_fields_and_field_types"):
        if type(a) is not type(b):
            return f"{path}: {type(a).__name__} != {type(b).__name__}"
        for name in a.get_fields_and_field_types():
            d = field_diff(getattr(a, name), getattr(b, name), f"{path}.{name}")
            if d:
                return d
        return ""
    if isinstance(a, (array.array, np.ndarray)):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        if a_arr.dtype != b_arr.dtype or a_arr.shape != b_arr.shape or a_arr.tobytes() != b_arr.tobytes():
            return f"{path}: arrays differ"
        return ""
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        for k, (x, y) in enumerate(zip(a, b)):
            d = field_diff(x, y, f"{path}[{k}]")
            if d:
                return d
        return ""
    if isinstance(a, float):
        return "" if struct.pack("<d", a) == struct.pack("<d", b) else f"{path}: {a!r} != {b!r}"
    return "" if (type(a) is type(b) and a == b) else f"{path}: {a!r} != {b!r}"


def type_name(msg) -> str:
    mod = type(msg).__module__.split(".")  # e.g. sensor_msgs.msg._image
    return f"{mod[0]}/msg/{type(msg).__name__}"


def sample_messages():
    rng = np.random.default_rng(0)
    hdr = make_header("cam0_optical_frame", STAMP)
    depth = rng.uniform(0.2, 30, (294, 518)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = np.nan
    K = np.array([[400.0, 0, 259.0], [0, 401.0, 147.0], [0, 0, 1]])
    pts = rng.normal(size=(48, 64, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    valid = rng.random((48, 64)) > 0.2
    T = np.eye(4)
    T[:3, 3] = [1.0, -2.0, 0.5]
    marker = Marker(header=make_header("odom", STAMP), ns="trajectory", id=3, type=Marker.LINE_STRIP,
                    action=Marker.ADD, frame_locked=True, text="path", lifetime=Duration(sec=2, nanosec=5))
    marker.pose.orientation.w = 1.0
    marker.scale.x = 0.02
    marker.color = ColorRGBA(r=0.125, g=0.875, b=0.25, a=1.0)  # float32-exact values
    marker.points = [Point(x=float(i), y=float(i * i), z=-1.0) for i in range(20)]
    marker.colors = [ColorRGBA(r=1.0, g=0.0, b=float(i) / 32, a=0.5) for i in range(20)]
    delete_all = Marker(action=Marker.DELETEALL)
    kps = TrackedKeypoints(header=hdr, camera_index=1, width=1280, height=720, keypoints=[
        TrackedKeypoint(id=2**40 + i, camera_index=1, u=10.5 + i, v=700.25, confidence=0.75,
                        visible=bool(i % 2), age=i + 1, reprojection_error=float("nan") if i % 3 else 0.25 * i,
                        position=Point(x=float(i), y=float("nan") if i == 3 else 1.0, z=2.0))
        for i in range(50)])
    status = WindowStatus(header=make_header("odom", STAMP), tracking_state=WindowStatus.TRACKING_RECOVERED,
                          window_index=2**33, num_views=2, num_time_steps=8,
                          window_start=Time(sec=1_700_000_120, nanosec=1), window_end=Time(sec=1_700_000_123),
                          latency=0.125, inference_time=0.5, scale=1.0000001, scale_is_metric=True,
                          scale_source="camera_height",                          chain_inlier_ratio=0.875, frames_dropped=7, windows_skipped=2,
                          message="recovered after 3 windows")
    info = camera_info_msg(K, 1036, 588, hdr, D=[0.1, -0.05, 0.001, 0.002, 0.0])
    return [
        depth_to_msg(depth, hdr),
        depth_to_msg(depth, hdr, encoding="16UC1"),
        mask_to_msg(rng.random((294, 518)) > 0.7, hdr),
        confidence_to_msg(rng.uniform(1, 50, (294, 518)).astype(np.float32), hdr),
        rgb_to_image_msg(cols, hdr, "bgr8"),
        scale_camera_info(info, 518, 294),
        points_to_cloud(pts, hdr, colors=cols, valid=valid),
        points_to_cloud(pts, make_header("odom", STAMP), colors=cols, valid=valid, organized=False),
        odometry_msg(STAMP, "odom", "base_link", T, twist=[0.5, 0, 0, 0, 0, 0.1]),
        tf_message([transform_stamped("odom", "base_link", STAMP, T),
                    transform_stamped("map", "odom", STAMP, np.eye(4))]),
        diagnostic_array(make_header("", STAMP), [
            {"name": "vggt4d: inference", "level": "WARN", "message": "slow",
             "values": {"inference_ms": 812.5, "windows": 12}},
            {"name": "vggt4d: camera cam0", "level": "OK", "values": {"rate_hz": 14.9}}]),
        MarkerArray(markers=[delete_all, marker]),
        kps,
        status,
    ]


@pytest.fixture(scope="module")
def ros_context():
    apply_localhost_env()
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


def test_every_published_type_crosses_dds_field_identical(ros_context):
    msgs = sample_messages()
    types = [type_name(m) for m in msgs]
    assert {"sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/PointCloud2",
            "nav_msgs/msg/Odometry", "tf2_msgs/msg/TFMessage", "diagnostic_msgs/msg/DiagnosticArray",
            "visualization_msgs/msg/MarkerArray", "vggt4d_ros/msg/TrackedKeypoints",
            "vggt4d_ros/msg/WindowStatus"} <= set(types)
    prefix = f"/vggt4d_test_{os.getpid()}"
    env = localhost_env()
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["ROS_DOMAIN_ID"] == os.environ["ROS_DOMAIN_ID"]
    proc = subprocess.Popen([sys.executable, str(ECHO), prefix, *types, "--timeout", "60"],
                            env=env, cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    node = rclpy.create_node("vggt4d_dds_test", context=ros_context)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        received = {}
        pubs, subs = [], []
        for i, m in enumerate(msgs):
            pubs.append(node.create_publisher(type(m), f"{prefix}/in_{i}", qos))
            subs.append(node.create_subscription(
                type(m), f"{prefix}/out_{i}", lambda msg, i=i: received.setdefault(i, msg), qos))
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()

        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not all(
                p.get_subscription_count() > 0 and node.count_publishers(f"{prefix}/out_{i}") > 0
                for i, p in enumerate(pubs)):
            executor.spin_once(timeout_sec=0.05)
        next_send = 0.0
        while time.monotonic() < deadline and len(received) < len(msgs):
            if time.monotonic() >= next_send:  # (re)send what has not come back yet
                for i, m in enumerate(msgs):
                    if i not in received:
                        pubs[i].publish(m)
                next_send = time.monotonic() + 2.0
            executor.spin_once(timeout_sec=0.05)
        missing = [types[i] for i in range(len(msgs)) if i not in received]
        assert not missing, f"not echoed back over DDS: {missing}; echo stderr: {proc.stderr.read()[-2000:] if proc.poll() is not None else ''}"
        for i, sent in enumerate(msgs):
            got = received[i]
            assert type(got) is type(sent)
            assert not field_diff(sent, got), f"{types[i]}: {field_diff(sent, got)}"
            assert len(serialize_message(got)) == len(serialize_message(sent))
        # spot checks that the payloads are the real thing, not empty defaults
        assert received[0].width == 518 and len(received[0].data) == 518 * 294 * 4
        assert received[6].point_step == 32 and received[6].is_dense is False
        assert received[12].keypoints[49].id == 2**40 + 49
        assert received[13].message == "recovered after 3 windows"
    finally:
        node.destroy_node()
        try:
            proc.stdin.close()
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
