"""Held-out evaluation on synthetic windows (seeds 0..9 by default, disjoint from training seeds >= 1000).

Metrics (model and trivial baselines, so the numbers mean something):

- depth AbsRel and delta<1.25 after median scale alignment, per frame (``*_frame``) and per window
  (``*_window``: one scale for all frames of the window), against the metric ground truth;
- camera ATE: RMSE of the camera centres after a Sim(3) (Umeyama) alignment of all ``S = V*T`` centres of a
  window to the ground truth, as a percentage of the trajectory length (mean path length of one camera over
  the window) and in metres; rotation error in degrees after the alignment;
- dynamic-mask IoU (threshold 0.5), pooled over all pixels (``mask_iou``) and averaged over windows with
  moving pixels (``mask_iou_mean``), and pixel accuracy, for the dense mask head (``head/...``, sigmoid of the
  logits), PAGE-4D's patch mask (``page/...``, bilinearly upsampled to pixels) and, as ``model/...``, the one
  the node publishes for this model (the Predictor's choice: the config's ``inference: {dynamic_mask}``, else
  the head);
- tracks (models with a track head): median end-point error in pixels of the ground-truth points visible
  in frame 0, over the other frames where they are visible (``model/track_epe_median``), beside the static
  baseline (the query position).

Baselines: ``mean_depth`` (a constant depth), ``constant_pose`` (every camera at the origin), ``all_static``
(no dynamic pixel) and ``all_dynamic`` masks, ``static_points`` tracks.

Scene families (``--family``): ``legacy`` (the original renderer set-up, as the v1 weights were evaluated) or
``heldout`` (:data:`vggt4d_ros.training.data.FAMILIES`: texture patterns, a moving shape and room sizes that
training never sees, at 4:3 and 16:9, one and two cameras; :data:`HELDOUT`).

CLI: ``python -m vggt4d_ros.training.evaluate --checkpoint CKPT [--model tiny] [--family heldout] [--out m.json]``;
``--select RUN_DIR`` evaluates every ``snapshots/step-*.safetensors`` of a run and prints the best (the
checkpoint selection of the training recipe: ``selection_score``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..cli_util import strip_ros_args
from ..geometry import pose_encoding_to_extri_intri
from ..geometry.align import umeyama_checked
from .data import EVAL_SEEDS, WindowConfig, eval_windows

#: the held-out family as evaluated (and used for checkpoint selection): 16:9 and 4:3, two cameras and one
HELDOUT = WindowConfig(family="heldout", num_views=2, views=[2, 1], sizes=[(140, 252), (182, 252)],
                       moving_objects=(1, 4), texture_px=128, duration_s=4.0)


def depth_errors(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None,
                 per_frame: bool = True) -> Tuple[float, float]:
    """Median-aligned AbsRel and delta<1.25.

    Args:
        pred, gt: (S, H, W) depths (any scale for ``pred``; ``gt`` > 0 where valid).
        valid: (S, H, W) bool or None (gt > 0 and finite).
        per_frame: one median scale per frame (True) or one for the whole stack (False).
    Returns:
        (abs_rel, delta_1.25) averaged over frames (per_frame) or over all valid pixels.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if valid is None:
        valid = np.isfinite(gt) & (gt > 0)
    valid = valid & np.isfinite(pred) & (pred > 0)
    if per_frame:
        rels, deltas = [], []
        for p, g, v in zip(pred, gt, valid):
            if v.sum() == 0:
                continue
            r, d = depth_errors(p[None], g[None], v[None], per_frame=False)
            rels.append(r)
            deltas.append(d)
        return float(np.mean(rels)), float(np.mean(deltas))
    p, g = pred[valid], gt[valid]
    s = np.median(g) / np.median(p)
    p = p * s
    abs_rel = float(np.mean(np.abs(p - g) / g))
    delta = float(np.mean(np.maximum(p / g, g / p) < 1.25))
    return abs_rel, delta


def camera_centres(extrinsics: np.ndarray) -> np.ndarray:
    """Centres ``-R^T t`` (N, 3) of camera-from-world (N, 3|4, 4) extrinsics."""
    R = extrinsics[..., :3, :3]
    t = extrinsics[..., :3, 3]
    return -np.einsum("nji,nj->ni", R, t)


def trajectory_length(centres: np.ndarray, num_views: int) -> float:
    """Mean over cameras of the path length through the time steps; centres (T*V, 3) time-major."""
    c = centres.reshape(-1, num_views, 3)
    return float(np.linalg.norm(np.diff(c, axis=0), axis=-1).sum(0).mean())


