"""Time building the node's output messages for one window step (prints JSON).

For each of ``--cameras`` cameras at ``--width`` x ``--height`` (default 2 x 518x294, the model grid):
depth (32FC1), dynamic mask (mono8), confidence (32FC1), CameraInfo (built + scaled), organised
PointCloud2 with colours; plus one fused unorganised cloud of all cameras' valid points. Min, median
and p90 over ``--repeat`` runs after ``--warmup`` runs; ``total_outputs_ms`` is the sum of the
medians (one window's publishing cost, serialisation by rmw not included), ``total_outputs_min_ms``
the sum of the minima (the cost without interference from other processes on a shared machine).
``node_step_ms``: the node's own builder for one output step (``vggt4d_ros.ros.messages.step_messages``)
with the parameters of ``config/default.yaml`` and every topic subscribed: TF, odometry, depth and mask
with CameraInfo, organised clouds per camera and the fused cloud in odom (decimation 2, transformed) - what
the node actually builds per step; the item sum above is the worst case (confidence on, fused cloud at
full resolution).
Runs twice, each in its own process: with glibc's default allocator and after
``reuse_freed_memory()``. Also times ``image_to_rgb`` on the inputs. No ROS middleware is started.

usage: python bench/conversions.py [--repeat 50] [--out bench/results/conversions-cpu-<machine>.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vggt4d_ros.ros.conversions import (camera_info_msg, confidence_to_msg, depth_to_msg,  # noqa: E402
                                        image_to_rgb, make_header, mask_to_msg, reuse_freed_memory,
                                        rgb_to_image_msg, scale_camera_info)
from vggt4d_ros.ros.pointcloud import points_to_cloud  # noqa: E402
from vggt4d_ros.bench_util import emit_json  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn, repeat: int, warmup: int):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return {"min_ms": round(ts[0], 4), "median_ms": round(statistics.median(ts), 4),
            "p90_ms": round(ts[int(0.9 * (len(ts) - 1))], 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--width", type=int, default=518)
    ap.add_argument("--height", type=int, default=294)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=str, default="")
    ap.add_argument("--malloc", choices=["default", "reuse", "both"], default="both",
                    help="glibc allocator: default, or reuse_freed_memory() (keeps freed large blocks "
                         "mapped); 'both' runs each in its own process")
    args = ap.parse_args()
    if args.malloc == "both":
        runs = {}
        for mode in ("default", "reuse"):
            cmd = [sys.executable, __file__, "--malloc", mode, "--cameras", str(args.cameras),
                   "--width", str(args.width), "--height", str(args.height),
                   "--repeat", str(args.repeat), "--warmup", str(args.warmup)]
            runs[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        report = {"benchmark": "conversions", "runs": runs,
                  "total_outputs_ms": {m: r["total_outputs_ms"] for m, r in runs.items()},
                  "total_outputs_min_ms": {m: r["total_outputs_min_ms"] for m, r in runs.items()},
                  "node_step_median_ms": {m: r["node_step_ms"]["median_ms"] for m, r in runs.items()},
                  "node_step_min_ms": {m: r["node_step_ms"]["min_ms"] for m, r in runs.items()},
                  "target_total_ms": 5.0, "machine": runs["default"]["machine"],
                  "load_average": os.getloadavg()}
        return emit_json(report, args.out)
    malloc_tuned = reuse_freed_memory() if args.malloc == "reuse" else False

    rng = np.random.default_rng(0)
    V, H, W = args.cameras, args.height, args.width
    depth = rng.uniform(0.3, 20, (V, H, W)).astype(np.float32)
    depth[:, :5] = np.nan
    conf = rng.uniform(1, 30, (V, H, W)).astype(np.float32)
    mask = rng.random((V, H, W)) > 0.8
    rgb = rng.integers(0, 256, (V, H, W, 3), dtype=np.uint8)
    pts = rng.normal(size=(V, H, W, 3)).astype(np.float32)
    valid = conf > 3.0
    K = np.array([[600.0, 0, 640], [0, 600.0, 360], [0, 0, 1]])
    info_full = camera_info_msg(K, 1280, 720, make_header("cam", 0))
    headers = [make_header(f"cam{v}_optical_frame", 1_700_000_000_000_000_000) for v in range(V)]
    in_msgs = [rgb_to_image_msg(rgb[v], headers[v], "bgr8") for v in range(V)]

    def all_cams(fn):
        return lambda: [fn(v) for v in range(V)]

    items = {
        "image_to_rgb_bgr8_in": all_cams(lambda v: image_to_rgb(in_msgs[v])),
        "depth_32FC1": all_cams(lambda v: depth_to_msg(depth[v], headers[v])),
        "mask_mono8": all_cams(lambda v: mask_to_msg(mask[v], headers[v])),
        "confidence_32FC1": all_cams(lambda v: confidence_to_msg(conf[v], headers[v])),
        "camera_info_scaled": all_cams(lambda v: scale_camera_info(info_full, W, H)),
        "cloud_organised_rgb": all_cams(
            lambda v: points_to_cloud(pts[v], headers[v], colors=rgb[v], valid=valid[v])),
        "cloud_fused_unorganised_rgb": lambda: points_to_cloud(
            pts.reshape(-1, 3), headers[0], colors=rgb.reshape(-1, 3), valid=valid.reshape(-1),
            organized=False),
    }
    results = {name: timed(fn, args.repeat, args.warmup) for name, fn in items.items()}
    outputs = [k for k in results if k != "image_to_rgb_bgr8_in"]
    node_step = timed(_node_step_builder(depth, conf, mask, rgb, pts, headers), args.repeat, args.warmup)
    report = {
        "benchmark": "conversions",
        "cameras": V, "width": W, "height": H, "repeat": args.repeat,
        "items_ms": results,
        "malloc": args.malloc, "malloc_tuned": malloc_tuned,
        "total_outputs_ms": round(sum(results[k]["median_ms"] for k in outputs), 4),
        "total_outputs_min_ms": round(sum(results[k]["min_ms"] for k in outputs), 4),
        "target_total_ms": 5.0,
        "node_step_ms": node_step,
        "node_step_params": "config/default.yaml (publish.confidence false, cloud.decimation 2), all topics subscribed",
        "fused_points": int(valid.sum()),
        "machine": {
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
        },
    }
    return emit_json(report, args.out)


def _node_step_builder(depth, conf, mask, rgb, pts, headers):
    """``step_messages`` of one synthetic StepOutput with the node's default parameters."""
    from vggt4d_ros.eval.config import load_params
    from vggt4d_ros.perception.pipeline import CameraOutput, StepOutput
    from vggt4d_ros.ros import messages as outmsg

    V = depth.shape[0]
    params = load_params(ROOT / "config" / "default.yaml")
    params["cameras"] = [f"cam{v}" for v in range(V)]
    K = np.array([[300.0, 0, depth.shape[2] / 2], [0, 300.0, depth.shape[1] / 2], [0, 0, 1]])
    cams = {}
    for v in range(V):
        c = f"cam{v}"
        cams[c] = CameraOutput(name=c, frame_id=headers[v].frame_id, stamp=headers[v].stamp, stamp_ns=0,
                               depth=depth[v], confidence=conf[v], dynamic=mask[v].astype(np.float32), K=K,
                               points_cam=pts[v], rgb=rgb[v])
    T = {c: np.eye(4) for c in cams}
    step = StepOutput(step_id=0, stamp=headers[0].stamp, stamp_ns=0, cameras=cams, T_odom_cam=T,
                      T_odom_base=np.eye(4), twist=np.zeros(6))
    return lambda: outmsg.step_messages(params, step)




if __name__ == "__main__":
    sys.exit(main())
