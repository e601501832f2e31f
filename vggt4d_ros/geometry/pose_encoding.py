"""VGGT's camera pose encoding (``absT_quaR_FoV``) and the rotations it needs, in torch.

Conventions (the same as VGGT's):

* Extrinsics are camera-from-world ``[R | t]`` (3x4) in OpenCV camera axes (x right, y down, z forward).
* Quaternions are scalar-last ``(x, y, z, w)`` (the order of ``scipy.spatial.transform.Rotation``).
* The 9-vector pose encoding is ``[t (3), q_xyzw (4), fov_h, fov_w]`` with the fields of view in radians.
* Intrinsics built from the fields of view put the principal point at ``(W / 2, H / 2)`` in a pixel grid
  whose pixel centres are the integer coordinates ``0 .. W-1`` (the grid VGGT unprojects its depth with);
  ``principal_point="center"`` puts it at the exact image centre ``((W-1)/2, (H-1)/2)`` of that grid instead.

All functions are vectorised over any leading batch shape and keep the input dtype (float64-safe).
The conversions are small closed forms, written here in torch so they stay on the model's device and
batch over ``(B, S)``; they are tested against ``scipy.spatial.transform.Rotation``.
"""

from __future__ import annotations

from typing import Tuple

import torch

__all__ = [
    "quat_to_rotmat",
    "rotmat_to_quat",
    "standardize_quat",
    "intrinsics_from_fov",
    "fov_from_intrinsics",
    "pose_encoding_to_extri_intri",
    "extri_intri_to_pose_encoding",
]


def standardize_quat(q: torch.Tensor) -> torch.Tensor:
    """Return the representative with a non-negative scalar part.

    Args:
        q: (..., 4) quaternions ``(x, y, z, w)``.
    Returns:
        (..., 4) quaternions with ``w >= 0``.
    """
    return torch.where(q[..., 3:4] < 0, -q, q)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from (not necessarily unit) quaternions.

    Args:
        q: (..., 4) quaternions ``(x, y, z, w)``; normalised here.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    x, y, z, w = torch.unbind(q, dim=-1)
    s = 2.0 / (q * q).sum(dim=-1)
    xx, yy, zz = x * x * s, y * y * s, z * z * s
    xy, xz, yz = x * y * s, x * z * s, y * z * s
    wx, wy, wz = w * x * s, w * y * s, w * z * s
    one = torch.ones_like(x)
    m = torch.stack(
        (
            one - yy - zz, xy - wz, xz + wy,
            xy + wz, one - xx - zz, yz - wx,
            xz - wy, yz + wx, one - xx - yy,
        ),
        dim=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Quaternions from rotation matrices (Shepperd's method: the best-conditioned of four candidates).

    Args:
        R: (..., 3, 3) rotation matrices.
    Returns:
        (..., 4) unit quaternions ``(x, y, z, w)`` with ``w >= 0``.
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3), got {tuple(R.shape)}")
    m = R.reshape(R.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(m, dim=-1)
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2
    diag = torch.stack(
        (
            1.0 + m00 + m11 + m22,
            1.0 + m00 - m11 - m22,
            1.0 - m00 + m11 - m22,
            1.0 - m00 - m11 + m22,
        ),
        dim=-1,
    )
    # Candidate i is the quaternion (w, x, y, z) scaled by 4 * q_i; rows: i = w, x, y, z.
    cand = torch.stack(
        (
            torch.stack((diag[..., 0], m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, diag[..., 1], m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, diag[..., 2], m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, diag[..., 3]), dim=-1),
        ),
        dim=-2,
    )
    best = diag.argmax(dim=-1)  # (...)
    idx = best[..., None, None].expand(best.shape + (1, 4))
    q_wxyz = torch.gather(cand, -2, idx).squeeze(-2)
    q_wxyz = q_wxyz / q_wxyz.norm(dim=-1, keepdim=True)
    q = torch.cat((q_wxyz[..., 1:], q_wxyz[..., :1]), dim=-1)
    return standardize_quat(q)


def intrinsics_from_fov(
    fov_h: torch.Tensor, fov_w: torch.Tensor, image_hw: Tuple[int, int], principal_point: str = "vggt"
) -> torch.Tensor:
    """Pinhole intrinsics from fields of view, principal point at the image centre.

    Args:
        fov_h, fov_w: (...) vertical / horizontal field of view in radians.
        image_hw: ``(H, W)`` of the image the intrinsics refer to (pixels).
        principal_point: "vggt": ``(W/2, H/2)`` exactly as VGGT builds it; "center": ``((W-1)/2, (H-1)/2)``,
            the true image centre when pixel centres are at integer coordinates (half a pixel from VGGT's).
    Returns:
        (..., 3, 3) intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
    """
    H, W = image_hw
    if principal_point == "vggt":
        cx, cy = W / 2.0, H / 2.0
    elif principal_point == "center":
        cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    else:
        raise ValueError(f"principal_point must be 'vggt' or 'center', got {principal_point!r}")
    fy = (H / 2.0) / torch.tan(fov_h / 2.0)
    fx = (W / 2.0) / torch.tan(fov_w / 2.0)
    K = torch.zeros(fov_h.shape + (3, 3), dtype=fov_h.dtype, device=fov_h.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = cx
    K[..., 1, 2] = cy
    K[..., 2, 2] = 1.0
    return K


def fov_from_intrinsics(K: torch.Tensor, image_hw: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fields of view ``(fov_h, fov_w)`` in radians from (..., 3, 3) intrinsics and image ``(H, W)``."""
    H, W = image_hw
    fov_h = 2.0 * torch.atan((H / 2.0) / K[..., 1, 1])
    fov_w = 2.0 * torch.atan((W / 2.0) / K[..., 0, 0])
    return fov_h, fov_w


def pose_encoding_to_extri_intri(
    pose_enc: torch.Tensor, image_hw: Tuple[int, int], principal_point: str = "vggt"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decode VGGT's ``absT_quaR_FoV`` encoding.

    Args:
        pose_enc: (..., 9) ``[t, q_xyzw, fov_h, fov_w]``.
        image_hw: ``(H, W)`` of the model grid the encoding refers to.
        principal_point: see :func:`intrinsics_from_fov`.
    Returns:
        extrinsics: (..., 3, 4) camera-from-world ``[R | t]``.
        intrinsics: (..., 3, 3).
    """
    if pose_enc.shape[-1] != 9:
        raise ValueError(f"expected (..., 9) pose encoding, got {tuple(pose_enc.shape)}")
    t = pose_enc[..., :3]
    R = quat_to_rotmat(pose_enc[..., 3:7])
    extr = torch.cat((R, t[..., None]), dim=-1)
    K = intrinsics_from_fov(pose_enc[..., 7], pose_enc[..., 8], image_hw, principal_point)
    return extr, K


def extri_intri_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: Tuple[int, int]
) -> torch.Tensor:
    """Encode camera-from-world extrinsics (..., 3 or 4, 4) and intrinsics (..., 3, 3) as (..., 9)."""
    R = extrinsics[..., :3, :3]
    t = extrinsics[..., :3, 3]
    q = rotmat_to_quat(R)
    fov_h, fov_w = fov_from_intrinsics(intrinsics, image_hw)
    return torch.cat((t, q, fov_h[..., None], fov_w[..., None]), dim=-1)