def ate(pred_centres: np.ndarray, gt_centres: np.ndarray) -> Tuple[float, np.ndarray, float]:
    """Sim(3)-aligned absolute trajectory error.

    Args:
        pred_centres, gt_centres: (N, 3).
    Returns:
        (rmse in gt units, aligned prediction (N, 3), scale). A degenerate prediction (all centres equal
        or collinear) is aligned by its best constant/least squares fallback: every centre maps to the
        ground-truth mean (the constant-pose baseline).
    """
    s, R, t, ok = umeyama_checked(pred_centres.astype(np.float64), gt_centres.astype(np.float64))
    if bool(ok):
        aligned = s * pred_centres @ R.T + t
    else:
        aligned = np.broadcast_to(gt_centres.mean(0), gt_centres.shape).copy()
        s = 0.0
    rmse = float(np.sqrt(np.mean(np.sum((aligned - gt_centres) ** 2, -1))))
    return rmse, aligned, float(s)


def rotation_error_deg(pred_R: np.ndarray, gt_R: np.ndarray, align_R: Optional[np.ndarray] = None) -> float:
    """Mean geodesic angle (degrees) between world-from-camera rotations after a world rotation ``align_R``.

    pred_R, gt_R: (N, 3, 3) world-from-camera rotations; align_R (3, 3) maps prediction world to gt world.
    """
    if align_R is not None:
        pred_R = align_R[None] @ pred_R
    rel = np.einsum("nji,njk->nik", gt_R, pred_R)
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def mask_counts(pred: np.ndarray, gt: np.ndarray) -> Tuple[int, int]:
    """(intersection, union) pixel counts of two boolean masks."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    return int((pred & gt).sum()), int((pred | gt).sum())


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of boolean masks (1 when both are empty)."""
    i, u = mask_counts(pred, gt)
    return 1.0 if u == 0 else i / u


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, data_cfg: Optional[WindowConfig] = None,
                   seeds: Sequence[int] = EVAL_SEEDS, windows_per_seed: int = 2, stride: int = 2,
                   device: Any = "cpu", size: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """Evaluate ``model`` (and the baselines) on held-out windows; returns a JSON-able dict of means."""
    data_cfg = data_cfg or WindowConfig()
    model = model.to(device).eval()
    acc: Dict[str, List[float]] = {}
    inter = {"all_static": 0, "all_dynamic": 0}
    union = {"all_static": 0, "all_dynamic": 0}
    n_windows = 0

    def add(key: str, value: float) -> None:
        acc.setdefault(key, []).append(float(value))

    for seed, w in eval_windows(data_cfg, seeds, windows_per_seed, size=size, stride=stride):
        V = int(w["num_views"])
        images = w["images"][None].to(device)
        has_track = getattr(model, "track_head", None) is not None
        queries = w["query_points"][None].to(device) if has_track else None
        out = model(images, queries, num_views=V, reference_index=0)
        H, W = images.shape[-2:]
        gt_d = w["depth_metric"].numpy()
        valid = w["valid"].numpy()
        pred_d = out["depth"][0, ..., 0].float().cpu().numpy()
        for name, pd in (("model", pred_d), ("mean_depth", np.ones_like(pred_d))):
            r, d = depth_errors(pd, gt_d, valid, per_frame=True)
            add(f"{name}/abs_rel_frame", r)
            add(f"{name}/delta125_frame", d)
            r, d = depth_errors(pd, gt_d, valid, per_frame=False)
            add(f"{name}/abs_rel_window", r)
            add(f"{name}/delta125_window", d)
        # cameras
        extr_gt = w["extrinsics"].numpy().astype(np.float64)
        scale = float(w["scale"])
        c_gt = camera_centres(extr_gt) * scale  # metres
        length = trajectory_length(c_gt, V)
        extr_p, _ = pose_encoding_to_extri_intri(out["pose_enc"][0].float().cpu(), (H, W))
        extr_p = extr_p.numpy().astype(np.float64)
        c_p = camera_centres(extr_p)
        rmse, _, _ = ate(c_p, c_gt)
        R_gt_wc = np.transpose(extr_gt[:, :3, :3], (0, 2, 1))
        R_p_wc = np.transpose(extr_p[:, :3, :3], (0, 2, 1))
        add("model/ate_m", rmse)
        add("model/ate_pct", 100.0 * rmse / max(length, 1e-9))
        add("model/rot_err_deg", rotation_error_deg(R_p_wc, R_gt_wc))
        rmse0, _, _ = ate(np.zeros_like(c_gt), c_gt)
        add("constant_pose/ate_m", rmse0)
        add("constant_pose/ate_pct", 100.0 * rmse0 / max(length, 1e-9))
        add("constant_pose/rot_err_deg", rotation_error_deg(np.broadcast_to(np.eye(3), R_gt_wc.shape), R_gt_wc))
        add("trajectory_length_m", length)
        # masks
        gt_m = w["dynamic_mask"].numpy() > 0.5
        preds = {}
        if "dynamic_mask_logits" in out:
            preds["head"] = torch.sigmoid(out["dynamic_mask_logits"][0].float()).cpu().numpy() > 0.5
        if "page_mask" in out:
            up = torch.nn.functional.interpolate(out["page_mask"][0].float()[:, None], size=(H, W), mode="bilinear",
                                                 align_corners=False)[:, 0]
            preds["page"] = up.cpu().numpy() > 0.5
        published = _published_mask(model, preds)
        if published is not None:
            preds["model"] = preds[published]
        for name, pm in preds.items():
            i, u = mask_counts(pm, gt_m)
            inter[name] = inter.get(name, 0) + i
            union[name] = union.get(name, 0) + u
            add(f"{name}/mask_accuracy", float(np.mean(pm == gt_m)))
            if gt_m.any():
                add(f"{name}/mask_iou_mean", iou(pm, gt_m))
        if "track" in out:
            tr = out["track"][0].float().cpu().numpy()  # (S, N, 2)
            gt_t = w["tracks"].numpy()
            vis = (w["track_vis"].numpy() > 0.5) & w["track_valid"].numpy()[None]
            vis[0] = False  # frame 0 holds the queries themselves
            if vis.any():
                add("model/track_epe_median", float(np.median(np.linalg.norm(tr - gt_t, axis=-1)[vis])))
                add("static_points/track_epe_median",
                    float(np.median(np.linalg.norm(gt_t[:1] - gt_t, axis=-1)[vis])))
        for name, pm in (("all_static", np.zeros_like(gt_m)), ("all_dynamic", np.ones_like(gt_m))):
            i, u = mask_counts(pm, gt_m)
            inter[name] += i
            union[name] += u
            if gt_m.any():
                add(f"{name}/mask_iou_mean", iou(pm, gt_m))
        add("dynamic_fraction", float(gt_m.mean()))
        n_windows += 1
    res: Dict[str, Any] = {k: float(np.mean(v)) for k, v in sorted(acc.items())}
    for k in inter:
        if union[k]:
            res[f"{k}/mask_iou"] = inter[k] / union[k]
    res["num_windows"] = n_windows
    res["seeds"] = list(int(s) for s in seeds)
    res["stride"] = stride
    res["window"] = {"num_views": data_cfg.num_views, "num_steps": data_cfg.num_steps,
                     "size_hw": list(size or data_cfg.sizes[-1])}
    res["family"] = data_cfg.family
    if data_cfg.family != "legacy":
        res["window"].update(views=list(data_cfg.views), sizes_hw=[list(x) for x in data_cfg.sizes])
    res["selection_score"] = selection_score(res)
    return res


