"""Geometry in torch: VGGT's pose encoding, SE(3), depth unprojection and projection.

Sim(3)/SE(3) alignment (weighted Umeyama) lives in :mod:`vggt4d_ros.geometry.align`.
"""

from .pose_encoding import (
    extri_intri_to_pose_encoding,
    fov_from_intrinsics,
    intrinsics_from_fov,
    pose_encoding_to_extri_intri,
    quat_to_rotmat,
    rotmat_to_quat,
    standardize_quat,
)
from .points import (
    cam_to_world_points,
    compose_se3,
    depth_to_cam_points,
    depth_to_world_points,
    invert_se3,
    pixel_grid,
    project_points,
    rebase_poses,
    se3_to_4x4,
    transform_points,
)

__all__ = [
    "extri_intri_to_pose_encoding",
    "fov_from_intrinsics",
    "intrinsics_from_fov",
    "pose_encoding_to_extri_intri",
    "quat_to_rotmat",
    "rotmat_to_quat",
    "standardize_quat",
    "cam_to_world_points",
    "compose_se3",
    "depth_to_cam_points",
    "depth_to_world_points",
    "invert_se3",
    "pixel_grid",
    "project_points",
    "rebase_poses",
    "se3_to_4x4",
    "transform_points",
]
