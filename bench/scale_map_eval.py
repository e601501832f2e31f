#!/usr/bin/env python3
"""Issue 8 evaluation: metric scale from the rig, known intrinsics, the static map, persistent keypoint ids.

Each feature on and off, on the same held-out synthetic sequences (seeds 0..9 are never used for
training), in the same run, through :class:`vggt4d_ros.perception.pipeline.Pipeline` directly (offline, no ROS),
with the embedded tiny model on the CPU. Sequences: 2 cameras (0.3 m baseline), moving objects, 252x140
(the tiny model's grid, so predictions and ground truth share pixels), 10 Hz; windows of T steps every
``stride`` steps (the node's sliding window).

Runs per seed (one model, identical inputs; a prediction cache makes runs that feed the model the same
window share one inference):

=================  ============  ===========  ===============
run                metric scale  intrinsics   keypoint ids
=================  ============  ===========  ===============
``base``           rig (auto)    predicted    carried
``no_metric``      none          predicted    carried
``known_K``        rig (auto)    CameraInfo   carried
``known_K_no_m``   none          CameraInfo   carried
``no_carry``       rig (auto)    predicted    new every window
``kp_reject``      rig (auto)    predicted    carried, geometric check "reject"
``kp_correct``     rig (auto)    predicted    carried, geometric check "correct"
=================  ============  ===========  ===============

plus ``pred_K`` / ``known_K`` on the same seeds rendered with a field of view outside the training
distribution (``--fov-study``, default 55 degrees; the model was trained at 70 degrees only), and ONE
camera (camera 0 of the same sequences alone, its own inferences) with each one-camera scale source:

=================  ==================================================================================
run                metric scale
=================  ==================================================================================
``mono_none``      none (up to scale)
``mono_depth``     ``"sensor_depth"``: the true depth degraded like a depth camera (``--sensor-noise``
                   multiplicative Gaussian noise, ``--sensor-holes`` of the pixels missing, mm quantised)
``mono_height``    ``camera_height_m``: the rig's nominal height above the floor (z = 0) plus camera 0's
                   mounting height (the true instantaneous height wobbles by +-6 cm around it)
=================  ==================================================================================

Metrics: trajectory of camera 0 (evo ATE after Sim(3) and after SE(3) alignment, metres), the output
scale against the truth three ways (trajectory Sim(3) scale, depth median ratio, rig baseline), depth
AbsRel (median-aligned per frame, and raw = as published, which is only meaningful when metric),
3D point error of the unprojected depth (shows the effect of the intrinsics), focal error; the static
map (``VoxelMap`` from ``base``'s outputs, without filtering, with the predicted dynamic mask, with the
ground-truth mask) scored by the share of its voxels that come from moving objects; keypoints (camera 0):
id survival from one output step to the next and over a window length, track lifetime, end-point error
against the ground-truth tracks (ids matched on first sight, then followed; also over the observations
published as visible only), and the geometric check's counts (static observations checked / failing
``--max-reprojection-px``, ids it dropped).

Usage::

    python bench/scale_map_eval.py                       # seeds 0 1 2, 3 s each, prints JSON + the table
    python bench/scale_map_eval.py --save bench/results/scale-map-tiny-cpu-amd-epyc-2c.json --doc docs/scale-and-map.md README.md
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TABLE_BEGIN = "<!-- scale-map-table:begin (written by bench/scale_map_eval.py) -->"
TABLE_END = "<!-- scale-map-table:end -->"

RUNS = {
    "base": dict(scale_source="auto", use_camera_info_intrinsics=False, carry=True),
    "no_metric": dict(scale_source="none", use_camera_info_intrinsics=False, carry=True),
    "known_K": dict(scale_source="auto", use_camera_info_intrinsics=True, carry=True),
    "known_K_no_metric": dict(scale_source="none", use_camera_info_intrinsics=True, carry=True),
    "no_carry": dict(scale_source="auto", use_camera_info_intrinsics=False, carry=False),
    "kp_reject": dict(scale_source="auto", use_camera_info_intrinsics=False, carry=True, geometry_check="reject"),
    "kp_correct": dict(scale_source="auto", use_camera_info_intrinsics=False, carry=True, geometry_check="correct"),
}
# The same seeds rendered with a field of view the model never saw in training (it was trained at 70 deg
# only, so at 70 deg its predicted intrinsics are already close): known intrinsics on and off.
FOV_RUNS = {
    "pred_K": dict(scale_source="auto", use_camera_info_intrinsics=False, carry=True),
    "known_K": dict(scale_source="auto", use_camera_info_intrinsics=True, carry=True),
}
# Camera 0 alone (the one-camera scale sources); "sensor" adds a degraded depth image to its frames,
# "height" passes the nominal camera height.
MONO_RUNS = {
    "mono_none": dict(scale_source="none", use_camera_info_intrinsics=False, carry=True),
    "mono_depth": dict(scale_source="depth", use_camera_info_intrinsics=False, carry=True, sensor=True),
    "mono_height": dict(scale_source="camera_height", use_camera_info_intrinsics=False, carry=True, height=True),
}


# ---------------------------------------------------------------------------------------------- helpers
def scale_error(estimate: float, truth: float) -> float:
    """Relative scale error ``|estimate / truth - 1|`` (nan when undefined)."""
    if not (np.isfinite(estimate) and np.isfinite(truth)) or truth == 0:
        return float("nan")
    return float(abs(estimate / truth - 1.0))


def depth_scale_ratio(pred: np.ndarray, gt: np.ndarray) -> float:
    """Output units per true unit of a depth map: ``median(pred / gt)`` over pixels valid in both."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    ok = np.isfinite(p) & np.isfinite(g) & (p > 0) & (g > 0)
    return float(np.median(p[ok] / g[ok])) if ok.any() else float("nan")


