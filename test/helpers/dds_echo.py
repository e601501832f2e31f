"""Echo ROS messages across DDS for test_dds_messages.py (a separate process on purpose).

usage: python dds_echo.py PREFIX TYPE [TYPE ...]     e.g. TYPE = sensor_msgs/msg/Image

For the i-th TYPE it subscribes to ``PREFIX/in_<i>`` and republishes every message it receives,
deserialised and re-serialised by this process, on ``PREFIX/out_<i>`` (reliable, keep last 10).
It prints READY once its endpoints exist and exits when stdin closes or after --timeout seconds.
The caller must pass ``env=vggt4d_ros.rosenv.localhost_env()`` (DDS stays on this machine).
"""
import argparse
import importlib
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vggt4d_ros.rosenv import apply_localhost_env  # noqa: E402


def message_class(type_name: str):
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("prefix")
    ap.add_argument("types", nargs="+")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    apply_localhost_env()  # keeps the parent's domain id / log dir if it passed them
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node("vggt4d_dds_echo")
    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    keep = []
    for i, type_name in enumerate(args.types):
        cls = message_class(type_name)
        pub = node.create_publisher(cls, f"{args.prefix}/out_{i}", qos)
        keep.append(pub)
        keep.append(node.create_subscription(cls, f"{args.prefix}/in_{i}", pub.publish, qos))

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("READY", flush=True)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    deadline = time.monotonic() + args.timeout
    while not stop.is_set() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
