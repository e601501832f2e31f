"""Typed results of :class:`vggt4d_ros.inference.predictor.Predictor`.

Per-frame results are numpy arrays at the INPUT image size and in input pixels (pixel centres at integer
coordinates, the OpenCV / ROS convention); the raw model-grid tensors stay available for callers that need
them (window alignment, caching).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .preprocess import PixelMap

__all__ = ["FramePrediction", "WindowPrediction"]


@dataclass
class FramePrediction:
    """Everything predicted for one frame of a window.

    Attributes:
        index: position ``s`` in the window (time-major: ``s = t * V + v``).
        time_index: ``t``; view_index: ``v``.
        image_hw: (H, W) of the input frame.
        cam_from_world: (4, 4) float64, OpenCV axes; world = the reference frame's camera.
        intrinsics: (3, 3) float64 in input pixels (the given known intrinsics when supplied).
        intrinsics_known: True when ``intrinsics`` were given, not predicted.
        depth: (H, W) float32 z-depth (window scale, not metric), NaN where invalid / cropped away; None when
            the frame was not among the predictor's ``dense_frames`` (as are the four dense fields below).
        depth_conf: (H, W) float32 (VGGT's 1 + exp(x) confidence), NaN where cropped away; or None.
        points_world: (H, W, 3) float32 in the world (reference camera) frame, NaN where invalid; or None.
        points_conf: (H, W) float32 confidence of the points (depth confidence for depth-derived points); or None.
        dynamic_mask: (H, W) float32 in [0, 1] (probability / vote that the pixel moves), or None (no mask
            source, or not a dense frame).
        tracks: (N, 2) float32 input pixels of the query points in this frame, or None.
        track_vis, track_conf: (N,) float32 visibility / confidence, or None.
        pixel_map: the input <-> model-grid mapping of this frame.
    """

    index: int
    time_index: int
    view_index: int
    image_hw: Tuple[int, int]
    cam_from_world: np.ndarray
    intrinsics: np.ndarray
    intrinsics_known: bool
    depth: Optional[np.ndarray]
    depth_conf: Optional[np.ndarray]
    points_world: Optional[np.ndarray]
    points_conf: Optional[np.ndarray]
    dynamic_mask: Optional[np.ndarray]
    tracks: Optional[np.ndarray]
    track_vis: Optional[np.ndarray]
    track_conf: Optional[np.ndarray]
    pixel_map: PixelMap

    @property
    def world_from_cam(self) -> np.ndarray:
        """(4, 4) float64 camera pose in the world (inverse of ``cam_from_world``)."""
        R = self.cam_from_world[:3, :3]
        t = self.cam_from_world[:3, 3]
        out = np.eye(4)
        out[:3, :3] = R.T
        out[:3, 3] = -R.T @ t
        return out


@dataclass
class WindowPrediction:
    """One window's predictions.

    Attributes:
        frames: ``S = T * V`` :class:`FramePrediction`, time-major.
        num_views: V; num_times: T.
        reference_index: frame whose camera is the world frame (its ``cam_from_world`` is the identity).
        model_hw: (H, W) of the model grid.
        cam_from_world: (S, 4, 4) float64 torch tensor (rebased, same as the per-frame values).
        model_intrinsics: (S, 3, 3) float64 torch tensor in model-grid pixels (the ones used for geometry).
        raw: the model's outputs on the model grid (batch dim removed, float32, on the model's device):
            ``pose_enc`` (S, 9), ``depth`` (n, Hm, Wm), ``depth_conf``, ``world_points`` (n, Hm, Wm, 3, in the
            model's own world frame), ``world_points_conf``, ``dynamic_mask_logits`` and ``dynamic_mask``
            (n, Hm, Wm) when computed, ``page_mask`` (S, h, w) with PAGE-4D, ``track`` (S, N, 2) / ``vis`` /
            ``conf`` with queries, ``images`` (S, 3, Hm, Wm) model input. ``n = len(dense_frames)``: row ``j``
            of the dense entries is frame ``dense_frames[j]``.
        dynamic_mask_source: "head", "page4d", "geometric" or "none" ("flow" once the pipeline replaced it, mask.source flow).
        timing_ms: "preprocess", "model", "postprocess", "total" (wall clock, device synchronised).
        dense_frames: sorted indices of the frames with dense outputs (every frame unless the predictor was
            asked for a subset); the other frames' dense fields are None.
    """

    frames: List[FramePrediction]
    num_views: int
    num_times: int
    reference_index: int
    model_hw: Tuple[int, int]
    cam_from_world: torch.Tensor
    model_intrinsics: torch.Tensor
    raw: Dict[str, torch.Tensor] = field(default_factory=dict)
    dynamic_mask_source: str = "none"
    timing_ms: Dict[str, float] = field(default_factory=dict)
    dense_frames: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.dense_frames:
            self.dense_frames = tuple(range(len(self.frames)))

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, time_index: int, view_index: int = 0) -> FramePrediction:
        """The frame at time step ``time_index`` (negative counts from the newest) of view ``view_index``."""
        t = time_index % self.num_times
        return self.frames[t * self.num_views + view_index]
