"""The 4D model: VGGT's aggregator and heads, plus 4D layouts, PAGE-4D pose bias and a dense mask head.

With the default settings the state_dict is exactly VGGT-1B's (1797 tensors, 1,256,537,516 parameters);
extras live under their own prefixes: ``mask_head.*`` (dense dynamic-mask DPT head) and
``aggregator.spatial_mask_head.*`` (PAGE-4D mask predictor, PAGE-4D's key names).
"""

from __future__ import annotations

import math
from typing import Any, Collection, Dict, List, Optional, Sequence

import torch
from torch import nn

from .aggregator import Aggregator
from .head_set import HEAD_ATTRS, HeadSet
from .heads import CameraHead, DPTHead, TrackHead

VGGT_DPT_LAYERS = (4, 11, 17, 23)


def scaled_layers(depth: int, reference: Sequence[int] = VGGT_DPT_LAYERS, reference_depth: int = 24) -> List[int]:
    """Scale VGGT's DPT layer indices ``[4, 11, 17, 23]`` of 24 to a model of ``depth`` block pairs.

    ``idx = round((i + 1) * depth / 24) - 1`` clamped to ``[0, depth-1]``: depth 24 gives VGGT's indices,
    depth 4 gives ``[0, 1, 2, 3]``, depth 6 ``[0, 2, 4, 5]``.
    """
    out = []
    for i in reference:
        v = int(math.floor((i + 1) * depth / reference_depth + 0.5)) - 1
        out.append(min(max(v, 0), depth - 1))
    return out


