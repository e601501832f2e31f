"""Correlation pyramid and update transformer of the tracker."""
from __future__ import annotations

import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils import bilinear_sample
from .modules import AttnBlock, CrossAttnBlock


class EfficientUpdateFormer(nn.Module):
    """Transformer over tracks: attention along time per track, and across tracks through virtual tracks.

    Every ``time_depth // space_depth`` time blocks, the virtual tracks attend to the point tracks
    (``space_virtual2point_blocks``), to each other (``space_virtual_blocks``), and the points attend back
    (``space_point2virtual_blocks``). The parameter ``virual_tracks`` keeps the reference's spelling.

    Shapes: input ``(B, N, T, input_dim)`` -> ``(B, N, T, output_dim)``.
    """

    def __init__(
        self,
        space_depth: int = 6,
        time_depth: int = 6,
        input_dim: int = 320,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 130,
        mlp_ratio: float = 4.0,
        add_space_attn: bool = True,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.add_space_attn = add_space_attn and space_depth > 0
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.time_blocks = nn.ModuleList([AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(time_depth)])
        if self.add_space_attn:
            if space_depth > time_depth:
                raise ValueError("space_depth must not exceed time_depth")
            self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
            self.space_virtual_blocks = nn.ModuleList(
                [AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
            )
            self.space_point2virtual_blocks = nn.ModuleList(
                [CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
            )
            self.space_virtual2point_blocks = nn.ModuleList(
                [CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
            )
        else:
            self.virual_tracks = None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, T, input_dim) -> (B, N, T, output_dim)``."""
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        B, n_points, T, C = tokens.shape
        if self.add_space_attn:
            virtual = self.virual_tracks.to(tokens.dtype).expand(B, -1, T, -1)
            tokens = torch.cat([tokens, virtual], dim=1)
        N = tokens.shape[1]
        space_every = len(self.time_blocks) // len(self.space_virtual_blocks) if self.add_space_attn else 0
        j = 0
        for i, block in enumerate(self.time_blocks):
            tokens = block(tokens.reshape(B * N, T, C)).reshape(B, N, T, C)
            if self.add_space_attn and i % space_every == 0:
                space = tokens.permute(0, 2, 1, 3).reshape(B * T, N, C)
                points, virtual = space[:, :n_points], space[:, n_points:]
                virtual = self.space_virtual2point_blocks[j](virtual, points)
                virtual = self.space_virtual_blocks[j](virtual)
                points = self.space_point2virtual_blocks[j](points, virtual)
                space = torch.cat([points, virtual], dim=1)
                tokens = space.reshape(B, T, N, C).permute(0, 2, 1, 3)
                j += 1
        tokens = tokens[:, :n_points] + init_tokens
        return self.flow_head(self.output_norm(tokens))


def window_offsets(radius: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Offsets ``(K, 2)`` (``K = (2r+1)^2``) of the correlation window, in the reference's order.

    Window index ``k = a * (2r+1) + b`` samples at ``(x + a - r, y + b - r)``: x varies along the slow axis.
    """
    r = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    ox = r[:, None].expand(2 * radius + 1, 2 * radius + 1)
    oy = r[None, :].expand(2 * radius + 1, 2 * radius + 1)
    return torch.stack([ox, oy], dim=-1).reshape(-1, 2)


class CorrBlock:
    """Multi-scale correlation of track features with feature maps, sampled in a window around each track.

    Level ``i`` is the feature map average-pooled ``i`` times by 2; the correlation
    ``<target, fmap(p)> / sqrt(C)`` is bilinearly sampled (zero padding) at ``coords / 2^i + offsets``.

    Sampling the correlation map is the same as correlating with bilinearly sampled features (both are
    linear in the map; zero padding gives zero either way), so each level uses whichever needs less
    memory: the dense ``N x H x W`` correlation map (small maps) or the ``N x K x C`` sampled features
    (large maps), instead of always materialising the dense map.

    Args:
        fmaps: ``(B, S, C, H, W)``.
        num_levels: pyramid levels; H and W must be at least ``2 ** (num_levels - 1)``.
        radius: window radius ``r`` (window ``(2r+1)^2``).
    """

    def __init__(self, fmaps: torch.Tensor, num_levels: int = 4, radius: int = 4, padding_mode: str = "zeros") -> None:
        B, S, C, H, W = fmaps.shape
        if min(H, W) < 2 ** (num_levels - 1):
            raise ValueError(f"feature map {H}x{W} too small for {num_levels} correlation levels")
        self.num_levels = num_levels
        self.radius = radius
        self.padding_mode = padding_mode
        self.pyramid: List[torch.Tensor] = [fmaps.reshape(B * S, C, H, W)]
        for _ in range(num_levels - 1):
            self.pyramid.append(F.avg_pool2d(self.pyramid[-1], kernel_size=2, stride=2))
        self.B, self.S, self.C = B, S, C

    def corr_sample(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Windowed correlations.

        Args:
            targets: ``(B, S, N, C)`` track features per frame.
            coords: ``(B, S, N, 2)`` track positions ``(x, y)`` on the level-0 map.
        Returns:
            ``(B, S, N, num_levels * (2r+1)^2)``.
        """
        B, S, N, C = targets.shape
        offsets = window_offsets(self.radius, device=coords.device, dtype=coords.dtype)
        K = offsets.shape[0]
        tgt = targets.reshape(B * S, N, C)
        out = []
        for i, fmap in enumerate(self.pyramid):
            h, w = fmap.shape[-2:]
            pts = coords.reshape(B * S, N, 1, 2) / (2**i) + offsets  # (BS, N, K, 2)
            if K * C <= h * w:
                feats = bilinear_sample(fmap, pts, padding_mode=self.padding_mode)  # (BS, C, N, K)
                corr = torch.einsum("bcnk,bnc->bnk", feats, tgt.to(feats.dtype))
            else:
                dense = torch.bmm(tgt.to(fmap.dtype), fmap.reshape(B * S, C, h * w))  # (BS, N, hw)
                dense = dense.reshape(B * S * N, 1, h, w)
                corr = bilinear_sample(dense, pts.reshape(B * S * N, 1, K, 2), padding_mode=self.padding_mode)
                corr = corr.reshape(B * S, N, K)
            out.append(corr / math.sqrt(C))
        return torch.cat(out, dim=-1).reshape(B, S, N, self.num_levels * K)
