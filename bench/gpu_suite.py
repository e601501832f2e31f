#!/usr/bin/env python3
"""GPU suite: the Predictor on every full-size model this package runs, for a lent accelerator.

Builds each model with random weights directly on the device (timing does not depend on the values):
``vggt-1b`` (VGGT-1B), ``page4d`` (PAGE-4D), ``4d-vggt`` (4D-VGGT v1.0) and ``4d-vggt-page4d`` (the
combination), and times :class:`~vggt4d_ros.inference.Predictor.predict` on windows of V x T = 1 x 8 and 2 x 8
random 640x360 frames (16:9 -> the 518x294 model grid) in bf16 and fp16, eager and ``torch.compile``d, and
(VGGT-layout models, fp16) through ONNX Runtime's CUDA / TensorRT providers where onnxruntime has them. Each row:
median / min ms of the whole predict and of its model part, peak CUDA memory of the timed calls (weights
included), ``warmup_s`` (compiled runs: the eager first call plus the compiling call). Prints one JSON document (``bench_util.emit_json``).

Runs go in priority order (eager, then compiled, then ONNX Runtime) under a wall-clock budget (default 450 s,
so the suite ends within 8 minutes on an H100 including start-up); a run that would not fit is listed under
``skipped`` with the reason, never silently dropped.

``--smoke``: the same code paths on the CPU with small dimensions (tiny configurations of the four models, a
56-px model grid, windows of 1 x 2 and 2 x 2 frames, one bf16 and one fp16 run per model, one timed call each,
one run compiled with the ``eager`` backend), in under a minute; a test runs it.

Examples::

    python bench/gpu_suite.py --save bench/results/gpu-suite-<device>.json     # on the GPU machine
    python bench/gpu_suite.py --smoke                                        # CPU dry run
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vggt4d_ros.bench_util import emit_json, git_commit, machine_info, summarize  # noqa: E402

MODELS = ("vggt-1b", "page4d", "4d-vggt", "4d-vggt-page4d")
SHAPES = {"1x8": (1, 8), "2x8": (2, 8)}  # V x T
SMOKE_SHAPES = {"1x2": (1, 2), "2x2": (2, 2)}
PRECISIONS = ("bf16", "fp16")
INPUT_HW = (360, 640)
#: a run starts only when this much of the budget is left (s): a rough upper bound of its cost on an H100
MIN_LEFT_S = {"eager": 20.0, "compile": 100.0, "ort-cuda": 150.0, "ort-trt": 300.0}

_TINY_DPT = {"features": 8, "out_channels": [8, 16, 16, 16]}
_TINY_VGGT = {"img_size": 56, "embed_dim": 32, "depth": 4, "num_heads": 4, "patch_embed": "conv",
              "camera_head": {"trunk_depth": 1, "num_heads": 4}, "dpt": _TINY_DPT, "keep_layers": "auto"}
_TINY_PAGE = {"enabled": True, "mask_block": 1, "bias_blocks": [2, 3]}
_TINY_TRACK = {"features": 16, "hidden_size": 32, "corr_levels": 3, "corr_radius": 2, "out_channels": [8, 16, 16, 16],
               "tracker_depth": 1, "num_heads": 4, "num_virtual_tracks": 8}
#: --smoke: the four models at small dimensions (same architectures and options)
SMOKE_CONFIGS: Dict[str, Dict[str, Any]] = {
    "vggt-1b": dict(_TINY_VGGT, track=_TINY_TRACK),
    "page4d": dict(_TINY_VGGT, enable_track=False, page4d=_TINY_PAGE),
    "4d-vggt": "4d-vggt-small",
    "4d-vggt-page4d": {"base": "4d-vggt-small", "page4d": dict(_TINY_PAGE, strength=64.0), "enable_mask": True,
                       "enable_track": True, "track": _TINY_TRACK},
}


def model_config(name: str, smoke: bool) -> Any:
    """Configuration (name or dict) to build: the full-size named config, or its small stand-in."""
    if not smoke:
        return name
    cfg = SMOKE_CONFIGS[name]
    if isinstance(cfg, dict) and "base" in cfg:
        from vggt4d_ros.model.configs import load_model_config

        base = load_model_config(cfg["base"])
        base.update({k: v for k, v in cfg.items() if k != "base"})
        return base
    return cfg


def build(name: str, smoke: bool, device: str):
    """The model with seeded random weights, created on ``device`` (fp32)."""
    import torch

    from vggt4d_ros.model.configs import build_model_from_config

    torch.manual_seed(0)
    with torch.device(device):
        model = build_model_from_config(model_config(name, smoke))
    return model


class Budget:
    """Wall-clock budget from the start of the suite."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.t0 = time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_predictor(pred, frames: List[np.ndarray], views: int, device: str, warmup: int, iters: int) -> Dict[str, Any]:
    """Warm-up calls, then ``iters`` timed predict() calls: ms (total and model part), peak CUDA memory."""
    import torch

    t0 = time.perf_counter()
    for _ in range(warmup):
        pred.predict(frames, num_views=views)
    _sync(device)
    warm_s = time.perf_counter() - t0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    total, model = [], []
    for _ in range(iters):
        out = pred.predict(frames, num_views=views)
        total.append(out.timing_ms["total"])
        model.append(out.timing_ms["model"])
    row: Dict[str, Any] = {"ms": summarize(total), "model_ms": summarize(model), "warmup_s": round(warm_s, 2),
                           "fps": round(1e3 * len(frames) / float(np.median(total)), 2)}
    if device.startswith("cuda"):
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return row


