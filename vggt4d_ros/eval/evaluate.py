"""Metrics of a replay from what was published (the outputs bag) against the input bag's ground truth.

Both replay modes end here with the same inputs (``outputs.mcap``, the input bag, :class:`RunStats`), so
offline and through-ROS numbers are computed identically. Predictions and ground truth are paired by
camera and exact header stamp (the node stamps every output with its input's acquisition stamp).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import cv2
import numpy as np

from vggt4d_ros.bag.io import bag_topics, read_messages

from . import metrics as M
from .gt import find_ground_truth, iter_depth, iter_keypoints, iter_masks, read_poses
from .node_messages import NODE_NAMESPACE

__all__ = ["METRIC_SECTIONS", "evaluate"]

METRIC_SECTIONS = ("runtime", "trajectory", "depth", "dynamic_mask", "tracks")
PANEL_FRAMES = 3


def _resize_to(a: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    if a.shape[:2] == shape:
        return a
    src = a.astype(np.uint8) if a.dtype == bool else a
    r = cv2.resize(src, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return r.astype(bool) if a.dtype == bool else r


def _skip(reason: str) -> Dict[str, Any]:
    return {"available": False, "reason": reason}


def _pick(stamps: Sequence[int], k: int) -> List[int]:
    s = sorted(set(stamps))
    if len(s) <= k:
        return s
    return [s[int(round(i))] for i in np.linspace(0, len(s) - 1, k)]


def _frame_ids(bag: Path, params: Mapping[str, Any], cams: Any) -> Dict[str, str]:
    """Optical frame of each camera, as the node names it (parameter, else the first image's header)."""
    out = {c: str(params.get(f"{c}.optical_frame") or "") for c in cams.names}
    for c in cams.names:
        if not out[c]:
            for _t, _mt, _log, msg in read_messages(bag, [cams.image[c]], decode=True):
                out[c] = msg.header.frame_id
                break
    return out


def _track_geometry(bag: Path, gt: Any, cams: Any, names: Sequence[str]) -> Dict[Tuple[str, int], "M.FrameGeometry"]:
    """Ground-truth depth, pose, intrinsics and dynamic mask per (camera, stamp) of the cameras ``names``, for
    the static keypoints' ground truth (:class:`~vggt4d_ros.eval.metrics.TrackAccumulator`); empty for a
    camera whose bag lacks any of them."""
    names = [c for c in names if c in gt.depth and c in gt.poses]
    if not names:
        return {}
    K: Dict[str, np.ndarray] = {}
    for c in names:
        for _t, _mt, _log, msg in read_messages(bag, [cams.info[c]], decode=True):
            K[c] = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
            break
    names = [c for c in names if c in K]
    poses = {}
    for c in names:
        st, T, _ = read_poses(bag, gt.poses[c])
        poses[c] = dict(zip(st.tolist(), T))
    masks = {(c, s): m for c, s, m in iter_masks(bag, {c: gt.mask[c] for c in names if c in gt.mask})}
    out: Dict[Tuple[str, int], M.FrameGeometry] = {}
    for c, s, d in iter_depth(bag, {c: gt.depth[c] for c in names}):
        T = poses[c].get(s)
        if T is not None:
            out[(c, s)] = M.FrameGeometry(depth=d, T_world_cam=T, K=K[c], dynamic=masks.get((c, s)))
    return out


def _tracking_states(outputs: Path, topic: str, topics: Mapping[str, str]) -> Dict[str, int]:
    """How many window results (statuses with time steps) reported each tracking state."""
    from vggt4d_ros.window.chain import TrackingState

    counts: Dict[str, int] = {}
    if topic in topics:
        for _t, _mt, _log, msg in read_messages(outputs, [topic], decode=True):
            if int(msg.num_time_steps) > 0:
                name = TrackingState(int(msg.tracking_state)).name
                counts[name] = counts.get(name, 0) + 1
    return counts


def evaluate(bag: Path, outputs: Path, params: Mapping[str, Any], cams: Any, stats: Any,
             ns: str = NODE_NAMESPACE) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Compute every metric section; returns ``(metrics, plot_data)``.

    Sections needing ground truth carry ``available`` and, when skipped, ``reason``; every section key
    of :data:`METRIC_SECTIONS` is always present.
    """
    names = list(cams.names)
    out_topics = bag_topics(outputs) if Path(outputs).exists() else {}
    in_topics = bag_topics(bag)
    gt = find_ground_truth(in_topics, names, cams.image)
    res: Dict[str, Any] = {}
    plot: Dict[str, Any] = {"latencies_s": list(stats.latencies_s)}

    res["runtime"] = M.runtime_metrics(
        frames_in=stats.frames_in, frames_used=stats.frames_used, steps_in=stats.steps_in,
        steps_out=stats.steps_out, windows=stats.windows, windows_skipped=stats.windows_skipped,
        frames_dropped=stats.frames_dropped, latencies_s=stats.latencies_s, output_times_s=stats.output_times_s,
        wall_s=stats.wall_s, num_cameras=len(names))
    res["runtime"]["tracking_states"] = _tracking_states(outputs, f"{ns}/status", out_topics)

    # ---------------------------------------------------------------- trajectory
    odom_topic = f"{ns}/odometry"
    if "trajectory" in gt.missing:
        res["trajectory"] = _skip(gt.missing["trajectory"])
    elif odom_topic not in out_topics:
        res["trajectory"] = _skip(f"no {odom_topic} output was published")
    else:
        est_s, est_T, child = read_poses(outputs, odom_topic)
        ref_topic = gt.odom
        # base_frame "" makes the odometry the pose of camera 0's optical frame: compare with that camera's
        # ground-truth pose instead of the body's.
        cam_of_child = next((c for c, f in _frame_ids(bag, params, cams).items() if child and f == child), None)
        if cam_of_child is not None and cam_of_child in gt.poses:
            ref_topic = gt.poses[cam_of_child]
        elif ref_topic is None:
            ref_topic = gt.poses.get(names[0])
        ref_s, ref_T, _ = read_poses(bag, ref_topic)
        try:
            tm = M.trajectory_metrics(ref_s, ref_T, est_s, est_T)
            base = M.constant_pose_baseline(ref_s, ref_T, est_s)
            res["trajectory"] = {"available": True, "reference": ref_topic, "num_poses": tm["num_poses"],
                                 "sim3": tm["sim3"], "se3": tm["se3"], "sim3_scale": tm["scale"],
                                 "baseline_constant_pose": base}
            plot["trajectory"] = {k: tm[k] for k in ("est_aligned_xyz", "ref_xyz", "per_pose_ate_sim3", "stamps_ns")}
        except ValueError as exc:
            res["trajectory"] = _skip(str(exc))

    # ---------------------------------------------------------------- per-pixel outputs
    depth_topics = {c: f"{ns}/{c}/depth" for c in names if f"{ns}/{c}/depth" in out_topics}
    mask_topics = {c: f"{ns}/{c}/dynamic_mask" for c in names if f"{ns}/{c}/dynamic_mask" in out_topics}
    pred_depth = {(c, s): d for c, s, d in iter_depth(outputs, depth_topics)} if depth_topics else {}
    pred_mask = {(c, s): m for c, s, m in iter_masks(outputs, mask_topics)} if mask_topics else {}
    panel_stamps = _pick([s for (c, s) in (pred_depth or pred_mask) if c == names[0]], PANEL_FRAMES)
    panels: Dict[int, Dict[str, np.ndarray]] = {s: {} for s in panel_stamps}
    for s in panel_stamps:
        if (names[0], s) in pred_depth:
            panels[s]["pred_depth"] = pred_depth[(names[0], s)]
        if (names[0], s) in pred_mask:
            panels[s]["pred_mask"] = pred_mask[(names[0], s)]

    if "depth" in gt.missing:
        res["depth"] = _skip(gt.missing["depth"])
    elif not pred_depth:
        res["depth"] = _skip("no depth output was published")
    else:
        acc = M.DepthAccumulator()
        for c, s, g in iter_depth(bag, {c: t for c, t in gt.depth.items() if c in depth_topics}):
            p = pred_depth.get((c, s))
            if c == names[0] and s in panels:
                panels[s]["gt_depth"] = g
            if p is not None:
                acc.add(c, s, _resize_to(p, g.shape), g)
        summ = acc.summary()
        if not summ.get("frames"):
            res["depth"] = _skip("no depth output matches a ground-truth depth stamp")
        else:
            res["depth"] = dict(available=True, **summ)
            plot["depth_frames"] = acc.frames
    if "dynamic_mask" in gt.missing:
        res["dynamic_mask"] = _skip(gt.missing["dynamic_mask"])
    elif not pred_mask:
        res["dynamic_mask"] = _skip("no dynamic_mask output was published")
    else:
        macc = M.MaskAccumulator()
        for c, s, g in iter_masks(bag, {c: t for c, t in gt.mask.items() if c in mask_topics}):
            p = pred_mask.get((c, s))
            if c == names[0] and s in panels:
                panels[s]["gt_mask"] = g
            if p is not None:
                macc.add(c, s, _resize_to(p, g.shape), g)
        summ = macc.summary()
        res["dynamic_mask"] = dict(available=True, **summ) if summ.get("frames") else \
            _skip("no dynamic_mask output matches a ground-truth mask stamp")
    del pred_depth, pred_mask

    # ---------------------------------------------------------------- tracks
    kp_topics = {c: f"{ns}/{c}/keypoints" for c in names if f"{ns}/{c}/keypoints" in out_topics}
    if "tracks" in gt.missing:
        res["tracks"] = _skip(gt.missing["tracks"])
    elif not kp_topics:
        res["tracks"] = _skip("no keypoints output was published")
    else:
        gtk = {(c, s): (ids, uv, vis) for c, s, ids, uv, vis in
               iter_keypoints(bag, {c: t for c, t in gt.tracks.items() if c in kp_topics})}
        geometry = _track_geometry(bag, gt, cams, [c for c in kp_topics])
        tacc = M.TrackAccumulator()
        preds = sorted(iter_keypoints(outputs, kp_topics), key=lambda x: (x[0], x[1]))
        n = 0
        for c, s, ids, uv, vis in preds:
            g = gtk.get((c, s))
            if g is None:
                continue
            tacc.add(c, ids, uv, vis, *g, geometry=geometry.get((c, s)))
            n += 1
        del geometry
        res["tracks"] = dict(available=True, frames=n, **tacc.summary()) if n else \
            _skip("no keypoints output matches a ground-truth tracks stamp")

    # ---------------------------------------------------------------- RGB for the panels
    if panels:
        from vggt4d_ros.ros import conversions as conv

        want = set(panels)
        topic = cams.image[names[0]]
        for _t, _mt, _log, msg in read_messages(bag, [topic], decode=True):
            s = conv.stamp_to_ns(msg.header.stamp)
            if s in want:
                try:
                    panels[s]["rgb"] = (conv.compressed_to_rgb(msg) if cams.compressed[names[0]]
                                        else conv.image_to_rgb(msg))
                except conv.ImageConversionError:
                    pass
                want.discard(s)
                if not want:
                    break
    plot["panels"] = panels
    plot["camera"] = names[0]
    return res, plot
