"""Two-layer feed-forward network (VGGT/DINOv2 key names ``fc1``/``fc2``)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` followed by dropout.

    Shapes: ``x`` ``(..., in_features)`` -> ``(..., out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden = hidden_features or in_features
        out = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, out, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))