def predictor_run(model, precision: str, shape: str, mode: str, args, frames) -> Dict[str, Any]:
    """One eager / compiled Predictor run (the Predictor casts the model to ``precision`` in place)."""
    from vggt4d_ros.inference.predictor import Predictor

    views, _ = args.shapes[shape]
    compiled = mode == "compile"
    opts = {"backend": "eager"} if (compiled and args.smoke) else {}
    pred = Predictor(model, device=args.device, precision=precision, target_width=args.width, compile=compiled,
                     compile_options=opts)
    try:
        row = time_predictor(pred, frames, views, args.device, warmup=2 if compiled else 1, iters=args.iters)
        row.update(precision_used=pred.precision, image_resize=pred.image_resize)
        if compiled:
            row.update(compiled=pred.compiled, compile_error=pred.compile_error)
        return row
    finally:
        for h in getattr(pred, "_hooks", []):
            h.remove()


def ort_run(model, name: str, shape: str, provider: str, args, frames) -> Dict[str, Any]:
    """Export the window graph (fp16) and time the Predictor on the ONNX Runtime backend."""
    import torch

    from vggt4d_ros.export import ExportSpec, export_onnx
    from vggt4d_ros.export.ort_backend import OrtBackend
    from vggt4d_ros.inference.predictor import Predictor
    from vggt4d_ros.inference.preprocess import compute_pixel_map

    views, steps = args.shapes[shape]
    hm, wm = compute_pixel_map(INPUT_HW, args.width, "crop").model_hw
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}-{shape}.onnx"
        t0 = time.perf_counter()
        export_onnx(model.float(), path, ExportSpec(height=hm, width=wm, num_views=views, num_steps=steps,
                                                    fp16=args.device.startswith("cuda")), verify=False)
        export_s = time.perf_counter() - t0
        backend = OrtBackend(path, providers=[provider])
        pred = Predictor(backend, device=args.device, precision="fp32", target_width=wm)
        row = time_predictor(pred, frames, views, args.device, warmup=1, iters=args.iters)
        row.update(export_s=round(export_s, 1), providers=backend.providers)
        del backend, pred
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        return row


def plan(args) -> List[Dict[str, str]]:
    """Runs in priority order: every eager run, then compiled (one per model first), then ONNX Runtime
    (model-major otherwise, so a model is rebuilt rarely). Smoke: per model one bf16 run on the first shape and one fp16 run
    on the second (round-robin over the models, so every model runs early), one compiled run."""
    shapes = list(args.shapes)
    if args.smoke:
        runs = [dict(model=m, precision=p, shape=s, mode="eager")
                for p, s in zip(args.precisions, shapes) for m in args.models]
        if args.compile:
            runs.append(dict(model=args.models[-1], precision=args.precisions[0], shape=shapes[0], mode="compile"))
        return runs
    runs = [dict(model=m, precision=p, shape=s, mode="eager") for m in args.models for p in args.precisions
            for s in shapes]
    if args.compile:  # first one compiled run per model (the first precision, the largest window), then the rest
        first = [dict(model=m, precision=args.precisions[0], shape=shapes[-1], mode="compile") for m in args.models]
        runs += first + [dict(model=m, precision=p, shape=s, mode="compile") for m in args.models
                         for p in args.precisions for s in shapes
                         if dict(model=m, precision=p, shape=s, mode="compile") not in first]
    if args.ort:
        runs += [dict(model=m, precision="fp16", shape=s, mode=o) for o in ("ort-cuda", "ort-trt")
                 for m in args.models if m in ("vggt-1b", "page4d") for s in shapes]
    return runs


