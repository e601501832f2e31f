"""Loss curves of a (multi-stage) training run: a CSV and a small PNG from the runs' ``log.jsonl`` files and
optional held-out evaluations (``vggt4d_ros.training.evaluate`` JSON files named ``step-<N>.json``).

CLI::

    python -m vggt4d_ros.training.curves --stage stage1=RUN1 --stage stage2=RUN2 [--heldout DIR] \\
        --out vggt4d_ros/resources/models/tiny-train-curves

writes ``<out>.csv`` (one row per ``--every`` steps: stage, step, global step, the mean of each loss term over
those steps, seconds per step) and ``<out>.png``; with ``--heldout``, ``<out>-heldout.csv`` (one row per
evaluated snapshot of the last stage) and a second panel.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

TERMS = ("loss", "camera", "depth", "point", "mask", "page_mask", "track")
HELDOUT_KEYS = ("model/abs_rel_frame", "model/ate_pct", "model/rot_err_deg", "model/mask_iou",
                "model/track_epe_median", "selection_score")


def binned(log: Path, every: int) -> List[Dict[str, float]]:
    """Means of the loss terms over consecutive blocks of ``every`` logged steps."""
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    out = []
    for a in range(0, len(rows), every):
        block = rows[a:a + every]
        r = {"step": int(block[-1]["step"]), "step_s": float(np.mean([b.get("step_s", np.nan) for b in block]))}
        for t in TERMS:
            vals = [b[t] for b in block if t in b]
            r[t] = float(np.mean(vals)) if vals else float("nan")
        out.append(r)
    return out


def heldout_rows(directory: Path) -> List[Dict[str, float]]:
    rows = []
    for f in sorted(directory.glob("step-*.json")):
        m = re.search(r"step-(\d+)", f.name)
        d = json.loads(f.read_text())
        rows.append({"step": int(m.group(1)), **{k: float(d.get(k, float("nan"))) for k in HELDOUT_KEYS}})
    return rows


def write(stages: Sequence[Tuple[str, Path]], out: Path, every: int = 25,
          heldout: Optional[Path] = None) -> List[Path]:
    """Write the CSV(s) and the PNG; returns their paths."""
    rows = []
    offset = 0
    for name, run in stages:
        b = binned(Path(run) / "log.jsonl", every)
        for r in b:
            rows.append({"stage": name, "global_step": offset + r["step"], **r})
        offset += b[-1]["step"] if b else 0
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".csv")]
    with open(paths[0], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["stage", "step", "global_step", *TERMS, "step_s"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()})
    held = heldout_rows(heldout) if heldout is not None else []
    if held:
        last_offset = offset - (rows[-1]["step"] if rows else 0)
        p = out.with_name(out.name + "-heldout.csv")
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "global_step", *HELDOUT_KEYS])
            w.writeheader()
            for r in held:
                w.writerow({"global_step": last_offset + r["step"], **{k: round(v, 5) if isinstance(v, float) else v
                                                                        for k, v in r.items()}})
        paths.append(p)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    n = 2 if held else 1
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 3.2), dpi=80)
    axes = np.atleast_1d(axes)
    gs = np.array([r["global_step"] for r in rows])
    for t in TERMS:
        v = np.array([r[t] for r in rows])
        if np.isfinite(v).any():
            axes[0].plot(gs, v, label=t, lw=1.2)
    for name, _ in stages[1:]:
        first = next(r["global_step"] for r in rows if r["stage"] == name)
        axes[0].axvline(first, color="k", ls=":", lw=0.8)
    axes[0].set_xlabel("step (all stages)")
    axes[0].set_ylabel(f"training loss (mean of {every} steps)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7, ncol=2)
    if held:
        hs = [last_offset + r["step"] for r in held]
        for k in ("model/abs_rel_frame", "model/mask_iou", "selection_score"):
            axes[1].plot(hs, [r[k] for r in held], marker="o", label=k, lw=1.2)
        axes[1].set_xlabel("step (all stages)")
        axes[1].set_title("held-out family", fontsize=9)
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    png = out.with_suffix(".png")
    fig.savefig(png)
    plt.close(fig)
    paths.append(png)
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="vggt4d-train-curves", description="Loss curves of training runs.")
    p.add_argument("--stage", action="append", required=True, help="NAME=RUN_DIR (in order)")
    p.add_argument("--heldout", default=None, help="directory of step-<N>.json held-out evaluations (last stage)")
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--out", required=True, help="output path without extension")
    a = p.parse_args(argv)
    stages = [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in a.stage]
    for path in write(stages, Path(a.out), a.every, Path(a.heldout) if a.heldout else None):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
