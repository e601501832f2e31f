"""vggt4d-bag play --lock-step over real DDS: waits for an ack per time step, times out cleanly.

An echo node in this process acknowledges each time step late (it republishes a status whose
header.stamp is the image's stamp after a delay); the player (a subprocess, as fast as possible
otherwise) must not publish step k+1 before the ack of step k was sent.
"""
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vggt4d_ros.bag.synth import write_synthetic_bag
from vggt4d_ros.rosenv import localhost_env

ROOT = Path(__file__).resolve().parents[1]
_BASE = random.randint(10, 60)
_counter = iter(range(100))
ACK_DELAY = 0.15


def _domain() -> int:
    return _BASE + 30 + next(_counter)


def _play(domain, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "vggt4d_ros.bag.cli", "play", *args], cwd=ROOT,
        env=localhost_env(domain_id=domain), capture_output=True, text=True, timeout=timeout,
    )


def _status_class():
    try:
        from vggt4d_ros.msg import WindowStatus

        return WindowStatus, "vggt4d_ros/msg/WindowStatus"
    except ImportError:  # the project's messages are not built in this Python
        from geometry_msgs.msg import PointStamped

        return PointStamped, "geometry_msgs/msg/PointStamped"


class EchoNode:
    """Acks every cam0 image ``ACK_DELAY`` s after receiving it, with the image's header stamp."""

    def __init__(self, domain: int, ns: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.cls, self.type_name = _status_class()
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("lockstep_echo", context=self.ctx)
        self.pub = self.node.create_publisher(self.cls, f"{ns}/status", 10)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, f"{ns}/cam0/image_raw", self._on_image, qos)
        self.received = []  # (monotonic time, stamp ns)
        self.acked = []  # (monotonic time, stamp ns)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self.ex.spin_once(timeout_sec=0.05)

    def _on_image(self, msg):
        stamp = msg.header.stamp
        self.received.append((time.monotonic(), stamp.sec * 10**9 + stamp.nanosec))
        threading.Timer(ACK_DELAY, self._ack, args=(msg.header,)).start()

    def _ack(self, header):
        status = self.cls()
        status.header = header
        self.acked.append((time.monotonic(), header.stamp.sec * 10**9 + header.stamp.nanosec))
        self.pub.publish(status)

    def close(self):
        import rclpy

        self._stop.set()
        self.thread.join(2.0)
        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def test_lock_step_waits_for_each_ack(tmp_path):
    dom = _domain()
    ns = f"/ls{dom}"
    bag = tmp_path / "bag"
    stamps = write_synthetic_bag(bag, cameras=2, steps=6, hz=50.0, skew=0.002, tf_static=False, namespace=ns)
    echo = EchoNode(dom, ns)
    try:
        time.sleep(0.3)
        proc = _play(
            dom, str(bag), "--rate", "0", "--lock-step", "--lock-step-topic", f"{ns}/status",
            "--step-tolerance", "0.005", "--lock-step-timeout", "5", "--wait-subscribers", "--wait-topics",
            f"{ns}/cam0/image_raw",
        )  # no --lock-step-type: discovered from the graph
        time.sleep(0.1)
    finally:
        echo.close()
    assert proc.returncode == 0, proc.stderr
    # two cameras 2 ms apart form ONE step each (tolerance 5 ms)
    assert "lock-step: 6 steps, 0 timeouts" in proc.stdout, proc.stdout + proc.stderr
    assert [s for _t, s in echo.received] == stamps[f"{ns}/cam0/image_raw"]
    assert len(echo.acked) == 6
    for k in range(1, 6):
        # step k reached the echo node only after step k-1 was acknowledged
        assert echo.received[k][0] >= echo.acked[k - 1][0], f"step {k} published before ack {k - 1}"


def test_lock_step_times_out_without_ack(tmp_path):
    dom = _domain()
    ns = f"/lt{dom}"
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, cameras=1, steps=4, hz=50.0, tf_static=False, namespace=ns)
    _cls, type_name = _status_class()
    t0 = time.monotonic()
    proc = _play(
        dom, str(bag), "--rate", "0", "--lock-step", "--lock-step-topic", f"{ns}/status", "--lock-step-type",
        type_name, "--lock-step-timeout", "0.3",
    )
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert "played 8 messages" in proc.stdout and "lock-step: 4 steps, 4 timeouts" in proc.stdout, proc.stdout
    assert proc.stderr.count("lock-step: no ack") == 4
    assert wall >= 4 * 0.3  # it did wait for each step (3 between steps + the last one)


def test_lock_step_unknown_ack_topic_is_a_clear_error(tmp_path):
    dom = _domain()
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, cameras=1, steps=2, tf_static=False, namespace=f"/lu{dom}")
    proc = _play(dom, str(bag), "--lock-step", "--lock-step-topic", f"/lu{dom}/nobody", "--lock-step-timeout", "0.5")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("vggt4d-bag: error:") and f"/lu{dom}/nobody" in lines[-1]
    assert "Traceback" not in proc.stderr
