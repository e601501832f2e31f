#!/usr/bin/env python3
"""This project's predictor path against the reference formulation, in one run on identical weights and inputs.

The reference formulation is VGGT as released: global attention over all frames, all ``depth`` aggregator
layers kept, fp32, every frame of every window recomputed, every head run (camera, depth, point, track,
and the mask head where the model has one). The project's path (:class:`vggt4d_ros.inference.Predictor` as
the node runs it, in streaming mode) keeps only the aggregator layers the heads read, caches the per-frame
patch embedding across the overlapping windows of a stride-1 sliding stream (``frame_keys``), skips the point
head (the Predictor's default ``skip_unused_heads``: points come from depth + pose), uses the model's own
attention layout (``spatiotemporal`` for ``tiny``) and, on a GPU, bf16/fp16 weights. Between the two, the
script runs each optimisation on its own (a ladder of variants) so that every speed-up and every output
difference can be attributed:

================  ======  ===========  ===========  ==========  =========  =======
variant           layout  layers kept  embed cache  point head  precision  compile
================  ======  ===========  ===========  ==========  =========  =======
reference         global  all          no           yes         fp32       no
keep_layers       global  used         no           yes         fp32       no
embed_cache       global  used         yes          yes         fp32       no
no_point_head     global  used         yes          no          fp32       no
project_fp32      model's used         yes          no          fp32       no
project_bf16      model's used         yes          no          bf16       no
project_fp16      model's used         yes          no          fp16       no   (GPU only)
project_compiled  model's used         yes          no          fp32/bf16  yes  (on request: --variants)
project_dense     model's used         yes          no          fp32       no   + dense subset
project_dense_bf16 model's used        yes          no          bf16       no   + dense subset
================  ======  ===========  ===========  ==========  =========  =======

``project_dense*`` stream like the node with ``model.dense_frames: needed``: the dense heads (depth, mask)
and their post-processing run only for the newest step's V frames, camera 0 at the previous newest step
(the window chain's shared points) and frame 0 when there are track queries (the keypoint check's query
depth); the first window computes every frame (as the node's first window after a reset). Their output
differences are measured on those frames only (poses: all frames).

``no_point_head`` and the ``project_*`` variants are the Predictor with its defaults (the point head is
skipped by the Predictor itself, the model keeps all its heads). ``project_compiled`` wraps the model in
``torch.compile`` (bf16 on a GPU); its first window on a grid runs eagerly and the compilation happens in
its second window, so give it ``--warmup 2`` (or more).

``--quick``: tiny only, V2xT8, the variants reference / no_point_head / project_fp32, one warm-up and two
timed windows, no memory subprocesses: under a minute on a quiet 2-core CPU (a smoke run, not a figure).

Timing: every variant is a separate :class:`Predictor` over a deep copy of ONE model (same weights), all in
one process, fed the same stride-1 stream of synthetic frames (:class:`vggt4d_ros.data.SynthSequence`,
640x360, so ``tiny`` runs 252x140 and VGGT-1B 518x294); window after window, every variant predicts the
same window, in an order that rotates per window, so that load from other processes on a shared machine
hits all variants alike. Times are :meth:`Predictor.predict`'s own (preprocess, model, postprocess, total;
device synchronised). Peak memory: each variant once more in its own subprocess (the first, full window
plus one cached window): CUDA ``max_memory_allocated`` or the process's peak RSS on the CPU.

Output equality: per window, the maximum absolute difference of depth (model grid, raw model units) and of
the camera poses (translation in the window's unit, rotation in degrees) against the reference and
against the previous rung. Keeping only the used layers, the embedding cache and skipping the point head
must not change depth or pose (float round-off only); the layout changes the model (no agreement
expected unless the model's layout is global); bf16/fp16 differ by their precision.

Examples::

    python bench/model_vs_reference.py                     # CPU: tiny, V2xT8 and V1xT16
    python bench/model_vs_reference.py --save bench/results/model-vs-reference-cpu-<machine>.json
    python bench/model_vs_reference.py --device cuda       # vggt-1b (random weights) and tiny
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vggt4d_ros.bench_util import (SHARED_MACHINE_NOTE, emit_json, git_commit, machine_info, rss_mib,  # noqa: E402
                                   summarize)

SHAPES = {"V2xT8": (2, 8), "V1xT16": (1, 16)}
INPUT_HW = (360, 640)

# name: (layout (None = the model's), keep only used layers, embed cache, point head, precision, compile,
# dense subset); precision "auto" = bf16 on CUDA, fp32 on the CPU
VARIANTS: Dict[str, Tuple[Optional[str], bool, bool, bool, str, bool, bool]] = {
    "reference": ("global", False, False, True, "fp32", False, False),
    "keep_layers": ("global", True, False, True, "fp32", False, False),
    "embed_cache": ("global", True, True, True, "fp32", False, False),
    "no_point_head": ("global", True, True, False, "fp32", False, False),
    "project_fp32": (None, True, True, False, "fp32", False, False),
    "project_bf16": (None, True, True, False, "bf16", False, False),
    "project_fp16": (None, True, True, False, "fp16", False, False),
    "project_compiled": (None, True, True, False, "auto", True, False),
    "project_dense": (None, True, True, False, "fp32", False, True),
    "project_dense_bf16": (None, True, True, False, "bf16", False, True),
}
PARENT = {"keep_layers": "reference", "embed_cache": "keep_layers", "no_point_head": "embed_cache",
          "project_fp32": "no_point_head", "project_bf16": "project_fp32", "project_fp16": "project_fp32",
          "project_compiled": "project_fp32", "project_dense": "project_fp32", "project_dense_bf16": "project_bf16"}
ON_REQUEST = ("project_compiled",)  # not in the default list (compilation takes minutes on a CPU)
QUICK_VARIANTS = ("reference", "no_point_head", "project_fp32", "project_dense")


# ---------------------------------------------------------------------------------------------- inputs
def render_stream(num_steps: int, num_cameras: int = 2, seed: int = 0) -> np.ndarray:
    """(num_steps, num_cameras, H, W, 3) uint8 frames of a synthetic dynamic scene at 640x360."""
    from vggt4d_ros.data import SynthConfig, SynthSequence

    rate = 10.0
    seq = SynthSequence(SynthConfig(seed=seed, num_cameras=num_cameras, width=INPUT_HW[1], height=INPUT_HW[0],
                                    rate_hz=rate, duration_s=(num_steps + 0.5) / rate))
    out = np.empty((num_steps, num_cameras) + INPUT_HW + (3,), np.uint8)
    for i in range(num_steps):
        f = seq.frame(i)
        for v, cam in enumerate(seq.camera_names):
            out[i, v] = f.cameras[cam].rgb
    return out


def window_frames(stream: np.ndarray, k: int, V: int, T: int) -> Tuple[List[np.ndarray], List[Tuple[int, int]]]:
    """Window ``k`` of a stride-1 stream: time-major frames of steps ``k .. k+T-1`` (cameras ``0..V-1``) and
    their keys ``(camera, step)``."""
    frames, keys = [], []
    for t in range(k, k + T):
        for v in range(V):
            frames.append(stream[t, v])
            keys.append((v, t))
    return frames, keys


# ---------------------------------------------------------------------------------------------- model
def resolve_weights(config: str, checkpoint: str) -> Optional[str]:
    """``auto``: the config's embedded weights if shipped (``tiny``), else None (random); ``random``: None."""
    if checkpoint == "random":
        return None
    if checkpoint != "auto":
        return checkpoint
    from vggt4d_ros.perception.pipeline import resolve_checkpoint

    try:
        return resolve_checkpoint(config, "")
    except FileNotFoundError:
        return None


