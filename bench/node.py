#!/usr/bin/env python3
"""ros2_benchmark-style run of ``vggt4d-node`` over real DDS: fixed publish rates, a monitor, a rate search.

What happens (every ROS process keeps DDS on this machine, :mod:`vggt4d_ros.rosenv`):

1. A synthetic 2-camera bag (:func:`vggt4d_ros.data.bagwriter.write_synth_bag`, 640x360 by default) is written
   once and reused (``--bag`` takes any bag with ``/<cam>/image_raw`` + ``/<cam>/camera_info``).
2. Its images and CameraInfos are buffered in memory (deserialised once); the sequence is played forwards
   then backwards (ping-pong) so a long run never jumps in content. The default synthetic bag is long enough
   that the warm-up, the lock-step trial and every fixed rate play forwards: a turnaround reverses the motion
   inside a window (a cusp no rig produces) and inflates that trial's ATE 3-5x; each trial's accuracy reports
   ``playback_turnarounds``.
3. The node (``config/tiny.yaml`` by default: tiny model, CPU, T=4, stride 1) starts as a subprocess.
4. This process is both the player and the monitor (one clock): each time step is restamped with the
   wall-clock time at which it is published (as a live camera stamps its frames) and its CameraInfo +
   Image of every camera are published together. The monitor subscribes (raw CDR, header stamps read
   from the bytes) to the node's odometry, per-camera depth, fused cloud and status, and records the
   receive time of every message.
5. Warm-up in lock-step (a step is published once the previous one is acknowledged on ``~/status``) fills
   the window and warms the model; then each rate is played for ``--steps`` steps, drained, and scored.
   After the fixed rates (``--rates``) the rate is searched by bisection between the highest rate that
   passed (under ``--max-miss`` missed outputs, default 5%) and the lowest that failed.

Per rate, per output topic: mean output rate (messages over the receive span), missed steps (a published
step whose stamp never arrived on that topic), end-to-end latency from the step's stamp (= its publish
time) to the receive time (min, mean, median, p95, max) and jitter (receive intervals against the input
period: mean and max absolute deviation, standard deviation). From ``~/status`` (one per output step;
deduplicated per window): the node's window time (``latency``: window taken by the worker -> outputs
published), the predictor time (``inference_time``: Predictor.predict, preprocess + model + postprocess),
and node overhead = window time - predictor time (chaining, message building, publishing); plus the
node's counters (windows skipped by the latest-wins slot, frames dropped).

Examples::

    python bench/node.py                                   # rates 1, 2, 5 Hz + 2 bisection steps
    python bench/node.py --save bench/results/node-cpu-<machine>.json
    python bench/node.py --params config/default.yaml -p model.checkpoint:=/path/vggt-1b.safetensors \\
        -p model.checkpoint:=random-init --rates 2 5 10 20   # GPU (random VGGT-1B weights)
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vggt4d_ros.bench_util import SHARED_MACHINE_NOTE, emit_json, git_commit, machine_info, summarize  # noqa: E402

NS = "/vggt4d"
NODE_NAME = "vggt4d"
STATUS = "vggt4d_ros/msg/WindowStatus"


# ---------------------------------------------------------------------------------------------- bag
def ensure_bag(path: Optional[str], width: int, height: int, steps: int, cameras: int) -> Path:
    """The bag to play: ``path`` if given, else a cached synthetic bag in the temp directory."""
    if path:
        return Path(path)
    from vggt4d_ros.data import SynthConfig, SynthSequence
    from vggt4d_ros.data.bagwriter import write_synth_bag

    out = Path(tempfile.gettempdir()) / f"vggt4d-bench-node-{cameras}cam-{width}x{height}-{steps}-gt"
    if (out / "metadata.yaml").is_file():
        return out
    rate = 10.0
    seq = SynthSequence(SynthConfig(seed=0, num_cameras=cameras, width=width, height=height, rate_hz=rate,
                                    duration_s=(steps + 0.5) / rate))
    write_synth_bag(seq, out, storage="mcap", ground_truth=True)  # /gt/odom scores the trajectory
    return out


def buffer_bag(bag: Path, cameras: List[str]) -> Tuple[List[Dict[str, Tuple[Any, Any]]], List[Any],
                                                        Optional[List[np.ndarray]]]:
    """Deserialise the bag's camera messages into memory.

    Returns (steps, tf_static, gt): ``steps[i][cam] = (CameraInfo, Image)`` (the i-th image of each camera and
    the CameraInfo with the same stamp, else the latest before it), the ``/tf_static`` messages, and the
    ground-truth body pose (4, 4) of each step from ``/gt/odom`` (None when the bag has none).
    """
    from rclpy.serialization import deserialize_message

    from vggt4d_ros.bag.io import bag_topics, read_messages
    from vggt4d_ros.bag.rosutil import message_class

    topics = bag_topics(bag)
    wanted = [t for c in cameras for t in (f"/{c}/image_raw", f"/{c}/camera_info")]
    missing = [t for t in wanted if t not in topics]
    if missing:
        raise SystemExit(f"bench/node.py: the bag {bag} lacks {missing}")
    images: Dict[str, List[Any]] = {c: [] for c in cameras}
    infos: Dict[str, Dict[int, Any]] = {c: {} for c in cameras}
    tf_static = []
    read = wanted + [t for t in ("/tf_static", "/gt/odom") if t in topics]
    gt_by_stamp: Dict[int, np.ndarray] = {}
    for topic, msgtype, _t, raw in read_messages(bag, read):
        msg = deserialize_message(bytes(raw), message_class(msgtype))
        if topic == "/tf_static":
            tf_static.append(msg)
            continue
        if topic == "/gt/odom":
            from vggt4d_ros.eval.gt import pose_matrix

            gt_by_stamp[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = pose_matrix(msg.pose.pose)
            continue
        cam = topic.split("/")[1]
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if topic.endswith("image_raw"):
            images[cam].append((stamp, msg))
        else:
            infos[cam][stamp] = msg
    n = min(len(v) for v in images.values())
    steps = []
    for i in range(n):
        step = {}
        for c in cameras:
            stamp, img = images[c][i]
            known = [s for s in infos[c] if s <= stamp] or list(infos[c])
            step[c] = (infos[c][max(known) if known else stamp], img)
        steps.append(step)
    gt = None
    if gt_by_stamp:
        stamps0 = [images[cameras[0]][i][0] for i in range(n)]
        if all(s in gt_by_stamp for s in stamps0):
            gt = [gt_by_stamp[s] for s in stamps0]
    return steps, tf_static, gt


def ping_pong(n: int, i: int) -> int:
    """Index of the i-th played step of a sequence of n steps played 0..n-1, n-2..1, 0.. (no jump)."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    j = i % period
    return j if j < n else period - j


