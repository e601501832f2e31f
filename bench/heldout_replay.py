#!/usr/bin/env python3
"""The embedded model on held-out scenes, through the node's own path (``vggt4d-replay``, offline = the node).

Bags of the training's held-out scene family (``vggt4d_ros.training.data.FAMILIES["heldout"]``: texture
patterns, a moving shape and room sizes the training family never has, random lighting, exposure, noise and
blur, fields of view 50-90 deg, camera pan and tilt), on seeds the checkpoint selection never saw (4 and up;
the selection uses 0-3), at 4:3 and 16:9, one and two cameras. Each is replayed with the demo's node
parameters (``config/demo.yaml``: ``pose.refine`` and ``mask.source`` auto, the rig's metric scale with two
cameras) and scored by the replay's own report against its trivial baselines. Prints JSON
(``vggt4d_ros.bench_util.emit_json``) and, with ``--table``, the README's markdown table.

    python bench/heldout_replay.py --save bench/results/heldout-replay-tiny-cpu-amd-epyc-2c.json --table
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from vggt4d_ros.bench_util import emit_json, git_commit, machine_info

ROOT = Path(__file__).resolve().parents[1]

#: (seed, cameras, (height, width)): 4:3 and 16:9, one and two cameras
CASES = [(4, 2, (240, 320)), (5, 1, (240, 320)), (6, 2, (294, 518)), (7, 1, (360, 640))]


def path_length(bag: Path) -> float:
    from vggt4d_ros.eval.gt import read_poses

    _, T, _ = read_poses(bag, "/gt/odom")
    return float(np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1).sum())


def run_case(work: Path, seed: int, cams: int, size, duration: float, config: str) -> dict:
    from vggt4d_ros.data import SynthSequence
    from vggt4d_ros.data.bagwriter import write_synth_bag
    from vggt4d_ros.rosenv import localhost_env
    from vggt4d_ros.training.data import synth_config
    from vggt4d_ros.training.evaluate import HELDOUT

    cfg = dataclasses.replace(HELDOUT, duration_s=duration)
    sc = synth_config(seed, size, cfg, np.random.default_rng([seed, 99]), num_views=cams)
    bag = work / f"seed{seed}"
    write_synth_bag(SynthSequence(sc), bag, storage="mcap", ground_truth=True)
    out = work / f"out{seed}"
    cmd = [sys.executable, "-m", "vggt4d_ros.tools.replay", str(bag), "--config", config, "--out", str(out),
           "--quiet", "--cameras", ",".join(f"cam{i}" for i in range(cams))]
    subprocess.run(cmd, check=True, env=localhost_env(), cwd=ROOT)
    m = json.loads((out / "metrics.json").read_text())
    t, d, k, dm = m["trajectory"], m["depth"], m["tracks"], m["dynamic_mask"]
    L = path_length(bag)
    row = {
        "seed": seed, "cameras": cams, "width": size[1], "height": size[0], "fov_deg": round(sc.fov_deg, 1),
        "steps": m["runtime"]["steps_out"], "path_m": round(L, 3),
        "tracking_states": m["runtime"].get("tracking_states"),
        "ate_sim3_m": round(t["sim3"]["ate_rmse"], 4), "ate_sim3_pct_path": round(100 * t["sim3"]["ate_rmse"] / L, 2),
        "constant_pose_ate_pct_path": round(100 * t["baseline_constant_pose"]["ate_rmse"] / L, 2),
        "rpe_rot_deg": round(t["sim3"]["rpe_rot_deg_rmse"], 3),
        "constant_pose_rpe_rot_deg": round(t["baseline_constant_pose"]["rpe_rot_deg_rmse"], 3),
        "sim3_scale": round(t["sim3_scale"], 3),
        "abs_rel_frame": round(d["per_frame"]["abs_rel"], 4),
        "constant_depth_abs_rel_frame": round(d["baseline_constant_depth"]["per_frame"]["abs_rel"], 4),
        "abs_rel_raw": round(d["raw"]["abs_rel"], 4),
        # ground truth per published unit over the sequence: 1 = metric depth exactly right (rig only)
        "depth_scale": round(d["per_sequence"]["scale"], 4),
        "mask_iou": round(dm["iou_dynamic"], 4), "all_dynamic_iou": round(dm["baseline_all_dynamic"]["iou_dynamic"], 4),
        "track_epe_median_px": round(k["epe_median"], 2),
        "static_points_epe_median_px": round(k["baseline_static_points"]["epe_median"], 2),
        "throughput_steps_per_s": round(m["runtime"]["throughput_steps_per_s"], 2),
    }
    return row


def table(rows) -> str:
    def mean(key, sel=lambda r: True):
        v = [r[key] for r in rows if sel(r)]
        return float(np.mean(v)) if v else float("nan")

    rig = lambda r: r["cameras"] > 1  # noqa: E731
    lines = ["| output | held-out (mean of %d bags) | its baseline | issue-16 target |" % len(rows),
             "| --- | --- | --- | --- |",
             f"| camera, Sim(3) ATE | {mean('ate_sim3_pct_path'):.1f} % of the path | constant pose "
             f"{mean('constant_pose_ate_pct_path'):.1f} % | 5 % |",
             f"| rotation RPE | {mean('rpe_rot_deg'):.3f} deg | {mean('constant_pose_rpe_rot_deg'):.3f} deg | |",
             f"| depth AbsRel (median scale per frame) | {mean('abs_rel_frame'):.3f} | constant depth "
             f"{mean('constant_depth_abs_rel_frame'):.3f} | 0.15 |",
             f"| metric depth scale error, 2-camera rig | "
             f"{100 * float(np.mean([abs(r['depth_scale'] - 1) for r in rows if rig(r)])):.1f} % mean absolute "
             "(per bag: " + ", ".join(f"{100 * r['depth_scale'] - 100:+.1f} %" for r in rows if rig(r))
             + ") | | within 5 % |",
             f"| dynamic-mask IoU | {mean('mask_iou'):.3f} | all dynamic {mean('all_dynamic_iou'):.3f} | 0.5 |",
             f"| track EPE median | {mean('track_epe_median_px'):.1f} px | static points "
             f"{mean('static_points_epe_median_px'):.1f} px | |"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"), help="node parameters (default demo)")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per bag at 10 Hz (default 4)")
    ap.add_argument("--cases", type=int, default=len(CASES), help=f"first N of the {len(CASES)} bags")
    ap.add_argument("--save", help="also write the JSON here")
    ap.add_argument("--table", action="store_true", help="print the README's markdown table to stderr")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vggt4d-heldout-"))
    rows = [run_case(work, s, c, size, args.duration, args.config) for s, c, size in CASES[: args.cases]]
    doc = {"benchmark": "heldout_replay", "machine": machine_info(), "git_commit": git_commit(),
           "config": str(Path(args.config).resolve().relative_to(ROOT)) if Path(args.config).resolve().is_relative_to(ROOT)
           else args.config, "duration_s": args.duration, "rows": rows, "table": table(rows)}
    emit_json(doc)
    if args.save:
        Path(args.save).write_text(json.dumps(doc, indent=1) + "\n")
    if args.table:
        print(doc["table"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
