"""Plots (matplotlib, Agg) and a one-page Markdown report of a replay."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

__all__ = ["write_plots", "write_report", "write_metrics_json", "jsonable"]


def jsonable(x: Any) -> Any:
    """Plain JSON types; non-finite floats become null (strict JSON)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def write_metrics_json(metrics: Mapping[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(jsonable(metrics), indent=2, allow_nan=False) + "\n")
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _t(stamps_ns: List[int], t0: int) -> np.ndarray:
    return (np.asarray(stamps_ns, dtype=np.int64) - t0) * 1e-9


def write_plots(plot: Mapping[str, Any], out_dir: Path) -> Dict[str, str]:
    """Write trajectory.png, panels.png and errors.png (those with data); returns ``{name: file name}``."""
    plt = _plt()
    files: Dict[str, str] = {}
    traj = plot.get("trajectory")
    if traj:
        ref = np.asarray(traj["ref_xyz"])
        est = np.asarray(traj["est_aligned_xyz"])
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, (i, j, lab) in zip(axes, ((0, 1, "top view (x, y)"), (0, 2, "side view (x, z)"))):
            ax.plot(ref[:, i], ref[:, j], "k-", lw=2, label="ground truth")
            ax.plot(est[:, i], est[:, j], "r.-", lw=1, label="estimate (Sim(3)-aligned)")
            ax.plot(ref[0, i], ref[0, j], "go", label="start")
            ax.set_title(lab)
            ax.set_xlabel("xyz"[i] + " [m]")
            ax.set_ylabel("xyz"[j] + " [m]")
            ax.axis("equal")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "trajectory.png", dpi=90)
        plt.close(fig)
        files["trajectory"] = "trajectory.png"

    panels = plot.get("panels") or {}
    if panels:
        cols = [("rgb", "input"), ("pred_depth", "depth (published)"), ("gt_depth", "depth (ground truth)"),
                ("pred_mask", "dynamic (published)"), ("gt_mask", "dynamic (ground truth)")]
        cols = [c for c in cols if any(c[0] in p for p in panels.values())]
        rows = sorted(panels)
        fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 1.9 * len(rows)), squeeze=False)
        t0 = rows[0]
        for r, s in enumerate(rows):
            p = panels[s]
            gd = p.get("gt_depth")
            for c, (key, title) in enumerate(cols):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(title, fontsize=8)
                if c == 0:
                    ax.set_ylabel(f"t = {(s - t0) * 1e-9:.2f} s", fontsize=8)
                a = p.get(key)
                if a is None:
                    continue
                if key.endswith("depth"):
                    d = np.asarray(a, dtype=np.float64)
                    if key == "pred_depth" and gd is not None and gd.shape == d.shape:
                        ok = np.isfinite(d) & np.isfinite(gd) & (d > 0) & (gd > 0)
                        if ok.any():  # median-aligned for display, on the ground truth's colour scale
                            d = d * np.median(gd[ok]) / np.median(d[ok])
                    ref = gd if gd is not None else d
                    fin = ref[np.isfinite(ref)]
                    lo, hi = (np.percentile(fin, 2), np.percentile(fin, 98)) if fin.size else (0, 1)
                    ax.imshow(d, cmap="viridis", vmin=lo, vmax=hi)
                elif key.endswith("mask"):
                    ax.imshow(np.asarray(a, dtype=np.uint8), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(a)
        fig.tight_layout()
        fig.savefig(out_dir / "panels.png", dpi=90)
        plt.close(fig)
        files["panels"] = "panels.png"

    series = []
    if traj:
        series.append("ate")
    if plot.get("depth_frames"):
        series.append("depth")
    if plot.get("latencies_s"):
        series.append("latency")
    if series:
        fig, axes = plt.subplots(len(series), 1, figsize=(8, 2.3 * len(series)), squeeze=False)
        t_ref = None
        if traj:
            t_ref = traj["stamps_ns"][0]
        elif plot.get("depth_frames"):
            t_ref = min(f["stamp_ns"] for f in plot["depth_frames"])
        for ax, kind in zip(axes[:, 0], series):
            ax.grid(alpha=0.3)
            if kind == "ate":
                ax.plot(_t(traj["stamps_ns"], t_ref), traj["per_pose_ate_sim3"], "r.-")
                ax.set_ylabel("ATE (Sim(3)) [m]")
                ax.set_xlabel("time [s]")
            elif kind == "depth":
                fr = plot["depth_frames"]
                for cam in sorted({f["camera"] for f in fr}):
                    sel = sorted((f for f in fr if f["camera"] == cam), key=lambda f: f["stamp_ns"])
                    t = _t([f["stamp_ns"] for f in sel], t_ref)
                    ax.plot(t, [f["abs_rel"] for f in sel], ".-", label=f"{cam}")
                    ax.plot(t, [f["baseline_abs_rel"] for f in sel], ":", label=f"{cam} constant-depth baseline")
                ax.set_ylabel("depth AbsRel\n(per-frame median)")
                ax.set_xlabel("time [s]")
                ax.legend(fontsize=7)
            else:
                ax.plot(np.arange(len(plot["latencies_s"])), np.asarray(plot["latencies_s"]) * 1e3, "b.-")
                ax.set_ylabel("window latency [ms]")
                ax.set_xlabel("window")
        fig.tight_layout()
        fig.savefig(out_dir / "errors.png", dpi=90)
        plt.close(fig)
        files["errors"] = "errors.png"
    return files


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.{digits}g}"
    return str(v)


