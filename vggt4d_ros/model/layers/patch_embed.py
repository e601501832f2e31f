"""Convolutional patch embedding: ``(B, 3, H, W) -> (B, H/p * W/p, D)`` (keys ``proj.weight``/``proj.bias``)."""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import nn


def _pair(v: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` convolution, flattened row-major (y then x) to tokens.

    Args:
        img_size: nominal image size (only used for ``num_patches``).
        patch_size: patch side ``p``.
        in_chans: input channels.
        embed_dim: output token dimension ``D``.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: Union[int, Tuple[int, int]] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, H, W)`` with H, W multiples of the patch size -> ``(B, N, D)``."""
        h, w = x.shape[-2:]
        if h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(f"image {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)