# ---------------------------------------------------------------------------------------------- monitor
class Monitor:
    """Receive times of the node's outputs (raw subscriptions; header stamps read from the CDR bytes)."""

    def __init__(self, node, topics: Dict[str, str]) -> None:
        from vggt4d_ros.bag.rosutil import message_class, qos_profile

        self.topics = dict(topics)
        self.lock = threading.Lock()
        self.recv: Dict[str, List[Tuple[int, int]]] = {t: [] for t in topics}  # (stamp_ns, recv wall ns)
        self.status: List[Any] = []  # (recv wall ns, WindowStatus)
        self.status_cond = threading.Condition(self.lock)
        self.last_status_stamp = -1
        self.poses: Dict[int, np.ndarray] = {}  # odometry stamp -> (4, 4) odom <- base
        self.subs = {}
        for topic, msgtype in topics.items():
            raw = topic not in (f"{NS}/status", f"{NS}/odometry")  # decoded: status fields, odometry poses
            self.subs[topic] = node.create_subscription(
                message_class(msgtype), topic, lambda m, t=topic: self._on(t, m), qos_profile(reliable=True, depth=50),
                raw=raw)

    def _on(self, topic: str, msg: Any) -> None:
        now = time.time_ns()
        if isinstance(msg, (bytes, bytearray, memoryview)):
            from vggt4d_ros.bag.io import header_stamp_ns

            stamp = header_stamp_ns(msg, self.topics[topic])
        else:
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.recv[topic].append((stamp, now))
            if topic == f"{NS}/odometry":
                from vggt4d_ros.eval.gt import pose_matrix

                self.poses[stamp] = pose_matrix(msg.pose.pose)
            if topic == f"{NS}/status":
                self.status.append((now, msg))
                self.last_status_stamp = max(self.last_status_stamp, stamp)
                self.status_cond.notify_all()

    def ready(self) -> bool:
        return all(s.get_publisher_count() >= 1 for s in self.subs.values())

    def wait_status(self, stamp_ns: int, timeout: float) -> bool:
        """Wait until a status with stamp >= ``stamp_ns`` arrived."""
        deadline = time.monotonic() + timeout
        with self.status_cond:
            while self.last_status_stamp < stamp_ns:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.status_cond.wait(min(left, 0.1))
        return True

    def snapshot(self) -> Tuple[Dict[str, List[Tuple[int, int]]], List[Any]]:
        with self.lock:
            return {t: list(v) for t, v in self.recv.items()}, list(self.status)


