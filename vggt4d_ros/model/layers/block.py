"""Pre-norm transformer block with LayerScale, as in VGGT/DINOv2 (keys norm1/attn/ls1/norm2/mlp/ls2)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .attention import Attention
from .layer_scale import LayerScale
from .mlp import Mlp


class Block(nn.Module):
    """``x + ls1(attn(norm1(x))) `` then ``x + ls2(mlp(norm2(x)))``.

    ``init_values`` None/0 means no LayerScale (``ls1``/``ls2`` are Identity, no parameters).
    ``attn_class`` builds ``attn`` with :class:`Attention`'s arguments (e.g. a
    :class:`~.window_attention.WindowAttention`, whose tokens are ``(B, S, P, dim)``: norms, MLP and
    LayerScale act on the last dimension, so the block works on either shape).
    Shapes: ``x`` ``(B, N, dim)``, ``pos`` ``(B, N, 2)`` -> ``(B, N, dim)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: Optional[float] = None,
        qk_norm: bool = False,
        rope: Optional[nn.Module] = None,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        ffn_layer: Callable[..., nn.Module] = Mlp,
        attn_class: Callable[..., nn.Module] = Attention,
        fused_attn: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_class(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            qk_norm=qk_norm,
            rope=rope,
            fused_attn=fused_attn,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = ffn_layer(
            in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop, bias=ffn_bias
        )
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None, **attn_kwargs) -> torch.Tensor:
        """``attn_kwargs`` (``attn_bias``, ``query_bias``) are passed to :meth:`Attention.forward`."""
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, **attn_kwargs))
        return x + self.ls2(self.mlp(self.norm2(x)))
