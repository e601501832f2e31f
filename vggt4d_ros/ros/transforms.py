"""4x4 homogeneous transforms <-> geometry_msgs / tf2_msgs / nav_msgs, and REP 103 frame axes.

Conventions:

- ``T_a_b`` (4, 4) maps points from frame b to frame a (``p_a = T_a_b @ p_b``): it is the pose of b in
  a, the transform a ROS ``TransformStamped`` with ``header.frame_id = a`` and ``child_frame_id = b``
  carries.
- Quaternions are scipy's scalar-last order (x, y, z, w), the same order as geometry_msgs'
  fields; written quaternions are normalised and canonical (w >= 0).
- Optical frames (REP 103 ``*_optical_frame``, OpenCV, VGGT extrinsics): x right, y down, z forward.
  Body frames (``base_link``, ``camera_link``): x forward, y left, z up. ``R_BODY_OPTICAL`` maps
  optical coordinates to body coordinates (its columns are the optical axes in the body frame):
  optical z (forward) -> body x, optical x (right) -> body -y, optical y (down) -> body -z. It is the
  ``camera_link -> camera_optical_frame`` rotation of every ROS camera driver
  (rpy = (-pi/2, 0, -pi/2)).

tf2_msgs is imported lazily (it is built into the venv by the setup script, not a PyPI wheel).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import (Point, Pose, Quaternion, Transform, TransformStamped, Twist,
                               Vector3)
from nav_msgs.msg import Odometry
from scipy.spatial.transform import Rotation

__all__ = [
    "R_BODY_OPTICAL", "R_OPTICAL_BODY", "T_BODY_OPTICAL", "T_OPTICAL_BODY",
    "DEFAULT_POSE_COVARIANCE", "DEFAULT_TWIST_COVARIANCE", "UNKNOWN_TWIST_VARIANCE",
    "invert_transform", "quaternion_from_matrix", "matrix_from_quaternion",
    "matrix_to_quaternion_msg", "quaternion_msg_to_matrix",
    "matrix_to_transform", "transform_to_matrix", "matrix_to_pose", "pose_to_matrix",
    "transform_stamped", "tf_message", "odometry_msg", "covariance_6x6",
    "body_pose_from_optical_pose", "optical_pose_from_body_pose",
    "optical_to_body_convention", "body_to_optical_convention",
]

#: Rotation taking optical-frame coordinates (x right, y down, z forward) to body-frame coordinates
#: (x forward, y left, z up).
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0],
                           [-1.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0]])
R_OPTICAL_BODY = R_BODY_OPTICAL.T.copy()
T_BODY_OPTICAL = np.eye(4)
T_BODY_OPTICAL[:3, :3] = R_BODY_OPTICAL
T_OPTICAL_BODY = np.eye(4)
T_OPTICAL_BODY[:3, :3] = R_OPTICAL_BODY
for _a in (R_BODY_OPTICAL, R_OPTICAL_BODY, T_BODY_OPTICAL, T_OPTICAL_BODY):
    _a.flags.writeable = False

#: Default pose covariance diagonal (x, y, z [m^2], roll, pitch, yaw [rad^2]): 5 cm and ~1.8 deg
#: standard deviations. Never zero: a zero covariance breaks robot_localization's filters.
DEFAULT_POSE_COVARIANCE = (2.5e-3, 2.5e-3, 2.5e-3, 1e-3, 1e-3, 1e-3)
#: Default twist covariance diagonal (vx, vy, vz [m^2/s^2], wx, wy, wz [rad^2/s^2]).
DEFAULT_TWIST_COVARIANCE = (1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2)
#: Variance written for every twist component when no twist is given (a zero twist that filters
#: should ignore).
UNKNOWN_TWIST_VARIANCE = 1e6


def _as_T(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape == (3, 4):
        T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
    if T.shape != (4, 4):
        raise ValueError(f"transform must be (4, 4) or (3, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError("transform has non-finite entries")
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transform(s) (..., 4, 4): [R t]^-1 = [R^T, -R^T t]."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) quaternion x, y, z, w (normalised, w >= 0)."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation must be (3, 3), got {R.shape}")
    return Rotation.from_matrix(R).as_quat(canonical=True)


def matrix_from_quaternion(q: Sequence[float]) -> np.ndarray:
    """Quaternion x, y, z, w (normalised here) -> (3, 3) rotation."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-12:
        raise ValueError(f"quaternion must be 4 finite, non-zero values (x, y, z, w), got {q}")
    return Rotation.from_quat(q).as_matrix()