# ---------------------------------------------------------------------------------------------- player
class Player:
    """Publishes buffered steps, restamped with the wall clock at publish time."""

    def __init__(self, node, steps: List[Dict[str, Tuple[Any, Any]]], cameras: List[str], tf_static: List[Any]):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        self.steps = steps
        self.cameras = cameras
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {c: (node.create_publisher(CameraInfo, f"/{c}/camera_info", qos),
                         node.create_publisher(Image, f"/{c}/image_raw", qos)) for c in cameras}
        self.tf_pub = None
        if tf_static:
            latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.tf_pub = node.create_publisher(TFMessage, "/tf_static", latched)
            merged = TFMessage()
            merged.transforms = [t for m in tf_static for t in m.transforms]
            self.tf_pub.publish(merged)
        self.played = 0
        self.index_of: Dict[int, int] = {}  # published stamp -> index of the bag step

    def ready(self) -> bool:
        return all(p.get_subscription_count() >= 1 for pair in self.pubs.values() for p in pair)

    def publish_next(self) -> int:
        """Publish the next step (all cameras, CameraInfo first); returns its stamp (wall ns)."""
        from vggt4d_ros.bag.rosutil import publish_spaced

        idx = ping_pong(len(self.steps), self.played)
        step = self.steps[idx]
        self.played += 1
        now = time.time_ns()
        self.index_of[now] = idx
        sec, nsec = divmod(now, 1_000_000_000)
        for c in self.cameras:
            info, img = step[c]
            for m in (info, img):
                m.header.stamp.sec = int(sec)
                m.header.stamp.nanosec = int(nsec)
            self.pubs[c][0].publish(info)
            publish_spaced(self.pubs[c][1], img)  # as the bag player: large samples spaced
        return now


# ---------------------------------------------------------------------------------------------- scoring
def score(stamps: List[int], recv: Dict[str, List[Tuple[int, int]]], status: List[Any], period_s: float,
          t_begin_ns: int) -> Dict[str, Any]:
    """Figures of one trial: ``stamps`` published (wall ns), everything received since ``t_begin_ns``."""
    published = set(stamps)
    out: Dict[str, Any] = {"published_steps": len(stamps)}
    per_topic = {}
    worst = 0.0
    for topic, items in recv.items():
        if topic == f"{NS}/status":
            continue
        got = {}
        for st, rt in items:
            if st in published and st not in got:
                got[st] = rt
        lat = [(got[s] - s) * 1e-6 for s in stamps if s in got]
        rts = sorted(got.values())
        iv = np.diff(np.asarray(rts, dtype=np.float64)) * 1e-9 if len(rts) > 1 else np.zeros(0)
        missed = len(stamps) - len(got)
        worst = max(worst, missed / max(1, len(stamps)))
        per_topic[topic] = {
            "received": len(got),
            "missed": missed,
            "missed_fraction": round(missed / max(1, len(stamps)), 4),
            "mean_output_rate_hz": round((len(rts) - 1) / ((rts[-1] - rts[0]) * 1e-9), 3)
            if len(rts) > 1 and rts[-1] > rts[0] else None,
            "latency_ms": summarize(lat, 1),
            "jitter_ms": {"mean_abs": round(float(np.mean(np.abs(iv - period_s))) * 1e3, 1) if iv.size else None,
                          "max_abs": round(float(np.max(np.abs(iv - period_s))) * 1e3, 1) if iv.size else None,
                          "interval_std": round(float(np.std(iv)) * 1e3, 1) if iv.size else None},
        }
    out["topics"] = per_topic
    out["worst_missed_fraction"] = round(worst, 4)
    # Status: one per output step; windows deduplicated by window_index.
    windows: Dict[int, Any] = {}
    acks = 0
    skipped = []
    dropped = []
    for rt, msg in status:
        if rt < t_begin_ns:
            continue
        skipped.append(int(msg.windows_skipped))
        dropped.append(int(msg.frames_dropped))
        if msg.num_time_steps == 0:
            acks += 1
            continue
        windows.setdefault(int(msg.window_index), msg)
    lat = [w.latency * 1e3 for w in windows.values()]
    inf = [w.inference_time * 1e3 for w in windows.values()]
    over = [(w.latency - w.inference_time) * 1e3 for w in windows.values()]
    states = [int(w.tracking_state) for w in windows.values()]
    out["node"] = {
        "windows": len(windows),
        "buffering_acks": acks,
        "window_time_ms": summarize(lat, 1),
        "predictor_time_ms": summarize(inf, 1),
        "node_overhead_ms": summarize(over, 1),
        "windows_skipped_in_trial": (max(skipped) - min(skipped)) if skipped else None,
        "frames_dropped_in_trial": (max(dropped) - min(dropped)) if dropped else None,
        "tracking_states": {str(s): states.count(s) for s in sorted(set(states))},
    }
    return out