def baseline_ratio(T_a: np.ndarray, T_b: np.ndarray, known_baseline: float) -> float:
    """Distance between two camera centres (poses (4, 4) in one frame) over the known baseline."""
    return float(np.linalg.norm(np.asarray(T_a)[:3, 3] - np.asarray(T_b)[:3, 3]) / known_baseline)


def point_error(points_cam: np.ndarray, depth_gt: np.ndarray, K_gt: np.ndarray) -> float:
    """Mean 3D error of predicted optical-frame points (H, W, 3) against the ground truth (unprojected
    ``depth_gt`` with ``K_gt``), after one median depth scale, relative to the true depth."""
    from vggt4d_ros.perception.pipeline import unproject_depth

    g = unproject_depth(np.asarray(depth_gt, np.float32), K_gt).astype(np.float64)
    p = np.asarray(points_cam, np.float64)
    ok = np.isfinite(p).all(-1) & np.isfinite(g).all(-1) & (p[..., 2] > 0) & (g[..., 2] > 0)
    if not ok.any():
        return float("nan")
    s = np.median(g[ok][:, 2]) / np.median(p[ok][:, 2])
    return float(np.mean(np.linalg.norm(s * p[ok] - g[ok], axis=1) / g[ok][:, 2]))


def id_survival(id_sets: Sequence[Sequence[int]], lag: int = 1) -> float:
    """Share of the ids present at step t that are present again at step t + lag (pooled over t)."""
    kept = total = 0
    for a, b in zip(id_sets[:-lag] if lag else id_sets, id_sets[lag:]):
        sa = set(int(i) for i in a)
        total += len(sa)
        kept += len(sa & set(int(i) for i in b))
    return kept / total if total else float("nan")


def track_lifetimes(id_sets: Sequence[Sequence[int]]) -> np.ndarray:
    """Steps from first to last appearance (inclusive) of every id."""
    first: Dict[int, int] = {}
    last: Dict[int, int] = {}
    for t, ids in enumerate(id_sets):
        for i in ids:
            first.setdefault(int(i), t)
            last[int(i)] = t
    return np.array([last[i] - first[i] + 1 for i in first], dtype=np.int64)


def dynamic_voxel_share(vmap: Any, dyn_keys: np.ndarray, static_keys: np.ndarray) -> Dict[str, float]:
    """Share of the map's voxels whose inserted points came mostly from moving objects.

    ``dyn_keys`` / ``static_keys``: voxel keys (:meth:`VoxelMap.voxel_keys`) of every inserted point whose
    ground-truth pixel was dynamic / static (duplicates count as observations).
    """
    keys = vmap.keys()
    ud, cd = np.unique(np.asarray(dyn_keys, np.int64), return_counts=True)
    us, cs = np.unique(np.asarray(static_keys, np.int64), return_counts=True)
    nd = np.zeros(keys.size)
    ns = np.zeros(keys.size)
    i = np.searchsorted(ud, keys)
    hit = (i < ud.size) & (ud[np.minimum(i, max(ud.size - 1, 0))] == keys) if ud.size else np.zeros(keys.size, bool)
    nd[hit] = cd[i[hit]]
    j = np.searchsorted(us, keys)
    hit = (j < us.size) & (us[np.minimum(j, max(us.size - 1, 0))] == keys) if us.size else np.zeros(keys.size, bool)
    ns[hit] = cs[j[hit]]
    tot = nd + ns
    n = keys.size
    return {"voxels": int(n),
            "dynamic_voxel_share": float(np.mean(nd > ns)) if n else float("nan"),
            "dynamic_point_share": float(nd.sum() / tot.sum()) if tot.sum() else float("nan")}