def _published_mask(model: torch.nn.Module, preds: Dict[str, Any]) -> Optional[str]:
    """Which of the computed masks ("head", "page") the node publishes for this model: the model config's
    ``inference: {dynamic_mask: ...}`` when it names an available one, else the head, else PAGE-4D's."""
    pref = {"head": "head", "page4d": "page"}.get((getattr(model, "inference_defaults", None) or {}).get("dynamic_mask"))
    if pref in preds:
        return pref
    return "head" if "head" in preds else ("page" if "page" in preds else None)


def selection_score(res: Dict[str, Any]) -> float:
    """One number to select checkpoints by (lower is better): each term is the model's error relative to its
    trivial baseline (depth AbsRel / constant depth, ATE / constant pose, 1 - mask IoU, track EPE / static
    points), averaged over the terms the result has."""
    terms = []
    if res.get("mean_depth/abs_rel_frame"):
        terms.append(res["model/abs_rel_frame"] / res["mean_depth/abs_rel_frame"])
    if res.get("constant_pose/ate_m"):
        terms.append(res["model/ate_m"] / res["constant_pose/ate_m"])
    if "model/mask_iou" in res:
        terms.append(1.0 - res["model/mask_iou"])
    if res.get("static_points/track_epe_median"):
        terms.append(min(res["model/track_epe_median"] / res["static_points/track_epe_median"], 2.0))
    return float(np.mean(terms)) if terms else float("nan")


TARGETS = {"model/abs_rel_frame": ("<=", 0.15), "model/delta125_frame": (">=", 0.80),
           "model/ate_pct": ("<=", 5.0), "model/mask_iou": (">=", 0.5)}


