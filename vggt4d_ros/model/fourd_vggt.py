"""4D-VGGT v1.0 (github Haonan-Wang-aurora/4D-VGGT, commit f9c6efe, MIT): the release's ``FourDVGGT``.

Built from this project's layers; the state_dict has the release's key names and shapes:
``cross_view_global_fusion.*`` (VGGT's alternating frame/global aggregator: an :class:`~.aggregator.Aggregator`
with global attention over all frames), ``cross_time_local_fusion.*`` and ``spatiotemporal_dense_fusion.*``
(:mod:`.cross_time`), ``spatial_head.*`` (VGGT's camera head) and ``dense_head.{depth_head,point_head}.*`` (VGGT's
DPT heads). The defaults have 1,803,726,236 parameters in 2296 tensors (the release's count on ``meta``).

Data flow: the images are encoded once (patch embedding, camera/register tokens); the global branch gives the
camera head its last layer; both branches' taps ``cached_layer_indices`` are fused for the dense heads.

This project's extensions (keyword settings beyond the release's, all off by default; with them off and one
camera the computation is the release's):
    - several cameras (``num_views`` V > 1, frames time-major): the global branch attends over all frames of
      the window, the cross-time window runs over each camera's own frames;
    - ``reference_index``: the frame that gets camera/register token 0 (the release: frame 0);
    - ``page4d``: PAGE-4D's mask predictor after a middle frame block of the global branch and its bias on the
      camera/register queries of a range of global blocks (``cross_view_global_fusion.spatial_mask_head.*``);
    - ``enable_mask`` (``mask_head.*``, dense dynamic-mask DPT) and ``enable_track`` (``track_head.*``); both
      read the fused dense features.

Checkpoint contract (the release's ``torch.save``'d dict: metadata keys, ``model_config``, ``model``):
    - :attr:`FourDVGGT.release_model_config`: plain-JSON dict equal to what the release stores as
      ``model_config`` for the same constructor arguments (all 25 of them; tuples as lists;
      ``dense_head_options`` with ``intermediate_layer_idx`` filled in, as the release does).
    - :attr:`FourDVGGT.release_metadata`: the release's metadata keys (``model_name``, ``naming_schema_version``,
      ``distribution_name``, ``import_package``, ``release``, ``architecture`` = ``"4d-vggt-geometry-v1"``,
      ``architecture_schema_version`` = 2, ``released_tasks``).
    - :attr:`FourDVGGT.project_extensions`: this project's extension settings ({} for the release as built).
    - :meth:`FourDVGGT.release_payload`: ``{**release_metadata, "model_config": ..., "model": state_dict}``
      (plus ``"project_extensions"`` when not empty), the file the release's ``checkpoint_payload`` writes.
"""

from __future__ import annotations

import json
from typing import Any, Collection, Dict, List, Optional, Sequence

import torch
from torch import nn

from .aggregator import Aggregator
from .cross_time import CrossTimeLocalFusion, SpatiotemporalDenseFusion
from .heads import CameraHead, DenseHead, DPTHead, TrackHead
from .head_set import HeadSet

GEOMETRY_PROFILE = "4d-vggt-geometry-v1"
ARCHITECTURE_SCHEMA_VERSION = 2
RELEASE_METADATA = {
    "model_name": "4D-VGGT",
    "naming_schema_version": 2,
    "distribution_name": "4d-vggt",
    "import_package": "four_d_vggt",
    "release": "version-1.0",
    "architecture": GEOMETRY_PROFILE,
    "architecture_schema_version": ARCHITECTURE_SCHEMA_VERSION,
    "released_tasks": ["camera", "depth", "point"],
}


