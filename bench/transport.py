#!/usr/bin/env python3
"""DDS transport alone, without the node: image delivery latency between two processes (prints JSON).

Tells a transport stall from a node problem: ``bench/node.py`` measures stamp-to-output latency through the
node; this measures stamp-to-receive latency of the same kind of input (``--topics`` image topics of
``--width`` x ``--height`` rgb8, reliable, KEEP_LAST ``--depth``, all published together at ``--rate`` Hz,
stamped with the wall clock at publish) from a publisher process to a subscriber process that does nothing
else. Both processes use this project's localhost-only DDS environment (:mod:`vggt4d_ros.rosenv`); the
subscriber is a child process started with that environment, the publisher is this process.

Per topic: messages received / published, latency min / median / p95 / max (ms), and the number of
"stalls" (latency above ``--stall-ms``). One run per ``--gap-ms`` value: the pause after each large publish
that the node and the bag player make (:func:`vggt4d_ros.bag.rosutil.publish_spaced`); 0 = back to back.

    python bench/transport.py --rate 2 --count 40 --save bench/results/transport-cpu-<machine>.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vggt4d_ros.bench_util import emit_json, git_commit, machine_info  # noqa: E402


def _subscriber(args: argparse.Namespace) -> int:
    """Child: subscribe, record (topic, receive - stamp) until --duration, print JSON lists."""
    from vggt4d_ros.rosenv import apply_localhost_env

    apply_localhost_env()
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("vggt4d_transport_sub")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.depth, reliability=ReliabilityPolicy.RELIABLE)
    lat = {i: [] for i in range(args.topics)}

    def on(i):
        def cb(m):
            lat[i].append((time.time_ns() - (m.header.stamp.sec * 10 ** 9 + m.header.stamp.nanosec)) * 1e-6)
        return cb

    for i in range(args.topics):
        node.create_subscription(Image, f"/transport_probe/cam{i}/image_raw", on(i), qos)
    print("ready", flush=True)
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({str(k): v for k, v in lat.items()}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def _run(args: argparse.Namespace, gap_s: float) -> dict:
    """One publisher/subscriber run; per-topic figures."""
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vggt4d_ros.bag.rosutil import publish_spaced
    from vggt4d_ros.rosenv import localhost_env

    duration = args.count / args.rate + 8.0
    child = subprocess.Popen([sys.executable, __file__, "--subscriber", "--duration", str(duration),
                              "--topics", str(args.topics), "--depth", str(args.depth)],
                             env=localhost_env(dict(os.environ)), stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    node = rclpy.create_node("vggt4d_transport_pub")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.depth, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(Image, f"/transport_probe/cam{i}/image_raw", qos) for i in range(args.topics)]
    img = Image(width=args.width, height=args.height, encoding="rgb8", step=3 * args.width)
    img.data = np.random.default_rng(0).integers(0, 256, 3 * args.width * args.height, dtype=np.uint8).tobytes()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(p.get_subscription_count() < 1 for p in pubs):
        time.sleep(0.05)
    time.sleep(1.0)  # let the reliable matching settle both ways
    t0 = time.monotonic()
    for k in range(args.count):
        now = time.time_ns()
        img.header.stamp.sec, img.header.stamp.nanosec = divmod(now, 10 ** 9)
        for p in pubs:
            publish_spaced(p, img, gap_s)
        time.sleep(max(0.0, t0 + (k + 1) / args.rate - time.monotonic()))
    out, _ = child.communicate(timeout=duration + 30)
    node.destroy_node()
    lat = json.loads(out.strip().splitlines()[-1])
    topics = {}
    for i in range(args.topics):
        a = np.asarray(lat[str(i)], dtype=np.float64)
        topics[f"cam{i}"] = {
            "received": int(a.size), "published": args.count,
            "latency_ms": ({"min": round(float(a.min()), 1), "median": round(float(np.median(a)), 1),
                            "p95": round(float(np.percentile(a, 95)), 1), "max": round(float(a.max()), 1)}
                           if a.size else None),
            "stalls_over_ms": int((a > args.stall_ms).sum()), "stall_ms": args.stall_ms}
    return {"gap_ms": gap_s * 1e3, "topics": topics}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topics", type=int, default=2)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--count", type=int, default=40, help="messages per topic")
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--stall-ms", type=float, default=200.0)
    ap.add_argument("--gap-ms", type=float, nargs="+", default=[0.0, 0.5],
                    help="pause after each large publish (vggt4d_ros.bag.rosutil.publish_spaced); one run per value")
    ap.add_argument("--save", type=Path)
    ap.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.subscriber:
        return _subscriber(args)

    from vggt4d_ros.rosenv import apply_localhost_env

    apply_localhost_env()
    import rclpy

    rclpy.init()
    runs = {}
    try:
        for gap in args.gap_ms:
            runs[f"gap_{gap:g}_ms"] = _run(args, gap * 1e-3)
    finally:
        rclpy.shutdown()
    doc = {"benchmark": "transport", "machine": machine_info(torch_info=False), "git_commit": git_commit(),
           "load_average": list(os.getloadavg()), "image": [args.width, args.height, "rgb8"],
           "topics": args.topics, "rate_hz": args.rate, "count": args.count, "depth": args.depth,
           "profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"), "runs": runs}
    return emit_json(doc, args.save)


if __name__ == "__main__":
    sys.exit(main())
