"""Training-free dynamic masks from geometric consistency across a window.

So that plain VGGT weights (no mask head) still yield dynamic masks. For every frame ``i`` and every frame
``j`` of another time step, frame ``i``'s depth is unprojected with its predicted pose and intrinsics and
projected into camera ``j``; where the point lands in front of camera ``j`` and inside its image, its depth
``z_ij`` is compared with ``j``'s predicted depth ``D_j`` at that pixel:

* ``free_space`` (default): inconsistent if ``z_ij < (1 - threshold) * D_j``: a static point can never sit
  in front of the surface another camera sees through it; a point that does moved. Points hidden behind a
  surface in ``j`` (``z_ij > D_j``: occlusion) say nothing and are not counted as inconsistent, so static
  background that a moving object covers in other frames is not flagged.
* ``symmetric``: inconsistent if ``|z_ij - D_j| > threshold * D_j`` (also flags occlusions).

``D_j`` is taken conservatively over a small neighbourhood (the min for the free-space test, min/max for the
symmetric one) so that depth edges do not flag static points. The per-pixel score is the fraction of the
valid other-time frames that find the point inconsistent (a robust vote over the window), 0 where fewer
than ``min_valid`` frames see it; optionally box-smoothed. Everything is vectorised: one loop over the
target frames (``S`` iterations, each over all source frames and pixels at once) bounds memory to
``O(S * H * W)``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..geometry.points import depth_to_world_points, project_points, se3_to_4x4

__all__ = ["geometric_dynamic_mask"]


def _neighbourhood(depth: torch.Tensor, radius: int, kind: str) -> torch.Tensor:
    """Min or max of (S, H, W) depth over a (2r+1)^2 window; invalid (NaN/<=0) pixels ignored."""
    if radius <= 0:
        return depth
    k = 2 * radius + 1
    bad = ~(torch.isfinite(depth) & (depth > 0))
    if kind == "min":
        d = torch.where(bad, torch.full_like(depth, float("inf")), depth)
        out = -F.max_pool2d(-d[:, None], k, stride=1, padding=radius)[:, 0]
        return torch.where(torch.isinf(out), torch.full_like(out, float("nan")), out)
    d = torch.where(bad, torch.full_like(depth, -float("inf")), depth)
    out = F.max_pool2d(d[:, None], k, stride=1, padding=radius)[:, 0]
    return torch.where(torch.isinf(out), torch.full_like(out, float("nan")), out)


def geometric_dynamic_mask(
    depth: torch.Tensor,
    cam_from_world: torch.Tensor,
    intrinsics: torch.Tensor,
    time_index: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
    threshold: float = 0.1,
    test: str = "free_space",
    neighbourhood: int = 1,
    min_valid: int = 1,
    smooth: int = 0,
) -> torch.Tensor:
    """Per-pixel dynamic score in [0, 1] for one window.

    Args:
        depth: (S, H, W) z-depth of every frame (NaN or <= 0 invalid).
        cam_from_world: (S, 3|4, 4) camera-from-world poses, same world for all frames.
        intrinsics: (S, 3, 3) in the pixels of ``depth``.
        time_index: (S,) time step of each frame; frames are only compared with other time steps.
            Default: every frame is its own time step (monocular video).
        valid: optional (S, H, W) bool: pixels to trust (e.g. confident depth); others neither vote nor
            get a score.
        threshold: relative depth difference counted as inconsistent.
        test: "free_space" (default) or "symmetric" (see the module docstring).
        neighbourhood: radius of the min/max window on the target depth (0 = exact pixel).
        min_valid: frames that must see a point for it to get a non-zero score.
        smooth: odd box-filter size applied to the score (0 or 1: none).
    Returns:
        (S, H, W) float score: fraction of the other-time frames that see the pixel and disagree.
    """
    if test not in ("free_space", "symmetric"):
        raise ValueError(f"test must be 'free_space' or 'symmetric', got {test!r}")
    S, H, W = depth.shape
    dt = depth.dtype if depth.dtype == torch.float64 else torch.float32
    depth = depth.to(dt)
    T = se3_to_4x4(cam_from_world.to(dt))
    K = intrinsics.to(dt)
    if time_index is None:
        time_index = torch.arange(S, device=depth.device)
    time_index = time_index.to(depth.device)
    ok = torch.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok = ok & valid.to(torch.bool)
    d_clean = torch.where(ok, depth, torch.ones_like(depth))
    pts = depth_to_world_points(d_clean, T, K).reshape(S, H * W, 3)  # (S, HW, 3)
    target_depth = torch.where(ok, depth, torch.full_like(depth, float("nan")))
    d_lo = _neighbourhood(target_depth, neighbourhood, "min")
    d_hi = _neighbourhood(target_depth, neighbourhood, "max") if test == "symmetric" else None

    votes = torch.zeros(S, H * W, dtype=dt, device=depth.device)
    seen = torch.zeros(S, H * W, dtype=dt, device=depth.device)
    for j in range(S):
        others = time_index != time_index[j]  # (S,) sources compared with target j
        if not bool(others.any()):
            continue
        uv, z = project_points(pts, T[j], K[j])  # (S, HW, 2), (S, HW)
        ui = torch.round(uv[..., 0])
        vi = torch.round(uv[..., 1])
        inside = (ui >= 0) & (ui <= W - 1) & (vi >= 0) & (vi <= H - 1)  # NaN compares False
        flat = (vi.clamp(0, H - 1) * W + ui.clamp(0, W - 1)).nan_to_num(0).long()
        lo = d_lo[j].reshape(-1)[flat]
        has = inside & torch.isfinite(lo) & ok.reshape(S, -1) & others[:, None]
        if test == "free_space":
            bad = z < (1.0 - threshold) * lo
        else:
            hi = d_hi[j].reshape(-1)[flat]
            bad = (z < (1.0 - threshold) * lo) | (z > (1.0 + threshold) * hi)
        seen += has.to(dt)
        votes += (has & bad).to(dt)
    score = torch.where(seen >= max(min_valid, 1), votes / seen.clamp(min=1), torch.zeros_like(votes))
    score = score.reshape(S, H, W)
    if smooth and smooth > 1:
        k = int(smooth) | 1
        score = F.avg_pool2d(score[:, None], k, stride=1, padding=k // 2, count_include_pad=False)[:, 0]
    return torch.where(ok, score, torch.zeros_like(score))
