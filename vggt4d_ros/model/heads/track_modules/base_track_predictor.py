"""Iterative point tracker (VGGT's ``BaseTrackerPredictor``, after co-tracker / VGGSfM)."""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn

from ...layers import Mlp
from ..utils import flow_embed, sample_features4d, sincos_grid_embed_at
from .blocks import CorrBlock, EfficientUpdateFormer


class BaseTrackerPredictor(nn.Module):
    """Refines tracks of query points through a sequence of feature maps.

    Each iteration samples windowed correlations around the current positions, embeds the displacement
    from the query, and lets the update transformer predict position and feature updates. Frame 0 is the
    query frame: its positions stay equal to the queries.

    Args:
        stride: feature-map pixels per image pixel divisor (query points are divided by it).
        corr_levels, corr_radius: correlation pyramid levels and window radius.
        latent_dim: feature width ``C`` of the maps.
        hidden_size: update-transformer width.
        use_spaceatt: attention across tracks through virtual tracks.
        depth: update-transformer time depth (and space depth when ``use_spaceatt``).
        max_scale: displacement normaliser for the raw flow inputs.
        predict_conf: also predict a per-point confidence.
        num_heads, num_virtual_tracks: update-transformer heads and virtual tracks (VGGT: 8, 64).
    """

    def __init__(
        self,
        stride: int = 1,
        corr_levels: int = 5,
        corr_radius: int = 4,
        latent_dim: int = 128,
        hidden_size: int = 384,
        use_spaceatt: bool = True,
        depth: int = 6,
        max_scale: float = 518,
        predict_conf: bool = True,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        if latent_dim % 4:
            raise ValueError("latent_dim must be a multiple of 4")
        self.stride = stride
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.hidden_size = hidden_size
        self.max_scale = max_scale
        self.predict_conf = predict_conf
        self.flows_emb_dim = latent_dim // 2
        self.transformer_dim = 3 * latent_dim + 4

        self.corr_mlp = Mlp(
            in_features=corr_levels * (2 * corr_radius + 1) ** 2, hidden_features=hidden_size, out_features=latent_dim
        )
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            space_depth=depth if use_spaceatt else 0,
            time_depth=depth,
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            num_heads=num_heads,
            output_dim=latent_dim + 2,
            mlp_ratio=4.0,
            add_space_attn=use_spaceatt,
            num_virtual_tracks=num_virtual_tracks,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(
        self,
        query_points: torch.Tensor,
        fmaps: torch.Tensor,
        iters: int = 6,
        return_feat: bool = False,
        down_ratio: float = 1,
        apply_sigmoid: bool = True,
    ):
        """Track ``query_points`` (pixels of frame 0) through ``fmaps``.

        Args:
            query_points: ``(B, N, 2)`` pixel ``(x, y)`` in frame 0 (image pixels).
            fmaps: ``(B, S, C, h, w)`` feature maps (``h = H / (stride * down_ratio)``).
            iters: refinement iterations.
        Returns:
            ``coord_preds``: list of ``iters`` tensors ``(B, S, N, 2)`` in image pixels; ``vis``
            ``(B, S, N)``; ``conf`` ``(B, S, N)`` or None (probabilities when ``apply_sigmoid``). With
            ``return_feat`` also the final track features ``(B, S, N, C)`` and query features ``(B, N, C)``
            (order: coords, vis, track_feats, query_feat, conf).
        """
        B, N, two = query_points.shape
        if two != 2:
            raise ValueError("query_points must be (B, N, 2)")
        _, S, C, hh, ww = fmaps.shape
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)

        scale = float(self.stride) * (float(down_ratio) if down_ratio > 1 else 1.0)
        queries = query_points / scale
        coords = queries.reshape(B, 1, N, 2).repeat(1, S, 1, 1)
        query_feat = sample_features4d(fmaps[:, 0], queries)  # (B, N, C)
        track_feats = query_feat[:, None].repeat(1, S, 1, 1)  # (B, S, N, C)
        corr_fn = CorrBlock(fmaps, num_levels=self.corr_levels, radius=self.corr_radius)

        # Constant across iterations: grid position embedding at the queries and the query/reference token.
        pos_emb = sincos_grid_embed_at(queries, self.transformer_dim, hh, ww).reshape(B * N, 1, -1)
        ref_token = torch.cat(
            [self.query_ref_token[:, :1], self.query_ref_token[:, 1:2].expand(-1, S - 1, -1)], dim=1
        )

        coord_preds: List[torch.Tensor] = []
        for _ in range(iters):
            coords = coords.detach()
            corrs = corr_fn.corr_sample(track_feats, coords)  # (B, S, N, L)
            corrs = self.corr_mlp(corrs.permute(0, 2, 1, 3).reshape(B * N, S, -1))

            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(B * N, S, 2)
            flows_emb = torch.cat(
                [flow_embed(flows, self.flows_emb_dim), flows / self.max_scale, flows / self.max_scale], dim=-1
            )
            feats_ = track_feats.permute(0, 2, 1, 3).reshape(B * N, S, C)
            x = torch.cat([flows_emb.to(feats_.dtype), corrs.to(feats_.dtype), feats_], dim=-1)
            x = x + pos_emb.to(x.dtype) + ref_token.to(x.dtype)

            delta = self.updateformer(x.reshape(B, N, S, -1)).reshape(B * N * S, -1)
            d_coords, d_feats = delta[:, :2], delta[:, 2:]
            feats_ = self.ffeat_updater(self.ffeat_norm(d_feats)) + feats_.reshape(B * N * S, C)
            track_feats = feats_.reshape(B, N, S, C).permute(0, 2, 1, 3)

            coords = coords + d_coords.reshape(B, N, S, 2).permute(0, 2, 1, 3)
            coords = torch.cat([queries[:, None], coords[:, 1:]], dim=1)
            coord_preds.append(coords * scale)

        flat = track_feats.reshape(B * S * N, C)
        vis = self.vis_predictor(flat).reshape(B, S, N)
        conf: Optional[torch.Tensor] = None
        if self.predict_conf:
            conf = self.conf_predictor(flat).reshape(B, S, N)
        if apply_sigmoid:
            vis = torch.sigmoid(vis)
            conf = torch.sigmoid(conf) if conf is not None else None
        if return_feat:
            return coord_preds, vis, track_feats, query_feat, conf
        return coord_preds, vis, conf