class VGGT4D(HeadSet, nn.Module):
    """Aggregator + heads. Build it with :func:`build_model`.

    Attributes: ``aggregator``, ``camera_head``, ``depth_head``, ``point_head``, ``track_head`` (each None
    when disabled, as in VGGT), ``mask_head`` (only when enabled).
    """

    def __init__(self, aggregator: Aggregator, heads: Dict[str, Optional[nn.Module]], config: Dict[str, Any]) -> None:
        super().__init__()
        self.aggregator = aggregator
        self.camera_head = heads.get("camera_head")
        self.point_head = heads.get("point_head")
        self.depth_head = heads.get("depth_head")
        self.track_head = heads.get("track_head")
        if heads.get("mask_head") is not None:
            self.mask_head = heads["mask_head"]
        else:
            self.mask_head = None
        self.config = dict(config)

    def forward(
        self,
        images: torch.Tensor,
        query_points: Optional[torch.Tensor] = None,
        *,
        num_views: int = 1,
        reference_index: int = 0,
        layout: Optional[str] = None,
        patch_tokens: Optional[torch.Tensor] = None,
        heads: Optional[Collection[str]] = None,
        dense_frames: Optional[Sequence[int]] = None,
    ) -> Dict[str, Any]:
        """Predict cameras, depth, points (and tracks, masks) for a window.

        Args:
            images: ``(S, 3, H, W)`` or ``(B, S, 3, H, W)`` in [0, 1], H and W multiples of the patch size;
                frames time-major (``s = t * num_views + v``).
            query_points: ``(N, 2)`` or ``(B, N, 2)`` pixel (x, y) in frame ``reference_index``.
            num_views: ``V``.
            reference_index: world frame (camera/register token 0; tracks are queried in it).
            layout: ``"global"`` / ``"spatiotemporal"`` (default: the model's).
            patch_tokens: optional cached ``(B, S, h*w, C)`` from ``aggregator.embed_frames``.
            heads: run only these heads: a collection of ``"camera"``, ``"depth"``, ``"point"``, ``"mask"``,
                ``"track"``; None (default) runs every head the model has. A selected head the model lacks is
                ignored; a head left out produces no keys (e.g. no ``world_points`` without ``"point"``).
                The aggregator always runs in full (it computes the layers it keeps, whatever the heads).
            dense_frames: run the dense DPT heads (depth, point, mask) only on these frame indices (in ``0..S-1``,
                in this order); None (default) runs them on every frame. Those heads see each frame on its own
                (the frames only meet in the aggregator), so a frame's dense outputs do not depend on which
                other frames are selected. The camera and track heads and ``page_mask`` still cover all S frames.
        Returns:
            dict with VGGT's keys ``pose_enc`` (B,S,9), ``pose_enc_list``, ``depth`` (B,S,H,W,1),
            ``depth_conf`` (B,S,H,W), ``world_points`` (B,S,H,W,3), ``world_points_conf``, ``images``; with
            queries ``track`` (B,S,N,2), ``vis``, ``conf`` (B,S,N); ``dynamic_mask_logits`` (B,S,H,W) with the
            mask head; ``page_mask`` (B,S,h,w) dynamic probability with PAGE-4D. Only the selected heads' keys.
            With ``dense_frames`` the dense keys (``depth``, ``depth_conf``, ``world_points``,
            ``world_points_conf``, ``dynamic_mask_logits``) have ``len(dense_frames)`` frames along dim 1, in the
            order of ``dense_frames``.
        """
        sel = self.check_heads(heads)

        def use(name: str) -> bool:
            return getattr(self, HEAD_ATTRS[name], None) is not None and (sel is None or name in sel)

        if images.dim() == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        b, s = images.shape[:2]
        if patch_tokens is not None and patch_tokens.dim() == 3:
            patch_tokens = patch_tokens.unsqueeze(0)
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        tokens, psi, aux = self.aggregator(
            None if patch_tokens is not None else images,
            patch_tokens=patch_tokens,
            grid=grid,
            num_views=num_views,
            reference_index=reference_index,
            layout=layout,
        )
        out: Dict[str, Any] = {}
        d_tokens, d_images = self._dense_inputs(tokens, images, dense_frames)
        with torch.autocast(device_type=images.device.type, enabled=False):
            if use("camera"):
                poses = self.camera_head(tokens)
                out["pose_enc"] = poses[-1]
                out["pose_enc_list"] = poses
            if use("depth"):
                out["depth"], out["depth_conf"] = self.depth_head(d_tokens, images=d_images, patch_start_idx=psi)
            if use("point"):
                out["world_points"], out["world_points_conf"] = self.point_head(d_tokens, images=d_images,
                                                                                patch_start_idx=psi)
            if use("mask"):
                logits, _ = self.mask_head(d_tokens, images=d_images, patch_start_idx=psi)
                out["dynamic_mask_logits"] = logits[..., 0]
        if "page_static" in aux:
            out["page_mask"] = 1.0 - aux["page_static"]
        if use("track") and query_points is not None:
            out.update(self._track(tokens, images, psi, query_points, reference_index))
        if not self.training:
            out["images"] = images
        return out


ARCHITECTURES = ("vggt", "4d-vggt")


def build_model(architecture: str = "vggt", **kwargs: Any) -> nn.Module:
    """Build a model by architecture.

    Args:
        architecture: ``"vggt"`` (default: :func:`build_vggt4d`, VGGT's layout with this project's 4D
            options) or ``"4d-vggt"`` (:func:`~.fourd_vggt.build_fourd_vggt`: the 4D-VGGT v1.0 release's
            ``FourDVGGT``; ``kwargs`` are its constructor's argument names).
        kwargs: the builder's settings.
    """
    if architecture == "4d-vggt":
        from .fourd_vggt import build_fourd_vggt

        return build_fourd_vggt(**kwargs)
    if architecture != "vggt":
        raise ValueError(f"unknown architecture {architecture!r}; known: {list(ARCHITECTURES)}")
    return build_vggt4d(**kwargs)