def sensor_depth(depth: np.ndarray, rng: np.random.Generator, noise: float, holes: float) -> np.ndarray:
    """A depth camera's view of the true depth (H, W) metres: multiplicative Gaussian noise (std ``noise``),
    a share ``holes`` of the pixels missing, quantised to millimetres (16UC1); float32 metres, NaN = no data."""
    d = np.asarray(depth, np.float64) * (1.0 + noise * rng.standard_normal(depth.shape))
    mm = np.clip(np.round(d * 1000.0), 0, 65535).astype(np.uint16)
    mm[rng.random(mm.shape) < holes] = 0
    out = mm.astype(np.float32) / np.float32(1000.0)
    out[mm == 0] = np.nan
    return out


class CachedPredictor:
    """Wraps a Predictor: identical requests (window steps, intrinsics, queries) are answered once."""

    supports_frame_keys = False  # the pipeline's patch-embedding cache keys are not passed through

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.device = getattr(inner, "device", "cpu")
        self.cache: Dict[tuple, Any] = {}
        self.calls = 0
        self.seconds: List[float] = []

    def predict(self, images, num_views, intrinsics=None, query_points=None, reference=("first",),
                time_index=None, **options):
        """``options``: the Predictor's other keywords (``dense_frames``, ...), part of the request's key."""
        key = (tuple(time_index or ()), None if intrinsics is None else np.asarray(intrinsics).tobytes(),
               None if query_points is None else np.asarray(query_points).tobytes(), tuple(reference),
               repr(sorted(options.items())))
        if key not in self.cache:
            t0 = time.perf_counter()
            self.cache[key] = self.inner.predict(images, num_views=num_views, intrinsics=intrinsics,
                                                 query_points=query_points, reference=reference,
                                                 time_index=time_index, **options)
            self.seconds.append(time.perf_counter() - t0)
            self.calls += 1
        return self.cache[key]


# ---------------------------------------------------------------------------------------------- one run
def make_windows(seq, frames, num_steps: int, stride: int, cams: Optional[Sequence[str]] = None,
                 sensor: Optional[Dict[int, np.ndarray]] = None):
    """Windows of ``cams`` (default all cameras); ``sensor``: stamp_ns -> depth image of camera 0."""
    cams = tuple(cams or seq.camera_names)
    for s in range(0, len(frames) - num_steps + 1, stride):
        fr = []
        for t in range(num_steps):
            f = frames[s + t]
            for c in cams:
                cf = f.cameras[c]
                fr.append({"rgb": cf.rgb, "stamp": int(cf.stamp_ns), "stamp_ns": int(cf.stamp_ns),
                           "frame_id": seq.optical_frames[c], "info": SimpleNamespace(k=cf.K.ravel().tolist())})
                if sensor is not None and c == cams[0]:
                    fr[-1]["sensor_depth"] = sensor[int(cf.stamp_ns)]
        yield SimpleNamespace(num_views=len(cams), num_steps=num_steps, step_ids=tuple(range(s, s + num_steps)),
                              frames=fr, camera_names=cams)


