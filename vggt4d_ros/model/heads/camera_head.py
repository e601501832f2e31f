"""Camera head: iterative refinement of a pose encoding from the camera tokens (VGGT layout).

State-dict keys: ``trunk.{i}.*`` (transformer blocks), ``token_norm``, ``trunk_norm``, ``empty_pose_tokens``,
``embed_pose``, ``poseLN_modulation.1``, ``pose_branch.fc1/fc2`` (``adaln_norm`` has no parameters).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn

from ..layers import Block, Mlp
from .head_act import activate_pose


class CameraHead(nn.Module):
    """Predicts ``(B, S, 9)`` pose encodings ``[t, quat xyzw, fov_h, fov_w]`` with adaLN-conditioned refinement.

    Each iteration embeds the current (detached) estimate (a learned empty pose first), turns it into
    shift/scale/gate that modulate the normalised camera tokens, runs the trunk, and adds the predicted
    delta to the estimate. The camera tokens themselves are not updated between iterations.
    """

    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        pose_encoding_type: str = "absT_quaR_FoV",
        num_heads: int = 16,
        mlp_ratio: int = 4,
        init_values: float = 0.01,
        trans_act: str = "linear",
        quat_act: str = "linear",
        fl_act: str = "relu",
    ) -> None:
        super().__init__()
        if pose_encoding_type != "absT_quaR_FoV":
            raise ValueError(f"unsupported pose encoding {pose_encoding_type!r}")
        self.target_dim = 9
        self.trans_act, self.quat_act, self.fl_act = trans_act, quat_act, fl_act
        self.trunk_depth = trunk_depth
        self.trunk = nn.Sequential(
            *[Block(dim_in, num_heads=num_heads, mlp_ratio=mlp_ratio, init_values=init_values) for _ in range(trunk_depth)]
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, self.target_dim))
        self.embed_pose = nn.Linear(self.target_dim, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(in_features=dim_in, hidden_features=dim_in // 2, out_features=self.target_dim)

    def forward(self, aggregated_tokens_list: Sequence[torch.Tensor], num_iterations: int = 4) -> List[torch.Tensor]:
        """Pose encodings from the last layer's camera tokens (token 0 of each frame).

        Args:
            aggregated_tokens_list: per-layer tokens; only the last entry ``(B, S, P, dim_in)`` is read.
            num_iterations: refinement steps.
        Returns:
            ``num_iterations`` activated encodings ``(B, S, 9)``; the last is the final estimate.
        """
        tokens = aggregated_tokens_list[-1]
        if tokens is None:
            raise ValueError("CameraHead needs the last aggregator layer, got None")
        cam = self.token_norm(tokens[:, :, 0])
        return self.refine(cam, num_iterations)

    def refine(self, cam_tokens: torch.Tensor, num_iterations: int = 4) -> List[torch.Tensor]:
        """Iterative refinement on normalised camera tokens ``(B, S, dim_in)``."""
        B, S, _ = cam_tokens.shape
        normed = self.adaln_norm(cam_tokens)
        pose = None
        out: List[torch.Tensor] = []
        for _ in range(num_iterations):
            cond = self.empty_pose_tokens.expand(B, S, -1) if pose is None else pose.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(cond)).chunk(3, dim=-1)
            x = gate * (normed * (1 + scale) + shift) + cam_tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            pose = delta if pose is None else pose + delta
            out.append(activate_pose(pose, trans_act=self.trans_act, quat_act=self.quat_act, fl_act=self.fl_act))
        return out
