"""Training-free dynamic masks on analytic geometry: ground plane + back wall + a box that moves."""

import math

import pytest
import torch

from vggt4d_ros.inference.dynamic_mask import geometric_dynamic_mask

H, W, F_PX = 60, 80, 60.0
K = torch.tensor([[F_PX, 0, W / 2], [0, F_PX, H / 2], [0, 0, 1]], dtype=torch.float64)
GROUND_Y, WALL_Z = 1.5, 10.0
HALF = torch.tensor([0.6, 0.8, 0.6], dtype=torch.float64)


def _yaw(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)


def _camera(pos, yaw):
    """cam_from_world (4, 4) for a camera at world position ``pos`` rotated by ``yaw`` about y."""
    R = _yaw(yaw).T
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = R
    T[:3, 3] = -R @ torch.as_tensor(pos, dtype=torch.float64)
    return T


def _render(cam_from_world, box_centre):
    """Analytic z-depth (H, W) and the mask of pixels whose first hit is the box (vectorised ray casting)."""
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    c = -R.T @ t
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    d_cam = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    d = d_cam @ R  # world directions (R^T d_cam), camera z-component of d_cam is 1 -> t == depth
    inf = torch.full_like(u, float("inf"))
    t_ground = torch.where(d[..., 1] > 1e-9, (GROUND_Y - c[1]) / d[..., 1], inf)
    t_wall = torch.where(d[..., 2] > 1e-9, (WALL_Z - c[2]) / d[..., 2], inf)
    lo, hi = box_centre - HALF, box_centre + HALF
    with torch.no_grad():
        dd = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        t1, t2 = (lo - c) / dd, (hi - c) / dd
        t_near = torch.minimum(t1, t2).amax(-1)
        t_far = torch.maximum(t1, t2).amin(-1)
    hit = (t_near <= t_far) & (t_far > 0) & (t_near > 0)
    t_box = torch.where(hit, t_near, inf)
    depth = torch.minimum(torch.minimum(t_ground, t_wall), t_box)
    return depth, hit & (t_box < torch.minimum(t_ground, t_wall))


def _scene(T=6, moving=True, views=1):
    depths, masks, poses, times = [], [], [], []
    for ti in range(T):
        box = torch.tensor([-1.5 + (0.7 * ti if moving else 0.0), GROUND_Y - HALF[1], 5.0], dtype=torch.float64)
        for vi in range(views):
            cam = _camera([0.3 * ti - 0.75 + 0.5 * vi, -0.2, 0.15 * ti], 0.03 * ti - 0.1 * vi)
            dpt, m = _render(cam, box)
            depths.append(dpt)
            masks.append(m)
            poses.append(cam)
            times.append(ti)
    return torch.stack(depths), torch.stack(masks), torch.stack(poses), torch.tensor(times)


def _iou(a, b):
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def test_scene_is_sane():
    depth, mask, _, _ = _scene()
    assert torch.isfinite(depth).all() and (depth > 0).all()
    frac = mask.double().mean(dim=(1, 2))
    assert (frac > 0.03).all() and (frac < 0.5).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_moving_box_is_found_and_background_is_not(dtype):
    depth, mask, poses, times = _scene()
    score = geometric_dynamic_mask(depth.to(dtype), poses.to(dtype), K.expand(len(depth), 3, 3).to(dtype), times)
    assert score.shape == depth.shape and score.dtype == dtype
    assert float(score.min()) >= 0.0 and float(score.max()) <= 1.0
    pred = score > 0.5
    ious = [_iou(pred[i], mask[i]) for i in range(len(depth))]
    assert min(ious) > 0.7, ious
    background_fp = float((pred & ~mask).sum()) / float((~mask).sum())
    assert background_fp < 0.02, background_fp


def test_static_scene_is_unflagged_and_smoothing_keeps_range():
    depth, _, poses, times = _scene(moving=False)
    score = geometric_dynamic_mask(depth, poses, K.expand(len(depth), 3, 3), times, smooth=5)
    assert float((score > 0.5).double().mean()) < 0.005
    assert float(score.max()) <= 1.0


def test_multi_view_window_compares_only_other_time_steps():
    depth, mask, poses, times = _scene(T=5, views=2)
    Ks = K.expand(len(depth), 3, 3)
    score = geometric_dynamic_mask(depth, poses, Ks, times)
    pred = score > 0.5
    assert min(_iou(pred[i], mask[i]) for i in range(len(depth))) > 0.7
    # A single time step (two views of one instant) has nothing to compare against: no votes.
    one = geometric_dynamic_mask(depth[:2], poses[:2], Ks[:2], times[:2])
    assert float(one.abs().max()) == 0.0


def test_symmetric_test_and_invalid_pixels():
    depth, mask, poses, times = _scene()
    depth = depth.clone()
    depth[0, :5] = float("nan")  # invalid rows get no score and do not vote
    score = geometric_dynamic_mask(depth, poses, K.expand(len(depth), 3, 3), times, test="symmetric")
    assert float(score[0, :5].abs().max()) == 0.0
    pred = score > 0.5
    assert sum(_iou(pred[i], mask[i]) for i in range(len(depth))) / len(depth) > 0.6
