"""VGGT's alternating-attention aggregator with selectable 4D attention layouts and PAGE-4D pose bias.

Token order per frame: ``[camera, register x R, patches (row-major)]``; ``patch_start_idx = 1 + R``.
Frames are ordered time-major: frame ``s = t * V + v`` (``V`` views, ``T = S // V`` time steps).

Each of the ``depth`` block pairs runs a FRAME block (attention among the tokens of one frame, every layout)
and then a GLOBAL block whose token grouping depends on the layout:

``layout="global"`` (VGGT): every global block attends over all tokens of all ``S`` frames.

``layout="spatiotemporal"`` (4D-VGGT): global blocks alternate, starting with cross-view:
  - even global blocks (0, 2, ...) = CROSS-VIEW: all tokens of the ``V`` frames of one time step ``t``
    (groups ``{t*V + v : v < V}``, ``T`` groups),
  - odd global blocks (1, 3, ...) = CROSS-TIME: all tokens of the frames of ONE view ``v`` inside one temporal
    window. Windows are non-overlapping chunks of ``temporal_window`` consecutive time steps aligned to the
    NEWEST time step: ``[T-w, T), [T-2w, T-w), ...``; the oldest chunk holds the remaining ``T mod w`` steps.
    A frame therefore never attends to frames of another view in a cross-time block, nor to frames of its
    own view in another chunk. (Aligning to the newest step gives the frames a streaming window has just
    received full temporal context.)
  Both are computed by regrouping tokens into ``(groups, L*P, C)`` batches, never with a dense
  ``S*P x S*P`` mask, so the cost is ``O(S * P^2 * max(V, w))`` instead of ``O(S^2 P^2)``.

Intermediate outputs: layer ``i`` is ``cat(frame_i, global_i)`` ``(B, S, P, 2C)``; with ``keep_layers`` only
those indices are stored (others ``None``), which cuts activation memory (VGGT's heads read 4, 11, 17, 23).

Reference frame: camera/register token index 0 goes to frame ``reference_index`` (index 1 to all others),
which makes that frame's camera the world frame (VGGT always uses frame 0).

PAGE-4D (``page4d={"enabled": True, ...}``): after frame block ``mask_block`` a
:class:`~vggt4d_ros.model.page4d.PageMaskPredictor` scores each patch; in global blocks
``bias_blocks[0]..bias_blocks[1]`` (inclusive) the rows of the camera and register QUERIES get the bias of
:func:`~vggt4d_ros.model.page4d.page_key_bias` added to their logits (other rows unchanged).
"""

from __future__ import annotations

from typing import Collection, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .layers import Block, DinoV2, PatchEmbed, PositionGetter, RotaryPositionEmbedding2D
from .page4d import PageMaskPredictor, page_key_bias

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("global", "spatiotemporal")

class EncodedFrames(NamedTuple):
    """:meth:`Aggregator.encode`'s output: the input of the alternating blocks."""

    tokens: torch.Tensor  # (B*S, P, C): [camera, registers, patches] per frame
    pos: Optional[torch.Tensor]  # (B*S, P, 2) RoPE positions (special tokens at 0), or None
    batch: int
    frames: int
    grid: Tuple[int, int]  # (h, w) patch grid


PAGE4D_DEFAULTS = {"enabled": False, "mask_block": 9, "bias_blocks": (10, 19), "strength": 0.0, "mode": "page4d"}


def expand_special_tokens(token: torch.Tensor, batch: int, frames: int, reference_index: int = 0) -> torch.Tensor:
    """``token`` ``(1, 2, K, C)`` -> ``(batch*frames, K, C)``: index 0 for ``reference_index``, 1 elsewhere."""
    sel = torch.ones(frames, dtype=torch.long, device=token.device)
    sel[reference_index] = 0
    out = token[0].index_select(0, sel)  # (S, K, C)
    return out.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * frames, *token.shape[2:])


