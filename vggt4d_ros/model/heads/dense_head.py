"""4D-VGGT v1.0's dense head: VGGT's depth and point-map DPT heads side by side (keys ``depth_head.*``,
``point_head.*``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .dpt_head import DPTHead


class DenseHead(nn.Module):
    """The release's dense head: a depth DPT (``depth_head``) and a point-map DPT (``point_head``), either None."""

    def __init__(self, dim_in: int, patch_size: int, enable_depth: bool, enable_point: bool, **dpt: Any) -> None:
        super().__init__()
        self.depth_head = (DPTHead(dim_in, patch_size, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
                           if enable_depth else None)
        self.point_head = (DPTHead(dim_in, patch_size, output_dim=4, activation="inv_log", conf_activation="expp1",
                                   **dpt) if enable_point else None)
