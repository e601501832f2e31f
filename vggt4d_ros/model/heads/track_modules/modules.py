"""Attention blocks of the tracker's update transformer (keys ``norm1``, ``attn``/``cross_attn``, ``mlp``).

Both blocks normalise their input *before* the residual (the residual carries the normalised tokens),
as the reference tracker does; the released weights depend on this.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ...layers import Mlp


class AttnBlock(nn.Module):
    """Self-attention block: ``x = norm1(x); x = x + attn(x); x = x + mlp(norm2(x))``.

    Shapes: ``(B, T, hidden) -> (B, T, hidden)``.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(embed_dim=hidden_size, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block: ``x = norm1(x); c = norm_context(c); x = x + attn(x, c); x = x + mlp(norm2(x))``.

    Shapes: ``x`` ``(B, N, hidden)``, ``context`` ``(B, M, hidden)`` -> ``(B, N, hidden)``.
    """

    def __init__(self, hidden_size: int, num_heads: int = 1, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(embed_dim=hidden_size, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))
