"""Output activations of the heads (VGGT's conventions).

Dense heads end in a convolution with ``output_dim`` channels; the last channel is a confidence logit
(unless the head has no confidence) and the others are the prediction. The camera head predicts a
9-vector ``[t (3), quaternion xyzw (4), field of view (h, w) (2)]`` whose parts get their own activation.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

POSE_ACTIVATIONS = ("linear", "inv_log", "exp", "relu")
DENSE_ACTIVATIONS = ("exp", "inv_log", "norm_exp", "linear", "relu", "sigmoid")
CONF_ACTIVATIONS = ("expp1", "expp0", "sigmoid", None)


def inverse_log_transform(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``sign(x) * log(1 + |x|)``: ``sign(y) * expm1(|y|)`` (any shape)."""
    return torch.sign(y) * torch.expm1(y.abs())


def base_pose_act(x: torch.Tensor, act_type: str = "linear") -> torch.Tensor:
    """Element-wise activation of one part of the pose encoding."""
    if act_type == "linear":
        return x
    if act_type == "inv_log":
        return inverse_log_transform(x)
    if act_type == "exp":
        return torch.exp(x)
    if act_type == "relu":
        return F.relu(x)
    raise ValueError(f"unknown pose activation {act_type!r}; expected one of {POSE_ACTIVATIONS}")


def activate_pose(
    pose_enc: torch.Tensor, trans_act: str = "linear", quat_act: str = "linear", fl_act: str = "linear"
) -> torch.Tensor:
    """Activate a raw pose encoding ``(..., 9)``: translation ``[:3]``, quaternion ``[3:7]``, FoV ``[7:]``."""
    t = base_pose_act(pose_enc[..., :3], trans_act)
    q = base_pose_act(pose_enc[..., 3:7], quat_act)
    fov = base_pose_act(pose_enc[..., 7:], fl_act)
    return torch.cat([t, q, fov], dim=-1)


def activate_head(
    out: torch.Tensor, activation: str = "inv_log", conf_activation: Optional[str] = "expp1"
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Split and activate a dense head's raw output.

    Args:
        out: ``(N, C, H, W)`` raw convolution output.
        activation: activation of the prediction channels.
        conf_activation: activation of the last channel (the confidence), or ``None`` when the head has
            no confidence channel (all ``C`` channels are the prediction).

    Returns:
        ``(pred, conf)``: ``pred`` is ``(N, H, W, C-1)`` (``(N, H, W, C)`` without confidence), ``conf`` is
        ``(N, H, W)`` or ``None``.
    """
    fmap = out.permute(0, 2, 3, 1)
    if conf_activation is None:
        x, conf = fmap, None
    else:
        x, conf = fmap[..., :-1], fmap[..., -1]

    if activation == "exp":
        pred = torch.exp(x)
    elif activation == "inv_log":
        pred = inverse_log_transform(x)
    elif activation == "norm_exp":
        norm = x.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        pred = x / norm * torch.expm1(norm)
    elif activation == "linear":
        pred = x
    elif activation == "relu":
        pred = F.relu(x)
    elif activation == "sigmoid":
        pred = torch.sigmoid(x)
    else:
        raise ValueError(f"unknown activation {activation!r}; expected one of {DENSE_ACTIVATIONS}")

    if conf is not None:
        if conf_activation == "expp1":
            conf = 1.0 + conf.exp()
        elif conf_activation == "expp0":
            conf = conf.exp()
        elif conf_activation == "sigmoid":
            conf = torch.sigmoid(conf)
        else:
            raise ValueError(f"unknown conf_activation {conf_activation!r}; expected one of {CONF_ACTIVATIONS}")
    return pred, conf
