"""``vggt4d-replay BAG --config YAML --out DIR``: run the node's pipeline on a bag and evaluate it.

Offline (default) the bag is read, synchronised, windowed and run through the pipeline directly
(deterministic, as fast as the model allows); with ``--through-ros`` the real node runs as a subprocess
over DDS (localhost only), fed by the project's player in lock-step on ``/vggt4d/status`` (or at the
bag's rate with ``--rate``) and recorded by the project's recorder. Either way DIR gets:

- ``outputs.mcap``: every topic the node publishes (rosbag2 MCAP; log time = stamp offline, receive time
  through ROS);
- ``metrics.json``: runtime figures always; ATE/RPE, depth AbsRel/delta1, dynamic-mask IoU and
  track EPE/visibility where the bag has ground truth (``/gt/...``, as written by ``vggt4d-synth``),
  each beside a trivial baseline;
- ``trajectory.png``, ``panels.png``, ``errors.png`` and ``report.md`` (one page);
- ``params.yaml``: the effective node parameters of the run.

Ctrl-C stops early: outputs.mcap is finalised (truncated, readable) and the report says INCOMPLETE.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

__all__ = ["main", "build_parser"]

PROG = "vggt4d-replay"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Run the vggt4d pipeline on a rosbag2 bag (MCAP or sqlite3) offline or through the real "
                    "node, write DIR/outputs.mcap (every topic the node publishes), DIR/metrics.json (runtime; "
                    "ATE/RPE, depth, dynamic-mask and track errors against the bag's /gt/... ground truth when "
                    "present, beside trivial baselines), plots and DIR/report.md.")
    ap.add_argument("bag", help="input bag: rosbag2 directory, or a .mcap / .db3 file")
    ap.add_argument("--config", help="node parameters, YAML in the '/**: ros__parameters:' form "
                                     "(e.g. config/tiny.yaml); default: the node's defaults")
    ap.add_argument("--out", required=True, help="output directory (created; existing outputs need --overwrite)")
    ap.add_argument("--through-ros", action="store_true",
                    help="run the real node (vggt4d-node subprocess) over localhost DDS instead of offline")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="--through-ros only: play at this multiple of the bag's rate without waiting for the "
                         "node (frames may be skipped); 0 (default) = lock-step on /vggt4d/status")
    ap.add_argument("--cameras", action="append", default=None, metavar="LIST",
                    help="cameras to use, comma-separated: 'name=/image/topic', '/image/topic' (name from its "
                         "namespace) or a camera name of the config; camera_info is the topic's sibling. "
                         "Default: the config's cameras, or every image topic with a camera_info when the "
                         "config's topics are not in the bag")
    ap.add_argument("--model", help="override model.config (a name from config/models or a model YAML)")
    ap.add_argument("--checkpoint", help="override model.checkpoint (.safetensors/.pt, or 'random-init')")
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), help="override model.device")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many synchronised time steps")
    ap.add_argument("--slowdown", type=int, default=1, metavar="K",
                    help="offline only: emulate a model K times slower than the window stride, deterministically "
                         "(only every K-th queued window is processed, the others are skipped as the node's "
                         "latest-wins slot skips them live); default 1")
    ap.add_argument("--lock-step-timeout", type=float, default=60.0,
                    help="--through-ros: seconds to wait for the node's status before playing on (default 60)")
    ap.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run in --out")
    ap.add_argument("--quiet", action="store_true", help="no progress bar and no notes on stderr")
    return ap


def _fail(msg: str, code: int = 2) -> int:
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return code


OUTPUT_FILES = ("outputs.mcap", "metrics.json", "report.md", "trajectory.png", "panels.png", "errors.png",
                "params.yaml", "node.log")


def main(argv: Optional[List[str]] = None) -> int:
    from ..cli_util import strip_ros_args  # launch_ros appends --ros-args ...
    args = build_parser().parse_args(strip_ros_args(argv))
    from vggt4d_ros.bag.io import BagError, bag_topics
    from vggt4d_ros.eval.config import ConfigError, check_model, load_params, resolve_cameras, write_params_file

    say = (lambda s: None) if args.quiet else (lambda s: print(f"[{PROG}] {s}", file=sys.stderr, flush=True))
    # ---------------------------------------------------------------- every check before any work
    try:
        params = load_params(args.config)
        if args.model:
            params["model.config"] = args.model
        if args.checkpoint is not None:
            params["model.checkpoint"] = args.checkpoint
        if args.device:
            params["model.device"] = args.device
        checkpoint = check_model(params)
    except ConfigError as exc:
        return _fail(exc)
    if args.max_steps is not None and args.max_steps < 1:
        return _fail("--max-steps must be >= 1")
    if args.slowdown < 1 or (args.slowdown > 1 and args.through_ros):
        return _fail("--slowdown must be >= 1, and is for offline runs (through ROS the node skips by itself)")
    bag = Path(args.bag)
    try:
        topics = bag_topics(bag)
    except BagError as exc:
        return _fail(exc)
    try:
        cams = resolve_cameras(params, topics, [c for item in (args.cameras or []) for c in item.split(",")])
    except ConfigError as exc:
        return _fail(exc)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        return _fail(f"--out {out_dir} exists and is not a directory")
    existing = [f for f in OUTPUT_FILES if (out_dir / f).exists()]
    if existing and not args.overwrite:
        return _fail(f"{out_dir} already holds {', '.join(existing)} (use --overwrite)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in existing:
        p = out_dir / f
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if cams.note:
        say(cams.note)
    params_file = write_params_file(params, out_dir / "params.yaml")

    # ---------------------------------------------------------------- run
    total = sum(topics[t].count for t in cams.image.values())
    if args.max_steps is not None:
        total = min(total, args.max_steps * len(cams.names))
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="replay", file=sys.stderr, dynamic_ncols=True)

    def progress(n: int) -> None:
        if bar is not None:
            bar.update(n - bar.n)

    notes: List[str] = [cams.note] if cams.note else []
    t0 = time.monotonic()
    try:
        if args.through_ros:
            from vggt4d_ros.eval.through_ros import run_through_ros

            stats, outputs = run_through_ros(bag, params, cams, out_dir, params_file, rate=args.rate,
                                             max_steps=args.max_steps, lock_step_timeout=args.lock_step_timeout,
                                             progress=progress, log=say)
        else:
            from vggt4d_ros.eval.offline import OutputBag, run_offline

            sink = OutputBag(out_dir)
            try:
                stats = run_offline(bag, params, cams, sink, max_steps=args.max_steps, progress=progress, log=say,
                                    slowdown=args.slowdown)
            finally:
                try:
                    outputs = sink.close()
                except KeyboardInterrupt:  # a second Ctrl-C while finalising: finish anyway
                    outputs = sink.close()
    except (BagError, RuntimeError) as exc:
        if bar is not None:
            bar.close()
        return _fail(exc, 1)
    finally:
        if bar is not None:
            bar.close()
    notes += stats.notes
    incomplete = stats.interrupted
    say(f"{stats.steps_out} time steps out of {stats.steps_in} in, {stats.windows} windows, "
        f"{time.monotonic() - t0:.1f} s{' (interrupted)' if incomplete else ''}")

    # ---------------------------------------------------------------- evaluate and report
    from vggt4d_ros.eval.evaluate import evaluate
    from vggt4d_ros.eval.report import write_metrics_json, write_plots, write_report

    metrics, plot = evaluate(bag, outputs, params, cams, stats)
    doc = {
        "incomplete": bool(incomplete),
        "incomplete_reason": "interrupted (Ctrl-C)" if incomplete else "",
        "run": {
            "bag": str(bag), "mode": "through-ros" if args.through_ros else "offline", "device": stats.device,
            "model": str(params["model.config"]), "checkpoint": checkpoint or "random-init",
            "cameras": list(cams.names), "camera_topics": dict(cams.image), "params_file": str(params_file),
            "outputs": str(outputs), "max_steps": args.max_steps, "slowdown": args.slowdown,
            "stopped_at_max_steps": stats.stopped_at_max_steps,
            "messages_written": dict(sorted(stats.messages.items())), "rejected_frames": stats.frames_rejected,
            "errors": stats.errors, "resets": stats.resets, "notes": notes,
        },
    }
    doc.update(metrics)
    files = write_plots(plot, out_dir)
    write_metrics_json(doc, out_dir / "metrics.json")
    report = write_report(doc, files, out_dir)
    for sec in ("trajectory", "depth", "dynamic_mask", "tracks"):
        if doc[sec].get("available") is False:
            say(f"{sec} metrics skipped: {doc[sec]['reason']}")
    say(f"wrote {outputs}, {out_dir / 'metrics.json'}, {report}")
    return 130 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
