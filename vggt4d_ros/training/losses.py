"""4D-VGGT's multi-task loss: camera + depth + point map + dynamic mask + tracks (each switchable).

    L = w_cam L_cam + w_depth L_depth + w_point L_point + w_mask L_mask + w_track L_track

- Camera: L1 (or Huber) between predicted and ground-truth pose encodings (translation, quaternion, field
  of view), summed over the camera head's refinement iterations with weights ``gamma^(n-1-i)`` (the last
  iteration weighs 1), as in VGGT.
- Depth / points: VGGT's aleatoric regression ``c * |x - x_gt| - alpha * log(c)`` over valid pixels, plus a
  confidence-weighted image-gradient term (differences of neighbouring pixels' errors) and the plain L1
  error; the largest errors above the ``valid_range`` quantile are ignored.
- Mask: binary cross-entropy with logits against the ground-truth dynamic mask, plus optionally a soft-IoU
  (Jaccard) term on the sigmoid, which targets the IoU the evaluation reports. A positive weight ``w`` in the
  BCE moves the decision boundary: ``sigmoid(logit) > 0.5`` then means ``p(dynamic) > 1 / (1 + w)``, so the
  node's 0.5 threshold marks too much as moving (the shipped weights had ``w = 8``: about half of each image).
  Keep ``mask_pos_weight`` at 1 (calibrated) and let the soft-IoU term handle the class imbalance.
- Tracks: L1 on the pixel positions of visible ground-truth tracks + BCE of the visibility logits.
All inputs follow :func:`vggt4d_ros.training.data.make_window` (batched) and the model's output dict.
"""

from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F


@dataclass
class LossConfig:
    """Weights (0 disables a term) and the settings of each term."""

    camera: float = 5.0
    depth: float = 1.0
    point: float = 1.0
    mask: float = 1.0
    track: float = 0.0
    page_mask: float = 0.0  # PAGE-4D patch mask predictor (aggregator.spatial_mask_head), BCE vs pooled GT
    camera_loss: str = "l1"  # l1 | huber
    camera_gamma: float = 0.6
    camera_weights: tuple = (1.0, 1.0, 0.5)  # translation, rotation, field of view
    conf_alpha: float = 0.2
    gradient: float = 1.0  # weight of the gradient term inside depth / point losses
    reg: float = 1.0  # weight of the plain (unweighted) L1 term inside depth / point losses
    valid_range: float = 0.98  # ignore pixels whose error is above this quantile (1: keep all)
    mask_pos_weight: float = 4.0
    mask_iou: float = 0.0  # weight of the soft-IoU (Jaccard) term of the mask loss
    vis_weight: float = 0.05
    track_scale: float = 0.0  # 0: pixels divided by the image width; else this divisor

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "LossConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown loss settings {sorted(unknown)}")
        if "camera_weights" in d:
            d["camera_weights"] = tuple(float(x) for x in d["camera_weights"])
        return cls(**d)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _reg(diff: torch.Tensor, kind: str) -> torch.Tensor:
    return F.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=0.1) if kind == "huber" else diff.abs()


def camera_loss(pose_list, gt: torch.Tensor, cfg: LossConfig) -> Dict[str, torch.Tensor]:
    """Pose-encoding loss over refinement iterations.

    Args:
        pose_list: list of (B, S, 9) predictions (last = final).
        gt: (B, S, 9) ground-truth encoding.
    Returns:
        dict with ``cam_T``, ``cam_R``, ``cam_FoV`` and ``camera`` (weighted sum).
    """
    n = len(pose_list)
    wT, wR, wF = cfg.camera_weights
    tot = {"cam_T": 0.0, "cam_R": 0.0, "cam_FoV": 0.0}
    norm = 0.0
    for i, p in enumerate(pose_list):
        w = cfg.camera_gamma ** (n - 1 - i)
        norm += w
        d = p.float() - gt
        tot["cam_T"] = tot["cam_T"] + w * _reg(d[..., :3], cfg.camera_loss).mean()
        tot["cam_R"] = tot["cam_R"] + w * _reg(d[..., 3:7], cfg.camera_loss).mean()
        tot["cam_FoV"] = tot["cam_FoV"] + w * _reg(d[..., 7:], cfg.camera_loss).mean()
    out = {k: v / norm for k, v in tot.items()}
    out["camera"] = wT * out["cam_T"] + wR * out["cam_R"] + wF * out["cam_FoV"]
    return out


