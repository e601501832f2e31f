"""``vggt4d-export``: export the 4D model to ONNX for one image size and window, and verify it.

Example (the tiny config at 112 x 70, 2 cameras x 2 steps)::

    vggt4d-export --config tiny --checkpoint vggt4d_ros/resources/models/tiny.safetensors \\
        --height 70 --width 112 --views 2 --steps 2 -o tiny.onnx

writes ``tiny.onnx`` and ``tiny.onnx.json`` (sidecar: size, V, T, layout, reference, outputs, versions and the
onnxruntime-vs-torch parity figures), checks the file with ``onnx.checker`` and prints the max abs / rel error.
Without ``--checkpoint`` it refuses to export (random weights give a graph that runs but predicts nothing)
unless ``--random-weights`` asks for exactly that. The exporter stack's own logging (hundreds of lines per
export) is silenced unless ``--verbose``.
Exit status: 0 ok, 1 parity above ``--tolerance``, 2 bad arguments (config, checkpoint, size, heads...).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from ..cli_util import strip_ros_args

__all__ = ["main", "build_parser"]

_LOG = logging.getLogger("vggt4d-export")


def _reference(text: str):
    if text in ("first", "newest"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"reference must be first, newest or a frame index, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vggt4d-export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="model configuration: tiny, vggt-1b, ... or a YAML path")
    p.add_argument("--checkpoint", default=None, help="weights (.safetensors / .pt); required unless --random-weights")
    p.add_argument("--random-weights", action="store_true",
                   help="export the configuration with seeded random weights (pipeline tests only)")
    p.add_argument("--height", type=int, required=True, help="model-grid height in px (multiple of 14)")
    p.add_argument("--width", type=int, required=True, help="model-grid width in px (multiple of 14)")
    p.add_argument("--views", type=int, default=1, help="V cameras (default 1)")
    p.add_argument("--steps", type=int, default=1, help="T time steps (default 1); S = V * T frames")
    p.add_argument("--dynamic-frames", action="store_true", help="make S a dynamic axis (global layout only)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17, default 18)")
    p.add_argument("--heads", default="camera,depth,mask",
                   help="comma list of camera, depth, mask, points, page4d (default camera,depth,mask; mask is "
                        "dropped when the model has no mask head)")
    p.add_argument("--fp16", action="store_true", help="export fp16 weights and activations")
    p.add_argument("--layout", choices=("global", "spatiotemporal"), default=None,
                   help="attention layout baked into the graph (default: the model's)")
    p.add_argument("--reference", type=_reference, default="first",
                   help="reference frame: first (default), newest (view 0 at the newest step) or an index")
    p.add_argument("--no-verify", action="store_true", help="skip onnx.checker and the onnxruntime parity check")
    p.add_argument("--no-optimize", action="store_true", help="skip the ONNX graph optimizer (faster export)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max relative error (max |ort - torch| / max |torch| per output) accepted by the parity "
                        "check (default 1e-3 fp32, 5e-2 fp16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parity input")
    p.add_argument("-o", "--output", required=True, help="output .onnx path (sidecar: <output>.json)")
    p.add_argument("--verbose", action="store_true", help="show the exporter stack's logging (torch.onnx, onnxscript)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(strip_ros_args(argv))
    if args.checkpoint and args.random_weights:
        print("vggt4d-export: error: --checkpoint and --random-weights exclude each other", file=sys.stderr)
        return 2
    if not args.checkpoint and not args.random_weights:
        print("vggt4d-export: error: no --checkpoint: give the weights (--checkpoint FILE, e.g. "
              "vggt4d_ros/resources/models/tiny.safetensors for --config tiny) or ask for --random-weights",
              file=sys.stderr)
        return 2
    # The root logger at WARNING: the exporter stack logs at INFO; this tool's own lines stay at INFO.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    _LOG.setLevel(logging.INFO)
    import torch

    from ..export import ExportError, ExportSpec, export_onnx
    from ..model import CheckpointError, load_checkpoint
    from ..model.configs import build_model_from_config

    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    spec = ExportSpec(height=args.height, width=args.width, num_views=args.views, num_steps=args.steps,
                      dynamic_frames=args.dynamic_frames, heads=heads, opset=args.opset, fp16=args.fp16,
                      layout=args.layout, reference=args.reference, optimize=not args.no_optimize)
    try:
        if args.random_weights:
            torch.manual_seed(args.seed)  # the same random weights for the same --seed
        model = build_model_from_config(args.config)
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint)
        else:
            _LOG.warning("--random-weights: exporting RANDOM weights (for testing the pipeline only)")
        meta = {"config": str(args.config), "checkpoint": args.checkpoint, "random_weights": bool(args.random_weights)}
        info = export_onnx(model, args.output, spec, verify=not args.no_verify, seed=args.seed, metadata=meta,
                           quiet=not args.verbose)
    except (ExportError, FileNotFoundError, CheckpointError, ValueError, TypeError) as e:
        print(f"vggt4d-export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} (+ {args.output}.json): inputs images {info['input']['shape']} "
          f"{info['input']['dtype']}, outputs {info['outputs']}, export {info['export_seconds']} s")
    if "parity" not in info:
        return 0
    par = info["parity"]
    print(f"onnx.checker: {info['checker']}; onnxruntime {info['versions']['onnxruntime']} "
          f"({par['providers'][0]}) vs torch {torch.__version__}:")
    for name, r in par["outputs"].items():
        print(f"  {name:22s} max abs {r['max_abs']:.3e}  max rel {r['max_rel']:.3e}")
    tol = args.tolerance if args.tolerance is not None else (5e-2 if args.fp16 else 1e-3)
    bad = {k: v for k, v in par["outputs"].items() if not v["finite"] or v["max_rel"] > tol}
    if bad:
        print(f"vggt4d-export: parity check FAILED (tolerance {tol:g}): {json.dumps(bad)}", file=sys.stderr)
        return 1
    print(f"parity ok (max rel {par['max_rel']:.3e} <= {tol:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