def check_targets(res: Dict[str, Any]) -> Dict[str, bool]:
    """Which of the issue's targets a result dict meets."""
    out = {}
    for k, (op, v) in TARGETS.items():
        if k in res:
            out[k] = res[k] <= v if op == "<=" else res[k] >= v
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="vggt4d-eval", description="Evaluate a checkpoint on held-out synthetic windows.")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--select", default=None, help="run directory: evaluate snapshots/step-*.safetensors, print the best")
    p.add_argument("--record", action="store_true",
                   help="write the model card metrics (legacy and held-out families, the weights' sha256 and a small "
                        "regression evaluation that test/test_accuracy.py recomputes) to --out")
    p.add_argument("--model", default="tiny")
    p.add_argument("--family", default="legacy", choices=["legacy", "heldout"])
    p.add_argument("--seeds", type=int, nargs="*", default=list(EVAL_SEEDS))
    p.add_argument("--windows-per-seed", type=int, default=2)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(strip_ros_args(argv))
    torch.set_num_threads(args.threads)
    from ..model import load_checkpoint
    from ..model.configs import build_model_from_config

    data_cfg = HELDOUT if args.family == "heldout" else WindowConfig()
    if args.select:
        return _select(args, data_cfg)
    if not args.checkpoint:
        p.error("--checkpoint or --select is required")
    model = build_model_from_config(args.model)
    load_checkpoint(model, args.checkpoint)
    t0 = time.time()
    if args.record:
        res = record(model, args.checkpoint, args.model, args.seeds, args.windows_per_seed, args.stride)
        res["eval_wall_s"] = round(time.time() - t0, 1)
        text = json.dumps(res, indent=2)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        print(text)
        return 0
    res = evaluate_model(model, data_cfg, args.seeds, args.windows_per_seed, args.stride)
    res["checkpoint"] = args.checkpoint
    res["eval_wall_s"] = round(time.time() - t0, 1)
    res["targets_met"] = check_targets(res)
    text = json.dumps(res, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


#: the regression evaluation recorded with the weights (small: recomputed by a test on every CI run)
REGRESSION = {"family": "heldout", "seeds": [0], "windows_per_seed": 1, "stride": 2}
REGRESSION_KEYS = ("model/abs_rel_frame", "model/ate_m", "model/rot_err_deg", "model/mask_iou", "page/mask_iou",
                   "model/track_epe_median")


def record(model: torch.nn.Module, checkpoint: str, model_config: str, seeds: Sequence[int],
           windows_per_seed: int, stride: int) -> Dict[str, Any]:
    """The model card's metrics file: the legacy family at top level (comparable with earlier cards), the
    held-out family under ``heldout``, ``targets_met`` for both, the weights' sha256 and ``regression``."""
    import hashlib

    res = evaluate_model(model, WindowConfig(), seeds, windows_per_seed, stride)
    res["targets_met"] = check_targets(res)
    held = evaluate_model(model, HELDOUT, seeds, windows_per_seed, stride)
    held["targets_met"] = check_targets(held)
    res["heldout"] = held
    reg = evaluate_model(model, HELDOUT, REGRESSION["seeds"], REGRESSION["windows_per_seed"], REGRESSION["stride"])
    res["regression"] = dict(REGRESSION, metrics={k: reg[k] for k in REGRESSION_KEYS if k in reg})
    with open(checkpoint, "rb") as f:
        res["weights_sha256"] = hashlib.sha256(f.read()).hexdigest()
    res["model_config"] = model_config
    res["checkpoint"] = checkpoint
    res["eval_command"] = (f"python -m vggt4d_ros.training.evaluate --checkpoint {checkpoint} --model {model_config} "
                           f"--record --out tiny-metrics.json")
    return res


def _select(args: argparse.Namespace, data_cfg: WindowConfig) -> int:
    """Evaluate every snapshot of a run (and its ``last``) and report them, best (lowest score) first."""
    from pathlib import Path

    from ..model import load_checkpoint
    from ..model.configs import build_model_from_config

    run = Path(args.select)
    cands = sorted(run.glob("snapshots/step-*.safetensors"))
    if (run / "last" / "model.safetensors").is_file():
        cands.append(run / "last" / "model.safetensors")
    rows = []
    for c in cands:
        model = build_model_from_config(args.model)
        load_checkpoint(model, str(c))
        res = evaluate_model(model, data_cfg, args.seeds, args.windows_per_seed, args.stride)
        keys = ("model/abs_rel_frame", "model/ate_pct", "model/rot_err_deg", "model/mask_iou", "model/track_epe_median")
        rows.append(dict(checkpoint=str(c), score=res["selection_score"], **{k: res.get(k) for k in keys}))
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: r["score"])
    text = json.dumps({"family": data_cfg.family, "seeds": list(args.seeds), "ranked": rows}, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
