"""The iterative point tracker used by the track head (co-tracker/VGGSfM style, VGGT's key layout)."""

from .base_track_predictor import BaseTrackerPredictor
from .blocks import CorrBlock, EfficientUpdateFormer
from .modules import AttnBlock, CrossAttnBlock

__all__ = ["AttnBlock", "BaseTrackerPredictor", "CorrBlock", "CrossAttnBlock", "EfficientUpdateFormer"]
