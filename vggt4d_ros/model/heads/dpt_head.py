"""DPT dense-prediction head (Ranftl et al. 2021) with VGGT's layout and state_dict keys.

Four intermediate layers of the aggregator (``intermediate_layer_idx``) are read at patch resolution,
projected by 1x1 convolutions, resized to strides 4, 8, 14 (patch), 28 of the image (relative to the
patch grid: x4, x2, x1, x0.5), fused coarse-to-fine by RefineNet blocks, and upsampled to the image.

State-dict layout (matches VGGT's ``depth_head.*`` / ``point_head.*`` / ``track_head.feature_extractor.*``):
``norm``, ``projects.{0..3}``, ``resize_layers.{0,1,3}`` (2 is identity), ``scratch.layer{1..4}_rn``,
``scratch.refinenet{1..4}`` (``out_conv``, ``resConfUnit1`` (not in 4), ``resConfUnit2``),
``scratch.output_conv1`` and, unless ``feature_only``, ``scratch.output_conv2.{0,2}``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .head_act import activate_head
from .utils import uv_pos_embed

# Largest output (elements) one F.interpolate call produces before we split the batch (int32 indexing
# limits in some CUDA kernels).
_INTERP_MAX_ELEMENTS = 1_610_612_736


def interpolate_bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` of ``(N, C, h, w)`` to ``(N, C, *size)``, split on N if huge."""
    n_out = size[0] * size[1] * x.shape[0] * x.shape[1]
    if n_out <= _INTERP_MAX_ELEMENTS:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    chunks = torch.chunk(x, n_out // _INTERP_MAX_ELEMENTS + 1, dim=0)
    return torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in chunks], dim=0)


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``relu(x) + conv2(relu(conv1(relu(x))))``.

    The skip carries ``relu(x)``, not ``x``: VGGT applies an in-place ReLU to the input before adding it
    back, and the released weights were trained with that behaviour, so it is reproduced here explicitly
    (without mutating the caller's tensor).
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w) -> (N, C, h, w)``."""
        skip = F.relu(x)
        out = self.conv2(F.relu(self.conv1(skip)))
        return out + skip


class FeatureFusionBlock(nn.Module):
    """RefineNet fusion: ``out_conv(resize(rcu2(x + rcu1(skip))))`` (without ``rcu1`` for the coarsest)."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.has_residual = has_residual
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, bias=True)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, x: torch.Tensor, skip: Optional[torch.Tensor] = None, size: Optional[Tuple[int, int]] = None
    ) -> torch.Tensor:
        """Fuse ``x`` (and ``skip``, same shape) and resize to ``size`` (default: x2).

        Args:
            x: ``(N, C, h, w)``; skip: ``(N, C, h, w)`` or None.
        Returns:
            ``(N, C, *size)`` (``(N, C, 2h, 2w)`` without size).
        """
        out = x
        if self.has_residual and skip is not None:
            out = out + self.resConfUnit1(skip)
        out = self.resConfUnit2(out)
        if size is None:
            size = (int(out.shape[-2] * 2), int(out.shape[-1] * 2))
        out = interpolate_bilinear(out, tuple(int(s) for s in size))
        return self.out_conv(out)