class FourDVGGT(HeadSet, nn.Module):
    """4D-VGGT v1.0 with this project's forward contract. Build it with :func:`build_fourd_vggt`.

    Head attributes as :class:`~.vggt4d.VGGT4D`'s (``camera_head`` = ``spatial_head``, ``depth_head`` /
    ``point_head`` inside ``dense_head``, ``mask_head``, ``track_head``); ``aggregator`` is the global branch.
    """

    def __init__(self, modules: Dict[str, Optional[nn.Module]], release_config: Dict[str, Any],
                 extensions: Dict[str, Any]) -> None:
        super().__init__()
        for name in ("cross_view_global_fusion", "cross_time_local_fusion", "spatiotemporal_dense_fusion",
                     "spatial_head", "dense_head", "mask_head", "track_head"):
            setattr(self, name, modules.get(name))
        self.release_model_config: Dict[str, Any] = json.loads(json.dumps(release_config))
        self.release_metadata: Dict[str, Any] = dict(RELEASE_METADATA, architecture=release_config["profile"])
        self.project_extensions: Dict[str, Any] = json.loads(json.dumps(extensions))
        self.config = {"architecture": "4d-vggt", **self.release_model_config, **self.project_extensions}

    # the names the Predictor, the node and the head selection use
    @property
    def aggregator(self) -> Aggregator:
        return self.cross_view_global_fusion

    @property
    def camera_head(self) -> Optional[nn.Module]:
        return self.spatial_head

    @property
    def depth_head(self) -> Optional[nn.Module]:
        return None if self.dense_head is None else self.dense_head.depth_head

    @property
    def point_head(self) -> Optional[nn.Module]:
        return None if self.dense_head is None else self.dense_head.point_head

    def release_payload(self) -> Dict[str, Any]:
        """The checkpoint dict the release saves for this model (see the module docstring)."""
        out: Dict[str, Any] = {**self.release_metadata, "model_config": self.release_model_config}
        if self.project_extensions:
            out["project_extensions"] = self.project_extensions
        out["model"] = self.state_dict()
        return out

    def initialize_cross_time_from_global(self) -> None:
        """Copy the global branch's blocks into the cross-time branch (time bias 0), as the release does."""
        agg = self.cross_view_global_fusion
        self.cross_time_local_fusion.initialize_from(agg.frame_blocks, agg.global_blocks)

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
        """Predict a window; arguments and outputs as :meth:`~.vggt4d.VGGT4D.forward`.

        Args:
            images: ``(S, 3, H, W)`` or ``(B, S, 3, H, W)`` in [0, 1], frames time-major.
            query_points: ``(N, 2)`` / ``(B, N, 2)`` pixels in frame ``reference_index`` (track head only).
            num_views: ``V``.
            reference_index: the world frame.
            layout: None or ``"global"`` (the global branch always attends over all frames).
            patch_tokens: cached ``(B, S, h*w, C)`` from ``aggregator.embed_frames``.
            heads: run only these heads (None: all); the cross-time branch runs only for dense or track heads.
            dense_frames: dense heads on these frames only (the branches still see every frame).
        Returns:
            ``pose_enc`` (B,S,9), ``pose_enc_list``, ``depth`` (B,S,H,W,1), ``depth_conf``, ``world_points``
            (B,S,H,W,3), ``world_points_conf``, ``images`` (eval); with the extensions ``page_mask``,
            ``dynamic_mask_logits``, ``track`` / ``vis`` / ``conf``.
        """
        if layout not in (None, "global"):
            raise ValueError(f"4D-VGGT's global branch attends over all frames; layout {layout!r} is not supported")
        sel = self.check_heads(heads)

        def use(name: str) -> bool:
            return getattr(self, name + "_head", None) is not None and (sel is None or name in sel)

        if images.dim() == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        if patch_tokens is not None and patch_tokens.dim() == 3:
            patch_tokens = patch_tokens.unsqueeze(0)
        agg = self.cross_view_global_fusion
        taps = self.dense_taps
        tracking = use("track") and query_points is not None
        dense = any(use(n) for n in ("depth", "point", "mask")) or tracking
        keep = ({agg.depth - 1} if use("camera") else set()) | (set(taps) if dense else set())
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        enc = agg.encode(None if patch_tokens is not None else images, patch_tokens=patch_tokens, grid=grid,
                         reference_index=reference_index)
        spatial, psi, aux = agg.forward_tokens(enc, num_views=num_views, layout="global", keep=keep)
        features: List[Optional[torch.Tensor]] = spatial
        temporal = None
        if dense and self.spatiotemporal_dense_fusion is not None:
            temporal = self.cross_time_local_fusion(enc, num_views=num_views, keep=taps)
        if temporal is not None and tracking:
            features = self.spatiotemporal_dense_fusion(spatial, temporal)
        d_features, d_images = self._dense_inputs(features, images, dense_frames)
        if temporal is not None and not tracking:  # fuse only the dense frames (the fusion is per token)
            d_temporal, _ = self._dense_inputs(temporal, images, dense_frames)
            d_features = self.spatiotemporal_dense_fusion(d_features, d_temporal)
        out: Dict[str, Any] = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            if use("camera"):
                poses = self.spatial_head(spatial)
                out["pose_enc"], out["pose_enc_list"] = poses[-1], poses
            if use("depth"):
                out["depth"], out["depth_conf"] = self.depth_head(d_features, images=d_images, patch_start_idx=psi)
            if use("point"):
                out["world_points"], out["world_points_conf"] = self.point_head(d_features, images=d_images,
                                                                                patch_start_idx=psi)
            if use("mask"):
                logits, _ = self.mask_head(d_features, images=d_images, patch_start_idx=psi)
                out["dynamic_mask_logits"] = logits[..., 0]
        if "page_static" in aux:
            out["page_mask"] = 1.0 - aux["page_static"]
        if tracking:
            out.update(self._track(features, images, psi, query_points, reference_index))
        if not self.training:
            out["images"] = images
        return out

    @property
    def dense_taps(self) -> List[int]:
        """The four fused layer indices (``cached_layer_indices``)."""
        return list(self.release_model_config["cached_layer_indices"])