def run_sequence(seq, frames, predictor, run: Dict[str, Any], args) -> Dict[str, Any]:
    """One configuration on one sequence: trajectory, scale, depth, intrinsics, map (base only), keypoints."""
    from vggt4d_ros.eval.metrics import DepthAccumulator, TrackAccumulator, trajectory_metrics
    from vggt4d_ros.perception.mapping import VoxelMap, static_points
    from vggt4d_ros.perception.pipeline import Pipeline, PipelineConfig

    cams = list(run.get("cameras") or seq.camera_names)
    cfg = PipelineConfig(cameras=cams, model_config="tiny", device="cpu", target_width=args.width,
                         num_steps=args.steps, keypoints_max=args.keypoints, scale_source=run["scale_source"],
                         use_camera_info_intrinsics=run["use_camera_info_intrinsics"],
                         camera_height_m=float(run.get("camera_height_m", 0.0)), mask_threshold=args.mask_threshold,
                         keypoints_geometry_check=run.get("geometry_check", "off"),
                         keypoints_max_reprojection_px=args.max_reprojection_px)
    pipe = Pipeline(cfg, predictor=predictor)
    by_stamp = {f.cameras[c].stamp_ns: (f, c) for f in frames for c in cams}
    est_ns, est_T, ref_T = [], [], []
    depth = DepthAccumulator()
    ratios, base_ratios, pt_err, f_err, pp_err, win_scales, metric_flags = [], [], [], [], [], [], []
    tracks = TrackAccumulator()
    tracks_vis = TrackAccumulator()  # observations published as visible only
    kp_stats = {"checked": 0, "failed": 0, "dropped_by_check": 0, "corrected": 0}
    id_sets: List[List[int]] = []
    maps = None
    if run.get("map"):
        maps = {k: VoxelMap(args.voxel, max_voxels=2_000_000) for k in ("all", "predicted_mask", "gt_mask")}
        labels = {k: ([], []) for k in maps}
    states, sources, measured = [], [], []
    for win in make_windows(seq, frames, args.steps, args.stride, cams, run.get("sensor_depth")):
        if not run["carry"] and pipe._tracks is not None:
            pipe._tracks._pos = {}  # forget the carried positions: every window detects new points, new ids
        tracker = pipe._tracks
        res = pipe.process(win, seq.T_base_cam)
        if tracker is not None and pipe._tracks is not tracker:  # the pipeline started a new tracker
            kp_stats = {k: v + tracker.stats[k] for k, v in kp_stats.items()}
        win_scales.append(res.scale)
        metric_flags.append(res.scale_is_metric)
        states.append(res.tracking_state)
        sources.append(res.scale_source)
        measured.append(res.scale_measured)
        for step in res.steps:
            c0 = step.cameras.get(cams[0])
            if c0 is None:
                continue
            f, _ = by_stamp[c0.stamp_ns]
            est_ns.append(c0.stamp_ns)
            est_T.append(step.T_odom_cam[cams[0]])
            ref_T.append(f.cameras[cams[0]].T_world_cam)
            if len(cams) > 1:
                base_ratios.append(baseline_ratio(step.T_odom_cam[cams[0]], step.T_odom_cam[cams[1]],
                                                  seq.config.baseline_m))
            for c, out in step.cameras.items():
                gt = f.cameras[c]
                depth.add(c, out.stamp_ns, out.depth, gt.depth)
                ratios.append(depth_scale_ratio(out.depth, gt.depth))
                pt_err.append(point_error(out.points_cam, gt.depth, gt.K))
                f_err.append(abs(out.K[0, 0] / gt.K[0, 0] - 1.0))
                pp_err.append(float(np.linalg.norm(out.K[:2, 2] - gt.K[:2, 2])))
                if maps is not None:
                    T = step.T_odom_cam[c]
                    gdyn = gt.dynamic_mask
                    for name, dyn, thr in (("all", None, None), ("predicted_mask", out.dynamic, args.mask_threshold),
                                           ("gt_mask", gdyn.astype(np.float32), 0.5)):
                        xyz, rgb = static_points(out.points_cam, out.rgb, T, dyn, out.confidence,
                                                 mask_threshold=thr, min_confidence=args.min_confidence,
                                                 decimation=args.decimation)
                        # Ground-truth label of every inserted point (same selection, same order).
                        _, lab = static_points(out.points_cam, np.repeat(gdyn[..., None], 3, -1).astype(np.uint8),
                                               T, dyn, out.confidence, mask_threshold=thr,
                                               min_confidence=args.min_confidence, decimation=args.decimation)
                        maps[name].insert(xyz, rgb, out.stamp_ns)
                        keys, ok = maps[name].voxel_keys(xyz)
                        is_dyn = lab[ok, 0] > 0
                        labels[name][0].append(keys[is_dyn])
                        labels[name][1].append(keys[~is_dyn])
            kp = c0.keypoints
            if kp is not None:
                id_sets.append([int(i) for i in kp.ids])
                g = f.cameras[cams[0]].tracks
                tracks.add(cams[0], kp.ids, kp.uv, kp.visible, g.ids, g.uv, g.visible & g.in_image)
                v = kp.visible
                tracks_vis.add(cams[0], kp.ids[v], kp.uv[v], v[v], g.ids, g.uv, g.visible & g.in_image)
            else:
                id_sets.append([])
    out: Dict[str, Any] = {"steps_out": len(est_ns), "windows": len(win_scales),
                           "scale_is_metric": bool(np.all(metric_flags)),
                           "tracking_states": {str(s): int(n) for s, n in zip(*np.unique(states, return_counts=True))},
                           "scale_sources": {str(s): int(n) for s, n in zip(*np.unique(sources, return_counts=True))},
                           "windows_scale_measured": int(np.isfinite(measured).sum())}
    try:
        tm = trajectory_metrics(np.array(est_ns), np.array(ref_T), np.array(est_ns), np.array(est_T))
        out["ate_sim3_m"] = tm["sim3"]["ate_rmse"]
        out["ate_se3_m"] = tm["se3"]["ate_rmse"]
        out["rpe_trans_se3_m"] = tm["se3"]["rpe_trans_rmse"]
        out["trajectory_scale_ratio"] = 1.0 / tm["scale"] if tm["scale"] else float("nan")
    except ValueError as exc:
        out["trajectory_error"] = str(exc)
    gt_len = float(np.linalg.norm(np.diff(np.array(ref_T)[:, :3, 3], axis=0), axis=1).sum()) if ref_T else 0.0
    out["gt_path_length_m"] = gt_len
    r = np.asarray(ratios)
    out["depth_scale_ratio_median"] = float(np.nanmedian(r))
    out["depth_scale_error_median"] = float(np.nanmedian(np.abs(r - 1.0)))
    out["depth_scale_error_p90"] = float(np.nanpercentile(np.abs(r - 1.0), 90))
    out["baseline_ratio_median"] = float(np.nanmedian(base_ratios)) if base_ratios else float("nan")
    out["window_scale"] = {"median": float(np.median(win_scales)), "min": float(np.min(win_scales)),
                           "max": float(np.max(win_scales))}
    ds = depth.summary()
    out["depth_abs_rel_per_frame"] = ds["per_frame"]["abs_rel"]
    out["depth_abs_rel_raw"] = ds["raw"]["abs_rel"]
    out["depth_delta1_raw"] = ds["raw"]["delta1"]
    out["depth_abs_rel_baseline_constant"] = ds["baseline_constant_depth"]["per_frame"]["abs_rel"]
    out["point_rel_error"] = float(np.nanmean(pt_err))
    out["focal_rel_error"] = float(np.mean(f_err))
    out["principal_point_error_px"] = float(np.mean(pp_err))
    lt = track_lifetimes(id_sets)
    ts = tracks.summary()
    tv = tracks_vis.summary()
    if pipe._tracks is not None:
        kp_stats = {k: v + pipe._tracks.stats[k] for k, v in kp_stats.items()}
    out["keypoints"] = {
        "survival_next_step": id_survival(id_sets, 1),
        f"survival_{args.steps}_steps": id_survival(id_sets, args.steps),
        "mean_lifetime_steps": float(lt.mean()) if lt.size else float("nan"),
        "ids_created": int(lt.size), "mean_per_step": float(np.mean([len(s) for s in id_sets])) if id_sets else 0.0,
        "epe_median_px": ts["epe_median"], "delta_avg": ts["delta_avg"],
        "baseline_static_delta_avg": ts["baseline_static_points"]["delta_avg"],
        "matched": ts["keypoints_matched"], "points_evaluated": ts["points_evaluated"],
        "epe_median_visible_px": tv["epe_median"], "delta_avg_visible": tv["delta_avg"],
        "points_evaluated_visible": tv["points_evaluated"],
        "check": dict(kp_stats, max_reprojection_px=args.max_reprojection_px,
                      failed_share=kp_stats["failed"] / kp_stats["checked"] if kp_stats["checked"] else float("nan"),
                      dropped_share_of_ids=kp_stats["dropped_by_check"] / lt.size if lt.size else float("nan"))}
    if maps is not None:
        out["map"] = {}
        for name, vm in maps.items():
            d = dynamic_voxel_share(vm, np.concatenate(labels[name][0]), np.concatenate(labels[name][1]))
            out["map"][name] = d
    return out


