"""Geometry: pose encoding round trips (against scipy), SE(3), unprojection and projection."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from vggt4d_ros.geometry import (
    compose_se3,
    depth_to_cam_points,
    depth_to_world_points,
    extri_intri_to_pose_encoding,
    intrinsics_from_fov,
    invert_se3,
    pose_encoding_to_extri_intri,
    project_points,
    quat_to_rotmat,
    rebase_poses,
    rotmat_to_quat,
    se3_to_4x4,
)


def _random_poses(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    R = Rotation.random(n, random_state=seed).as_matrix()
    t = rng.normal(size=(n, 3))
    T = np.concatenate([R, t[:, :, None]], axis=2)
    return torch.as_tensor(T, dtype=dtype)


def test_quat_to_rotmat_matches_scipy():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(500, 4)) * 3.0  # not unit: both normalise
    ours = quat_to_rotmat(torch.as_tensor(q)).numpy()
    ref = Rotation.from_quat(q).as_matrix()  # scipy: scalar-last (x, y, z, w)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_rotmat_to_quat_matches_scipy_including_near_pi():
    R = Rotation.random(500, random_state=2)
    # Add rotations by ~pi about each axis, where the trace-based formula is ill-conditioned.
    near_pi = Rotation.from_rotvec(np.eye(3) * (math.pi - 1e-9))
    mats = np.concatenate([R.as_matrix(), near_pi.as_matrix(), np.eye(3)[None]], axis=0)
    ours = rotmat_to_quat(torch.as_tensor(mats)).numpy()
    ref = Rotation.from_matrix(mats).as_quat()
    ref = np.where(ref[:, 3:4] < 0, -ref, ref)
    # Same rotation (q and -q are the same; ours has w >= 0).
    dots = np.abs((ours * ref).sum(-1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-9)
    assert (ours[:, 3] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pose_encoding_round_trip(dtype):
    B, S, H, W = 2, 5, 294, 518
    extr = _random_poses(B * S, seed=3, dtype=dtype).reshape(B, S, 3, 4)
    g = torch.Generator().manual_seed(0)
    fov_h = (0.3 + 1.2 * torch.rand(B, S, generator=g)).to(dtype)
    fov_w = (0.3 + 1.5 * torch.rand(B, S, generator=g)).to(dtype)
    K = intrinsics_from_fov(fov_h, fov_w, (H, W))
    enc = extri_intri_to_pose_encoding(extr, K, (H, W))
    assert enc.shape == (B, S, 9) and enc.dtype == dtype
    torch.testing.assert_close(enc[..., 7], fov_h)
    torch.testing.assert_close(enc[..., 8], fov_w)
    extr2, K2 = pose_encoding_to_extri_intri(enc, (H, W))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(extr2, extr, atol=tol, rtol=0)
    torch.testing.assert_close(K2, K, atol=tol * 1e3, rtol=tol)
    # principal point at the image centre, as in VGGT
    assert float(K2[0, 0, 0, 2]) == W / 2 and float(K2[0, 0, 1, 2]) == H / 2
    # encoding -> matrices -> encoding (the quaternion sign is standardised)
    enc2 = extri_intri_to_pose_encoding(extr2, K2, (H, W))
    torch.testing.assert_close(enc2, enc, atol=tol * 10, rtol=0)


def test_decode_unnormalised_quaternion_gives_rotation():
    enc = torch.randn(4, 6, 9, dtype=torch.float64)
    enc[..., 7:] = enc[..., 7:].abs() + 0.2
    extr, _ = pose_encoding_to_extri_intri(enc, (140, 252))
    R = extr[..., :3]
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(4, 6, dtype=torch.float64))


def test_se3_inverse_and_compose():
    T = _random_poses(10, seed=4)
    T4 = se3_to_4x4(T)
    inv = invert_se3(T)
    assert inv.shape == (10, 3, 4)
    torch.testing.assert_close(compose_se3(T, inv), torch.eye(4, dtype=torch.float64).expand(10, 4, 4))
    torch.testing.assert_close(se3_to_4x4(invert_se3(T4)), torch.linalg.inv(T4))


def test_unproject_plane_at_known_depth():
    H, W, f, Z = 6, 8, 10.0, 3.5
    K = torch.tensor([[f, 0, 4.0], [0, f, 3.0], [0, 0, 1]], dtype=torch.float64)
    depth = torch.full((H, W), Z, dtype=torch.float64)
    pc = depth_to_cam_points(depth, K)
    assert pc.shape == (H, W, 3)
    # pixel (row 1, col 6): x = (6 - 4) * Z / f, y = (1 - 3) * Z / f
    torch.testing.assert_close(pc[1, 6], torch.tensor([2 * Z / f, -2 * Z / f, Z], dtype=torch.float64))
    assert torch.all(pc[..., 2] == Z)
    # The principal point pixel maps onto the optical axis.
    torch.testing.assert_close(pc[3, 4], torch.tensor([0.0, 0.0, Z], dtype=torch.float64))
    # Camera at t=(0,0,-1) (cam_from_world translation +1 in z): world z = Z - 1.
    cfw = torch.eye(4, dtype=torch.float64)
    cfw[2, 3] = 1.0
    pw = depth_to_world_points(depth, cfw, K)
    torch.testing.assert_close(pw[..., 2], torch.full((H, W), Z - 1.0, dtype=torch.float64))


def test_same_point_seen_by_two_cameras_agrees():
    """Project a 3D point into two cameras, build depth maps, unproject both: the same world point."""
    H, W = 40, 60
    K = torch.tensor([[50.0, 0, 30.0], [0, 50.0, 20.0], [0, 0, 1]], dtype=torch.float64)
    X = torch.tensor([[0.3, -0.2, 4.0]], dtype=torch.float64)
    cams = torch.stack([
        torch.eye(4, dtype=torch.float64),
        se3_to_4x4(torch.as_tensor(np.concatenate(
            [Rotation.from_euler("xyz", [0.05, -0.1, 0.02]).as_matrix(), [[0.4], [0.1], [0.2]]], axis=1))),
    ])
    uv, z = project_points(X[None].expand(2, 1, 3), cams, K.expand(2, 3, 3))
    assert torch.all(z > 0)
    for c in range(2):
        # Build a depth map whose pixel at round(uv) has the depth of the ray through that pixel centre
        # hitting the fronto-parallel plane z_cam = z through X; then shift the intrinsics so X lands exactly.
        u, v = uv[c, 0]
        ui, vi = int(torch.round(u)), int(torch.round(v))
        Kc = K.clone()
        Kc[0, 2] += ui - u
        Kc[1, 2] += vi - v
        depth = torch.full((H, W), float(z[c, 0]), dtype=torch.float64)
        pw = depth_to_world_points(depth, cams[c], Kc)
        torch.testing.assert_close(pw[vi, ui], X[0], atol=1e-12, rtol=0)


def test_project_marks_points_behind_camera():
    K = torch.tensor([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    pts = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0]])
    uv, z = project_points(pts, torch.eye(4), K)
    torch.testing.assert_close(uv[0], torch.tensor([5.0, 5.0]))
    assert torch.isnan(uv[1]).all() and z[1] < 0


def test_rebase_poses_makes_reference_identity_and_keeps_geometry():
    S = 4
    cams = se3_to_4x4(_random_poses(S, seed=5))
    K = torch.tensor([[30.0, 0, 10], [0, 30.0, 8], [0, 0, 1]], dtype=torch.float64)
    depth = 1.0 + torch.rand(S, 16, 20, dtype=torch.float64)
    pw = depth_to_world_points(depth, cams, K.expand(S, 3, 3))
    new, pw2 = rebase_poses(cams, 2, pw)
    torch.testing.assert_close(new[2], torch.eye(4, dtype=torch.float64))
    # Relative poses are unchanged and rebased points equal those unprojected with rebased poses.
    torch.testing.assert_close(new[0] @ torch.linalg.inv(new[1]), cams[0] @ torch.linalg.inv(cams[1]))
    torch.testing.assert_close(pw2, depth_to_world_points(depth, new, K.expand(S, 3, 3)))
    # Batched form (B, S, 4, 4) with points (B, S, H, W, 3).
    newb, pwb = rebase_poses(cams[None], 2, pw[None])
    torch.testing.assert_close(newb[0], new)
    torch.testing.assert_close(pwb[0], pw2)


def test_principal_point_conventions():
    f = torch.tensor([0.9], dtype=torch.float64)
    Kv = intrinsics_from_fov(f, f, (140, 252))
    Kc = intrinsics_from_fov(f, f, (140, 252), principal_point="center")
    assert (float(Kv[0, 0, 2]), float(Kv[0, 1, 2])) == (126.0, 70.0)
    assert (float(Kc[0, 0, 2]), float(Kc[0, 1, 2])) == (125.5, 69.5)
    torch.testing.assert_close(Kv[..., :2, :2], Kc[..., :2, :2])
    with pytest.raises(ValueError):
        intrinsics_from_fov(f, f, (140, 252), principal_point="corner")
