"""Prediction heads over the aggregator's tokens, state_dict-compatible with VGGT.

``CameraHead`` (pose encodings), ``DPTHead`` (depth / point map / dense mask logits / features) and
``TrackHead`` (point tracks). Heads read per-layer token lists ``(B, S, P, 2048)``; entries a head does
not read may be None.
"""

from .camera_head import CameraHead
from .dense_head import DenseHead
from .dpt_head import DPTHead
from .head_act import activate_head, activate_pose, inverse_log_transform
from .track_head import TrackHead
from .track_modules import BaseTrackerPredictor

__all__ = [
    "BaseTrackerPredictor",
    "CameraHead",
    "DenseHead",
    "DPTHead",
    "TrackHead",
    "activate_head",
    "activate_pose",
    "inverse_log_transform",
]