def _grad_term(err: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Confidence-weighted L1 of the spatial gradients of the signed error.

    err (B, S, H, W, C) signed error, conf (B, S, H, W), valid (B, S, H, W) bool.
    """
    total, count = err.new_zeros(()), err.new_zeros(())
    for dim in (2, 3):
        n = err.shape[dim]
        a0, a1 = err.narrow(dim, 0, n - 1), err.narrow(dim, 1, n - 1)
        v = valid.narrow(dim, 0, n - 1) & valid.narrow(dim, 1, n - 1)
        c = 0.5 * (conf.narrow(dim, 0, n - 1) + conf.narrow(dim, 1, n - 1))
        g = (a1 - a0).abs().sum(-1)
        total = total + (g * c * v).sum()
        count = count + v.sum()
    return total / count.clamp(min=1)


def conf_regression_loss(pred: torch.Tensor, conf: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor,
                         alpha: float, gradient: float, reg: float = 1.0,
                         valid_range: float = 1.0) -> Dict[str, torch.Tensor]:
    """Aleatoric regression ``c*|x-x_gt| - alpha*log c`` + ``gradient`` x gradient term + ``reg`` x plain L1.

    Args:
        pred, gt: (B, S, H, W, C); conf: (B, S, H, W) > 0; valid: (B, S, H, W) bool.
        valid_range: pixels whose error exceeds this quantile of the valid errors are ignored (outliers).
    Returns:
        dict: ``conf`` (aleatoric mean), ``grad``, ``l1`` (unweighted mean error), ``total``.
    """
    valid = valid & torch.isfinite(gt).all(-1)
    gt = torch.where(valid[..., None], gt, torch.zeros_like(gt))
    err = pred.float() - gt
    e = err.norm(dim=-1) if err.shape[-1] > 1 else err[..., 0].abs()
    if 0.0 < valid_range < 1.0 and bool(valid.any()):
        ev = e.detach()[valid]
        if ev.numel() > 1_000_000:
            ev = ev[torch.randperm(ev.numel(), device=ev.device)[:1_000_000]]
        valid = valid & (e.detach() <= torch.quantile(ev, valid_range))
    n = valid.sum().clamp(min=1)
    c = conf.float()
    conf_term = ((c * e - alpha * torch.log(c)) * valid).sum() / n
    l1 = (e * valid).sum() / n
    grad = _grad_term(err, c, valid) if gradient > 0 else err.new_zeros(())
    return {"conf": conf_term, "grad": grad, "l1": l1, "total": conf_term + gradient * grad + reg * l1}


def mask_loss(logits: torch.Tensor, gt: torch.Tensor, pos_weight: float, iou_weight: float = 0.0) -> torch.Tensor:
    """BCE with logits (+ ``iou_weight`` x soft-IoU loss per window); logits and gt (B, S, H, W)."""
    pw = torch.tensor(pos_weight, dtype=torch.float32, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits.float(), gt.float(), pos_weight=pw)
    if iou_weight > 0:
        loss = loss + iou_weight * soft_iou_loss(logits, gt)
    return loss


def soft_iou_loss(logits: torch.Tensor, gt: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - sum(p g) / sum(p + g - p g)`` per batch item (all frames pooled), averaged; ``eps`` pixels keep
    windows without moving pixels from dominating (their loss is the fraction of pixels marked moving)."""
    p = torch.sigmoid(logits.float()).flatten(1)
    g = gt.float().flatten(1)
    inter = (p * g).sum(1)
    union = (p + g - p * g).sum(1)
    return (1.0 - (inter + eps) / (union + eps)).mean()


def track_loss(track: torch.Tensor, vis: torch.Tensor, gt: torch.Tensor, gt_vis: torch.Tensor,
               valid: torch.Tensor, scale: float, vis_weight: float) -> Dict[str, torch.Tensor]:
    """Track position L1 (visible GT points, in ``1/scale`` pixels) and visibility BCE.

    track (B,S,N,2) pixels, vis (B,S,N) probabilities in (0,1) (the model applies a sigmoid), gt (B,S,N,2),
    gt_vis (B,S,N) 0/1, valid (B,N) bool queries.
    """
    m = (gt_vis > 0.5) & valid[:, None]
    d = (track.float() - gt).abs().sum(-1) / scale
    pos = (d * m).sum() / m.sum().clamp(min=1)
    vm = valid[:, None].expand_as(gt_vis).float()
    p = vis.float().clamp(1e-5, 1 - 1e-5)
    bce = F.binary_cross_entropy(p, gt_vis.float(), weight=vm, reduction="sum") / vm.sum().clamp(min=1)
    return {"track_pos": pos, "track_vis": bce, "track": pos + vis_weight * bce}


def multitask_loss(out: Dict[str, Any], batch: Dict[str, torch.Tensor], cfg: LossConfig) -> Dict[str, torch.Tensor]:
    """The weighted multi-task loss; returns every term (detached copies are for logging) and ``loss``."""
    terms: Dict[str, torch.Tensor] = {}
    loss = batch["images"].new_zeros(())
    valid = batch["valid"]
    if cfg.camera > 0 and "pose_enc_list" in out:
        c = camera_loss(out["pose_enc_list"], batch["pose_enc"], cfg)
        terms.update(c)
        loss = loss + cfg.camera * c["camera"]
    if cfg.depth > 0 and "depth" in out:
        d = conf_regression_loss(out["depth"], out["depth_conf"], batch["depth"][..., None], valid,
                                 cfg.conf_alpha, cfg.gradient, cfg.reg, cfg.valid_range)
        terms.update({"depth": d["total"], "depth_l1": d["l1"], "depth_grad": d["grad"]})
        loss = loss + cfg.depth * d["total"]
    if cfg.point > 0 and "world_points" in out:
        p = conf_regression_loss(out["world_points"], out["world_points_conf"], batch["world_points"], valid,
                                 cfg.conf_alpha, cfg.gradient, cfg.reg, cfg.valid_range)
        terms.update({"point": p["total"], "point_l1": p["l1"], "point_grad": p["grad"]})
        loss = loss + cfg.point * p["total"]
    if cfg.mask > 0 and "dynamic_mask_logits" in out:
        m = mask_loss(out["dynamic_mask_logits"], batch["dynamic_mask"], cfg.mask_pos_weight, cfg.mask_iou)
        terms["mask"] = m
        loss = loss + cfg.mask * m
    if cfg.page_mask > 0 and "page_mask" in out:
        pm = out["page_mask"].float()
        gt = F.adaptive_avg_pool2d(batch["dynamic_mask"].flatten(0, 1)[:, None], pm.shape[-2:]).view_as(pm)
        l = F.binary_cross_entropy(pm.clamp(1e-5, 1 - 1e-5), gt)
        terms["page_mask"] = l
        loss = loss + cfg.page_mask * l
    if cfg.track > 0 and "track" in out:
        scale = cfg.track_scale or float(batch["images"].shape[-1])
        t = track_loss(out["track"], out["vis"], batch["tracks"], batch["track_vis"], batch["track_valid"], scale,
                       cfg.vis_weight)
        terms.update(t)
        loss = loss + cfg.track * t["track"]
    terms["loss"] = loss
    return terms