def build_base(config: str, device: str, seed: int, weights: Optional[str]):
    """The fp32 model on ``device``: seeded random init (identical in every process on the same device and
    torch build), then ``weights`` loaded if given."""
    import torch

    from vggt4d_ros.model import load_checkpoint
    from vggt4d_ros.model.configs import build_model_from_config

    torch.manual_seed(seed)
    with torch.device(device):
        model = build_model_from_config(config)
    if weights:
        load_checkpoint(model, weights)
    return model.eval()


def fingerprint(model) -> float:
    """Sum of all parameters and buffers in float64: equal numbers mean equal weights (for the record)."""
    import torch

    with torch.no_grad():
        return float(sum(t.detach().double().sum().item() for t in model.state_dict().values()
                         if t.is_floating_point()))


def make_variant(base, name: str, device: str, width: int):
    """A :class:`Predictor` over a deep copy of ``base`` set up as variant ``name``."""
    from vggt4d_ros.inference import Predictor

    layout, keep, _cache, point_head, precision, compile_, _dense = VARIANTS[name]
    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") else "fp32"
    model = copy.deepcopy(base)  # every head stays in the model; the Predictor decides which ones run
    return Predictor(model, device=device, precision=precision, target_width=width, keep_only_used_layers=keep,
                     layout=layout, compute_points="depth", skip_unused_heads=not point_head, compile=compile_)


