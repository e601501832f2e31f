"""The VGGT-compatible 4D network (pure PyTorch, no ROS imports)."""

from .aggregator import Aggregator
from .checkpoint import CheckpointError, load_checkpoint
from .vggt4d import VGGT4D, build_model, scaled_layers

__all__ = ["Aggregator", "CheckpointError", "VGGT4D", "build_model", "load_checkpoint", "scaled_layers"]