def matrix_to_quaternion_msg(R: np.ndarray) -> Quaternion:
    x, y, z, w = (float(v) for v in quaternion_from_matrix(R))
    return Quaternion(x=x, y=y, z=z, w=w)


def quaternion_msg_to_matrix(q: Any) -> np.ndarray:
    return matrix_from_quaternion([q.x, q.y, q.z, q.w])


def matrix_to_transform(T: np.ndarray) -> Transform:
    """(4, 4) or (3, 4) -> geometry_msgs/Transform."""
    T = _as_T(T)
    t = T[:3, 3]
    return Transform(translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                     rotation=matrix_to_quaternion_msg(T[:3, :3]))


def transform_to_matrix(tf: Any) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4)."""
    T = np.eye(4)
    T[:3, :3] = quaternion_msg_to_matrix(tf.rotation)
    T[:3, 3] = [tf.translation.x, tf.translation.y, tf.translation.z]
    return T


def matrix_to_pose(T: np.ndarray) -> Pose:
    """(4, 4) or (3, 4) -> geometry_msgs/Pose."""
    T = _as_T(T)
    t = T[:3, 3]
    return Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=matrix_to_quaternion_msg(T[:3, :3]))


def pose_to_matrix(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4)."""
    T = np.eye(4)
    T[:3, :3] = quaternion_msg_to_matrix(pose.orientation)
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


def _time(stamp: Any) -> Time:
    if isinstance(stamp, Time):
        return stamp
    if isinstance(stamp, (int, np.integer)):
        sec, nsec = divmod(int(stamp), 1_000_000_000)
        return Time(sec=sec, nanosec=nsec)
    return Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec))


def transform_stamped(parent: str, child: str, stamp: Union[Time, int], T_parent_child: np.ndarray
                      ) -> TransformStamped:
    """TransformStamped parent -> child (the pose of ``child`` in ``parent``); stamp Time or int ns."""
    msg = TransformStamped()
    msg.header.stamp = _time(stamp)
    msg.header.frame_id = str(parent)
    msg.child_frame_id = str(child)
    msg.transform = matrix_to_transform(T_parent_child)
    return msg


def tf_message(transforms: Iterable[TransformStamped]):
    """tf2_msgs/TFMessage holding ``transforms`` (for /tf and /tf_static)."""
    from tf2_msgs.msg import TFMessage  # built by the setup script; not a PyPI wheel

    return TFMessage(transforms=list(transforms))


def covariance_6x6(cov: Union[float, Sequence[float], np.ndarray]) -> np.ndarray:
    """Scalar variance, 6 diagonal variances or a (6, 6) matrix -> row-major (36,) float64.

    Raises ValueError for negative variances or a non-symmetric matrix.
    """
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim == 0:
        c = np.eye(6) * float(c)
    elif c.shape == (6,):
        c = np.diag(c)
    elif c.shape == (36,):
        c = c.reshape(6, 6)
    if c.shape != (6, 6) or not np.all(np.isfinite(c)):
        raise ValueError(f"covariance must be a scalar, 6 variances or (6, 6), got shape {np.shape(cov)}")
    if np.any(np.diag(c) < 0) or not np.allclose(c, c.T):
        raise ValueError("covariance must be symmetric with non-negative variances")
    return c.reshape(36).copy()