def target_width(config: str) -> int:
    from vggt4d_ros.model.configs import load_model_config

    cfg = load_model_config(config)
    return 518 if int(cfg.get("img_size", 518)) >= 518 else int(cfg["img_size"])


def dense_subset(V: int, T: int, with_queries: bool) -> List[int]:
    """The frames the node's ``dense_frames: needed`` computes in a chained stride-1 window: the newest step's
    V frames, camera 0 at the previous newest step, frame 0 with track queries."""
    need = {(T - 1) * V + v for v in range(V)}
    if T > 1:
        need.add((T - 2) * V)
    if with_queries:
        need.add(0)
    return sorted(need)


def predict(pred, name: str, frames, keys, V: int, queries: Optional[np.ndarray], first: bool = False):
    cache, dense = VARIANTS[name][2], VARIANTS[name][6]
    kw = {}
    if dense and not first:  # the first window computes every frame, as the node's first window
        kw["dense_frames"] = dense_subset(V, len(frames) // V, queries is not None)
    return pred.predict(frames, num_views=V, query_points=queries, frame_keys=keys if cache else None, **kw)


def queries_for(n: int, seed: int = 1) -> Optional[np.ndarray]:
    if n <= 0:
        return None
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, INPUT_HW[1] - 1, n), rng.uniform(0, INPUT_HW[0] - 1, n)], -1)


# ---------------------------------------------------------------------------------------------- comparison
def outputs_of(pred) -> Dict[str, np.ndarray]:
    """Depth (S, Hm, Wm) on the model grid and cam-from-world (S, 4, 4) rebased to the reference frame."""
    return {"depth": pred.raw["depth"].float().cpu().numpy(),
            "pose": pred.cam_from_world.double().cpu().numpy(),
            "dense": np.asarray(getattr(pred, "dense_frames", range(len(pred.frames))), dtype=np.int64)}


