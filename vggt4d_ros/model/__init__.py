"""The VGGT-compatible 4D network (pure PyTorch, no ROS imports)."""

from .aggregator import Aggregator
from .checkpoint import CheckpointError, load_checkpoint
from .configs import available_configs, build_model_from_config, load_model_config
from .vggt4d import VGGT4D, build_model, scaled_layers

__all__ = [
    "Aggregator",
    "CheckpointError",
    "VGGT4D",
    "available_configs",
    "build_model",
    "build_model_from_config",
    "load_checkpoint",
    "load_model_config",
    "scaled_layers",
]
