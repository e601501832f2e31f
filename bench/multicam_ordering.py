#!/usr/bin/env python3
"""Several cameras on 4D-VGGT: this project's grid ordering vs the one-sequence ordering, on the synthetic rig.

The release (4D-VGGT v1.0) takes one camera's frames. For V cameras this project runs the grid
(``num_views=V``): the global branch attends over all frames of the window, the cross-time window over each
camera's own frames. The alternative without the extension is the one-sequence ordering: the same frames,
time-major (t0 cam0, t0 cam1, t1 cam0, ...), fed as one camera (``num_views=1``), so the cross-time window mixes
cameras and spans fewer time steps. Everything else (weights, preprocessing, reference frame 0) is the same.

Per model and window, printed as JSON (vggt4d_ros.bench_util.emit_json): the difference of the two orderings'
outputs (camera rotation in degrees and translation relative to the window's extent, depth relative
difference), each ordering's error against the synthetic ground truth (depth AbsRel after per-frame median
scaling; rig rotation cam0 -> cam1 at the same step) and its latency (Predictor.predict wall time, median of
``--repeats``).

Models: ``4d-vggt-small`` (the release-format fixture test/data/model/4dvggt_small.pt: random weights, so the
accuracy figures only say both orderings are equally meaningless) and, when the embedded tiny weights exist,
``tiny-4d`` with the tiny's trained weights transplanted (vggt4d_ros.training.transplant: the cross-time branch
copies the global branch and the fusion gates start at 0, as the release initialises them; trained tiny-4d
weights are not shipped). With gates at 0 the cross-time branch does not reach the outputs and the two
orderings must agree: a check of the claim that they differ only there.

    python bench/multicam_ordering.py --save bench/results/multicam-ordering-cpu-amd-epyc-2c.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from vggt4d_ros.bench_util import emit_json, git_commit, machine_info, summarize

ROOT = Path(__file__).resolve().parents[1]


def _models(target: Dict[str, int]):
    from safetensors.torch import load_file

    from vggt4d_ros.inference.predictor import Predictor
    from vggt4d_ros.model import build_model_from_config
    from vggt4d_ros.perception.pipeline import EMBEDDED_DIR
    from vggt4d_ros.training.transplant import transplant_to_fourd

    yield "4d-vggt-small", "release-format fixture, random weights", Predictor.from_config(
        "4d-vggt-small", checkpoint=str(ROOT / "test/data/model/4dvggt_small.pt"), device="cpu",
        target_width=target["4d-vggt-small"])
    tiny = EMBEDDED_DIR / "tiny.safetensors"
    if tiny.is_file():
        model = build_model_from_config("tiny-4d")
        transplant_to_fourd(model, load_file(str(tiny)))
        yield "tiny-4d", "the tiny's trained weights transplanted (fusion gates 0)", Predictor(
            model.eval(), device="cpu", target_width=target["tiny-4d"])


def _rot_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    ok = np.isfinite(pred) & np.isfinite(gt) & (pred > 0) & (gt > 0)
    p = pred[ok] * np.median(gt[ok]) / np.median(pred[ok])
    return float(np.mean(np.abs(p - gt[ok]) / gt[ok]))


def _accuracy(pred, frames, V: int) -> Dict[str, float]:
    """Depth AbsRel (per-frame median scaling) and the rig's relative rotation error at each step, in degrees."""
    rel = [_abs_rel(fp.depth, f.depth) for fp, f in zip(pred.frames, frames)]
    rig = []
    for t in range(len(frames) // V):
        a, b = pred.frames[t * V], pred.frames[t * V + 1]
        R_pred = a.cam_from_world[:3, :3] @ b.cam_from_world[:3, :3].T  # cam0 <- cam1
        R_gt = np.linalg.inv(frames[t * V].T_world_cam)[:3, :3] @ frames[t * V + 1].T_world_cam[:3, :3]
        rig.append(_rot_deg(R_pred.T @ R_gt))
    return {"depth_abs_rel": float(np.mean(rel)), "rig_rotation_err_deg": float(np.mean(rig))}


def _difference(a, b) -> Dict[str, float]:
    Ea = np.stack([f.cam_from_world for f in a.frames])
    Eb = np.stack([f.cam_from_world for f in b.frames])
    extent = max(float(np.linalg.norm(Ea[:, :3, 3], axis=-1).max()), 1e-9)
    rot = [_rot_deg(x[:3, :3] @ y[:3, :3].T) for x, y in zip(Ea, Eb)]
    trans = np.linalg.norm(Ea[:, :3, 3] - Eb[:, :3, 3], axis=-1) / extent
    dd = []
    for fa, fb in zip(a.frames, b.frames):
        ok = np.isfinite(fa.depth) & np.isfinite(fb.depth) & (fb.depth > 0)
        dd.append(float(np.mean(np.abs(fa.depth[ok] - fb.depth[ok]) / fb.depth[ok])))
    return {"rotation_deg_max": float(max(rot)), "translation_rel_max": float(trans.max()),
            "depth_rel_mean": float(np.mean(dd)), "depth_rel_max_frame": float(max(dd))}


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="time steps per window (default 4: 2 x 4 = 8 frames)")
    ap.add_argument("--windows", type=int, default=2, help="windows (consecutive, disjoint; default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed predictions per ordering and window")
    ap.add_argument("--width", type=int, default=252)
    ap.add_argument("--height", type=int, default=140)
    ap.add_argument("--save", default="", help="also write the JSON here")
    args = ap.parse_args(argv)

    from vggt4d_ros.data.synth import SynthConfig, SynthSequence

    torch.set_grad_enabled(False)
    V, T = 2, args.steps
    seq = SynthSequence(SynthConfig(seed=5, num_cameras=V, width=args.width, height=args.height, rate_hz=10.0,
                                    duration_s=T * args.windows / 10.0))
    windows = []
    for w in range(args.windows):
        steps = [seq.frame(i) for i in range(w * T, (w + 1) * T)]
        windows.append([st[c] for st in steps for c in seq.camera_names])  # time-major
    rows: List[Dict[str, Any]] = []
    for name, weights, predictor in _models({"4d-vggt-small": 112, "tiny-4d": 252}):
        for w, frames in enumerate(windows):
            rgbs = [f.rgb for f in frames]
            out: Dict[str, Any] = {}
            for order, nv in (("grid", V), ("one_sequence", 1)):
                predictor.predict(rgbs, num_views=nv)  # warm-up (grid tables, caches)
                times, pred = [], None
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    pred = predictor.predict(rgbs, num_views=nv)
                    times.append((time.perf_counter() - t0) * 1e3)
                out[order] = (pred, summarize(times, 1))
            g, s = out["grid"][0], out["one_sequence"][0]
            rows.append({"model": name, "weights": weights, "window": w, "frames": len(rgbs),
                         "model_grid_hw": list(g.model_hw),
                         "difference_grid_vs_one_sequence": _difference(g, s),
                         "accuracy": {"grid": _accuracy(g, frames, V), "one_sequence": _accuracy(s, frames, V)},
                         "latency_ms": {"grid": out["grid"][1], "one_sequence": out["one_sequence"][1]}})
    doc = {"benchmark": "multicam_ordering", "commit": git_commit(), "machine": machine_info(),
           "note": ("CPU only, shared with other jobs (load average above); latencies are indicative. "
                    "Accuracy against the synthetic ground truth means nothing for random weights."),
           "synthetic": {"cameras": V, "steps_per_window": T, "image_wh": [args.width, args.height]},
           "rows": rows}
    return emit_json(doc, args.save or None)


if __name__ == "__main__":
    raise SystemExit(main())