def diff(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Max abs depth difference, max relative depth difference, max translation difference, max rotation
    difference (degrees) between two variants' outputs of one window."""
    da, db = a["depth"].astype(np.float64), b["depth"].astype(np.float64)
    if len(da) != len(db):  # a dense-subset variant: compare its frames only
        common = np.intersect1d(a["dense"], b["dense"])
        da = da[np.searchsorted(a["dense"], common)]
        db = db[np.searchsorted(b["dense"], common)]
    d = np.abs(da - db)
    rel = d / np.maximum(np.abs(db), 1e-12)
    Ra, Rb = a["pose"][:, :3, :3], b["pose"][:, :3, :3]
    cosang = (np.einsum("sij,sij->s", Ra, Rb) - 1.0) / 2.0  # trace(Ra^T Rb) = 1 + 2 cos(angle)
    ang = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
    return {"depth_max_abs": float(d.max()), "depth_max_rel": float(rel.max()),
            "translation_max_abs": float(np.abs(a["pose"][:, :3, 3] - b["pose"][:, :3, 3]).max()),
            "rotation_max_deg": float(ang.max())}


def merge_max(acc: Optional[Dict[str, float]], d: Dict[str, float]) -> Dict[str, float]:
    return dict(d) if acc is None else {k: max(acc[k], d[k]) for k in d}


# ---------------------------------------------------------------------------------------------- memory child
def memory_one(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run variant ``spec['variant']`` on the first ``spec['windows']`` windows in this process; peak memory."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    stream = np.load(spec["frames"])["stream"]
    V, T = SHAPES[spec["shape"]]
    base = build_base(spec["config"], device, spec["seed"], spec["weights"])
    fp = fingerprint(base)
    pred = make_variant(base, spec["variant"], device, spec["width"])
    del base
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss0 = rss_mib()
    weights_mib = sum(t.numel() * t.element_size() for t in pred.model.state_dict().values()) / 2**20
    q = queries_for(spec["queries"])
    for k in range(spec["windows"]):
        frames, keys = window_frames(stream, k, V, T)
        predict(pred, spec["variant"], frames, keys, V, q, first=k == 0)
    row = {"variant": spec["variant"], "weights_fingerprint": fp, "weights_mib": round(weights_mib, 1),
           "rss_after_build_mib": rss0,
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}
    if device.startswith("cuda"):
        row["peak_gpu_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def memory_pass(config: str, device: str, shape: str, variants: Sequence[str], frames_file: str, seed: int,
                weights: Optional[str], width: int, queries: int, threads: int, timeout: float) -> Dict[str, Any]:
    out = {}
    for name in variants:
        spec = dict(config=config, device=device, shape=shape, variant=name, frames=frames_file, seed=seed,
                    weights=weights, width=width, queries=queries, windows=2, threads=threads)
        try:
            proc = subprocess.run([sys.executable, __file__, "--memory-one", json.dumps(spec)], capture_output=True,
                                  text=True, timeout=timeout, cwd=str(REPO))
            if proc.returncode == 0:
                out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                out[name] = {"error": proc.stderr.strip().splitlines()[-3:]}
        except subprocess.TimeoutExpired:
            out[name] = {"error": f"timeout after {timeout:g} s"}
        print(f"  memory {name}: {out[name]}", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------- timing
def timing_pass(config: str, device: str, shape: str, variants: Sequence[str], stream: np.ndarray, seed: int,
                weights: Optional[str], width: int, queries: int, warmup: int, windows: int) -> Dict[str, Any]:
    """All variants in this process, interleaved window by window."""
    V, T = SHAPES[shape]
    base = build_base(config, device, seed, weights)
    fp = fingerprint(base)
    n_params = sum(p.numel() for p in base.parameters())
    layout_model = base.aggregator.layout
    preds = {name: make_variant(base, name, device, width) for name in variants}
    del base
    q = queries_for(queries)
    times: Dict[str, Dict[str, List[float]]] = {n: {} for n in variants}
    vs_ref: Dict[str, Optional[Dict[str, float]]] = {n: None for n in variants}
    vs_parent: Dict[str, Optional[Dict[str, float]]] = {n: None for n in variants}
    misses: Dict[str, List[int]] = {n: [] for n in variants}
    info: Dict[str, Any] = {}
    for k in range(warmup + windows):
        frames, keys = window_frames(stream, k, V, T)
        order = list(variants[k % len(variants):]) + list(variants[:k % len(variants)])
        outs = {}
        for name in order:
            c0 = time.process_time()
            p = predict(preds[name], name, frames, keys, V, q, first=k == 0)
            cpu_ms = 1e3 * (time.process_time() - c0)
            outs[name] = outputs_of(p)
            info.setdefault(name, {"precision": preds[name].precision, "model_hw": list(p.model_hw),
                                   "dynamic_mask_source": p.dynamic_mask_source,
                                   "layout": preds[name].layout or layout_model,
                                   "keep_layers": (None if preds[name].model.aggregator.keep_layers is None
                                                   else list(preds[name].model.aggregator.keep_layers)),
                                   "heads_run": _heads_run(preds[name], q is not None),
                                   "compiled": preds[name].compiled,
                                   "compile_error": preds[name].compile_error})
            if VARIANTS[name][2]:
                misses[name].append(int(preds[name].embed_cache_misses))
            if k >= warmup:
                for key, v in p.timing_ms.items():
                    times[name].setdefault(key, []).append(v)
                times[name].setdefault("process_cpu", []).append(cpu_ms)
        for name in variants:
            if "reference" in outs and name != "reference":
                vs_ref[name] = merge_max(vs_ref[name], diff(outs[name], outs["reference"]))
            par = PARENT.get(name)
            if par in outs:
                vs_parent[name] = merge_max(vs_parent[name], diff(outs[name], outs[par]))
        if k == 0 and "reference" in outs:
            info["_reference_depth_median"] = float(np.median(outs["reference"]["depth"]))
        print(f"  window {k}: " + ", ".join(f"{n} {times[n]['total'][-1]:.0f} ms" if k >= warmup else n
                                            for n in variants), file=sys.stderr, flush=True)
    rows = {}
    ref_total = summarize(times["reference"]["total"]) if "reference" in times else None
    ref_model = summarize(times["reference"]["model"]) if "reference" in times else None
    for name in variants:
        t = {key: summarize(v) for key, v in times[name].items()}
        row: Dict[str, Any] = dict(info[name])
        row.update({f"{key}_ms": s for key, s in t.items()})
        row["embed_cache_misses_per_window"] = misses[name] or None
        row["ms_per_frame_median"] = round(t["total"]["median"] / (V * T), 2)
        if ref_total is not None:
            row["speedup_vs_reference_total_median"] = round(ref_total["median"] / t["total"]["median"], 3)
            row["speedup_vs_reference_total_min"] = round(ref_total["min"] / t["total"]["min"], 3)
            row["speedup_vs_reference_model_median"] = round(ref_model["median"] / t["model"]["median"], 3)
            ref_cpu = summarize(times["reference"]["process_cpu"])
            row["speedup_vs_reference_process_cpu_median"] = round(ref_cpu["median"] / t["process_cpu"]["median"], 3)
        row["max_diff_vs_reference"] = vs_ref[name]
        if name in PARENT:
            row["max_diff_vs_previous"] = {"previous": PARENT[name], **(vs_parent[name] or {})}
            row["should_agree_with_previous"] = agreement_expected(name, layout_model)
        rows[name] = row
    return {"weights_fingerprint": fp, "parameters": n_params, "model_layout": layout_model,
            "reference_depth_median": info.get("_reference_depth_median"), "variants": rows}


def _heads_run(pred, with_tracks: bool) -> List[str]:
    """Heads a predict() call runs: the Predictor's selection, or every head of the model."""
    sel = pred.heads_for(with_tracks)
    if sel is None:
        sel = pred.model.enabled_heads() if hasattr(pred.model, "enabled_heads") else ()
        if not with_tracks:
            sel = set(sel) - {"track"}
    return sorted(sel)


def agreement_expected(name: str, model_layout: str) -> str:
    if name in ("keep_layers", "embed_cache", "no_point_head"):
        return "exact up to float round-off (same formulation)"
    if name == "project_fp32":
        return ("exact up to float round-off (the model's layout is global)" if model_layout == "global"
                else f"no: the model's '{model_layout}' attention layout is a different formulation")
    if name == "project_dense":
        return "exact up to float round-off on the dense frames (the dense heads see each frame on its own)"
    return "approximately: lower-precision weights and activations"


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--configs", nargs="+", default=None, help="named model configs (default: tiny on the CPU; "
                    "vggt-1b and tiny on CUDA)")
    ap.add_argument("--checkpoint", default="auto", help="'auto' (embedded weights if the config ships them, else "
                    "random), 'random', or a weights file")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                    help="default: all but project_fp16 on the CPU, all on CUDA")
    ap.add_argument("--queries", type=int, default=64, help="query points tracked per window (the node's "
                    "keypoints.max_count; 0: no track head)")
    ap.add_argument("--warmup", type=int, default=None, help="windows not timed (default 1 CPU, 2 CUDA)")
    ap.add_argument("--windows", type=int, default=None, help="timed windows (default 4 CPU, 10 CUDA)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default). With 1, the "
                    "process CPU time per window (process_cpu_ms) is the steadiest figure on a shared machine")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory subprocesses")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per memory subprocess")
    ap.add_argument("--save", default=None, help="also write the JSON here")
    ap.add_argument("--quick", action="store_true", help="smoke run (under a minute on a quiet CPU): tiny, V2xT8, "
                    f"variants {' '.join(QUICK_VARIANTS)}, 1 warm-up + 2 timed windows, no memory pass")
    ap.add_argument("--memory-one", default=None, help=argparse.SUPPRESS)  # internal
    args = ap.parse_args()
    if args.quick:
        args.configs = args.configs or ["tiny"]
        if args.shapes == list(SHAPES):
            args.shapes = ["V2xT8"]
        args.variants = args.variants or list(QUICK_VARIANTS)
        args.warmup = 1 if args.warmup is None else args.warmup
        args.windows = 2 if args.windows is None else args.windows
        args.no_memory = True

    if args.memory_one:
        print(json.dumps(memory_one(json.loads(args.memory_one))))
        return 0

    import torch

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    mach = machine_info()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    configs = args.configs or (["vggt-1b", "tiny"] if cuda else ["tiny"])
    variants = args.variants or [v for v in VARIANTS if (cuda or v != "project_fp16") and v not in ON_REQUEST]
    if "reference" not in variants:
        variants = ["reference"] + list(variants)
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    windows = args.windows if args.windows is not None else (10 if cuda else 4)
    steps = max(T for _V, T in (SHAPES[s] for s in args.shapes)) + warmup + windows - 1
    print(f"rendering {steps} synthetic time steps (2 cameras, {INPUT_HW[1]}x{INPUT_HW[0]})", file=sys.stderr)
    stream = render_stream(steps, 2, args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="vggt4d-bench-")
    frames_file = str(Path(tmp.name) / "stream.npz")
    np.savez(frames_file, stream=stream)
    runs = []
    for config in configs:
        weights = resolve_weights(config, args.checkpoint)
        width = target_width(config)
        for shape in args.shapes:
            print(f"{config} {shape} on {device} (weights: {weights or 'random, seed %d' % args.seed})",
                  file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            run: Dict[str, Any] = {"config": config, "shape": shape, "views": SHAPES[shape][0],
                                   "times": SHAPES[shape][1], "frames_per_window": SHAPES[shape][0] * SHAPES[shape][1],
                                   "device": device, "weights": Path(weights).name if weights else f"random (seed {args.seed})",
                                   "queries": args.queries, "warmup_windows": warmup, "timed_windows": windows,
                                   "torch_threads": torch.get_num_threads()}
            try:
                run.update(timing_pass(config, device, shape, variants, stream, args.seed, weights, width,
                                       args.queries, warmup, windows))
            except Exception as exc:  # noqa: BLE001 - record and go on with the next configuration
                run["error"] = f"{type(exc).__name__}: {exc}"
                runs.append(run)
                continue
            if not args.no_memory:
                mem = memory_pass(config, device, shape, variants, frames_file, args.seed, weights, width,
                                  args.queries, torch.get_num_threads(), args.timeout)
                for name, m in mem.items():
                    run["variants"][name]["memory"] = m
                    if m.get("weights_fingerprint") is not None and not math.isclose(
                            m["weights_fingerprint"], run["weights_fingerprint"], rel_tol=1e-9, abs_tol=1e-6):
                        run["variants"][name]["memory"]["warning"] = "different weights in the memory subprocess"
            run["wall_s"] = round(time.perf_counter() - t0, 1)
            runs.append(run)
            if args.save:  # partial results survive an interrupted run
                Path(args.save).parent.mkdir(parents=True, exist_ok=True)
                Path(args.save).write_text(json.dumps({"benchmark": "model_vs_reference", "partial": True,
                                                       "machine": mach, "runs": runs}, indent=2) + "\n")
            if cuda:
                torch.cuda.empty_cache()
    tmp.cleanup()
    headline = []
    for r in runs:
        if "variants" not in r:
            continue
        proj = "project_bf16" if cuda and "project_bf16" in r["variants"] else "project_fp32"
        if proj not in r["variants"]:
            continue
        p = r["variants"][proj]
        ref = r["variants"]["reference"]
        h = {"config": r["config"], "shape": r["shape"], "project_variant": proj,
             "project_mode": "streaming: stride-1 overlapping windows, patch-embed cache, heads run "
                             + "/".join(p["heads_run"]) + " (no point head)",
             "reference_total_ms_median": ref["total_ms"]["median"], "project_total_ms_median": p["total_ms"]["median"],
             "speedup_total_median": p["speedup_vs_reference_total_median"],
             "speedup_total_min": p["speedup_vs_reference_total_min"],
             "speedup_model_median": p["speedup_vs_reference_model_median"],
             "speedup_process_cpu_median": p["speedup_vs_reference_process_cpu_median"],
             "torch_threads": r.get("torch_threads"),
             "target_2x_met_median": bool(p["speedup_vs_reference_total_median"] >= 2.0)}
        for other in ("no_point_head", "project_compiled", "project_dense", "project_dense_bf16"):
            if other in r["variants"] and other != proj:
                h[f"{other}_speedup_total_median"] = r["variants"][other]["speedup_vs_reference_total_median"]
        mk = "peak_gpu_mem_mib" if cuda else "peak_rss_mib"
        if "memory" in p and mk in p["memory"] and mk in ref.get("memory", {}):
            h[f"reference_{mk}"] = ref["memory"][mk]
            h[f"project_{mk}"] = p["memory"][mk]
        headline.append(h)
    doc = {
        "benchmark": "model_vs_reference",
        "machine": mach,
        "shared_machine": None if cuda else SHARED_MACHINE_NOTE,
        "quick": bool(args.quick),
        "git_commit": git_commit(),
        "input_hw": list(INPUT_HW),
        "issue_target": "tiny on CPU at least 2x faster than the reference formulation on the same window",
        "note": ("process_cpu: CPU time of this process per predict() (all torch threads; steadier than wall clock "
                 "under load from other processes, most of all with --threads 1); "
                 "times: Predictor.predict wall clock per window (preprocess + model + postprocess; the postprocess "
                 "is identical in every variant: depth unprojection, dynamic mask, maps at input size), ms; "
                 "'model' is the forward pass alone; stride-1 stream of synthetic frames, variants interleaved per "
                 "window; memory from one subprocess per variant (2 windows)"),
        "variants_legend": {n: dict(zip(("layout", "keep_only_used_layers", "embed_cache", "point_head", "precision",
                                         "compile", "dense_subset"),
                                        (v[0] or "model's",) + v[1:])) for n, v in VARIANTS.items() if n in variants},
        "headline": headline,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "runs": runs,
    }
    return emit_json(doc, args.save)


if __name__ == "__main__":
    sys.exit(main())