def accuracy(stamps: List[int], poses: Dict[int, np.ndarray], index_of: Dict[int, int],
             gt: Optional[List[np.ndarray]]) -> Dict[str, Any]:
    """Trajectory accuracy of one trial: the node's odometry at the published steps it output against the
    bag's ground truth of those steps (Sim(3) and SE(3) ATE, RMSE, metres), with the ground-truth path length."""
    if gt is None:
        return {"available": False, "reason": "the bag has no /gt/odom"}
    est = [(s, poses[s]) for s in stamps if s in poses]
    if len(est) < 3:
        return {"available": False, "reason": f"{len(est)} output poses (need 3)"}
    from vggt4d_ros.eval.metrics import trajectory_metrics

    st = np.array([s for s, _ in est], dtype=np.int64)
    ref = np.stack([gt[index_of[s]] for s, _ in est])
    m = trajectory_metrics(st, ref, st, np.stack([p for _, p in est]))
    order = [index_of[s] for s in stamps]
    turns = sum(1 for a, b, c in zip(order[:-2], order[1:-1], order[2:]) if (b - a) * (c - b) < 0)
    played = [gt[i][:3, 3] for i in order]
    path = float(sum(np.linalg.norm(b - a) for a, b in zip(played[:-1], played[1:])))
    return {"available": True, "poses": int(m["num_poses"]), "ate_sim3_m": round(m["sim3"]["ate_rmse"], 4),
            "ate_se3_m": round(m["se3"]["ate_rmse"], 4), "rpe_trans_sim3_m": round(m["sim3"]["rpe_trans_rmse"], 4),
            "scale": round(m["scale"], 4), "gt_path_m": round(path, 3), "playback_turnarounds": turns}


# ---------------------------------------------------------------------------------------------- main
def node_command(params_file: str, overrides: List[str], from_source: bool = False) -> List[str]:
    exe = None if from_source else (shutil.which("vggt4d-node", path=os.path.dirname(sys.executable))
                                    or shutil.which("vggt4d-node"))
    base = [exe] if exe else [sys.executable, "-m", "vggt4d_ros.ros.node"]
    cmd = base + ["--ros-args", "--params-file", params_file]
    for o in overrides:
        cmd += ["-p", o]
    return cmd


