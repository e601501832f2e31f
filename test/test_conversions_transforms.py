"""transforms.py (against scipy and REP 103) and diagnostics.py."""
import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Quaternion
from scipy.spatial.transform import Rotation
from tf2_msgs.msg import TFMessage

from vggt4d_ros.ros.conversions import make_header
from vggt4d_ros.ros.diagnostics import diagnostic_array, diagnostic_status, level_byte
from vggt4d_ros.ros.transforms import (
    R_BODY_OPTICAL, T_BODY_OPTICAL, T_OPTICAL_BODY, body_pose_from_optical_pose,
    body_to_optical_convention, covariance_6x6, invert_transform, matrix_to_pose,
    matrix_to_quaternion_msg, matrix_to_transform, odometry_msg, optical_pose_from_body_pose,
    optical_to_body_convention, pose_to_matrix, quaternion_msg_to_matrix, tf_message,
    transform_stamped, transform_to_matrix)


def random_T(seed):
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = rng.normal(size=3) * 3
    return T


@pytest.mark.parametrize("seed", range(5))
def test_transform_and_pose_roundtrip_against_scipy(seed):
    T = random_T(seed)
    tf = matrix_to_transform(T)
    q = Rotation.from_matrix(T[:3, :3]).as_quat()  # scipy: x, y, z, w
    q = q if q[3] >= 0 else -q
    np.testing.assert_allclose([tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w], q, atol=1e-12)
    np.testing.assert_allclose([tf.translation.x, tf.translation.y, tf.translation.z], T[:3, 3])
    np.testing.assert_allclose(transform_to_matrix(tf), T, atol=1e-12)
    pose = matrix_to_pose(T[:3])  # (3, 4) accepted
    np.testing.assert_allclose(pose_to_matrix(pose), T, atol=1e-12)
    np.testing.assert_allclose(invert_transform(T), np.linalg.inv(T), atol=1e-12)


def test_quaternion_order_is_xyzw():
    # 90 degrees about z: (x, y, z, w) = (0, 0, sin 45, cos 45)
    q = matrix_to_quaternion_msg(Rotation.from_euler("z", 90, degrees=True).as_matrix())
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    R = quaternion_msg_to_matrix(Quaternion(x=0.0, y=0.0, z=2.0, w=2.0))  # normalised on the way
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    with pytest.raises(ValueError):
        quaternion_msg_to_matrix(Quaternion(x=0.0, y=0.0, z=0.0, w=0.0))


def test_rep103_optical_to_body_axes():
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [0, 0, 1], [1, 0, 0])   # optical forward -> body x
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [1, 0, 0], [0, -1, 0])  # right -> -left
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [0, 1, 0], [0, 0, -1])  # down -> -up
    assert np.isclose(np.linalg.det(R_BODY_OPTICAL), 1.0)
    # camera_link -> camera_optical_frame of ROS drivers: rpy (-pi/2, 0, -pi/2), fixed axes
    np.testing.assert_allclose(Rotation.from_euler("xyz", [-np.pi / 2, 0, -np.pi / 2]).as_matrix(),
                               R_BODY_OPTICAL, atol=1e-12)
    np.testing.assert_allclose(T_BODY_OPTICAL @ T_OPTICAL_BODY, np.eye(4))


