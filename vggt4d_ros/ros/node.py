"""The vggt4d_ros lifecycle node: cameras in, poses / depth / clouds / masks / keypoints out.

Wiring only: the input path (CameraInfo, sync, window, resets, status order, extrinsics, depth topic) is
:class:`vggt4d_ros.frontend.FrontEnd`, which the offline replay feeds too; messages are decoded by
:mod:`vggt4d_ros.ros.feed`; a window becomes per-step outputs in :class:`vggt4d_ros.perception.pipeline.Pipeline`; the
output messages are built by :mod:`vggt4d_ros.ros.messages`. See docs/architecture.md.

Lifecycle: configure (model, publishers), activate (front end, subscriptions, worker thread), deactivate
(subscriptions and worker stopped, window dropped), cleanup (model and GPU memory freed). With ``autostart``
(default) the node configures and activates itself, and ``vggt4d-node`` exits with code 1 when that fails
(a launch file sees it); under a lifecycle manager (``autostart: false``) it stays alive, unconfigured.

Parameters are validated when the node is built (type, range, choices, cross-parameter rules, unknown names
with the closest valid one; one line each: :mod:`vggt4d_ros.frontend.params`) and on every live change; the
node holds one immutable :class:`~vggt4d_ros.frontend.Config` and swaps it, never edits it.

Threads: the executor thread decodes images and feeds the front end; windows go to one worker thread
through a latest-wins slot (a slow model skips windows but every window chains to the last one processed).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from vggt4d_ros.bag.rosutil import publish_spaced
from vggt4d_ros.frontend import Config, FrontEnd, ParamError
from vggt4d_ros.frontend.params import CAMERA_PARAMS, NODE_PARAMS
from vggt4d_ros.msg import TrackedKeypoints, WindowStatus
from vggt4d_ros.ros import feed
from vggt4d_ros.ros import messages as outmsg
from vggt4d_ros.ros.markers import KeypointMarkers
from vggt4d_ros.ros.support import MapOutput, SensorSubscriptions, descriptor

NODE_NAME = "vggt4d"
_MSG_TYPES = {"nav_msgs/msg/Odometry": Odometry, "vggt4d_ros/msg/WindowStatus": WindowStatus,
              "tf2_msgs/msg/TFMessage": TFMessage, "diagnostic_msgs/msg/DiagnosticArray": DiagnosticArray,
              "sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
              "sensor_msgs/msg/PointCloud2": PointCloud2, "vggt4d_ros/msg/TrackedKeypoints": TrackedKeypoints,
              "visualization_msgs/msg/MarkerArray": MarkerArray}
_RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


class Vggt4dNode(LifecycleNode):
    """See the module docstring; parameters in :mod:`vggt4d_ros.frontend.params` and README.

    Raises :class:`~vggt4d_ros.frontend.ParamError` (one line) on invalid or unknown parameters (unknown ones
    are logged and ignored with ``allow_unknown_parameters=True``).
    """

    def __init__(self, node_name: str = NODE_NAME, allow_unknown_parameters: bool = False, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        given = {name: p.value for name, p in self._parameter_overrides.items()}
        self._cfg = Config.from_params(given, allow_unknown=allow_unknown_parameters)
        for w in self._cfg.warnings:
            self.get_logger().warning(w)
        table = {p.name: p for p in NODE_PARAMS}
        cam_table = {p.name: p for p in CAMERA_PARAMS}
        for name, value in self._cfg.items():
            p = table.get(name) or cam_table[name.split(".", 1)[1]]
            if p.kind == "double_array" and not value:
                self.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY, descriptor(p, name), ignore_override=True)
            else:
                self.declare_parameter(name, value, descriptor(p, name), ignore_override=True)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.cameras = list(self._cfg.cameras)
        self.exit_code: Optional[int] = None  # set when an autostart transition failed (main exits with it)
        self.frontend: Optional[FrontEnd] = None
        self._pipeline = None
        self._pcfg = None  # the pipeline's config snapshot for the next window (live parameters)
        self._worker: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._subs: List[Any] = []
        self._sensors = SensorSubscriptions(self, lambda: self._cfg)
        self._pubs: Dict[str, Any] = {}
        self._timers: List[Any] = []
        self._map: Optional[MapOutput] = None
        self._markers = KeypointMarkers()
        self._latencies: List[float] = []
        if self._cfg["autostart"]:
            self._autostart_timer = self.create_timer(0.0, self._autostart)
        else:
            self.get_logger().info("parameters valid; autostart false: waiting for configure from a lifecycle manager")

    # ------------------------------------------------------------------ parameters
    @property
    def cfg(self) -> Config:
        return self._cfg

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in self._cfg}
        if not changes:
            return SetParametersResult(successful=True)  # qos_overrides.*, use_sim_time: rclpy's
        try:
            new = self._cfg.with_values(changes)
        except ParamError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._swap_config(new)
        return SetParametersResult(successful=True)

    def _swap_config(self, new: Config) -> None:
        from vggt4d_ros.perception.pipeline import pipeline_config_from_params

        self._pcfg = pipeline_config_from_params(new) if self._pipeline is not None else None
        self._cfg = new
        if self.frontend is not None:
            self.frontend.set_config(new)

    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.exit_code = 1
        elif self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.exit_code = 1

    def _log(self, level: str, text: str) -> None:
        getattr(self.get_logger(), {"warn": "warning"}.get(level, level))(text)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from vggt4d_ros.perception.pipeline import Pipeline, pipeline_config_from_params

        try:
            self._pcfg = pipeline_config_from_params(self._cfg)
            self._pipeline = Pipeline(self._pcfg)
        except Exception as exc:  # noqa: BLE001 - one line; the node stays alive, unconfigured
            self.get_logger().error(f"configure failed: {' '.join(str(exc).split())}")
            self._pipeline = None
            return TransitionCallbackReturn.FAILURE
        self._make_publishers()
        c = self._cfg
        self.get_logger().info(f"configured: model {c['model.config']} on {self._pipeline.device_name}, cameras "
                               f"{self.cameras}, window {c['window.num_steps']} steps, stride {c['window.stride']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._pipeline.reset("activated")
        self.frontend = FrontEnd(self._cfg, feed.ack_builder(lambda: self._cfg), self._publish_status, log=self._log,
                                 on_reset=self._pipeline.request_reset)
        if self._map is not None:
            self._map.clear()  # a new odom frame starts at activation
        self._markers = KeypointMarkers()
        self._stop.clear()
        self._worker = threading.Thread(target=self._run_worker, args=(self.frontend,), name="vggt4d-inference",
                                        daemon=True)
        self._worker.start()
        self._make_subscriptions()
        self._timers = [self.create_timer(float(self._cfg["diagnostics_period_s"]), self._publish_diagnostics),
                        self.create_timer(float(self._cfg["map.publish_period_s"]),
                                          lambda: self._map is not None and self._map.publish())]
        wait = float(self._cfg["scale.depth_wait_s"])
        if str(self._cfg["scale.depth_topic"]) and wait > 0:  # a step held for its depth image goes on after wait
            fe = self.frontend
            self._timers.append(self.create_timer(max(0.005, wait / 4), lambda: fe.release(now=fe.clock())))
        self.get_logger().info("activated")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_runtime()
        self.get_logger().info("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_runtime()
        self._destroy_publishers()
        self._close_pipeline()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_runtime()
        self._close_pipeline()
        return TransitionCallbackReturn.SUCCESS

    def _close_pipeline(self) -> None:
        self._pipeline = self._pipeline.close() if self._pipeline is not None else None

    def _teardown_runtime(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        self._sensors.destroy()
        for t in self._timers:
            self.destroy_timer(t)
        self._timers = []
        self._stop.set()
        if self.frontend is not None:
            self.frontend.close()
        if self._worker is not None:
            self._worker.join(timeout=60.0)
            if self._worker.is_alive():
                self.get_logger().error("inference thread did not stop within 60 s")
        self._worker = None

    def flush_outputs(self, timeout_s: float = 2.0) -> None:
        """Wait (bounded) until reliable subscribers acknowledged what was published, so outputs of the
        last window are not lost when the process exits right after publishing them."""
        deadline = time.monotonic() + timeout_s
        for pub in list(self._pubs.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                pub.wait_for_all_acked(Duration(seconds=left))
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass

    # ------------------------------------------------------------------ publishers and subscriptions
    def _make_publishers(self) -> None:
        tf_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        # Every output exists from configure on (publish.* switches are live); building is lazy.
        everything = dict(self._cfg, **{k: True for k in (
            "publish.depth", "publish.confidence", "publish.dynamic_mask", "publish.camera_clouds",
            "publish.fused_cloud", "publish.keypoints", "publish.keypoint_markers", "publish_odom_tf")})
        self._pubs = {topic: self.create_publisher(_MSG_TYPES[t], topic, tf_qos if topic == "/tf" else _RELIABLE)
                      for topic, t in outmsg.output_topics(everything, ns="~").items()}
        self._map = MapOutput(self, self._cfg) if self._cfg["map.enable"] else None

    def _destroy_publishers(self) -> None:
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs = {}
        if self._map is not None:
            self._map.destroy()
        self._map = None

    def _make_subscriptions(self) -> None:
        fe, sub = self.frontend, self._sensors.subscribe
        if str(self._cfg["scale.depth_topic"]):  # first: the executor serves it before an image ready with it
            sub(str(self._cfg["scale.depth_topic"]), Image, lambda m: feed.feed_depth(fe, m))
        for c in self.cameras:
            if self._cfg.cam(c, "compressed"):
                sub(self._cfg.image_topic(c) + "/compressed", CompressedImage,
                    lambda m, c=c: feed.feed_image(fe, c, m, True))
            else:
                sub(self._cfg.image_topic(c), Image, lambda m, c=c: feed.feed_image(fe, c, m, False))
            sub(self._cfg.info_topic(c), CameraInfo, lambda m, c=c: feed.feed_info(fe, c, m))
        static_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs.append(self.create_subscription(TFMessage, "/tf_static", lambda m: feed.feed_tf_static(fe, m),
                                                   static_qos))

    # ------------------------------------------------------------------ worker
    def _run_worker(self, fe: FrontEnd) -> None:
        while not self._stop.is_set():
            win = fe.take(timeout=0.1)
            if win is None:
                continue
            t0 = time.monotonic()
            if self._pcfg is not None and self._pipeline.cfg is not self._pcfg:
                self._pipeline.cfg = self._pcfg  # a new snapshot between windows (live parameters)
            result, error = fe.run(self._pipeline, win, self._stop)
            if result is None:
                if fe.throttle.ready("infer-error"):
                    self.get_logger().error(error)
                fe.failed(win, error)
                continue
            if self._stop.is_set():
                break
            statuses: List[Any] = []
            try:
                arrivals = [f.arrival for f in fe.newest_frames(win)]
                statuses = self._publish_result(result, max(arrivals) if arrivals else t0)
            except Exception as exc:  # noqa: BLE001 - say why, keep running
                fe.counters["errors"] += 1
                if fe.throttle.ready("publish"):
                    self.get_logger().error(f"publishing failed: {exc!r}")
            finally:
                fe.done(win, result, statuses)

    # ------------------------------------------------------------------ publishing
    def _publish_status(self, msg: Any) -> None:
        pub = self._pubs.get("~/status")
        if pub is not None:
            pub.publish(msg)

    def _publish_result(self, result: Any, t0: float) -> List[Any]:
        """Publish a window's outputs; ``t0`` is the arrival (monotonic) of the newest frame, so the status
        latency covers waiting, inference and publishing. Returns the per-step statuses ``(stamp_ns, msg)``
        for the sequencer (which publishes them in order)."""
        cfg, fe = self._cfg, self.frontend

        def want(topic: str) -> bool:
            pub = self._pubs.get(topic)
            return pub is not None and (topic == "/tf" or pub.get_subscription_count() > 0)

        for step in result.steps:
            for topic, _, msg in outmsg.step_messages(cfg, step, ns="~", want=want, markers=self._markers):
                publish_spaced(self._pubs[topic], msg)  # large ones spaced: see publish_spaced
            if self._map is not None:
                self._map.insert(step, cfg)
        latency = time.monotonic() - t0
        self._latencies = (self._latencies + [latency])[-200:]
        msgs = outmsg.status_messages(cfg, result, latency, int(fe.counters["frames_dropped"]),
                                      int(fe.counters["windows_skipped"]), ns="~")
        return [(int(step.stamp_ns), st) for step, (_, _, st) in zip(result.steps, msgs)]

    def _publish_diagnostics(self) -> None:
        self._sensors.recheck()
        fe = self.frontend
        if fe is None:
            return
        fe.check_cameras()
        pub = self._pubs.get("/diagnostics")
        if pub is None or pub.get_subscription_count() == 0:
            return
        sync_diag, counters, health = fe.diagnostics()
        _, _, msg = outmsg.diagnostics_message(
            self.get_clock().now().to_msg(), self.cameras, sync_diag, fe.rejected, counters, fe.tracking_state,
            fe.tracking_message, self._latencies, name=self.get_fully_qualified_name(), live=True, health=health,
            sources=fe.output_sources)
        pub.publish(msg)

    def save_map(self, path: str = "") -> str:
        """Write the static map (PLY or PCD by extension); returns the path written."""
        if self._map is None:
            raise RuntimeError("map.enable is false")
        return self._map.save(path)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="vggt4d-node",
        description="vggt4d_ros lifecycle node. Parameters come from ROS arguments, e.g. "
                    "`vggt4d-node --ros-args --params-file config/tiny.yaml -r __ns:=/robot`. "
                    "Keep DDS local when testing: `source scripts/ros_env.sh` first. Exit codes: 2 invalid "
                    "parameters, 1 configure/activate failed with autostart.")
    ap.add_argument("--list-params", action="store_true", help="print every parameter with its description and exit")
    ap.add_argument("--allow-unknown-parameters", action="store_true",
                    help="log parameters the node does not declare and go on (default: refuse to start)")
    from vggt4d_ros.cli_util import strip_ros_args  # rcl's own parser drops the ROS arguments
    args = ap.parse_args(strip_ros_args(argv[1:]))
    if args.list_params:
        print("\n".join(f"{'<camera>.' if p in CAMERA_PARAMS else ''}{p.name} ({p.kind}, default {p.default!r}): "
                        f"{p.description}" for p in NODE_PARAMS + CAMERA_PARAMS))
        return 0
    from vggt4d_ros.ros.conversions import reuse_freed_memory

    reuse_freed_memory()  # multi-MB output buffers every step: reuse freed pages (see conversions)

    # rclpy's own handler would shut the context down at once; with ours the outputs still in flight are
    # flushed (flush_outputs) before the context goes.
    def _stop(signum, frame):
        raise KeyboardInterrupt

    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        node = Vggt4dNode(allow_unknown_parameters=args.allow_unknown_parameters)
    except (ParamError, ValueError) as exc:
        print(f"vggt4d-node: invalid parameters: {' '.join(str(exc).split())}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        # Short waits so that SIGINT/SIGTERM (our handler raises KeyboardInterrupt) are acted on even when
        # nothing else wakes the executor (e.g. an unconfigured node has no timers).
        while rclpy.ok() and node.exit_code is None:
            executor.spin_once(timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            if node._map is not None and str(node.cfg["map.save_path"]):
                try:
                    node.get_logger().info(f"static map saved to {node.save_map()}")
                except Exception as exc:  # noqa: BLE001
                    node.get_logger().error(f"saving the map on shutdown failed: {exc}")
            node.flush_outputs(timeout_s=5.0)
            node._teardown_runtime()
            node._close_pipeline()
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    return node.exit_code or 0


if __name__ == "__main__":
    sys.exit(main())
