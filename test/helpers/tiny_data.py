"""Small deterministic inputs for the predictor tests: random-weight tiny models and shifting textures."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np


def tiny_model(seed: int = 0):
    """The ``tiny`` configuration with deterministic random weights, in eval mode."""
    import torch

    from vggt4d_ros.model import build_model_from_config

    torch.manual_seed(seed)
    return build_model_from_config("tiny").eval()


def shifting_frames(n: int, hw: Tuple[int, int] = (90, 160), shift: int = 3, seed: int = 0) -> List[np.ndarray]:
    """``n`` (H, W, 3) uint8 frames of one random texture rolled ``shift`` px further each frame: a
    plausible window (a camera panning over a scene) rather than pure noise."""
    base = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    return [np.roll(base, shift=shift * i, axis=1) for i in range(n)]
