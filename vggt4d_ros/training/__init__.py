"""Training and evaluation of the model on synthetic dynamic multi-camera windows (no ROS imports)."""

from .data import EVAL_SEEDS, TRAIN_SEED_BASE, WindowConfig, WindowSampler, make_window
from .losses import LossConfig, multitask_loss
from .trainer import OptimConfig, Trainer, apply_trainable, lr_factor, seed_everything

__all__ = [
    "EVAL_SEEDS", "TRAIN_SEED_BASE", "WindowConfig", "WindowSampler", "make_window", "LossConfig",
    "multitask_loss", "OptimConfig", "Trainer", "apply_trainable", "lr_factor", "seed_everything",
]
