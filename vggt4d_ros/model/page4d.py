"""PAGE-4D dynamics-aware pose attention: the mask predictor and the attention bias it produces.

PAGE-4D (ICLR 2026) predicts, after one frame block, a per-patch score from the (detached) patch tokens
and adds it to the attention logits of the camera and register token QUERIES in a range of global blocks,
so the pose tokens attend to the static background while patch tokens (depth / points) still see everything.

Checkpoint layout (PAGE-4D's released fine-tunes): ``aggregator.spatial_mask_head.head0.{0,2,4}.{weight,bias}``
= depthwise 3x3 conv (C->C, groups=C), GELU, 1x1 conv C->256, GELU, 1x1 conv 256->1.

Score: the patch tokens of a frame form a ``(C, h, w)`` map, standardised per channel over space
(mean / unbiased std, std clamped at 1e-6); ``s = sigmoid(head0(map) + mean_c(map))`` in (0, 1) is the
"static / visible" score of each patch. ``page_mask = 1 - s`` is reported as the dynamic probability.

Bias on the logits of a camera/register query toward key ``j``:
- ``mode="page4d"``: ``strength * (s_j - 0.5)`` (PAGE-4D's own form),
- ``mode="log"``: ``strength * log(s_j + 1e-6)`` (a log-space prior on the attention weights),
and 0 toward camera/register keys. ``strength = 0`` (default) turns the bias off.

PAGE-4D's strength (github kaichen-z/PAGE4D, commit 9f4ef74, ``SpatialMaskHead_IMP`` in
model/page/layers/block.py): ``64 * mask_alpha(step, mask_hold_start, mask_hold_end)``, where ``mask_alpha`` is 1
before ``mask_hold_start``, 0 from ``mask_hold_end`` on and a cosine between; ``step`` counts training forwards,
so at inference (step 0) the strength is 64 when ``mask_hold_start > 0`` and 0 when both are 0. Its training
config anneals 6000 -> 10000; ``checkpoint_nomask.pt`` is run with both 0 (no bias: its evaluation scripts'
``--num_mask 0``, its Quick Start's ``VGGT()``), ``checkpoint_mask.pt`` with them > 0 (strength 64). It adds the
bias by appending one channel to queries and keys of scaled dot-product attention (the head dimension padded to
a multiple of 8), which equals this logits bias exactly when the head dimension is a multiple of 8 (64 in
VGGT-1B). Configs: ``config/models/page4d.yaml`` (0) and ``page4d-mask.yaml`` (64).
"""

from __future__ import annotations

import torch
from torch import nn


class PageMaskPredictor(nn.Module):
    """Conv mask predictor on one frame's patch tokens.

    Args:
        dim: token dimension C.
        hidden: channels of the pointwise layer (256 in PAGE-4D).
    """

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.head0 = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, patch_tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """``patch_tokens`` ``(N, h*w, C)`` -> static score ``s`` ``(N, h, w)`` in (0, 1)."""
        n, _, c = patch_tokens.shape
        h, w = grid
        fmap = patch_tokens.transpose(1, 2).reshape(n, c, h, w)
        mean = fmap.mean(dim=(2, 3), keepdim=True)
        std = fmap.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        fmap = (fmap - mean) / std
        logit = self.head0(fmap) + fmap.mean(dim=1, keepdim=True).detach()
        return torch.sigmoid(logit)[:, 0]


def page_key_bias(static_score: torch.Tensor, num_special: int, strength: float, mode: str = "page4d") -> torch.Tensor:
    """Per-key logits bias for the biased queries.

    Args:
        static_score: ``(B, S, h, w)`` static score ``s``.
        num_special: camera + register tokens per frame (they get bias 0 as keys).
        strength: bias scale.
        mode: ``"page4d"`` or ``"log"`` (see module docstring).
    Returns:
        ``(B, S, num_special + h*w)`` bias in the token order of the aggregator.
    """
    b, s = static_score.shape[:2]
    flat = static_score.reshape(b, s, -1)
    if mode == "page4d":
        val = flat - 0.5
    elif mode == "log":
        val = torch.log(flat + 1e-6)
    else:
        raise ValueError(f"unknown PAGE-4D bias mode {mode!r}")
    special = flat.new_zeros(b, s, num_special)
    return torch.cat((special, strength * val), dim=-1)
