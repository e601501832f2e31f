"""SE(3) helpers, depth unprojection and projection in torch (batched, dtype-preserving).

Conventions:

* Poses are camera-from-world (OpenCV axes), given as (..., 3, 4) or (..., 4, 4) matrices.
* Pixel coordinates ``(u, v)`` have pixel centres at integer coordinates: pixel ``(row i, col j)`` is
  ``(u=j, v=i)`` (OpenCV / ROS CameraInfo convention and the grid VGGT unprojects with).
* Depth is the z coordinate in the camera frame (along the optical axis), not the ray length.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = [
    "se3_to_4x4",
    "invert_se3",
    "compose_se3",
    "transform_points",
    "pixel_grid",
    "depth_to_cam_points",
    "cam_to_world_points",
    "depth_to_world_points",
    "project_points",
    "rebase_poses",
]


def se3_to_4x4(T: torch.Tensor) -> torch.Tensor:
    """Close a (..., 3, 4) rigid transform to (..., 4, 4); a (..., 4, 4) input is returned as is."""
    if T.shape[-2:] == (4, 4):
        return T
    if T.shape[-2:] != (3, 4):
        raise ValueError(f"expected (..., 3, 4) or (..., 4, 4), got {tuple(T.shape)}")
    bottom = torch.zeros(T.shape[:-2] + (1, 4), dtype=T.dtype, device=T.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat((T, bottom), dim=-2)


def invert_se3(T: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse ``[R^T | -R^T t]`` of (..., 3, 4) or (..., 4, 4) rigid transforms (same shape out)."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    inv = torch.cat((Rt, -Rt @ t), dim=-1)
    return se3_to_4x4(inv) if T.shape[-2] == 4 else inv


def compose_se3(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A @ B`` for rigid transforms given as (..., 3|4, 4); returns (..., 4, 4)."""
    return se3_to_4x4(A) @ se3_to_4x4(B)


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``p' = R p + t``.

    Args:
        T: (..., 3|4, 4) transforms, broadcast against the points' leading dims.
        points: (..., N, 3) or any (..., *spatial, 3) when T has been given matching singleton dims.
    Returns:
        Points of the broadcast shape (..., 3).
    """
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    # points (..., N, 3) @ R^T (..., 3, 3) -> (..., N, 3)
    return points @ R.transpose(-1, -2) + t[..., None, :]


def pixel_grid(
    H: int, W: int, dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None
) -> torch.Tensor:
    """(H, W, 2) grid of pixel coordinates ``(u, v)`` with pixel centres at integers."""
    v, u = torch.meshgrid(
        torch.arange(H, dtype=dtype, device=device),
        torch.arange(W, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack((u, v), dim=-1)


def depth_to_cam_points(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Unproject depth maps into camera coordinates.

    Args:
        depth: (..., H, W) z-depth.
        K: (..., 3, 3) intrinsics (zero skew assumed), same leading dims as ``depth`` (or broadcastable).
    Returns:
        (..., H, W, 3) points in the camera frame.
    """
    H, W = depth.shape[-2:]
    uv = pixel_grid(H, W, dtype=depth.dtype, device=depth.device)
    fx = K[..., 0, 0][..., None, None]
    fy = K[..., 1, 1][..., None, None]
    cx = K[..., 0, 2][..., None, None]
    cy = K[..., 1, 2][..., None, None]
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    return torch.stack((x, y, depth), dim=-1)


def cam_to_world_points(points_cam: torch.Tensor, cam_from_world: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (..., H, W, 3) to world points with (..., 3|4, 4) camera-from-world poses."""
    world_from_cam = invert_se3(cam_from_world)
    R = world_from_cam[..., :3, :3][..., None, None, :, :]
    t = world_from_cam[..., :3, 3][..., None, None, :]
    return (R @ points_cam[..., None]).squeeze(-1) + t


def depth_to_world_points(depth: torch.Tensor, cam_from_world: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Depth (..., H, W) + camera-from-world (..., 3|4, 4) + intrinsics (..., 3, 3) -> world points (..., H, W, 3)."""
    return cam_to_world_points(depth_to_cam_points(depth, K), cam_from_world)


def project_points(
    points_world: torch.Tensor, cam_from_world: torch.Tensor, K: torch.Tensor, eps: float = 1e-8
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Project world points into cameras.

    Args:
        points_world: (..., N, 3) points (flatten spatial dims into N).
        cam_from_world: (..., 3|4, 4), leading dims broadcastable with the points'.
        K: (..., 3, 3) intrinsics.
        eps: depths below this are treated as behind the camera (uv = NaN).
    Returns:
        uv: (..., N, 2) pixel coordinates (NaN where z <= eps).
        z: (..., N) depth of the points in each camera.
    """
    pc = transform_points(cam_from_world, points_world)
    z = pc[..., 2]
    valid = z > eps
    zs = torch.where(valid, z, torch.ones_like(z))
    fx = K[..., 0, 0][..., None]
    fy = K[..., 1, 1][..., None]
    cx = K[..., 0, 2][..., None]
    cy = K[..., 1, 2][..., None]
    u = fx * pc[..., 0] / zs + cx
    v = fy * pc[..., 1] / zs + cy
    uv = torch.stack((u, v), dim=-1)
    uv = torch.where(valid[..., None], uv, torch.full_like(uv, float("nan")))
    return uv, z


def rebase_poses(
    cam_from_world: torch.Tensor, reference_index: int, points_world: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Re-express a window so that the world frame is frame ``reference_index``'s camera.

    ``new_cam_from_world[i] = cam_from_world[i] @ inv(cam_from_world[ref])`` (so the reference becomes
    the identity) and world points move with ``p_new = cam_from_world[ref] p``.

    Args:
        cam_from_world: (..., S, 3|4, 4) poses of one window.
        reference_index: index into S.
        points_world: optional (..., S, H, W, 3) (or any (..., *, 3) with the same leading ``...``) points.
    Returns:
        (..., S, 4, 4) rebased poses and the transformed points (or None).
    """
    T = se3_to_4x4(cam_from_world)
    ref = T[..., reference_index, :, :]  # (..., 4, 4)
    new = T @ invert_se3(ref)[..., None, :, :]
    pts = None
    if points_world is not None:
        lead = ref.shape[:-2]
        extra = points_world.dim() - len(lead) - 1
        Tr = ref.reshape(lead + (1,) * (extra - 1) + (4, 4))
        pts = transform_points(Tr, points_world)
    return new, pts
