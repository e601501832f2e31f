"""Track head: a feature-only DPT at half resolution feeding the iterative tracker (VGGT layout).

State-dict keys: ``feature_extractor.*`` (DPT, ``feature_only``, no positional embedding) and
``tracker.*`` (:class:`BaseTrackerPredictor`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .dpt_head import DPTHead
from .track_modules import BaseTrackerPredictor


class TrackHead(nn.Module):
    """Tracks query points of frame 0 through all frames.

    Args (VGGT's): dim_in, patch_size, features (tracker latent width), iters, predict_conf, stride (feature
    map stride; the extractor runs at ``down_ratio=2`` so this must be 2 for VGGT weights), corr_levels,
    corr_radius, hidden_size.
    Extra (tiny configs; VGGT defaults): out_channels, intermediate_layer_idx (feature extractor),
    tracker_depth, num_heads, num_virtual_tracks (update transformer).
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        features: int = 128,
        iters: int = 4,
        predict_conf: bool = True,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        *,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        tracker_depth: int = 6,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in=dim_in,
            patch_size=patch_size,
            features=features,
            out_channels=out_channels,
            intermediate_layer_idx=intermediate_layer_idx,
            feature_only=True,
            down_ratio=2,
            pos_embed=False,
        )
        self.tracker = BaseTrackerPredictor(
            latent_dim=features,
            predict_conf=predict_conf,
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            hidden_size=hidden_size,
            depth=tracker_depth,
            num_heads=num_heads,
            num_virtual_tracks=num_virtual_tracks,
        )

    @property
    def intermediate_layer_idx(self) -> List[int]:
        return self.feature_extractor.intermediate_layer_idx

    def forward(
        self,
        aggregated_tokens_list: Sequence[Optional[torch.Tensor]],
        images: torch.Tensor,
        patch_start_idx: int,
        query_points: torch.Tensor,
        iters: Optional[int] = None,
        frames_chunk_size: Optional[int] = 8,
    ) -> Tuple[List[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        """Track ``query_points``.

        Args:
            aggregated_tokens_list: per-layer tokens ``(B, S, P, dim_in)`` (unread layers may be None).
            images: ``(B, S, 3, H, W)`` (shape only).
            patch_start_idx: first patch token index.
            query_points: ``(B, N, 2)`` pixel ``(x, y)`` in frame 0 (``(N, 2)`` is taken as B=1).
            iters: refinement iterations (default ``self.iters``).
        Returns:
            ``(coord_preds, vis, conf)``: list of ``iters`` ``(B, S, N, 2)`` pixel tracks (last is best),
            visibility ``(B, S, N)`` and confidence ``(B, S, N)`` (None without ``predict_conf``), both in [0, 1].
        """
        if query_points.dim() == 2:
            query_points = query_points[None]
        fmaps = self.feature_extractor(
            aggregated_tokens_list, images, patch_start_idx, frames_chunk_size=frames_chunk_size
        )
        return self.tracker(query_points=query_points, fmaps=fmaps, iters=self.iters if iters is None else iters)
