#!/usr/bin/env python3
"""Benchmark the Predictor: ms per window and peak memory per configuration, layout, window shape, precision.

Prints one JSON document (machine description + one row per run). Each run executes in its own subprocess
so that peak memory (CUDA ``max_memory_allocated``, or the process's peak RSS on the CPU) belongs to that
run alone. Weights are random (timing does not depend on them); frames are random 640x360 uint8 images
(16:9 -> VGGT's 518x294 grid; ``tiny`` runs the same windows scaled to its 252-pixel width: 252x140).

Examples::

    python bench/model.py                                   # CPU: tiny, both layouts, both shapes, fp32+bf16
    python bench/model.py --save bench/results/model-cpu-<machine>.json
    python bench/model.py --device cuda --configs vggt-1b tiny --precisions bf16 fp16

Default on a CUDA machine: ``vggt-1b`` and ``tiny`` in bf16 and fp16.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]

SHAPES = {"V2xT8": (2, 8), "V1xT16": (1, 16)}
INPUT_HW = (360, 640)


def machine() -> Dict[str, Any]:
    """CPU model, cores, memory, torch version, GPU."""
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": mem_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return info


def run_one(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one configuration in this process and return its row."""
    import resource

    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    from vggt4d_ros.inference import Predictor
    from vggt4d_ros.model.configs import build_model_from_config, load_model_config

    device = torch.device(spec["device"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    cfg = load_model_config(spec["config"])
    width = int(spec.get("target_width") or (518 if int(cfg.get("img_size", 518)) >= 518 else cfg["img_size"]))
    torch.manual_seed(0)
    t_build = time.perf_counter()
    with torch.device(device):
        model = build_model_from_config(spec["config"], {"layout": spec["layout"]})
    n_params = sum(p.numel() for p in model.parameters())
    pred = Predictor(model, device=device, precision=spec["precision"], target_width=width)
    build_s = time.perf_counter() - t_build
    V, T = SHAPES[spec["shape"]]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, INPUT_HW + (3,), dtype=np.uint8) for _ in range(V * T)]
    queries = None
    if spec.get("queries"):
        queries = np.stack([rng.uniform(0, INPUT_HW[1] - 1, spec["queries"]),
                            rng.uniform(0, INPUT_HW[0] - 1, spec["queries"])], -1)
    for _ in range(spec["warmup"]):
        pred.predict(frames, num_views=V, query_points=queries)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times: Dict[str, List[float]] = {}
    out = None
    for _ in range(spec["repeats"]):
        out = pred.predict(frames, num_views=V, query_points=queries)
        for k, v in out.timing_ms.items():
            times.setdefault(k, []).append(v)
    row: Dict[str, Any] = {
        "config": spec["config"],
        "layout": spec["layout"],
        "shape": spec["shape"],
        "views": V,
        "times": T,
        "frames": V * T,
        "model_hw": list(out.model_hw),
        "precision": pred.precision,
        "requested_precision": spec["precision"],
        "device": str(device),
        "parameters": n_params,
        "queries": int(spec.get("queries") or 0),
        "dynamic_mask_source": out.dynamic_mask_source,
        "repeats": spec["repeats"],
        "build_s": round(build_s, 2),
    }
    for k, v in times.items():
        row[f"{k}_ms_mean"] = round(float(np.mean(v)), 2)
        row[f"{k}_ms_median"] = round(float(np.median(v)), 2)
        row[f"{k}_ms_min"] = round(float(np.min(v)), 2)
    row["ms_per_frame_median"] = round(row["total_ms_median"] / (V * T), 2)
    if device.type == "cuda":
        row["peak_gpu_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    row["rss_before_model_mib"] = round(rss0, 1)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--configs", nargs="+", default=None, help="named model configs")
    ap.add_argument("--layouts", nargs="+", default=["global", "spatiotemporal"])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--precisions", nargs="+", default=None)
    ap.add_argument("--queries", type=int, default=0, help="query points to track (0: no tracking)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    ap.add_argument("--save", default=None, help="also write the JSON here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one spec
    args = ap.parse_args()

    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    configs = args.configs or (["vggt-1b", "tiny"] if cuda else ["tiny"])
    precisions = args.precisions or (["bf16", "fp16"] if cuda else ["fp32", "bf16"])
    rows: List[Dict[str, Any]] = []
    t0 = time.perf_counter()
    for config in configs:
        for layout in args.layouts:
            for shape in args.shapes:
                for precision in precisions:
                    spec = dict(config=config, layout=layout, shape=shape, precision=precision, device=device,
                                queries=args.queries, warmup=args.warmup, repeats=args.repeats)
                    try:
                        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                                              capture_output=True, text=True, timeout=args.timeout, cwd=str(REPO))
                        if proc.returncode == 0:
                            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                        else:
                            rows.append(dict(spec, error=proc.stderr.strip().splitlines()[-1:]))
                    except subprocess.TimeoutExpired:
                        rows.append(dict(spec, error=f"timeout after {args.timeout} s"))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    doc = {
        "benchmark": "model",
        "machine": machine(),
        "input_hw": list(INPUT_HW),
        "note": "random weights and frames; times are wall clock per window via Predictor.predict "
                "(preprocess + model + post-processing incl. dynamic mask), device synchronised; on a shared "
                "CPU prefer the median/min over the mean",
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "wall_s": round(time.perf_counter() - t0, 1),
        "runs": rows,
    }
    from vggt4d_ros.bench_util import emit_json

    return emit_json(doc, args.save)


if __name__ == "__main__":
    sys.exit(main())