class DPTHead(nn.Module):
    """DPT head over aggregated tokens.

    Args:
        dim_in: token width (2048 for VGGT: frame and global outputs concatenated).
        patch_size: image pixels per token (14).
        output_dim: channels of the final convolution (prediction channels + 1 confidence channel, or just
            prediction channels when ``conf_activation`` is None).
        activation: prediction activation (``exp`` depth, ``inv_log`` points, ``linear`` logits, ...).
        conf_activation: confidence activation (``expp1``) or None for no confidence channel.
        features: fusion width.
        out_channels: projection widths of the four read layers.
        intermediate_layer_idx: which entries of ``aggregated_tokens_list`` are read (the others may be None).
        pos_embed: add the UV sin/cos embedding (x0.1) after projection and after the final upsampling.
        feature_only: stop after the final upsampling and return ``features`` channels.
        down_ratio: output resolution is the image resolution divided by this.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: Optional[str] = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
    ) -> None:
        super().__init__()
        out_channels = list(out_channels)
        if len(out_channels) != 4 or len(intermediate_layer_idx) != 4:
            raise ValueError("DPTHead reads exactly four layers (out_channels and intermediate_layer_idx of length 4)")
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = list(intermediate_layer_idx)

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, oc, kernel_size=1) for oc in out_channels])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )

        scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(oc, features, kernel_size=3, padding=1, bias=False))
        scratch.refinenet1 = FeatureFusionBlock(features)
        scratch.refinenet2 = FeatureFusionBlock(features)
        scratch.refinenet3 = FeatureFusionBlock(features)
        scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            scratch.output_conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        else:
            scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
            scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, output_dim, kernel_size=1),
            )
        self.scratch = scratch

    # ------------------------------------------------------------------------------------------------
    def forward(
        self,
        aggregated_tokens_list: Sequence[Optional[torch.Tensor]],
        images: torch.Tensor,
        patch_start_idx: int,
        frames_chunk_size: Optional[int] = 8,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Dense prediction for every frame, optionally a few frames at a time (same result, less memory).

        Args:
            aggregated_tokens_list: per aggregator layer ``(B, S, P, dim_in)`` tokens (``P`` = special
                tokens + patches); only ``intermediate_layer_idx`` entries are read, others may be None.
            images: ``(B, S, 3, H, W)``, H and W multiples of ``patch_size`` (only the shape is used).
            patch_start_idx: index of the first patch token in ``P``.
            frames_chunk_size: frames per chunk; None or >= S processes all at once.

        Returns:
            ``feature_only``: ``(B, S, features, H/r, W/r)``.
            Otherwise ``(pred, conf)``: ``pred`` ``(B, S, H/r, W/r, output_dim - 1)`` (``output_dim`` without
            confidence) and ``conf`` ``(B, S, H/r, W/r)`` or None (r = ``down_ratio``).
        """
        S = images.shape[1]
        if frames_chunk_size is None or frames_chunk_size >= S:
            return self._forward_frames(aggregated_tokens_list, images, patch_start_idx, 0, S)
        if frames_chunk_size <= 0:
            raise ValueError("frames_chunk_size must be positive")
        outs = [
            self._forward_frames(aggregated_tokens_list, images, patch_start_idx, s0, min(s0 + frames_chunk_size, S))
            for s0 in range(0, S, frames_chunk_size)
        ]
        if self.feature_only:
            return torch.cat(outs, dim=1)
        preds = torch.cat([o[0] for o in outs], dim=1)
        confs = None if outs[0][1] is None else torch.cat([o[1] for o in outs], dim=1)
        return preds, confs

    def _add_pos_embed(self, x: torch.Tensor, img_w: int, img_h: int, ratio: float = 0.1) -> torch.Tensor:
        """Add ``ratio`` x UV embedding to ``(N, C, h, w)``."""
        emb = uv_pos_embed(x.shape[-2], x.shape[-1], x.shape[1], img_w / img_h, x.dtype, x.device)
        return x + ratio * emb[None]

    def _forward_frames(
        self,
        tokens_list: Sequence[Optional[torch.Tensor]],
        images: torch.Tensor,
        patch_start_idx: int,
        s0: int,
        s1: int,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Frames ``[s0, s1)``; see ``forward`` for shapes."""
        B = images.shape[0]
        H, W = images.shape[-2:]
        S = s1 - s0
        ph, pw = H // self.patch_size, W // self.patch_size

        feats: List[torch.Tensor] = []
        for k, layer_idx in enumerate(self.intermediate_layer_idx):
            tokens = tokens_list[layer_idx]
            if tokens is None:
                raise ValueError(f"DPTHead needs aggregator layer {layer_idx}, got None")
            x = tokens[:, s0:s1, patch_start_idx:]
            x = self.norm(x.reshape(B * S, x.shape[2], x.shape[3]))
            x = x.transpose(1, 2).reshape(B * S, x.shape[-1], ph, pw)
            x = self.projects[k](x)
            if self.pos_embed:
                x = self._add_pos_embed(x, W, H)
            feats.append(self.resize_layers[k](x))

        out = self._fuse(feats)
        out_hw = (int(ph * self.patch_size / self.down_ratio), int(pw * self.patch_size / self.down_ratio))
        out = interpolate_bilinear(out, out_hw)
        if self.pos_embed:
            out = self._add_pos_embed(out, W, H)
        if self.feature_only:
            return out.reshape(B, S, *out.shape[1:])

        out = self.scratch.output_conv2(out)
        pred, conf = activate_head(out, activation=self.activation, conf_activation=self.conf_activation)
        pred = pred.reshape(B, S, *pred.shape[1:])
        if conf is not None:
            conf = conf.reshape(B, S, *conf.shape[1:])
        return pred, conf

    def _fuse(self, feats: List[torch.Tensor]) -> torch.Tensor:
        """RefineNet fusion from the coarsest (4) to the finest (1) level, then ``output_conv1``."""
        sc = self.scratch
        l1, l2, l3, l4 = sc.layer1_rn(feats[0]), sc.layer2_rn(feats[1]), sc.layer3_rn(feats[2]), sc.layer4_rn(feats[3])
        out = sc.refinenet4(l4, size=l3.shape[-2:])
        out = sc.refinenet3(out, l3, size=l2.shape[-2:])
        out = sc.refinenet2(out, l2, size=l1.shape[-2:])
        out = sc.refinenet1(out, l1)
        return sc.output_conv1(out)