# ---------------------------------------------------------------------------------------------- table
def _mean(rows: List[Dict[str, Any]], path: str) -> float:
    vals = []
    for r in rows:
        v: Any = r
        for k in path.split("."):
            v = v.get(k, float("nan")) if isinstance(v, dict) else float("nan")
        vals.append(float(v))
    return float(np.nanmean(vals)) if vals else float("nan")


def make_table(doc: Dict[str, Any]) -> str:
    """The Markdown table (means over seeds) of a document written by :func:`main`."""
    per = doc["per_seed"]
    R = {name: [s["runs"][name] for s in per] for name in RUNS if all(name in s["runs"] for s in per)}
    T = doc["settings"]["steps"]
    st = doc["settings"]

    def num(fmt):
        return lambda x: "n/a" if not np.isfinite(x) else fmt.format(x)

    def pct(x):
        return "n/a" if not np.isfinite(x) else f"{100 * x:.1f} %"

    f3, f1, f0 = num("{:.3f}"), num("{:.1f}"), num("{:.0f}")
    seeds = ", ".join(str(s["seed"]) for s in per)
    lines = [f"Seeds {seeds} (held out), {st['duration_s']:g} s at 10 Hz, 2 cameras ({st['width']}x{st['height']}), "
             f"windows of {T} steps every {st['stride']}, tiny model on the CPU; means over seeds. Same sequences, "
             "same run" + ("; the one-camera rows run camera 0 alone (off = no scale source)." if per and "mono" in per[0]
                           else "."), "", "| feature | metric | off | on |", "|---|---|---|---|"]

    def rows(feature, off, on, items, extra=None):
        for i, (label, key, fmt) in enumerate(items):
            cell = fmt(_mean(on, key))
            if extra is not None:
                cell += f" ({extra[0]}: {fmt(_mean(extra[1], key))})"
            head = f"| {feature} |" if i == 0 and feature else "| |"
            lines.append(f"{head} {label} | {fmt(_mean(off, key))} | {cell} |")

    traj_err = lambda rs: [{"e": abs(r["trajectory_scale_ratio"] - 1)} for r in rs]  # noqa: E731
    rows("metric scale from the rig", traj_err(R["no_metric"]), traj_err(R["base"]),
         [("scale error, trajectory (Sim(3) scale)", "e", pct)])
    rows("", R["no_metric"], R["base"], [
        ("scale error, depth (median per frame)", "depth_scale_error_median", pct),
        ("ATE after SE(3), m", "ate_se3_m", f3), ("ATE after Sim(3), m", "ate_sim3_m", f3),
        ("depth AbsRel as published (no alignment)", "depth_abs_rel_raw", f3)])
    k_items = [("focal error", "focal_rel_error", pct),
               ("3D point error (median-scaled, / depth)", "point_rel_error", f3),
               ("depth AbsRel (median per frame)", "depth_abs_rel_per_frame", f3)]
    poses = [("ATE after SE(3), m", "ate_se3_m", f3), ("ATE after Sim(3), m", "ate_sim3_m", f3)]
    if per and "mono" in per[0]:
        M = {name: [s["mono"][name] for s in per] for name in MONO_RUNS}
        mono_items = [("scale error, depth (median per frame)", "depth_scale_error_median", pct),
                      ("ATE after SE(3), m", "ate_se3_m", f3), ("ATE after Sim(3), m", "ate_sim3_m", f3),
                      ("depth AbsRel as published (no alignment)", "depth_abs_rel_raw", f3)]
        for label, name in ((f"one camera: depth topic ({100 * st['sensor_noise']:g} % noise, "
                             f"{100 * st['sensor_holes']:g} % holes, mm)", "mono_depth"),
                            ("one camera: known camera height", "mono_height")):
            rows(label, traj_err(M["mono_none"]), traj_err(M[name]),
                 [("scale error, trajectory (Sim(3) scale)", "e", pct)])
            rows("", M["mono_none"], M[name], mono_items)
    rows("known intrinsics (CameraInfo)", R["base"], R["known_K"], k_items + poses)
    if per and "fov_study" in per[0]:
        a = [s["fov_study"]["pred_K"] for s in per]
        b = [s["fov_study"]["known_K"] for s in per]
        rows(f"known intrinsics, {st['fov_study_deg']:g} deg field of view (trained at 70 only)", a, b,
             k_items + [("scale error, depth (median per frame)", "depth_scale_error_median", pct)] + poses)
    m = R["base"]
    sub = lambda name: [r["map"][name] for r in m]  # noqa: E731
    rows("static map (dynamic mask filter)", sub("all"), sub("predicted_mask"), [
        ("voxels from moving objects", "dynamic_voxel_share", pct),
        ("points from moving objects", "dynamic_point_share", pct),
        (f"voxels kept ({st['voxel_m']:g} m)", "voxels", f0)], extra=("ground-truth mask", sub("gt_mask")))
    rows("keypoint ids carried across windows", R["no_carry"], R["base"], [
        ("id survival, next step", "keypoints.survival_next_step", pct),
        (f"id survival, {T} steps", f"keypoints.survival_{T}_steps", pct),
        ("mean id lifetime, steps", "keypoints.mean_lifetime_steps", f1),
        ("ids created", "keypoints.ids_created", f0),
        ("track end-point error, median px (vs ground truth)", "keypoints.epe_median_px", f1)])
    if "kp_reject" in R and "kp_correct" in R:
        thr = st.get("max_reprojection_px", float("nan"))
        items = [("track end-point error, median px (vs ground truth)", "keypoints.epe_median_px", f1),
                 ("same, observations published as visible only", "keypoints.epe_median_visible_px", f1),
                 (f"id survival, {T} steps", f"keypoints.survival_{T}_steps", pct),
                 ("mean id lifetime, steps", "keypoints.mean_lifetime_steps", f1),
                 ("ids created", "keypoints.ids_created", f0),
                 (f"static observations off geometry by > {thr:g} px", "keypoints.check.failed_share", pct),
                 ("ids dropped by the check (share of ids created)", "keypoints.check.dropped_share_of_ids", pct)]
        rows(f"keypoint geometric check: reject ({thr:g} px)", R["base"], R["kp_reject"], items)
        rows("keypoint geometric check: correct", R["base"], R["kp_correct"], items)
    return "\n".join(lines)


