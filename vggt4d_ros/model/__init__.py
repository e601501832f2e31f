"""The VGGT-compatible 4D network (pure PyTorch, no ROS imports)."""

from .aggregator import Aggregator
from .checkpoint import CheckpointError, load_checkpoint
from .configs import available_configs, build_model_from_config, load_model_config
from .fourd_vggt import FourDVGGT, build_fourd_vggt
from .vggt4d import VGGT4D, build_model, build_vggt4d, scaled_layers

__all__ = [
    "Aggregator",
    "CheckpointError",
    "FourDVGGT",
    "VGGT4D",
    "available_configs",
    "build_fourd_vggt",
    "build_model",
    "build_model_from_config",
    "build_vggt4d",
    "load_checkpoint",
    "load_model_config",
    "scaled_layers",
]