def frame_groups(layout: str, global_idx: int, num_frames: int, num_views: int, temporal_window: int) -> List[torch.Tensor]:
    """Frame groups of a global block.

    Returns a list of long tensors ``(G, L)``: each row lists the frame indices attending together; every frame
    appears in exactly one row. Rows of equal length are batched in one tensor.
    """
    s = num_frames
    if layout == "global":
        return [torch.arange(s).view(1, s)]
    if layout != "spatiotemporal":
        raise ValueError(f"unknown layout {layout!r}; known: {LAYOUTS}")
    v = num_views
    if v < 1 or s % v:
        raise ValueError(f"{s} frames are not a whole number of time steps of {v} views")
    t = s // v
    grid = torch.arange(s).view(t, v)  # frame index of (time, view)
    if global_idx % 2 == 0:  # cross-view
        return [grid]
    w = max(1, min(int(temporal_window), t))
    full, rem = divmod(t, w)
    out = []
    if full:
        chunk = grid[rem:].view(full, w, v).permute(0, 2, 1).reshape(full * v, w)
        out.append(chunk)
    if rem:
        out.append(grid[:rem].t().contiguous())  # (V, rem)
    return out


class Aggregator(nn.Module):
    """Alternating frame / global attention over ``S`` frames (see module docstring).

    Args (VGGT's names and defaults): img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
    num_register_tokens, qkv_bias, proj_bias, ffn_bias, patch_embed (``"conv"`` or a DINOv2 name),
    qk_norm, rope_freq (<=0 disables RoPE), init_values. Extras: ``layout``, ``temporal_window``,
    ``keep_layers`` (None = all), ``page4d`` (dict, see :data:`PAGE4D_DEFAULTS`).
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
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        patch_embed: str = "dinov2_vitl14_reg",
        qk_norm: bool = True,
        rope_freq: float = 100,
        init_values: float = 0.01,
        layout: str = "global",
        temporal_window: int = 5,
        keep_layers: Optional[Sequence[int]] = None,
        page4d: Optional[dict] = None,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; known: {LAYOUTS}")
        if "conv" in patch_embed:
            self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        else:
            self.patch_embed = DinoV2.from_name(patch_embed, img_size, patch_size, num_register_tokens)
            self.patch_embed.mask_token.requires_grad_(False)
            if self.patch_embed.embed_dim != embed_dim:
                raise ValueError(f"{patch_embed} has dim {self.patch_embed.embed_dim}, aggregator embed_dim is {embed_dim}")
        self.rope = RotaryPositionEmbedding2D(rope_freq) if rope_freq > 0 else None
        self.position_getter = PositionGetter() if self.rope is not None else None

        def make() -> nn.ModuleList:
            return nn.ModuleList(
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_bias, ffn_bias, init_values, qk_norm, self.rope)
                for _ in range(depth)
            )

        self.frame_blocks = make()
        self.global_blocks = make()
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, embed_dim))
        self.register_token = nn.Parameter(torch.randn(1, 2, num_register_tokens, embed_dim))
        nn.init.normal_(self.camera_token, std=1e-6)
        nn.init.normal_(self.register_token, std=1e-6)
        self.patch_start_idx = 1 + num_register_tokens
        self.depth = depth
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.layout = layout
        self.temporal_window = int(temporal_window)
        self.keep_layers = None if keep_layers is None else tuple(sorted(set(int(i) for i in keep_layers)))
        cfg = dict(PAGE4D_DEFAULTS)
        cfg.update(page4d or {})
        cfg["bias_blocks"] = tuple(cfg["bias_blocks"])
        self.page4d_cfg = cfg
        if cfg["enabled"]:
            self.spatial_mask_head = PageMaskPredictor(embed_dim)
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def fix_grid(self, height: int, width: int) -> None:
        """Freeze data-dependent parts for ``height x width`` images (ONNX / TensorRT export).

        Precomputes DINOv2's interpolated position embedding and sizes the RoPE tables to the grid, so the
        traced graph has neither ``interpolate`` on the position embedding nor a ``max()`` over positions.
        """
        h, w = height // self.patch_size, width // self.patch_size
        if hasattr(self.patch_embed, "fix_grid"):
            self.patch_embed.fix_grid(height, width)
        if self.rope is not None:
            self.rope.max_position = max(h, w) + 1

    # ------------------------------------------------------------------ patch embedding
    def embed_frames(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens of independent frames: ``images`` ``(N, 3, H, W)`` in [0, 1] -> ``(N, h*w, C)``.

        Depends only on each frame, so a sliding window can cache it per frame and pass it to :meth:`forward`.
        """
        x = (images - self._mean) / self._std
        return self.patch_embed(x)

    # ------------------------------------------------------------------ main pass
    def encode(
        self,
        images: Optional[torch.Tensor] = None,
        *,
        patch_tokens: Optional[torch.Tensor] = None,
        grid: Optional[Tuple[int, int]] = None,
        reference_index: int = 0,
    ) -> EncodedFrames:
        """The blocks' input: patch tokens with camera/register tokens prepended, and RoPE positions.

        Args:
            images: ``(B, S, 3, H, W)`` in [0, 1] (or give ``patch_tokens`` + ``grid``).
            patch_tokens: precomputed ``(B, S, h*w, C)`` from :meth:`embed_frames`.
            grid: ``(h, w)`` patch grid when ``patch_tokens`` is given.
            reference_index: frame that gets camera/register token 0.
        Returns:
            :class:`EncodedFrames` (tokens ``(B*S, P, C)``, positions ``(B*S, P, 2)`` or None).
        """
        if patch_tokens is None:
            if images is None:
                raise ValueError("give images or patch_tokens")
            b, s, ch, h_px, w_px = images.shape
            if ch != 3 or h_px % self.patch_size or w_px % self.patch_size:
                raise ValueError(f"images must be (B, S, 3, H, W) with H, W multiples of {self.patch_size}; got {tuple(images.shape)}")
            grid = (h_px // self.patch_size, w_px // self.patch_size)
            patch_tokens = self.embed_frames(images.reshape(b * s, *images.shape[2:])).view(b, s, -1, self.embed_dim)
        elif grid is None:
            raise ValueError("grid=(h, w) is required with patch_tokens")
        b, s, n_patch, c = patch_tokens.shape
        if n_patch != grid[0] * grid[1]:
            raise ValueError(f"{n_patch} patch tokens per frame do not form a {grid[0]}x{grid[1]} grid")
        if not 0 <= reference_index < s:
            raise ValueError(f"reference_index {reference_index} outside 0..{s - 1}")
        cam = expand_special_tokens(self.camera_token, b, s, reference_index)
        reg = expand_special_tokens(self.register_token, b, s, reference_index)
        tokens = torch.cat((cam, reg, patch_tokens.reshape(b * s, n_patch, c)), dim=1)
        pos = None
        if self.rope is not None:
            pos = self.position_getter(b * s, grid[0], grid[1], tokens.device) + 1
            pos = torch.cat((pos.new_zeros(b * s, self.patch_start_idx, 2), pos), dim=1)
        return EncodedFrames(tokens, pos, b, s, (int(grid[0]), int(grid[1])))

    def forward(
        self,
        images: Optional[torch.Tensor] = None,
        *,
        patch_tokens: Optional[torch.Tensor] = None,
        grid: Optional[Tuple[int, int]] = None,
        num_views: int = 1,
        reference_index: int = 0,
        layout: Optional[str] = None,
    ) -> Tuple[List[Optional[torch.Tensor]], int, Dict[str, torch.Tensor]]:
        """Run the blocks: :meth:`encode` then :meth:`forward_tokens`.

        Args:
            images: ``(B, S, 3, H, W)`` in [0, 1] (or give ``patch_tokens`` + ``grid``).
            patch_tokens: precomputed ``(B, S, h*w, C)`` from :meth:`embed_frames`.
            grid: ``(h, w)`` patch grid when ``patch_tokens`` is given.
            num_views: ``V`` (frames are time-major).
            reference_index: frame that gets camera/register token 0.
            layout: override of the constructor's layout.
        Returns:
            ``(layers, patch_start_idx, aux)``: ``layers`` has ``depth`` entries ``(B, S, P, 2C)`` or None;
            ``aux`` holds ``"page_static"`` ``(B, S, h, w)`` when PAGE-4D is enabled.
        """
        enc = self.encode(images, patch_tokens=patch_tokens, grid=grid, reference_index=reference_index)
        return self.forward_tokens(enc, num_views=num_views, layout=layout)

    def forward_tokens(
        self,
        enc: EncodedFrames,
        *,
        num_views: int = 1,
        layout: Optional[str] = None,
        keep: Union[None, str, Collection[int]] = "default",
    ) -> Tuple[List[Optional[torch.Tensor]], int, Dict[str, torch.Tensor]]:
        """The alternating blocks on :meth:`encode`'s output (returns as :meth:`forward`).

        ``keep``: layer indices to return (None: all); ``"default"``: :attr:`keep_layers`.
        """
        layout = layout or self.layout
        if isinstance(keep, str):
            if keep != "default":
                raise ValueError(f"keep must be None, 'default' or layer indices, got {keep!r}")
            keep = self.keep_layers
        tokens, pos, b, s, grid = enc
        p, c = tokens.shape[1], tokens.shape[2]
        cfg = self.page4d_cfg
        page_on = cfg["enabled"]
        key_bias = None
        aux: Dict[str, torch.Tensor] = {}
        outputs: List[Optional[torch.Tensor]] = []
        for i in range(self.depth):
            tokens = self.frame_blocks[i](tokens, pos=pos)  # (B*S, P, C)
            frame_out = tokens
            if page_on and i == cfg["mask_block"]:
                static = self.spatial_mask_head(tokens[:, self.patch_start_idx :].detach(), grid)
                aux["page_static"] = static.view(b, s, *grid)
                if cfg["strength"] != 0:
                    key_bias = page_key_bias(aux["page_static"], self.patch_start_idx, cfg["strength"], cfg["mode"])
            bias = key_bias if (key_bias is not None and cfg["bias_blocks"][0] <= i <= cfg["bias_blocks"][1]) else None
            tokens = self._global(i, tokens.view(b, s, p, c), pos, layout, num_views, bias).view(b * s, p, c)
            if keep is None or i in keep:
                outputs.append(torch.cat((frame_out.view(b, s, p, c), tokens.view(b, s, p, c)), dim=-1))
            else:
                outputs.append(None)
        return outputs, self.patch_start_idx, aux

    def _global(
        self,
        idx: int,
        tokens: torch.Tensor,
        pos: Optional[torch.Tensor],
        layout: str,
        num_views: int,
        key_bias: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """One global block on ``tokens`` ``(B, S, P, C)`` grouped per layout; returns ``(B, S, P, C)``."""
        b, s, p, c = tokens.shape
        block = self.global_blocks[idx]
        pos4 = None if pos is None else pos.view(b, s, p, 2)
        groups = frame_groups(layout, idx, s, num_views, self.temporal_window)
        if len(groups) == 1 and groups[0].shape[0] == 1 and groups[0].shape[1] == s:
            return self._run(block, tokens, pos4, key_bias)
        out = torch.empty_like(tokens)
        for g in groups:
            g = g.to(tokens.device)
            n_g, l = g.shape
            flat = g.reshape(-1)

            def take(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
                if x is None:
                    return None
                x = x.index_select(1, flat)  # (B, G*L, ...)
                return x.reshape(b * n_g, l, *x.shape[2:])

            y = self._run(block, take(tokens), take(pos4), take(key_bias))
            out[:, flat] = y.view(b, n_g * l, p, c)
        return out

    def _run(self, block: Block, tok: torch.Tensor, pos: Optional[torch.Tensor], key_bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``tok`` ``(G, L, P, C)``, ``pos`` ``(G, L, P, 2)``, ``key_bias`` ``(G, L, P)`` -> ``(G, L, P, C)``."""
        g, l, p, c = tok.shape
        kw = {}
        if key_bias is not None:
            special = torch.arange(self.patch_start_idx, device=tok.device)
            idx = (torch.arange(l, device=tok.device)[:, None] * p + special[None]).reshape(-1)
            kw["query_bias"] = (idx, key_bias.reshape(g, l * p))
        y = block(tok.reshape(g, l * p, c), pos=None if pos is None else pos.reshape(g, l * p, 2), **kw)
        return y.view(g, l, p, c)
