"""Multi-head self-attention with optional qk-norm, 2D RoPE and query-selective logit bias.

Key names as in VGGT: ``qkv``, ``q_norm``, ``k_norm``, ``proj``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """``proj(softmax(q k^T / sqrt(d) + bias) v)`` over ``N`` tokens.

    Args:
        dim: token dimension ``C``; ``head_dim = C // num_heads``.
        num_heads: number of heads.
        qkv_bias / proj_bias: biases of the linear maps.
        qk_norm: LayerNorm on q and k per head (``q_norm``/``k_norm``), Identity otherwise.
        rope: a :class:`RotaryPositionEmbedding2D` applied to q and k when ``pos`` is given.
        fused_attn: use ``F.scaled_dot_product_attention`` (else the explicit softmax, same numbers).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        rope: Optional[nn.Module] = None,
        fused_attn: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rope = rope

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        p = self.attn_drop.p if self.training else 0.0
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        if mask is not None:
            logits = logits + mask
        return self.attn_drop(logits.softmax(dim=-1)) @ v

    def forward(
        self,
        x: torch.Tensor,
        pos: Optional[torch.Tensor] = None,
        attn_bias: Optional[torch.Tensor] = None,
        query_bias: Optional[tuple] = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(B, N, C)``.
            pos: ``(B, N, 2)`` integer (y, x) positions for RoPE, or None.
            attn_bias: optional additive logits bias broadcastable to ``(B, heads, N, N)`` (dense; tests only).
            query_bias: optional ``(query_index, key_bias)`` with ``query_index`` a long tensor ``(Q,)`` of
                token indices and ``key_bias`` ``(B, N)``: only the rows of those queries get
                ``key_bias`` added to their logits (PAGE-4D); the other rows are computed unbiased.
        Returns:
            ``(B, N, C)``.
        """
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q = self.rope(q, pos)
            k = self.rope(k, pos)
        out = self._attend(q, k, v, attn_bias)
        if query_bias is not None:
            idx, key_bias = query_bias
            mask = key_bias.to(q.dtype)[:, None, None, :]
            if attn_bias is not None:
                mask = mask + attn_bias.expand(B, self.num_heads, N, N)[:, :, idx]
            sel = self._attend(q[:, :, idx], k, v, mask)
            out = out.index_copy(2, idx, sel)
        x = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))
