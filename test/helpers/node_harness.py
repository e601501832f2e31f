"""The node and a test node in one process over real DDS (rclpy), for the fault and hostile-input tests.

The test node publishes camera images and CameraInfo (reliable) and records every message of the
topics it is given, checked on arrival by :class:`vggt4d_ros.eval.integrity.IntegrityChecker`; it can
also keep ``/diagnostics`` and the node's ``/rosout`` records. Both nodes spin in one multi-threaded
executor. The DDS environment is the localhost-only one applied by conftest.py.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from vggt4d_ros.perception.pipeline import RANDOM_INIT

W, H = 112, 70
T0 = 1_700_000_000_000_000_000
DT = 100_000_000

# Random weights (no checkpoint), a small grid and two-step windows keep every case to seconds.
BASE_PARAMS: Dict[str, Any] = {
    "autostart": False, "cameras": ["cam0", "cam1"], "model.checkpoint": RANDOM_INIT, "model.device": "cpu",
    "model.target_width": W, "window.num_steps": 2, "sync.min_cameras": 1, "keypoints.max_count": 0,
    "base_frame": "", "extrinsics_timeout_s": 0.0, "sync.tolerance_ms": 5.0, "diagnostics_period_s": 0.2}

_BPP = {"rgb8": 3, "bgr8": 3, "32FC1": 4, "mono8": 1}


class NodeHarness:
    """Args:
        name: the test node's name.
        topics: output topic -> ROS type name (``pkg/msg/Name``) to record into :attr:`msgs`.
        overrides: node parameters over :data:`BASE_PARAMS`.
        diagnostics / rosout: also keep ``/diagnostics`` arrays and the node's ``/rosout`` records.
    """

    def __init__(self, name: str, topics: Mapping[str, str], overrides: Optional[Mapping[str, Any]] = None,
                 diagnostics: bool = False, rosout: bool = False) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from vggt4d_ros.bag.rosutil import message_class
        from vggt4d_ros.eval.integrity import IntegrityChecker
        from vggt4d_ros.ros.node import Vggt4dNode

        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        params = dict(BASE_PARAMS)
        params.update(overrides or {})
        self.cameras: Sequence[str] = list(params["cameras"])
        self.node = Vggt4dNode(context=self.ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.node.trigger_configure()
        self.node.trigger_activate()
        self.test = rclpy.create_node(name, context=self.ctx)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.img = {c: self.test.create_publisher(Image, f"/{c}/image_raw", qos) for c in self.cameras}
        self.info = {c: self.test.create_publisher(CameraInfo, f"/{c}/camera_info", qos) for c in self.cameras}
        self.lock = threading.Lock()
        self.msgs: Dict[str, list] = {t: [] for t in topics}
        self.checker = IntegrityChecker(max_odom_step_m=1.0)
        self.diag: list = []
        self.logs: list = []
        for topic, mt in topics.items():
            self.test.create_subscription(message_class(mt), topic, self._recorder(topic, mt), 100)
        if diagnostics:
            from diagnostic_msgs.msg import DiagnosticArray

            self.test.create_subscription(DiagnosticArray, "/diagnostics", self.diag.append, 50)
        if rosout:
            from rcl_interfaces.msg import Log

            # /rosout is transient local (rcl's rosout QoS): a late-matching subscription still gets the records.
            self.test.create_subscription(Log, "/rosout", self._on_log, QoSProfile(
                depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.ex = MultiThreadedExecutor(num_threads=2, context=self.ctx)
        self.ex.add_node(self.node)
        self.ex.add_node(self.test)
        self._closing = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        time.sleep(1.0)  # discovery
        self.rng = np.random.default_rng(0)

    def _spin(self) -> None:
        """Spin until closed. The tests trigger lifecycle transitions from their own thread (the node's
        process does it from its single executor thread, through the lifecycle services), and rclpy may
        then find a subscription's event handler destroyed while it builds the wait set
        (``InvalidHandle``); that wait is retried instead of ending the spin thread."""
        from rclpy._rclpy_pybind11 import InvalidHandle

        while not self._closing.is_set() and self.ctx.ok():
            try:
                self.ex.spin_once(timeout_sec=0.1)
            except InvalidHandle:
                continue
            except Exception:  # noqa: BLE001 - the context was shut down under us while closing
                if self._closing.is_set() or not self.ctx.ok():
                    return
                raise

    def _recorder(self, topic: str, msgtype: str) -> Callable[[Any], None]:
        def on(msg: Any) -> None:
            with self.lock:
                self.msgs[topic].append(msg)
                self.checker.check(topic, msgtype, msg)
        return on

    def _on_log(self, msg: Any) -> None:
        if msg.name == "vggt4d":
            self.logs.append(msg)

    def close(self) -> None:
        import rclpy

        try:
            self.node.trigger_deactivate()
        finally:
            self._closing.set()
            self.thread.join(timeout=5)
            self.ex.shutdown()
            self.node.destroy_node()
            self.test.destroy_node()
            rclpy.shutdown(context=self.ctx)

    # ------------------------------------------------------------------ inputs
    def camera_info(self, cam: str, t_ns: int, width: int = W, height: int = H, k: Any = None):
        from sensor_msgs.msg import CameraInfo

        from vggt4d_ros.ros.conversions import ns_to_stamp

        ci = CameraInfo(width=width, height=height)
        ci.header.stamp, ci.header.frame_id = ns_to_stamp(t_ns), f"{cam}_optical_frame"
        ci.k = list(k) if k is not None else [100.0, 0.0, width / 2, 0.0, 100.0, height / 2, 0.0, 0.0, 1.0]
        return ci

    def image(self, cam: str, t_ns: int, *, encoding: str = "rgb8", width: int = W, height: int = H,
              step: Optional[int] = None, data: Optional[bytes] = None, bpp: Optional[int] = None):
        """An Image with random bytes (or ``data``); ``step`` defaults to width x bytes per pixel."""
        from sensor_msgs.msg import Image

        from vggt4d_ros.ros.conversions import ns_to_stamp

        bpp = _BPP.get(encoding, 3) if bpp is None else bpp
        msg = Image(width=width, height=height, encoding=encoding, step=width * bpp if step is None else step)
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(t_ns), f"{cam}_optical_frame"
        if data is None:
            data = self.rng.integers(0, 256, size=height * msg.step, dtype=np.uint8).tobytes()
        msg.data = data
        return msg

    def send(self, cam: str, t_ns: int, image: Any = None, info: Any = None, **image_kw: Any) -> None:
        """CameraInfo (``info``, else a good one) then the image (``image``, else :meth:`image`)."""
        self.info[cam].publish(info if info is not None else self.camera_info(cam, t_ns))
        self.img[cam].publish(image if image is not None else self.image(cam, t_ns, **image_kw))

    # ------------------------------------------------------------------ outputs
    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.msgs[topic])

    @staticmethod
    def wait(pred: Callable[[], bool], timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.05)
        return False


def harness_fixture(factory: Callable[..., NodeHarness]):
    """A pytest fixture body: ``make(**overrides)`` builds harnesses, all closed at the end."""
    hs = []

    def make(**kw):
        h = factory(**kw)
        hs.append(h)
        return h

    return hs, make
