"""2D rotary position embedding (RoPE) on patch-grid coordinates, as used by VGGT.

The head dimension is split in two halves: the first half is rotated by the token's row (y) coordinate, the
second by its column (x) coordinate. Within each half, channel ``i`` and ``i + d/2`` form a rotation pair with
angle ``pos * base**(-2i/d)`` (``base`` = ``frequency``, 100 in VGGT).
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn


def grid_positions(batch: int, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer ``(y, x)`` coordinates of a ``height x width`` patch grid, row-major.

    Returns ``(batch, height * width, 2)`` long tensor (no ``cartesian_prod``, so it exports to ONNX).
    """
    ys = torch.arange(height, device=device).view(height, 1).expand(height, width)
    xs = torch.arange(width, device=device).view(1, width).expand(height, width)
    pos = torch.stack((ys, xs), dim=-1).reshape(1, height * width, 2)
    return pos.expand(batch, -1, -1).clone()


class PositionGetter:
    """Callable ``(batch, height, width, device) -> (batch, height*width, 2)`` with a per-grid cache."""

    def __init__(self) -> None:
        self._cache: Dict[Tuple[int, int, str], torch.Tensor] = {}

    def __call__(self, batch: int, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
        key = (height, width, str(device))
        if key not in self._cache:
            self._cache[key] = grid_positions(1, height, width, device)
        return self._cache[key].expand(batch, -1, -1).clone()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryPositionEmbedding2D(nn.Module):
    """Apply 2D RoPE to ``tokens`` ``(B, heads, N, head_dim)`` given ``positions`` ``(B, N, 2)`` (y, x).

    ``max_position`` fixes the size of the cos/sin table so no data-dependent ``max()`` is needed (ONNX);
    left at ``None`` the table is sized from the positions seen.
    """

    def __init__(self, frequency: float = 100.0, max_position: int | None = None) -> None:
        super().__init__()
        self.frequency = float(frequency)
        self.max_position = max_position
        self._cache: Dict[Tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, dim: int, length: int, device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables ``(length, dim)`` for a 1D rotation over ``dim`` channels."""
        key = (dim, length, str(device), dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.frequency ** (torch.arange(0, dim, 2, device=device).float() / dim))
            ang = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
            ang = ang.to(dtype)
            ang = torch.cat((ang, ang), dim=-1)
            self._cache[key] = (ang.cos().to(dtype), ang.sin().to(dtype))
        return self._cache[key]

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] % 4:
            raise ValueError("RoPE2D needs a head dimension divisible by 4")
        half = tokens.shape[-1] // 2
        length = self.max_position if self.max_position is not None else int(positions.max()) + 1
        cos, sin = self.tables(half, length, tokens.device, tokens.dtype)
        out = []
        for axis, part in enumerate(tokens.split(half, dim=-1)):
            p = positions[..., axis]
            c = nn.functional.embedding(p, cos)[:, None]
            s = nn.functional.embedding(p, sin)[:, None]
            out.append(part * c + _rotate_half(part) * s)
        return torch.cat(out, dim=-1)