def write_doc(path: Path, table: str) -> None:
    """Replace the table between the markers of ``path`` (append the markers when absent)."""
    text = path.read_text() if path.exists() else ""
    block = f"{TABLE_BEGIN}\n{table}\n{TABLE_END}"
    if TABLE_BEGIN in text and TABLE_END in text:
        head, rest = text.split(TABLE_BEGIN, 1)
        text = head + block + rest.split(TABLE_END, 1)[1]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"
    path.write_text(text)


# ---------------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per sequence (10 Hz)")
    ap.add_argument("--width", type=int, default=252)
    ap.add_argument("--height", type=int, default=140)
    ap.add_argument("--objects", type=int, default=3, help="moving objects")
    ap.add_argument("--steps", type=int, default=4, help="window length T")
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--keypoints", type=int, default=64)
    ap.add_argument("--voxel", type=float, default=0.1, help="map voxel size (odom units)")
    ap.add_argument("--decimation", type=int, default=1)
    ap.add_argument("--min-confidence", type=float, default=0.0)
    ap.add_argument("--mask-threshold", type=float, default=0.5)
    ap.add_argument("--max-reprojection-px", type=float, default=8.0,
                    help="keypoint geometric check threshold (the kp_reject / kp_correct runs)")
    ap.add_argument("--fov-study", type=float, default=55.0,
                    help="field of view (deg) of the intrinsics study sequences; 0 skips it")
    ap.add_argument("--sensor-noise", type=float, default=0.015,
                    help="multiplicative noise (std) of the simulated depth camera of the one-camera runs")
    ap.add_argument("--sensor-holes", type=float, default=0.2, help="share of missing depth-camera pixels")
    ap.add_argument("--no-mono", action="store_true", help="skip the one-camera scale-source runs")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--save", type=Path, default=None, help="write the JSON here")
    ap.add_argument("--doc", type=Path, nargs="+", default=[],
                    help="Markdown files whose table (between the scale-map-table markers) is replaced")
    args = ap.parse_args(argv)

    import torch

    from vggt4d_ros.data.synth import SynthConfig, SynthSequence
    from vggt4d_ros.inference.predictor import Predictor
    from vggt4d_ros.perception.pipeline import resolve_checkpoint
    from vggt4d_ros.training.data import EVAL_SEEDS

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    bad = [s for s in args.seeds if s not in EVAL_SEEDS]
    if bad:
        ap.error(f"seeds {bad} are not held out (held-out seeds: {list(EVAL_SEEDS)})")
    t_start = time.perf_counter()
    inner = Predictor.from_config("tiny", checkpoint=resolve_checkpoint("tiny", None), device="cpu",
                                  target_width=args.width)
    per_seed = []
    for seed in args.seeds:
        sc = SynthConfig(seed=seed, num_cameras=2, width=args.width, height=args.height, duration_s=args.duration,
                         num_moving_objects=args.objects, texture_px=256)
        seq = SynthSequence(sc)
        t0 = time.perf_counter()
        frames = [seq.frame(i) for i in range(seq.num_frames)]
        render_s = time.perf_counter() - t0
        pred = CachedPredictor(inner)  # one cache per sequence: runs with identical model inputs share it
        runs = {}
        for name, run in RUNS.items():
            t0 = time.perf_counter()
            runs[name] = run_sequence(seq, frames, pred, dict(run, map=(name == "base")), args)
            runs[name]["wall_s"] = time.perf_counter() - t0
            print(f"seed {seed} {name}: ATE se3 {runs[name].get('ate_se3_m', float('nan')):.3f} m, sim3 "
                  f"{runs[name].get('ate_sim3_m', float('nan')):.3f} m, depth ratio "
                  f"{runs[name]['depth_scale_ratio_median']:.3f} ({runs[name]['wall_s']:.0f} s)", file=sys.stderr,
                  flush=True)
        entry = {"seed": seed, "config": sc.to_dict(), "render_s": render_s, "inferences": pred.calls,
                 "inference_s_mean": float(np.mean(pred.seconds)) if pred.seconds else float("nan"), "runs": runs}
        del pred
        if not args.no_mono:
            c0 = seq.camera_names[0]
            rng = np.random.default_rng(1000 + seed)
            sensor = {int(f.cameras[c0].stamp_ns): sensor_depth(f.cameras[c0].depth, rng, args.sensor_noise,
                                                                args.sensor_holes) for f in frames}
            height = float(seq.scene.rig_path.height + seq.T_base_cam[c0][2, 3])  # nominal, floor at z = 0
            true_h = np.array([f.cameras[c0].T_world_cam[2, 3] for f in frames])
            predm = CachedPredictor(inner)  # camera 0 alone: its own inferences
            entry["mono"] = {"camera_height_m": height, "true_camera_height_m": {
                "min": float(true_h.min()), "max": float(true_h.max()), "mean": float(true_h.mean())}}
            for name, run in MONO_RUNS.items():
                r_cfg = dict(run, map=False, cameras=[c0])
                if run.get("sensor"):
                    r_cfg["sensor_depth"] = sensor
                if run.get("height"):
                    r_cfg["camera_height_m"] = height
                t0 = time.perf_counter()
                r = run_sequence(seq, frames, predm, r_cfg, args)
                r["wall_s"] = time.perf_counter() - t0
                entry["mono"][name] = r
                print(f"seed {seed} {name}: ATE se3 {r.get('ate_se3_m', float('nan')):.3f} m, sim3 "
                      f"{r.get('ate_sim3_m', float('nan')):.3f} m, depth ratio {r['depth_scale_ratio_median']:.3f}, "
                      f"sources {r['scale_sources']} ({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
            del predm, sensor
        del frames
        if args.fov_study > 0:
            sc2 = SynthConfig(**dict(sc.to_dict(), fov_deg=args.fov_study))
            seq2 = SynthSequence(sc2)
            frames2 = [seq2.frame(i) for i in range(seq2.num_frames)]
            pred2 = CachedPredictor(inner)
            entry["fov_study"] = {}
            for name, run in FOV_RUNS.items():
                t0 = time.perf_counter()
                r = run_sequence(seq2, frames2, pred2, dict(run, map=False), args)
                r["wall_s"] = time.perf_counter() - t0
                entry["fov_study"][name] = r
                print(f"seed {seed} fov {args.fov_study:g} {name}: focal error {r['focal_rel_error']:.3f}, point error "
                      f"{r['point_rel_error']:.3f}, ATE se3 {r.get('ate_se3_m', float('nan')):.3f} m "
                      f"({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        per_seed.append(entry)
    doc = {
        "benchmark": "scale_map_eval",
        "machine": {"cpu_cores": __import__("os").cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "model": "tiny (embedded checkpoint)",
        "settings": {"seeds": args.seeds, "duration_s": args.duration, "width": args.width, "height": args.height,
                     "moving_objects": args.objects, "steps": args.steps, "stride": args.stride,
                     "keypoints_max": args.keypoints, "voxel_m": args.voxel, "decimation": args.decimation,
                     "min_confidence": args.min_confidence, "mask_threshold": args.mask_threshold,
                     "max_reprojection_px": args.max_reprojection_px,
                     "fov_deg": 70.0, "fov_study_deg": args.fov_study, "runs": RUNS, "fov_runs": FOV_RUNS,
                     "mono_runs": {k: {a: b for a, b in v.items()} for k, v in MONO_RUNS.items()},
                     "sensor_noise": args.sensor_noise, "sensor_holes": args.sensor_holes},
        "per_seed": per_seed,
        "wall_s": time.perf_counter() - t_start,
    }
    table = make_table(doc)
    doc["table_markdown"] = table
    text = json.dumps(doc, indent=2, default=float)
    print(text)
    print(table, file=sys.stderr)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(text + "\n")
    for path in args.doc:
        write_doc(path, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
