#!/usr/bin/env python3
"""Accuracy when the model is slower than the cameras, deterministically (``vggt4d-replay --slowdown K``).

The offline replay processes only every K-th window the front end queues (a model K times slower than the
window stride; the others are skipped in the latest-wins slot, as the live node skips them), on one synthetic
2-camera bag with ground truth. Per K, printed as JSON (vggt4d_ros.bench_util.emit_json): windows processed
and skipped, the tracking state of the published steps, Sim(3) and SE(3) ATE, the Sim(3) scale (ground truth
per estimated metre: 1 = metric scale right) and the constant-pose baseline. ``bench/node.py`` measures the
same live over DDS (with timing noise); this isolates what the window selection and the model do with frames
farther apart.

    python bench/slowdown.py --save bench/results/slowdown-tiny-cpu-amd-epyc-2c.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from vggt4d_ros.bench_util import emit_json, git_commit, machine_info

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "tiny.yaml"), help="node parameters (default tiny)")
    ap.add_argument("--slowdowns", default="1,3,6,12", help="comma-separated K values (default 1,3,6,12)")
    ap.add_argument("--steps", type=int, default=87, help="time steps of the synthetic 10 Hz bag (default 87)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--save", help="also write the JSON here")
    args = ap.parse_args()

    from vggt4d_ros.data import SynthConfig, SynthSequence
    from vggt4d_ros.data.bagwriter import write_synth_bag
    from vggt4d_ros.rosenv import localhost_env

    work = Path(tempfile.mkdtemp(prefix="vggt4d-slowdown-"))
    bag = work / "bag"
    seq = SynthSequence(SynthConfig(seed=0, num_cameras=2, width=args.width, height=args.height, rate_hz=10.0,
                                    duration_s=args.steps / 10.0))
    write_synth_bag(seq, bag, storage="mcap", ground_truth=True)
    rows = []
    for k in (int(x) for x in args.slowdowns.split(",")):
        out = work / f"k{k}"
        subprocess.run([sys.executable, "-m", "vggt4d_ros.tools.replay", str(bag), "--config", args.config,
                        "--out", str(out), "--quiet", "--slowdown", str(k)], check=True, env=localhost_env(),
                       cwd=ROOT)
        m = json.loads((out / "metrics.json").read_text())
        t, rt = m["trajectory"], m["runtime"]
        rows.append({"slowdown": k, "windows": rt["windows"], "windows_skipped": rt["windows_skipped"],
                     "poses": t["num_poses"], "tracking_states": rt.get("tracking_states"),
                     "ate_sim3_m": round(t["sim3"]["ate_rmse"], 4), "ate_se3_m": round(t["se3"]["ate_rmse"], 4),
                     "sim3_scale": round(t["sim3_scale"], 3),
                     "baseline_constant_pose_ate_m": round(t["baseline_constant_pose"]["ate_rmse"], 4)})
    doc = {"benchmark": "slowdown", "machine": machine_info(), "git_commit": git_commit(), "config": args.config,
           "bag": {"cameras": 2, "width": args.width, "height": args.height, "rate_hz": 10.0, "steps": args.steps,
                   "seed": 0},
           "method": "vggt4d-replay --slowdown K: only every K-th queued window is processed (deterministic)",
           "results": rows}
    return emit_json(doc, args.save)


if __name__ == "__main__":
    raise SystemExit(main())
