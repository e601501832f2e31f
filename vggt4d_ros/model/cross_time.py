"""4D-VGGT v1.0's cross-time local fusion branch and its gated fusion with the global branch.

``CrossTimeLocalFusion`` (release key prefix ``cross_time_local_fusion.``): ``depth`` pairs of a frame block
(``frame_blocks.{i}``, attention within one frame; its own weights, not the global branch's) and a window
temporal block (``temporal_blocks.{i}``: a :class:`~.layers.Block` whose attention is a
:class:`~.layers.WindowAttention`, keys ``norm1, attn.{qkv,q_norm,k_norm,proj,relative_time_bias}, ls1, norm2,
mlp, ls2``). It starts from the same encoded tokens as the global branch (patch embedding, camera and register
tokens) and, at the kept layers, outputs ``cat(frame_i, temporal_i)`` ``(B, S, P, 2C)``.

``SpatiotemporalDenseFusion`` (``spatiotemporal_dense_fusion.``): at each of four taps ``i``,
``spatial_i + alpha_k * projection(norm(cat(spatial_i, temporal_i)))`` with ``norm`` a LayerNorm over ``4C``,
``projection`` ``4C -> 2C`` and ``alpha`` ``(4,)`` learned gates (zeros at init: the dense heads then read the
global branch unchanged).
"""

from __future__ import annotations

from functools import partial
from typing import Collection, List, Optional, Sequence

import torch
from torch import nn

from .aggregator import EncodedFrames
from .layers import Block, WindowAttention


class CrossTimeLocalFusion(nn.Module):
    """Alternating frame / window temporal blocks (module docstring).

    Args: embed_dim, depth, num_heads, mlp_ratio, qkv_bias, proj_bias, ffn_bias, init_values, qk_norm (as the
    aggregator's), rope (the aggregator's :class:`~.layers.RotaryPositionEmbedding2D` or None; shared, it holds
    no weights), window_size (odd).
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 proj_bias: bool, ffn_bias: bool, init_values: float, qk_norm: bool, rope: Optional[nn.Module],
                 window_size: int = 5) -> None:
        super().__init__()
        args = (embed_dim, num_heads, mlp_ratio, qkv_bias, proj_bias, ffn_bias, init_values, qk_norm, rope)
        self.frame_blocks = nn.ModuleList(Block(*args) for _ in range(depth))
        window = partial(WindowAttention, window_size=window_size)
        self.temporal_blocks = nn.ModuleList(Block(*args, attn_class=window) for _ in range(depth))
        self.depth = depth
        self.window_size = window_size

    def forward(self, enc: EncodedFrames, *, num_views: int = 1,
                keep: Optional[Collection[int]] = None) -> List[Optional[torch.Tensor]]:
        """Run the branch on the aggregator's encoded tokens.

        Args:
            enc: :meth:`~.aggregator.Aggregator.encode`'s output (tokens ``(B*S, P, C)``).
            num_views: ``V`` (frames time-major); each camera's window covers its own frames.
            keep: layers to output (None: all); blocks after the last kept layer are not run.
        Returns:
            ``depth`` entries ``(B, S, P, 2C)`` or None.
        """
        tokens, pos, b, s, _ = enc
        p, c = tokens.shape[1], tokens.shape[2]
        last = self.depth - 1 if keep is None else max(keep, default=-1)
        outputs: List[Optional[torch.Tensor]] = [None] * self.depth
        for i in range(last + 1):
            frame = self.frame_blocks[i](tokens.reshape(b * s, p, c), pos=pos).view(b, s, p, c)
            tokens = self.temporal_blocks[i](frame, pos=pos, num_views=num_views)
            if keep is None or i in keep:
                outputs[i] = torch.cat((frame, tokens), dim=-1)
        return outputs

    @torch.no_grad()
    def initialize_from(self, frame_blocks: nn.ModuleList, global_blocks: nn.ModuleList) -> None:
        """Copy a global branch's frame and global blocks into this branch, time bias zero (how the release
        initialises the branch from VGGT weights before training; the copies share no storage)."""
        self.frame_blocks.load_state_dict(frame_blocks.state_dict(), strict=True)
        for temporal, spatial in zip(self.temporal_blocks, global_blocks):
            weights = {k: v.clone() for k, v in spatial.state_dict().items()}
            weights["attn.relative_time_bias"] = torch.zeros_like(temporal.attn.relative_time_bias)
            temporal.load_state_dict(weights, strict=True)


class SpatiotemporalDenseFusion(nn.Module):
    """Gated residual merge of the two branches at four taps (module docstring).

    Args:
        dim_in: token width of a layer output (``2C``).
        taps: the four layer indices fused (the dense heads' ``intermediate_layer_idx``).
    """

    def __init__(self, dim_in: int, taps: Sequence[int]) -> None:
        super().__init__()
        self.indices = tuple(int(i) for i in taps)
        if len(self.indices) != 4 or len(set(self.indices)) != 4:
            raise ValueError(f"dense fusion needs four distinct taps, got {list(taps)}")
        self.norm = nn.LayerNorm(2 * dim_in)
        self.projection = nn.Linear(2 * dim_in, dim_in)
        self.alpha = nn.Parameter(torch.zeros(4))

    def forward(self, spatial: Sequence[Optional[torch.Tensor]],
                temporal: Sequence[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
        """``spatial`` / ``temporal``: per-layer ``(B, S, P, dim_in)`` lists -> ``spatial`` with the taps fused."""
        if len(spatial) != len(temporal):
            raise ValueError(f"branch depths differ: {len(spatial)} vs {len(temporal)}")
        out = list(spatial)
        for gate, i in zip(self.alpha, self.indices):
            s, t = spatial[i], temporal[i]
            if s is None or t is None or s.shape != t.shape:
                raise ValueError(f"fusion tap {i} missing or mismatched in one branch")
            delta = self.projection(self.norm(torch.cat((s, t), dim=-1))).to(s.dtype)
            out[i] = s + gate.to(s.dtype) * delta
        return out