def _ms(seconds: Any) -> str:
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "n/a"
    return f"{seconds * 1e3:.1f}"


def _skipped(section: Mapping[str, Any]) -> Optional[str]:
    if section.get("available") is False:
        return f"skipped: {section.get('reason', '')}"
    return None


def write_report(metrics: Mapping[str, Any], files: Mapping[str, str], out_dir: Path) -> Path:
    """DIR/report.md: run summary, metric tables beside their trivial baselines, the plots."""
    info = metrics.get("run", {})
    lines: List[str] = []
    title = "# vggt4d replay report"
    if metrics.get("incomplete"):
        title += " - INCOMPLETE"
    lines += [title, ""]
    if metrics.get("incomplete"):
        lines += [f"**INCOMPLETE run** ({metrics.get('incomplete_reason', 'interrupted')}): the numbers below cover "
                  "only the part of the bag that was processed.", ""]
    lines += [f"- bag: `{info.get('bag')}`", f"- mode: {info.get('mode')}, device: {info.get('device')}",
              f"- model: {info.get('model')} (weights: {info.get('checkpoint')})",
              f"- cameras: {', '.join(f'{c} ({t})' for c, t in (info.get('camera_topics') or {}).items())}"]
    for note in info.get("notes", []):
        lines.append(f"- note: {note}")
    lines.append("")

    rt = metrics.get("runtime", {})
    lat = rt.get("latency_s", {})
    lines += ["## Runtime", "", "| frames in | frames used | steps in | steps out | windows | skipped | dropped "
              "| latency min / median / p95 / max [ms] | throughput [steps/s] | jitter [ms] |",
              "|---|---|---|---|---|---|---|---|---|---|",
              f"| {rt.get('frames_in')} | {rt.get('frames_used')} | {rt.get('steps_in')} | {rt.get('steps_out')} | "
              f"{rt.get('windows')} | {rt.get('windows_skipped')} | {rt.get('frames_dropped')} | "
              + " / ".join(_ms(lat.get(k)) for k in ("min", "median", "p95", "max"))
              + f" | {_fmt(rt.get('throughput_steps_per_s'), 3)} | {_ms(rt.get('jitter_s'))} |", ""]
    if rt.get("tracking_states"):
        lines += ["Tracking state of the steps with a window result: "
                  + ", ".join(f"{k} {n}" for k, n in sorted(rt["tracking_states"].items())) + ".", ""]

    tr = metrics.get("trajectory", {})
    lines += ["## Trajectory (ATE / RPE, evo)", ""]
    if _skipped(tr):
        lines += [_skipped(tr), ""]
    else:
        b = tr["baseline_constant_pose"]
        lines += [f"{tr['num_poses']} poses against `{tr['reference']}`; Sim(3) scale {_fmt(tr['sim3_scale'])}.", "",
                  "| | ATE RMSE [m] | RPE trans RMSE [m] | RPE rot RMSE [deg] |", "|---|---|---|---|"]
        for name, d in (("estimate, Sim(3)-aligned", tr["sim3"]), ("estimate, SE(3)-aligned", tr["se3"]),
                        ("baseline: constant pose", b)):
            lines.append(f"| {name} | {_fmt(d['ate_rmse'])} | {_fmt(d['rpe_trans_rmse'])} | {_fmt(d['rpe_rot_deg_rmse'])} |")
        lines.append("")
    if "trajectory" in files:
        lines += [f"![trajectory]({files['trajectory']})", ""]

    de = metrics.get("depth", {})
    lines += ["## Depth", ""]
    if _skipped(de):
        lines += [_skipped(de), ""]
    else:
        b = de["baseline_constant_depth"]
        lines += [f"{de['frames']} frames.", "", "| | AbsRel | delta < 1.25 |", "|---|---|---|",
                  f"| per-frame median scale | {_fmt(de['per_frame']['abs_rel'])} | {_fmt(de['per_frame']['delta1'])} |",
                  f"| per-sequence median scale ({_fmt(de['per_sequence']['scale'])}) | "
                  f"{_fmt(de['per_sequence']['abs_rel'])} | {_fmt(de['per_sequence']['delta1'])} |",
                  f"| raw (scale 1) | {_fmt(de['raw']['abs_rel'])} | {_fmt(de['raw']['delta1'])} |",
                  f"| baseline: constant depth, per frame | {_fmt(b['per_frame']['abs_rel'])} | |",
                  f"| baseline: constant depth, per sequence | {_fmt(b['per_sequence']['abs_rel'])} | "
                  f"{_fmt(b['per_sequence']['delta1'])} |", ""]

    dm = metrics.get("dynamic_mask", {})
    lines += ["## Dynamic mask", ""]
    if _skipped(dm):
        lines += [_skipped(dm), ""]
    else:
        b = dm["baseline_all_static"]
        lines += [f"{dm['frames']} frames; ground truth {_fmt(100 * dm['gt_dynamic_fraction'], 3)} % dynamic.", "",
                  "| | IoU dynamic | IoU static | mIoU | accuracy |", "|---|---|---|---|---|",
                  f"| published mask | {_fmt(dm['iou_dynamic'])} | {_fmt(dm['iou_static'])} | {_fmt(dm['miou'])} | "
                  f"{_fmt(dm['accuracy'])} |",
                  f"| baseline: all static | {_fmt(b['iou_dynamic'])} | {_fmt(b['iou_static'])} | {_fmt(b['miou'])} | "
                  f"{_fmt(b['accuracy'])} |"]
        a = dm.get("baseline_all_dynamic")
        if a:
            lines += [f"| baseline: all dynamic | {_fmt(a['iou_dynamic'])} | {_fmt(a['iou_static'])} | | "
                      f"{_fmt(a['accuracy'])} |"]
        lines += [""]
    if "panels" in files:
        lines += [f"![depth and mask panels]({files['panels']})", ""]

    tk = metrics.get("tracks", {})
    lines += ["## Keypoint tracks", ""]
    if _skipped(tk):
        lines += [_skipped(tk), ""]
    else:
        b = tk["baseline_static_points"]
        geo = tk.get("keypoints_matched_by_geometry", 0)
        lines += [f"{tk['keypoints_matched']} keypoint ids matched to ground truth ({geo} static ones through the "
                  f"ground-truth depth and poses, the others to the nearest moving ground-truth track; "
                  f"{tk['keypoints_unmatched']} unmatched), {tk['points_evaluated']} points evaluated.", "",
                  "| | EPE mean [px] | EPE median [px] | delta_avg | visibility accuracy |", "|---|---|---|---|---|",
                  f"| published keypoints | {_fmt(tk['epe_mean'])} | {_fmt(tk['epe_median'])} | {_fmt(tk['delta_avg'])} | "
                  f"{_fmt(tk['visibility_accuracy'])} |",
                  f"| baseline: static points, always visible | {_fmt(b['epe_mean'])} | {_fmt(b['epe_median'])} | "
                  f"{_fmt(b['delta_avg'])} | {_fmt(b['visibility_accuracy'])} |", ""]
        rows = [(f"{k} points", v) for k, v in tk.get("by_kind", {}).items()]
        for hz in tk.get("by_horizon", []):
            lo, hi = hz["frames"]
            rows.append((f"{lo}-{hi} frames after the id appeared" if hi else f"{lo}+ frames after the id appeared", hz))
        if rows:
            lines += ["| median EPE [px] | points | published | static points |", "|---|---|---|---|"]
            lines += [f"| {name} | {v['points']} | {_fmt(v['epe_median'])} | {_fmt(v['baseline_epe_median'])} |"
                      for name, v in rows]
            lines += [""]
    if "errors" in files:
        lines += ["## Errors and latency over time", "", f"![errors over time]({files['errors']})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