def ort_provider(mode: str) -> Optional[str]:
    """The onnxruntime provider of an ``ort-*`` mode when installed, else None."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    want = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}[mode]
    return want if want in ort.get_available_providers() else None


def run_suite(args) -> Dict[str, Any]:
    import torch

    budget = Budget(args.budget_s)
    rng = np.random.default_rng(0)
    rows: List[Dict[str, Any]] = []
    skipped: List[Dict[str, Any]] = []
    built: Dict[str, Any] = {}
    runs = plan(args)
    params: Dict[str, int] = {}

    def get_model(name: str):
        if name not in built:
            for other in list(built):
                del built[other]
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            torch._dynamo.reset()  # the models share forward code: keep each model's compile cache apart
            t0 = time.perf_counter()
            built[name] = build(name, args.smoke, args.device)
            params[name] = sum(p.numel() for p in built[name].parameters())
            build_s[name] = round(time.perf_counter() - t0, 2)
        return built[name]

    build_s: Dict[str, float] = {}
    for run in runs:
        key = dict(run)
        need = MIN_LEFT_S[run["mode"]] * (0.05 if args.smoke else 1.0)
        if budget.left() < need:
            skipped.append(dict(key, reason=f"budget: {budget.left():.0f} s left, this run needs ~{need:.0f} s"))
            continue
        provider = None
        if run["mode"].startswith("ort"):
            provider = ort_provider(run["mode"])
            if provider is None or not args.device.startswith("cuda"):
                skipped.append(dict(key, reason="onnxruntime provider not installed / no CUDA device"))
                continue
        views, steps = args.shapes[run["shape"]]
        frames = [rng.integers(0, 256, INPUT_HW + (3,), dtype=np.uint8) for _ in range(views * steps)]
        try:
            model = get_model(run["model"])
            if provider is not None:
                row = ort_run(model, run["model"], run["shape"], provider, args, frames)
            else:
                row = predictor_run(model, run["precision"], run["shape"], run["mode"], args, frames)
            rows.append(dict(key, **row))
        except Exception as exc:  # noqa: BLE001 - a failed run is a result, the suite goes on
            rows.append(dict(key, error=" ".join(f"{type(exc).__name__}: {exc}".split())[:400]))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return {"benchmark": "gpu_suite", "mode": "smoke" if args.smoke else "full", "device": args.device,
            "commit": git_commit(), "machine": machine_info(), "model_grid_width": args.width,
            "input_hw": list(INPUT_HW), "shapes": args.shapes, "iters": args.iters, "budget_s": args.budget_s,
            "elapsed_s": round(time.perf_counter() - budget.t0, 1), "parameters": params, "build_s": build_s,
            "rows": rows, "skipped": skipped}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, small dimensions, under a minute")
    ap.add_argument("--device", default=None, help="default: cuda (full), cpu (smoke)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    ap.add_argument("--precisions", nargs="*", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--iters", type=int, default=None, help="timed calls per run (default 5; smoke 1)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 450; smoke 50)")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--no-ort", dest="ort", action="store_false")
    ap.add_argument("--save", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.iters = args.iters or (1 if args.smoke else 5)
    args.budget_s = args.budget_s or (50.0 if args.smoke else 450.0)
    args.width = 56 if args.smoke else 518
    args.shapes = SMOKE_SHAPES if args.smoke else SHAPES
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            ap.error("no CUDA device (use --smoke for the CPU dry run)")
    return emit_json(run_suite(args), save=args.save)


if __name__ == "__main__":
    raise SystemExit(main())
