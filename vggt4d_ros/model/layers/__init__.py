"""Transformer building blocks with VGGT/DINOv2 state-dict key names."""

from .attention import Attention
from .block import Block
from .dinov2 import DINOV2_SIZES, DinoV2
from .layer_scale import LayerScale
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .rope import PositionGetter, RotaryPositionEmbedding2D, grid_positions
from .window_attention import WindowAttention, window_frame_indices

__all__ = [
    "Attention",
    "Block",
    "DINOV2_SIZES",
    "DinoV2",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "PositionGetter",
    "RotaryPositionEmbedding2D",
    "WindowAttention",
    "grid_positions",
    "window_frame_indices",
]
