"""DINOv2 ViT with register tokens, as embedded under ``aggregator.patch_embed.`` in VGGT checkpoints.

State-dict keys: ``cls_token`` (1,1,D), ``pos_embed`` (1,1+M*M,D) for the training grid M = img_size/patch,
``register_tokens`` (1,R,D), ``mask_token`` (1,D), ``patch_embed.proj.*``, ``blocks.{i}.*`` (Block without
RoPE/qk-norm, LayerNorm eps 1e-6, LayerScale), ``norm.*``.

Forward returns the final-normed PATCH tokens ``(B, h*w, D)`` (cls and register tokens dropped).

Position embedding: for a grid other than the training grid the patch part of ``pos_embed`` is resized
bicubically (antialiased, no offset: VGGT's settings). That resize is data-independent for a given grid, so
:meth:`DinoV2.fix_grid` precomputes it into a buffer; forward then uses the buffer (no ``interpolate`` in the
traced graph, so it exports to ONNX). Call ``fix_grid`` again after loading new weights
(:func:`vggt4d_ros.model.load_checkpoint` does it).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block
from .patch_embed import PatchEmbed

#: name -> (embed_dim, depth, num_heads); VGGT's spellings plus the DINOv2 hub spelling of giant.
DINOV2_SIZES: Dict[str, Tuple[int, int, int]] = {
    "dinov2_vits14_reg": (384, 12, 6),
    "dinov2_vitb14_reg": (768, 12, 12),
    "dinov2_vitl14_reg": (1024, 24, 16),
    "dinov2_vitg2_reg": (1536, 40, 24),
    "dinov2_vitg14_reg": (1536, 40, 24),
}


class DinoV2(nn.Module):
    """DINOv2 encoder with registers.

    Args:
        img_size: training image size (sets the stored ``pos_embed`` grid M = img_size // patch_size).
        patch_size: patch side.
        embed_dim / depth / num_heads / mlp_ratio: transformer size.
        num_register_tokens: R.
        init_values: LayerScale init.
        interpolate_antialias: antialias flag of the bicubic position-embedding resize.
    """

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: Optional[float] = 1.0,
        interpolate_antialias: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, init_values=init_values, norm_layer=norm) for _ in range(depth)]
        )
        self.norm = norm(embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self._fixed_grid: Optional[Tuple[int, int]] = None
        self.register_buffer("_fixed_pos", torch.zeros(0), persistent=False)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)

    @classmethod
    def from_name(cls, name: str, img_size: int = 518, patch_size: int = 14, num_register_tokens: int = 4) -> "DinoV2":
        """Build a named size (see :data:`DINOV2_SIZES`)."""
        if name not in DINOV2_SIZES:
            raise ValueError(f"unknown DINOv2 variant {name!r}; known: {sorted(DINOV2_SIZES)}")
        d, depth, heads = DINOV2_SIZES[name]
        return cls(img_size, patch_size, d, depth, heads, num_register_tokens=num_register_tokens)

    def interpolated_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Position embedding ``(1, 1 + h*w, D)`` for an ``h x w`` patch grid (computed in fp32)."""
        n = self.pos_embed.shape[1] - 1
        m = int(math.sqrt(n))
        if h * w == n and h == w:
            return self.pos_embed
        pe = self.pos_embed.float()
        grid = pe[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=self.interpolate_antialias)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat((pe[:, :1], grid), dim=1)

    @torch.no_grad()
    def fix_grid(self, height: int, width: int) -> None:
        """Precompute the position embedding for images of ``height x width`` pixels (ONNX export)."""
        h, w = height // self.patch_size, width // self.patch_size
        self._fixed_pos = self.interpolated_pos_embed(h, w).detach().clone()
        self._fixed_grid = (h, w)

    def refresh_fixed_grid(self) -> None:
        """Recompute the precomputed embedding (after the weights changed)."""
        if self._fixed_grid is not None:
            h, w = self._fixed_grid
            self.fix_grid(h * self.patch_size, w * self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, 3, H, W)`` (normalised) -> patch tokens ``(B, H/p * W/p, D)``."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tok = self.patch_embed(x)
        tok = torch.cat((self.cls_token.expand(tok.shape[0], -1, -1), tok), dim=1)
        if self._fixed_grid == (h, w):
            pe = self._fixed_pos
        else:
            pe = self.interpolated_pos_embed(h, w)
        tok = tok + pe.to(tok.dtype)
        if self.register_tokens is not None:
            tok = torch.cat((tok[:, :1], self.register_tokens.expand(tok.shape[0], -1, -1), tok[:, 1:]), dim=1)
        for blk in self.blocks:
            tok = blk(tok)
        return self.norm(tok)[:, 1 + self.num_register_tokens :]