def test_camera_pose_conversions():
    # A camera 2 m forward of the world origin looking along world +x (body world convention).
    T_w_body = np.eye(4)
    T_w_body[:3, 3] = [2.0, 0.0, 0.0]
    T_w_opt = optical_pose_from_body_pose(T_w_body)
    np.testing.assert_allclose(T_w_opt[:3, :3] @ [0, 0, 1], [1, 0, 0])  # optical z looks along world x
    np.testing.assert_allclose(body_pose_from_optical_pose(T_w_opt), T_w_body)
    # VGGT-style relative motion in optical axes: camera moved 1 m forward (optical +z), yawed left
    # (a rotation about optical -y = body +z).
    T_rel_opt = np.eye(4)
    T_rel_opt[:3, :3] = Rotation.from_rotvec([0, -0.3, 0]).as_matrix()
    T_rel_opt[:3, 3] = [0, 0, 1.0]
    T_rel_body = optical_to_body_convention(T_rel_opt)
    np.testing.assert_allclose(T_rel_body[:3, 3], [1.0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(Rotation.from_matrix(T_rel_body[:3, :3]).as_rotvec(), [0, 0, 0.3], atol=1e-12)
    np.testing.assert_allclose(body_to_optical_convention(T_rel_body), T_rel_opt, atol=1e-12)
    # batches broadcast
    batch = np.stack([T_rel_opt, np.eye(4)])
    assert optical_to_body_convention(batch).shape == (2, 4, 4)


def test_transform_stamped_and_tf_message():
    T = random_T(7)
    ts = transform_stamped("odom", "base_link", 1_700_000_000_500_000_000, T)
    assert (ts.header.frame_id, ts.child_frame_id) == ("odom", "base_link")
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec) == (1_700_000_000, 500_000_000)
    np.testing.assert_allclose(transform_to_matrix(ts.transform), T, atol=1e-12)
    ts2 = transform_stamped("map", "odom", Time(sec=3, nanosec=4), np.eye(4))
    msg = tf_message([ts, ts2])
    assert isinstance(msg, TFMessage) and [t.child_frame_id for t in msg.transforms] == ["base_link", "odom"]


def test_odometry_covariances_never_zero():
    T = random_T(3)
    odom = odometry_msg(Time(sec=1, nanosec=2), "odom", "base_link", T)
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
    np.testing.assert_allclose(pose_to_matrix(odom.pose.pose), T, atol=1e-12)
    pc = np.asarray(odom.pose.covariance).reshape(6, 6)
    tc = np.asarray(odom.twist.covariance).reshape(6, 6)
    assert (np.diag(pc) > 0).all() and (np.diag(tc) >= 1e3).all()  # unknown twist: large variance
    odom = odometry_msg(5, "odom", "base_link", T, twist=[1, 2, 3, 0.1, 0.2, 0.3], pose_cov=0.04,
                        twist_cov=[1, 2, 3, 4, 5, 6])
    assert odom.twist.twist.linear.y == 2.0 and odom.twist.twist.angular.z == 0.3
    np.testing.assert_array_equal(np.diag(np.asarray(odom.pose.covariance).reshape(6, 6)), [0.04] * 6)
    np.testing.assert_array_equal(np.diag(np.asarray(odom.twist.covariance).reshape(6, 6)), [1, 2, 3, 4, 5, 6])
    odom = odometry_msg(5, "odom", "base_link", T, twist=np.zeros(6))
    assert 0 < odom.twist.covariance[0] < 1
    with pytest.raises(ValueError):
        covariance_6x6([1, 2, 3])
    with pytest.raises(ValueError):
        covariance_6x6(-1.0)
    with pytest.raises(ValueError):
        odometry_msg(5, "odom", "base_link", T, twist=[1, 2])


def test_diagnostics_from_dicts():
    hdr = make_header("", 42)
    arr = diagnostic_array(hdr, [
        {"name": "vggt4d: inference", "level": "OK", "message": "running",
         "values": {"inference_ms": 123.456789, "windows": 17, "metric": True}},
        {"name": "vggt4d: camera front", "level": 1, "message": "frames dropped",
         "values": {"dropped": 3}, "hardware_id": "front"},
    ])
    assert isinstance(arr, DiagnosticArray) and arr.header.stamp.nanosec == 42
    s0, s1 = arr.status
    assert s0.level == DiagnosticStatus.OK and s1.level == DiagnosticStatus.WARN
    assert [(kv.key, kv.value) for kv in s0.values] == [
        ("inference_ms", "123.457"), ("windows", "17"), ("metric", "true")]
    assert s1.hardware_id == "front" and s1.message == "frames dropped"
    by_name = diagnostic_array(Time(sec=1), {"a": {"level": "error"}, "b": {"level": "STALE"}})
    assert [s.name for s in by_name.status] == ["a", "b"]
    assert [s.level for s in by_name.status] == [DiagnosticStatus.ERROR, DiagnosticStatus.STALE]
    assert diagnostic_status("x").level == b"\x00" and level_byte(b"\x02") == b"\x02"
    for bad in ("bad", 7, b"\x09"):
        with pytest.raises(ValueError):
            level_byte(bad)
    with pytest.raises(ValueError):
        diagnostic_array(hdr, [{"name": "x", "lvl": 1}])