def build_vggt4d(
    img_size: int = 518,
    patch_size: int = 14,
    embed_dim: int = 1024,
    depth: int = 24,
    num_heads: int = 16,
    patch_embed: str = "dinov2_vitl14_reg",
    enable_camera: bool = True,
    enable_depth: bool = True,
    enable_point: bool = True,
    enable_track: bool = True,
    **extras: Any,
) -> VGGT4D:
    """Build the model. VGGT's settings give VGGT's exact state_dict layout.

    Extras (all optional):
        mlp_ratio (4.0), num_register_tokens (4), qk_norm (True), rope_freq (100), init_values (0.01);
        layout ("global" | "spatiotemporal"), temporal_window (5);
        keep_layers: "auto" (default: only the layers the heads read), None (all) or a list;
        dpt_layers: DPT layer indices (default VGGT's scaled to ``depth``);
        enable_mask (False): dense dynamic-mask DPT head ``mask_head.*`` (one logit per pixel);
        page4d: dict(enabled, mask_block=9, bias_blocks=(10, 19), strength=0.0, mode="page4d");
        camera_head: dict(trunk_depth=4, num_heads=16, mlp_ratio=4, init_values=0.01);
        dpt: dict(features=256, out_channels=[256, 512, 1024, 1024]) for depth/point heads;
        mask_dpt: same for the mask head (default: ``dpt``);
        track: dict(features=128, iters=4, hidden_size=384, corr_levels=7, corr_radius=4,
               out_channels=..., tracker_depth=6, num_heads=8, num_virtual_tracks=64).
    """
    extras = dict(extras)
    known = {
        "mlp_ratio", "num_register_tokens", "qk_norm", "rope_freq", "init_values", "layout", "temporal_window",
        "keep_layers", "dpt_layers", "enable_mask", "page4d", "camera_head", "dpt", "mask_dpt", "track", "name",
    }
    unknown = set(extras) - known
    if unknown:
        raise TypeError(f"build_model got unknown settings {sorted(unknown)}")
    page4d = dict(extras.get("page4d") or {})
    page4d.setdefault("mask_block", min(9, depth - 1))
    page4d.setdefault("bias_blocks", (min(10, depth - 1), min(19, depth - 1)))
    agg = Aggregator(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=extras.get("mlp_ratio", 4.0),
        num_register_tokens=extras.get("num_register_tokens", 4),
        patch_embed=patch_embed,
        qk_norm=extras.get("qk_norm", True),
        rope_freq=extras.get("rope_freq", 100),
        init_values=extras.get("init_values", 0.01),
        layout=extras.get("layout", "global"),
        temporal_window=extras.get("temporal_window", 5),
        page4d=page4d,
    )
    dim_in = 2 * embed_dim
    dpt_layers = list(extras.get("dpt_layers") or scaled_layers(depth))
    dpt = dict(extras.get("dpt") or {})
    mask_dpt = dict(extras.get("mask_dpt") or dpt)
    cam = dict(extras.get("camera_head") or {})
    trk = dict(extras.get("track") or {})
    heads: Dict[str, Optional[nn.Module]] = {
        "camera_head": CameraHead(dim_in=dim_in, **cam) if enable_camera else None,
        "point_head": DPTHead(dim_in, patch_size, output_dim=4, activation="inv_log", conf_activation="expp1",
                              intermediate_layer_idx=dpt_layers, **dpt) if enable_point else None,
        "depth_head": DPTHead(dim_in, patch_size, output_dim=2, activation="exp", conf_activation="expp1",
                              intermediate_layer_idx=dpt_layers, **dpt) if enable_depth else None,
        "track_head": TrackHead(dim_in, patch_size, intermediate_layer_idx=trk.pop("intermediate_layer_idx", dpt_layers),
                                **trk) if enable_track else None,
    }
    if extras.get("enable_mask", False):
        heads["mask_head"] = DPTHead(dim_in, patch_size, output_dim=1, activation="linear", conf_activation=None,
                                     intermediate_layer_idx=dpt_layers, **mask_dpt)
    config = dict(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                  patch_embed=patch_embed, enable_camera=enable_camera, enable_depth=enable_depth,
                  enable_point=enable_point, enable_track=enable_track, **extras)
    model = VGGT4D(agg, heads, config)
    keep = extras.get("keep_layers", "auto")
    agg.keep_layers = tuple(model.required_layers()) if keep == "auto" else (None if keep is None else tuple(sorted(set(keep))))
    return model