def odometry_msg(
    stamp: Union[Time, int],
    odom_frame: str,
    child_frame: str,
    T_odom_child: np.ndarray,
    twist: Optional[Sequence[float]] = None,
    pose_cov: Union[float, Sequence[float], np.ndarray] = DEFAULT_POSE_COVARIANCE,
    twist_cov: Optional[Union[float, Sequence[float], np.ndarray]] = None,
) -> Odometry:
    """nav_msgs/Odometry of ``child_frame`` in ``odom_frame``.

    Args:
        stamp: acquisition stamp (Time or int nanoseconds).
        T_odom_child: (4, 4) pose of the child (body) frame in the odom frame.
        twist: (6,) vx, vy, vz, wx, wy, wz in the CHILD frame (nav_msgs convention), or None.
        pose_cov: scalar, 6 variances or (6, 6); non-zero default (DEFAULT_POSE_COVARIANCE).
        twist_cov: same forms; default DEFAULT_TWIST_COVARIANCE when a twist is given,
            UNKNOWN_TWIST_VARIANCE on the diagonal when it is not.
    """
    msg = Odometry()
    msg.header.stamp = _time(stamp)
    msg.header.frame_id = str(odom_frame)
    msg.child_frame_id = str(child_frame)
    msg.pose.pose = matrix_to_pose(T_odom_child)
    msg.pose.covariance = covariance_6x6(pose_cov)
    if twist is not None:
        tw = np.asarray(twist, dtype=np.float64).reshape(-1)
        if tw.shape != (6,) or not np.all(np.isfinite(tw)):
            raise ValueError(f"twist must be 6 finite values, got {tw}")
        msg.twist.twist = Twist(linear=Vector3(x=tw[0], y=tw[1], z=tw[2]),
                                angular=Vector3(x=tw[3], y=tw[4], z=tw[5]))
        tcov = DEFAULT_TWIST_COVARIANCE if twist_cov is None else twist_cov
    else:
        tcov = UNKNOWN_TWIST_VARIANCE if twist_cov is None else twist_cov
    msg.twist.covariance = covariance_6x6(tcov)
    return msg


# ----------------------------------------------------------------------------- REP 103 axes

def body_pose_from_optical_pose(T_world_optical: np.ndarray) -> np.ndarray:
    """Pose (..., 4, 4) of a camera's optical frame -> pose of the co-located body-axes frame.

    Same world frame, same origin; only the camera's axes change: ``T_world_body = T_world_optical
    @ T_OPTICAL_BODY``.
    """
    return np.asarray(T_world_optical, dtype=np.float64) @ T_OPTICAL_BODY


def optical_pose_from_body_pose(T_world_body: np.ndarray) -> np.ndarray:
    """Inverse of :func:`body_pose_from_optical_pose`: ``T_world_body @ T_BODY_OPTICAL``."""
    return np.asarray(T_world_body, dtype=np.float64) @ T_BODY_OPTICAL


def optical_to_body_convention(T_a_b: np.ndarray) -> np.ndarray:
    """Re-express a transform (..., 4, 4) between two optical-axes frames with body axes on both.

    For VGGT-style poses whose world is itself an optical frame (camera 0), e.g. ``T_cam0_camt``:
    the result ``T_BODY_OPTICAL @ T @ T_OPTICAL_BODY`` is the motion of the camera's body frame in
    the body frame of camera 0 (x forward, y left, z up), ready for ``odom -> base_link``.
    """
    return T_BODY_OPTICAL @ np.asarray(T_a_b, dtype=np.float64) @ T_OPTICAL_BODY


def body_to_optical_convention(T_a_b: np.ndarray) -> np.ndarray:
    """Inverse of :func:`optical_to_body_convention`."""
    return T_OPTICAL_BODY @ np.asarray(T_a_b, dtype=np.float64) @ T_BODY_OPTICAL
