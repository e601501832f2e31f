"""Decision-threshold calibration of PAGE-4D's mask predictor, folded into the weights.

The predictor is trained against patch-pooled ground truth (the fraction of a patch's pixels that move), so its
output reads "fraction moving", and upsampled bilinearly a 0.5 threshold keeps only the cores of objects
larger than a patch: the held-out IoU of the v1 tiny weights is 0.18 at 0.5 and 0.27-0.28 at 0.2-0.3. The node
publishes ``mask > mask.threshold`` (0.5) and drops those pixels from clouds and the map, so the threshold that
maximises IoU is folded into the last layer's bias instead of changing every consumer's threshold:
``page = 1 - sigmoid(z)``; ``page > t`` iff ``z < log((1 - t) / t)``, so subtracting ``log((1 - t) / t)`` from the
bias makes ``page > 0.5`` mean what ``page > t`` meant (the ranking, hence the AUC, is unchanged; with
``page4d.strength: 0`` nothing else reads the score).

CLI::

    python -m vggt4d_ros.training.calibrate --checkpoint IN.safetensors --out OUT.safetensors [--model tiny]

chooses ``t`` on the held-out family's selection seeds (:data:`SEEDS`) and writes the shifted weights; it prints
the IoU per threshold.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .data import WindowConfig, eval_windows

BIAS_KEYS = ("aggregator.spatial_mask_head.head0.4.bias", "cross_view_global_fusion.spatial_mask_head.head0.4.bias")
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
SEEDS = (0, 1, 2, 3, 4, 5)


def bias_shift(threshold: float) -> float:
    """What to subtract from the predictor's last bias so that 0.5 decides as ``threshold`` did."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    return math.log((1.0 - threshold) / threshold)


def shift_page_bias(state: Dict[str, torch.Tensor], threshold: float) -> Dict[str, torch.Tensor]:
    """A copy of ``state`` whose PAGE-4D mask predictor decides at 0.5 as the original did at ``threshold``."""
    keys = [k for k in BIAS_KEYS if k in state]
    if not keys:
        raise KeyError("the state has no PAGE-4D mask predictor (spatial_mask_head)")
    out = dict(state)
    for k in keys:
        out[k] = state[k] - bias_shift(threshold)
    return out


@torch.no_grad()
def page_iou_by_threshold(model: torch.nn.Module, cfg: WindowConfig, seeds: Sequence[int] = SEEDS,
                          thresholds: Sequence[float] = THRESHOLDS) -> Dict[float, float]:
    """Pooled IoU of the upsampled PAGE-4D mask at each threshold over one window per seed."""
    model = model.eval()
    inter = {t: 0 for t in thresholds}
    union = {t: 0 for t in thresholds}
    for _seed, w in eval_windows(cfg, seeds, 1):
        out = model(w["images"][None], num_views=int(w["num_views"]), reference_index=0)
        H, W = w["images"].shape[-2:]
        pm = F.interpolate(out["page_mask"][0].float()[:, None], size=(H, W), mode="bilinear",
                           align_corners=False)[:, 0].numpy()
        gt = w["dynamic_mask"].numpy() > 0.5
        for t in thresholds:
            p = pm > t
            inter[t] += int((p & gt).sum())
            union[t] += int((p | gt).sum())
    return {t: inter[t] / union[t] if union[t] else float("nan") for t in thresholds}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="vggt4d-calibrate-mask", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--threshold", type=float, default=None, help="use this threshold instead of choosing one")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from safetensors.torch import load_file, save_file

    from ..model import load_checkpoint
    from ..model.configs import build_model_from_config
    from .evaluate import HELDOUT

    model = build_model_from_config(a.model)
    load_checkpoint(model, a.checkpoint)
    ious = page_iou_by_threshold(model, HELDOUT)
    t = a.threshold if a.threshold is not None else max(ious, key=lambda k: ious[k])
    state = shift_page_bias(load_file(a.checkpoint), t)
    save_file({k: v.contiguous() for k, v in state.items()}, a.out,
              metadata={"page_mask_threshold_folded": str(t), "source": str(a.checkpoint)})
    print(json.dumps({"iou_by_threshold": {str(k): round(v, 4) for k, v in ious.items()}, "threshold": t,
                      "bias_shift": bias_shift(t), "out": a.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
