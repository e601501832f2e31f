"""Inference: preprocessing, the window Predictor, typed results and training-free dynamic masks.

No ROS imports here.
"""

from .dynamic_mask import geometric_dynamic_mask
from .predictor import PRECISIONS, Predictor
from .preprocess import PixelMap, compute_pixel_map, model_to_input, model_to_input_channels, preprocess_frames
from .types import FramePrediction, WindowPrediction

__all__ = [
    "FramePrediction",
    "PRECISIONS",
    "PixelMap",
    "Predictor",
    "WindowPrediction",
    "compute_pixel_map",
    "geometric_dynamic_mask",
    "model_to_input",
    "model_to_input_channels",
    "preprocess_frames",
]
