"""Positional embeddings and sampling helpers shared by the heads.

Conventions (VGGT's): pixel coordinates are ``(x, y)``; sampling uses ``align_corners=True``, so pixel
``x`` of a map of width ``W`` sits at normalised ``2 x / (W - 1) - 1``.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------
# Sinusoidal embeddings
# ----------------------------------------------------------------------------------------------------
def sincos_embed_1d(pos: torch.Tensor, dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """Sine/cosine embedding of scalar positions.

    ``out[m] = [sin(p_m w_0) .. sin(p_m w_{D/2-1}), cos(p_m w_0) .. cos(p_m w_{D/2-1})]`` with
    ``w_k = omega_0 ** (-k / (D/2))``; frequencies and products are computed in float64.

    Args:
        pos: positions, any shape (flattened to ``(M,)``).
        dim: embedding size ``D`` (even).
    Returns:
        ``(M, D)`` float32.
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    omega = torch.arange(half, dtype=torch.float64, device=pos.device) / half
    omega = omega_0 ** (-omega)
    angles = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def create_uv_grid(
    width: int,
    height: int,
    aspect_ratio: Optional[float] = None,
    dtype: Optional[torch.dtype] = None,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Normalised view-plane UV grid ``(height, width, 2)`` (MoGe/VGGT convention).

    The corners of the image lie on a circle of radius 1: ``x`` spans ``+-ar / sqrt(1 + ar^2)`` and ``y``
    spans ``+-1 / sqrt(1 + ar^2)``, sampled at cell centres (``(n - 1) / n`` of the span at the ends).
    """
    ar = float(width) / float(height) if aspect_ratio is None else float(aspect_ratio)
    diag = (ar * ar + 1.0) ** 0.5
    span_x, span_y = ar / diag, 1.0 / diag
    ex = span_x * (width - 1) / width
    ey = span_y * (height - 1) / height
    xs = torch.linspace(-ex, ex, steps=width, dtype=dtype, device=device)
    ys = torch.linspace(-ey, ey, steps=height, dtype=dtype, device=device)
    return torch.stack(
        [xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1
    )


def position_grid_to_embed(pos_grid: torch.Tensor, embed_dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """Embed a ``(H, W, 2)`` grid of ``(x, y)`` into ``(H, W, embed_dim)``: first half x, second half y."""
    h, w, two = pos_grid.shape
    if two != 2:
        raise ValueError("pos_grid must be (H, W, 2)")
    flat = pos_grid.reshape(-1, 2)
    emb = torch.cat(
        [sincos_embed_1d(flat[:, 0], embed_dim // 2, omega_0), sincos_embed_1d(flat[:, 1], embed_dim // 2, omega_0)],
        dim=-1,
    )
    return emb.view(h, w, embed_dim)


_UV_EMBED_CACHE: Dict[Tuple, torch.Tensor] = {}


def uv_pos_embed(
    height: int, width: int, channels: int, aspect_ratio: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """DPT positional embedding ``(channels, height, width)`` of the UV grid (cached per size/device/dtype).

    The UV grid is built in float32 (the reference builds it in the feature dtype; identical in float32).
    """
    key = (height, width, channels, float(aspect_ratio), dtype, str(device))
    emb = _UV_EMBED_CACHE.get(key)
    if emb is None:
        uv = create_uv_grid(width, height, aspect_ratio=aspect_ratio, dtype=torch.float32, device=device)
        emb = position_grid_to_embed(uv, channels).permute(2, 0, 1).to(dtype).contiguous()
        if len(_UV_EMBED_CACHE) > 64:
            _UV_EMBED_CACHE.clear()
        _UV_EMBED_CACHE[key] = emb
    return emb


def sincos_grid_embed_at(coords: torch.Tensor, dim: int, height: int, width: int) -> torch.Tensor:
    """The tracker's 2D sin/cos grid embedding, bilinearly sampled at pixel ``coords``.

    Equivalent to building the ``(dim, height, width)`` grid embedding ``E[:, y, x] =
    [sincos(x, dim/2), sincos(y, dim/2)]`` (``omega_0 = 10000``) and sampling it with border padding and
    ``align_corners=True``, but evaluated only at the query points: the x half depends on x only and the
    y half on y only, so bilinear sampling reduces to two 1D linear interpolations between integer cells.

    Args:
        coords: ``(..., 2)`` pixel ``(x, y)`` on the map.
    Returns:
        ``(..., dim)`` float32.
    """
    if dim % 4:
        raise ValueError(f"grid embedding dim must be a multiple of 4, got {dim}")
    lead = coords.shape[:-1]
    out = []
    for axis, size in ((0, width), (1, height)):
        p = coords[..., axis].reshape(-1).float().clamp(0, size - 1)
        p0 = p.floor()
        frac = (p - p0)[:, None]
        p1 = (p0 + 1).clamp(max=size - 1)
        e0 = sincos_embed_1d(p0, dim // 2, omega_0=10000.0)
        e1 = sincos_embed_1d(p1, dim // 2, omega_0=10000.0)
        out.append(e0 * (1 - frac) + e1 * frac)
    return torch.cat(out, dim=-1).reshape(*lead, dim)


def flow_embed(xy: torch.Tensor, channels: int) -> torch.Tensor:
    """Interleaved sin/cos embedding of 2D displacements (the tracker's flow embedding).

    For ``f_j = 2 j * 1000 / C`` (``j < C/2``): ``pe_x[2j] = sin(x f_j)``, ``pe_x[2j+1] = cos(x f_j)``, the same
    for y; output ``[pe_x, pe_y]``.

    Args:
        xy: ``(..., 2)``.
        channels: ``C`` per coordinate (even).
    Returns:
        ``(..., 2C)`` float32.
    """
    freqs = torch.arange(0, channels, 2, device=xy.device, dtype=torch.float32) * (1000.0 / channels)
    parts = []
    for axis in (0, 1):
        ang = xy[..., axis : axis + 1].float() * freqs
        parts.append(torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


# ----------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------
def bilinear_sample(fmap: torch.Tensor, coords: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """``grid_sample`` with pixel coordinates (``align_corners=True``).

    Args:
        fmap: ``(B, C, H, W)``.
        coords: ``(B, Ho, Wo, 2)`` pixel ``(x, y)``.
    Returns:
        ``(B, C, Ho, Wo)``.
    """
    h, w = fmap.shape[-2:]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=fmap.device, dtype=fmap.dtype)
    grid = coords.to(fmap.dtype) * scale - 1.0
    return F.grid_sample(fmap, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def sample_features4d(fmap: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear features at points (border padding).

    Args:
        fmap: ``(B, C, H, W)``.
        coords: ``(B, N, 2)`` pixel ``(x, y)``.
    Returns:
        ``(B, N, C)``.
    """
    return bilinear_sample(fmap, coords[:, :, None, :])[..., 0].transpose(1, 2)