def build_fourd_vggt(
    img_size: int = 518,
    patch_size: int = 14,
    embed_dim: int = 1024,
    enable_spatial: bool = True,
    enable_point: bool = True,
    enable_depth: bool = True,
    profile: str = GEOMETRY_PROFILE,
    enable_cross_time: bool = True,
    enable_dense_fusion: bool = True,
    window_size: int = 5,
    depth: int = 24,
    num_heads: int = 16,
    mlp_ratio: float = 4.0,
    num_register_tokens: int = 4,
    patch_embed: str = "dinov2_vitl14_reg",
    cached_layer_indices: Sequence[int] = (4, 11, 17, 23),
    aa_block_size: int = 1,
    qkv_bias: bool = True,
    proj_bias: bool = True,
    ffn_bias: bool = True,
    qk_norm: bool = True,
    rope_freq: float = 100,
    init_values: float = 0.01,
    spatial_head_options: Optional[Dict[str, Any]] = None,
    dense_head_options: Optional[Dict[str, Any]] = None,
    *,
    page4d: Optional[Dict[str, Any]] = None,
    enable_mask: bool = False,
    mask_dpt: Optional[Dict[str, Any]] = None,
    enable_track: bool = False,
    track: Optional[Dict[str, Any]] = None,
    name: Optional[str] = None,
) -> FourDVGGT:
    """Build 4D-VGGT v1.0 from ``FourDVGGT``'s constructor arguments (the release's names and defaults).

    The release's checks apply (its profile only; dense fusion needs the cross-time branch; four distinct
    ``cached_layer_indices`` below ``depth``, equal to the dense head's ``intermediate_layer_idx``).
    ``aa_block_size`` other than 1 (the release's default and checkpoint) is not supported.
    Extensions (keyword only, see the module docstring): ``page4d`` (dict as :func:`~.vggt4d.build_vggt4d`'s;
    defaults ``mask_block`` 9, ``bias_blocks`` (10, 19), clipped to ``depth``), ``enable_mask`` + ``mask_dpt``
    (DPT options; default the dense head's), ``enable_track`` + ``track`` (:class:`~.heads.TrackHead` options).
    ``name`` (a configuration's name) is ignored.
    """
    if profile != GEOMETRY_PROFILE:
        raise ValueError(f"4D-VGGT v1.0 has only the geometry profile {GEOMETRY_PROFILE!r}, got {profile!r}")
    if enable_dense_fusion and not enable_cross_time:
        raise ValueError("4D-VGGT: dense fusion requires the cross-time branch (enable_cross_time)")
    taps = tuple(int(i) for i in cached_layer_indices)
    if len(taps) != 4 or len(set(taps)) != 4 or min(taps) < 0 or max(taps) >= depth:
        raise ValueError(f"cached_layer_indices must be four distinct layers below depth {depth}, got {list(taps)}")
    if aa_block_size != 1:
        raise ValueError(f"aa_block_size {aa_block_size} is not supported (only 1, the release's)")
    spatial_opts = dict(spatial_head_options or {})
    dense_opts = dict(dense_head_options or {})
    dense_opts.setdefault("intermediate_layer_idx", list(taps))
    if tuple(dense_opts["intermediate_layer_idx"]) != taps:
        raise ValueError("dense_head_options.intermediate_layer_idx must equal cached_layer_indices")
    release = dict(
        img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, enable_spatial=enable_spatial,
        enable_point=enable_point, enable_depth=enable_depth, profile=profile, enable_cross_time=enable_cross_time,
        enable_dense_fusion=enable_dense_fusion, window_size=window_size, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, num_register_tokens=num_register_tokens, patch_embed=patch_embed,
        cached_layer_indices=list(taps), aa_block_size=aa_block_size, qkv_bias=qkv_bias, proj_bias=proj_bias,
        ffn_bias=ffn_bias, qk_norm=qk_norm, rope_freq=rope_freq, init_values=init_values,
        spatial_head_options=spatial_opts, dense_head_options=dense_opts,
    )
    page = dict(page4d or {})
    if page.get("enabled"):
        page.setdefault("mask_block", min(9, depth - 1))
        page.setdefault("bias_blocks", [min(10, depth - 1), min(19, depth - 1)])
    agg = Aggregator(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                     mlp_ratio=mlp_ratio, num_register_tokens=num_register_tokens, qkv_bias=qkv_bias,
                     proj_bias=proj_bias, ffn_bias=ffn_bias, patch_embed=patch_embed, qk_norm=qk_norm,
                     rope_freq=rope_freq, init_values=init_values, layout="global", page4d=page)
    dim_in = 2 * embed_dim
    modules: Dict[str, Optional[nn.Module]] = {"cross_view_global_fusion": agg}
    if enable_cross_time:
        modules["cross_time_local_fusion"] = CrossTimeLocalFusion(
            embed_dim, depth, num_heads, mlp_ratio, qkv_bias, proj_bias, ffn_bias, init_values, qk_norm, agg.rope,
            window_size)
    if enable_dense_fusion:
        modules["spatiotemporal_dense_fusion"] = SpatiotemporalDenseFusion(dim_in, taps)
    if enable_spatial:
        modules["spatial_head"] = CameraHead(dim_in=dim_in, **spatial_opts)
    if enable_depth or enable_point:
        modules["dense_head"] = DenseHead(dim_in, patch_size, enable_depth, enable_point, **dense_opts)
    ext: Dict[str, Any] = {}
    if page.get("enabled"):
        ext["page4d"] = page
    if enable_mask:
        mdpt = dict(mask_dpt if mask_dpt is not None else dense_opts)
        mdpt["intermediate_layer_idx"] = list(taps)
        modules["mask_head"] = DPTHead(dim_in, patch_size, output_dim=1, activation="linear", conf_activation=None,
                                       **mdpt)
        ext.update(enable_mask=True, mask_dpt=mdpt)
    if enable_track:
        trk = dict(track or {})
        trk["intermediate_layer_idx"] = list(taps)
        modules["track_head"] = TrackHead(dim_in, patch_size, **trk)
        ext.update(enable_track=True, track=trk)
    model = FourDVGGT(modules, release, ext)
    agg.keep_layers = tuple(model.required_layers())
    return model