def _tail(path: Path, n: int = 8) -> str:
    try:
        return " | ".join([ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()][-n:])
    except OSError:
        return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(REPO / "config" / "tiny.yaml"), help="node params file")
    ap.add_argument("-p", dest="overrides", action="append", default=[],
                    help="extra node parameter NAME:=VALUE (repeatable)")
    ap.add_argument("--bag", default=None, help="bag to play (default: a cached synthetic 2-camera bag)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--bag-steps", type=int, default=0, help="time steps of the synthetic bag (default: enough "
                    "that the warm-up, the lock-step trial and every fixed rate play forwards, no turnaround)")
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0, 5.0], help="fixed publish rates, Hz")
    ap.add_argument("--steps", type=int, default=20, help="time steps published per rate")
    ap.add_argument("--search", type=int, default=2, help="bisection steps after the fixed rates")
    ap.add_argument("--max-miss", type=float, default=0.05, help="a rate passes below this missed fraction")
    ap.add_argument("--warmup", type=int, default=6, help="lock-step warm-up steps (fill the window)")
    ap.add_argument("--drain-s", type=float, default=15.0, help="max seconds to wait for a trial's last outputs")
    ap.add_argument("--budget-s", type=float, default=280.0, help="stop searching after this many seconds")
    ap.add_argument("--startup-s", type=float, default=180.0)
    ap.add_argument("--reliability", default="reliable", choices=["reliable", "best_effort"],
                    help="the node's qos.reliability for camera topics (default reliable: see bench/README.md, best "
                    "effort delivered only the first 640x360 images over this machine's Fast DDS profile)")
    ap.add_argument("--node-source", default=None, help="run the node from this source tree (e.g. a "
                    "`git archive` snapshot) instead of the working tree: put first on the node's PYTHONPATH")
    ap.add_argument("--save", default=None, help="also write the JSON here")
    args = ap.parse_args()

    from vggt4d_ros.bag.rosutil import BackgroundSpinner, stop_process
    from vggt4d_ros.rosenv import apply_localhost_env, localhost_env

    t_start = time.monotonic()
    mach = machine_info(torch_info=False)
    apply_localhost_env()
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    import yaml

    with open(args.params, encoding="utf-8") as f:
        pdoc = yaml.safe_load(f) or {}
    rp = next(iter(pdoc.values())).get("ros__parameters", {}) if pdoc else {}
    cameras = [str(c) for c in rp.get("cameras", ["cam0", "cam1"])]
    for o in args.overrides:
        if o.startswith("cameras:="):
            cameras = [c.strip(" '\"") for c in o.split(":=", 1)[1].strip("[]").split(",")]
    # A turnaround of the ping-pong playback inside a trial reverses the motion within one window (..., 38, 39,
    # 38, ...): a cusp no rig produces, which cost 3-5x the lock-step ATE at the rates whose trial held one.
    bag_steps = args.bag_steps or max(40, args.warmup + args.steps * (1 + len(args.rates)) + 1)
    bag = ensure_bag(args.bag, args.width, args.height, bag_steps, len(cameras))
    steps, tf_static, gt_poses = buffer_bag(bag, cameras)
    img0 = steps[0][cameras[0]][1]
    print(f"buffered {len(steps)} steps x {len(cameras)} cameras ({img0.width}x{img0.height} {img0.encoding}) "
          f"from {bag}", file=sys.stderr, flush=True)

    # Disable the forward-jump reset: pauses between trials (draining) must not restart tracking.
    overrides = ["window.reset_on_time_jump_s:=0.0", f"qos.reliability:={args.reliability}"] + list(args.overrides)
    topics = {f"{NS}/odometry": "nav_msgs/msg/Odometry", f"{NS}/points/fused": "sensor_msgs/msg/PointCloud2",
              f"{NS}/status": STATUS}
    for c in cameras:
        topics[f"{NS}/{c}/depth"] = "sensor_msgs/msg/Image"

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("vggt4d_bench")
    spinner = BackgroundSpinner(node, name="vggt4d-bench-spin")
    logdir = Path(tempfile.mkdtemp(prefix="vggt4d-bench-node-"))
    node_log = logdir / "node.log"
    logf = open(node_log, "wb")
    cmd = node_command(args.params, overrides, from_source=bool(args.node_source))
    env = localhost_env()
    if args.node_source:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.node_source).resolve())] +
                                            [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.Popen(cmd, env=env, cwd=args.node_source or None, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    trials: List[Dict[str, Any]] = []
    result: Dict[str, Any] = {}
    try:
        monitor = Monitor(node, topics)
        player = Player(node, steps, cameras, tf_static)
        deadline = time.monotonic() + args.startup_s
        while not (player.ready() and monitor.ready()):
            if proc.poll() is not None:
                raise SystemExit(f"the node exited with {proc.returncode}: {_tail(node_log)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the node was not ready within {args.startup_s:g} s: {_tail(node_log)}")
            time.sleep(0.1)
        startup_s = time.monotonic() - t_start
        time.sleep(1.0)
        print(f"node ready after {startup_s:.1f} s; warm-up ({args.warmup} lock-step steps)", file=sys.stderr,
              flush=True)
        warm = []
        t_w = time.monotonic()
        for _ in range(args.warmup):
            s = player.publish_next()
            ok = monitor.wait_status(s, 60.0)
            warm.append(ok)
        result["warmup"] = {"steps": args.warmup, "acknowledged": sum(warm), "seconds": round(time.monotonic() - t_w, 1)}
        time.sleep(0.5)

        # Lock-step reference: each step published once the previous one is acknowledged (no window skipped):
        # the accuracy the fixed rates are compared with.
        t_begin, t_l = time.time_ns(), time.monotonic()
        lock_stamps = []
        for _ in range(args.steps):
            lock_stamps.append(player.publish_next())
            monitor.wait_status(lock_stamps[-1], 60.0)
        time.sleep(0.5)
        recv, status = monitor.snapshot()
        lock_row = {"seconds": round(time.monotonic() - t_l, 1)}
        lock_row.update(score(lock_stamps, recv, status, (time.monotonic() - t_l) / max(1, args.steps), t_begin))
        with monitor.lock:
            poses = dict(monitor.poses)
        lock_row["accuracy"] = accuracy(lock_stamps, poses, player.index_of, gt_poses)
        result["lockstep"] = lock_row
        print(f"lock-step: {lock_row['accuracy']}", file=sys.stderr, flush=True)

        def trial(rate: float) -> Dict[str, Any]:
            period = 1.0 / rate
            t_begin = time.time_ns()
            stamps = []
            t0 = time.monotonic()
            late = 0
            for i in range(args.steps):
                target = t0 + i * period
                wait = target - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -0.5 * period:
                    late += 1
                stamps.append(player.publish_next())
            t_played = time.monotonic()
            # Drain: wait for the last step's status (or give up), then for stragglers on other topics.
            monitor.wait_status(stamps[-1], args.drain_s)
            time.sleep(0.5)
            recv, status = monitor.snapshot()
            row = {"rate_hz": rate, "publish_seconds": round(t_played - t0, 2),
                   "publish_late_steps": late, "drain_seconds": round(time.monotonic() - t_played, 2)}
            row.update(score(stamps, recv, status, period, t_begin))
            with monitor.lock:
                poses = dict(monitor.poses)
            row["accuracy"] = accuracy(stamps, poses, player.index_of, gt_poses)
            row["passed"] = row["worst_missed_fraction"] < args.max_miss
            return row

        def run_rate(rate: float) -> Dict[str, Any]:
            print(f"rate {rate:g} Hz ...", file=sys.stderr, flush=True)
            row = trial(rate)
            odo = row["topics"].get(f"{NS}/odometry", {})
            print(f"  missed {row['worst_missed_fraction']:.1%} (odometry {odo.get('missed')}), latency p95 "
                  f"{(odo.get('latency_ms') or {}).get('p95')} ms, windows {row['node']['windows']}, "
                  f"ATE Sim(3) {row['accuracy'].get('ate_sim3_m')} m, passed {row['passed']}", file=sys.stderr,
                  flush=True)
            trials.append(row)
            return row

        for r in sorted(args.rates):
            if proc.poll() is not None:
                break
            run_rate(r)
        for _ in range(args.search):
            if proc.poll() is not None or time.monotonic() - t_start > args.budget_s:
                break
            ok = [t["rate_hz"] for t in trials if t["passed"]]
            bad = [t["rate_hz"] for t in trials if not t["passed"]]
            lo = max(ok) if ok else None
            hi = min([b for b in bad if lo is None or b > lo], default=None)
            if lo is None:
                nxt = min(bad) / 2.0
            elif hi is None:
                nxt = lo * 2.0
            else:
                nxt = round(math.sqrt(lo * hi), 3)  # geometric bisection
            if any(abs(t["rate_hz"] - nxt) < 1e-6 for t in trials):
                break
            run_rate(nxt)
        ok = [t["rate_hz"] for t in trials if t["passed"]]
        result["startup_s"] = round(startup_s, 1)
        result["max_rate_under_miss_hz"] = max(ok) if ok else None
    finally:
        stop_process(proc, timeout=30, kill_timeout=5)
        logf.close()
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    doc = {
        "benchmark": "node",
        "machine": mach,
        "shared_machine": SHARED_MACHINE_NOTE,
        "git_commit": git_commit(),
        "node_source": args.node_source,
        "node_command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
        "bag": {"path": str(bag), "steps": len(steps), "cameras": cameras, "width": int(img0.width),
                "height": int(img0.height), "encoding": img0.encoding, "played": "ping-pong, restamped at publish"},
        "method": ("player and monitor in one process (one clock); each step's stamp = its publish wall time; "
                   "latency = receive time - stamp; a step is missed on a topic when no message with its stamp "
                   "arrived; jitter = receive intervals against the input period; node window time and predictor "
                   "time from ~/status (latency, inference_time), overhead = their difference"),
        "max_miss": args.max_miss,
        "steps_per_rate": args.steps,
        **result,
        "node_exit_code": proc.returncode,
        "node_log_tail": _tail(node_log, 4) if proc.returncode not in (0, None) else None,
        "wall_s": round(time.monotonic() - t_start, 1),
        "trials": trials,
    }
    if os.environ.get("VGGT4D_BENCH_KEEP_LOG"):
        print(f"node log kept: {node_log}", file=sys.stderr)
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return emit_json(doc, args.save)


if __name__ == "__main__":
    sys.exit(main())
