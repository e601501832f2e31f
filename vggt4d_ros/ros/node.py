"""The vggt4d_ros lifecycle node: cameras in, poses / depth / clouds / masks / keypoints out.

Thin by design: message conversion lives in :mod:`vggt4d_ros.ros.conversions` (and pointcloud,
transforms), synchronisation and the sliding window in :mod:`vggt4d_ros.window`, and everything from a
window of frames to per-step outputs in :class:`vggt4d_ros.pipeline.Pipeline`, which the offline replay
tool runs too. This module declares parameters, owns subscriptions, publishers and the inference
thread, and turns pipeline outputs into messages.

Lifecycle: configure (parameters, model loaded, publishers), activate (subscriptions, worker thread),
deactivate (subscriptions and worker stopped, window dropped), cleanup (model and GPU memory freed).
With ``autostart`` (default) the node configures and activates itself.

Threads: the executor thread only decodes images and feeds the synchroniser; complete windows are
handed to one worker thread through a latest-wins slot, so a slow model skips windows (counted in
diagnostics) instead of building a backlog, and callbacks never block on inference.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional

import numpy as np

from vggt4d_ros.ros.params import CAMERA_PARAMS, NODE_PARAMS, Param, validate
from vggt4d_ros.window.status import StatusSequencer

NODE_NAME = "vggt4d"


def _rclpy():
    import rclpy  # noqa: F401 - imported lazily so `--help` works without a ROS environment

    return rclpy


class _Throttle:
    """Log at most once per ``period`` seconds per key (bounded: keys are a fixed set of reasons)."""

    def __init__(self, period: float = 5.0, max_keys: int = 256) -> None:
        self.period = period
        self.max_keys = max_keys
        self._last: Dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            return False
        if len(self._last) >= self.max_keys and key not in self._last:
            self._last.pop(next(iter(self._last)))
        self._last[key] = now
        return True


def build_node_class():
    """Create the node class (imports rclpy lazily so the module imports without ROS)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    SetParametersResult)
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.qos_overriding_options import QoSOverridingOptions
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
    from std_srvs.srv import Trigger
    from tf2_msgs.msg import TFMessage
    from visualization_msgs.msg import MarkerArray

    from vggt4d_ros.msg import TrackedKeypoints, WindowStatus
    from vggt4d_ros.bag.rosutil import publish_spaced
    from vggt4d_ros.ros import conversions as conv
    from vggt4d_ros.ros import messages as outmsg
    from vggt4d_ros.extrinsics import resolve_extrinsics
    from vggt4d_ros.ros.transforms import transform_to_matrix

    TYPE_MAP = {
        "bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "double": Parameter.Type.DOUBLE,
        "string": Parameter.Type.STRING, "double_array": Parameter.Type.DOUBLE_ARRAY,
        "string_array": Parameter.Type.STRING_ARRAY,
    }

    def descriptor(p: Param, name: str) -> ParameterDescriptor:
        text = p.description + (f" [{p.unit}]" if p.unit else "")
        if p.choices:
            text += f" One of: {', '.join(repr(c) for c in p.choices)}."
        d = ParameterDescriptor(name=name, type=TYPE_MAP[p.kind].value, description=text,
                                read_only=p.static)
        if p.range is not None and p.kind == "int":
            d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
        elif p.range is not None and p.kind == "double":
            d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]),
                                                         to_value=float(p.range[1]), step=0.0)]
        return d

    class Vggt4dNode(LifecycleNode):
        """See the module docstring; parameters in :mod:`vggt4d_ros.ros.params` and README."""

        def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
            super().__init__(node_name, **kwargs)
            self._params: Dict[str, Param] = {}
            for p in NODE_PARAMS:
                self._declare(p, p.name)
            self._cameras: List[str] = []
            self._declare_camera_params()
            self.add_on_set_parameters_callback(self._on_set_parameters)
            self._throttle = _Throttle(5.0)
            self._lock = threading.Lock()
            self._pipeline = None
            self._infos = None
            self._waiting_info: Dict[str, tuple] = {}
            self._sync = None
            self._window = None
            self._slot = None
            self._status: Optional[StatusSequencer] = None
            self._worker: Optional[threading.Thread] = None
            self._stop = threading.Event()
            self._subs: List[Any] = []
            self._cam_subs: Dict[str, tuple] = {}  # topic -> (subscription, reliability, type, callback)
            self._pubs: Dict[str, Any] = {}  # topic (as the message builders name it) -> publisher
            self._map = None
            self._map_srv = None
            self._map_lock = threading.Lock()
            self._map_timer = None
            self._last_map_stamp = None
            self._markers = None
            self._diag_timer = None
            self._extrinsics: Dict[str, np.ndarray] = {}
            self._static_tf: Dict[str, tuple] = {}  # child -> (parent, T_parent_child)
            self._rejected: Dict[str, int] = {}
            self._counters = {"steps_in": 0, "windows": 0, "windows_skipped": 0, "frames_dropped": 0,
                              "resets": 0, "errors": 0}
            self._last_status: Dict[str, Any] = {"state": 0, "latency": float("nan"), "message": ""}
            self._last_step_stamp_ns: Optional[int] = None
            self._latencies: List[float] = []
            if self.get_parameter("autostart").value:
                self._autostart_timer = self.create_timer(0.0, self._autostart)

        # ------------------------------------------------------------------ parameters
        def _declare(self, p: Param, name: str) -> None:
            self._params[name] = p
            default = list(p.default) if isinstance(p.default, (list, tuple)) else p.default
            if p.kind == "double_array" and not default:
                self.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY, descriptor(p, name))
            else:
                self.declare_parameter(name, default, descriptor(p, name))
            value = self._p(name)
            if value is not None:
                reason = validate(p, value)
                if reason:
                    raise ValueError(f"invalid parameter: {reason}")

        def _declare_camera_params(self) -> None:
            cams = [str(c) for c in self.get_parameter("cameras").value]
            if not cams or len(set(cams)) != len(cams) or any(not c or "/" in c or "." in c for c in cams):
                raise ValueError(f"invalid parameter: cameras must be distinct non-empty names without '/' "
                                 f"or '.', got {cams}")
            self._cameras = cams
            for c in cams:
                for p in CAMERA_PARAMS:
                    self._declare(p, f"{c}.{p.name}")

        def _on_set_parameters(self, params) -> SetParametersResult:
            for prm in params:
                p = self._params.get(prm.name)
                if p is None:
                    continue  # qos_overrides.* and use_sim_time are handled by rclpy
                reason = validate(p, prm.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
            return SetParametersResult(successful=True)

        def _p(self, name: str) -> Any:
            try:
                return self.get_parameter(name).value
            except ParameterUninitializedException:  # declared by type only (empty arrays)
                return None

        def _cam_p(self, cam: str, name: str) -> Any:
            return self._p(f"{cam}.{name}")

        def _autostart(self) -> None:
            self._autostart_timer.cancel()
            self.destroy_timer(self._autostart_timer)
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

        # ------------------------------------------------------------------ lifecycle
        def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
            try:
                self._pipeline = self._make_pipeline()
            except Exception as exc:  # noqa: BLE001 - any failure keeps the node alive, unconfigured
                self.get_logger().error(f"configure failed: {exc}")
                self._pipeline = None
                return TransitionCallbackReturn.FAILURE
            self._make_publishers()
            self.get_logger().info(
                f"configured: model {self._p('model.config')} on {self._pipeline.device_name}, cameras "
                f"{self._cameras}, window {self._p('window.num_steps')} steps, stride {self._p('window.stride')}")
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
            from vggt4d_ros.window.sync import CameraInfoCache, MultiCameraSynchronizer
            from vggt4d_ros.window.window import KeyframeSelector, SlidingWindow

            min_cams = int(self._p("sync.min_cameras")) or len(self._cameras)
            self._infos = CameraInfoCache()
            self._sync = MultiCameraSynchronizer(
                self._cameras, tolerance_s=float(self._p("sync.tolerance_ms")) * 1e-3,
                min_cameras=min_cams, max_pending=int(self._p("sync.max_pending")), camera_info=self._infos)
            motion = float(self._p("window.keyframe_motion"))
            keyframe = KeyframeSelector(motion / 255.0, image_fn=lambda payload: payload["rgb"]) if motion > 0 else None
            self._window = SlidingWindow(self._cameras, num_steps=int(self._p("window.num_steps")),
                                         stride=min(int(self._p("window.stride")), int(self._p("window.num_steps"))),
                                         max_pending_windows=1, keyframe=keyframe,
                                         jitter_threshold_s=float(self._p("window.max_gap_s")) or None)
            self._slot = self._window.queue
            self._status = StatusSequencer(self._publish_status)
            self._pipeline.reset("activated")
            if self._map is not None:
                with self._map_lock:
                    self._map.clear()  # a new odom frame starts at activation
            self._stop.clear()
            self._worker = threading.Thread(target=self._run_worker, args=(self._slot,), name="vggt4d-inference",
                                            daemon=True)
            self._worker.start()
            self._make_subscriptions()
            self._diag_timer = self.create_timer(float(self._p("diagnostics_period_s")), self._publish_diagnostics)
            self._map_timer = self.create_timer(float(self._p("map.publish_period_s")), self._publish_map)
            from vggt4d_ros.ros.markers import KeypointMarkers

            self._markers = KeypointMarkers()
            self.get_logger().info("activated")
            return super().on_activate(state)

        def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._teardown_runtime()
            self.get_logger().info("deactivated")
            return super().on_deactivate(state)

        def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._teardown_runtime()
            self._destroy_publishers()
            if self._pipeline is not None:
                self._pipeline.close()
            self._pipeline = None
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._teardown_runtime()
            if self._pipeline is not None:
                self._pipeline.close()
                self._pipeline = None
            return TransitionCallbackReturn.SUCCESS

        def _teardown_runtime(self) -> None:
            for s in self._subs + [v[0] for v in self._cam_subs.values()]:
                self.destroy_subscription(s)
            self._subs = []
            self._cam_subs = {}
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
                self._diag_timer = None
            if self._map_timer is not None:
                self.destroy_timer(self._map_timer)
                self._map_timer = None
            self._stop.set()
            if self._slot is not None:
                self._slot.close()
            if self._worker is not None:
                self._worker.join(timeout=60.0)
                if self._worker.is_alive():
                    self.get_logger().error("inference thread did not stop within 60 s")
            self._worker = None
            self._sync = None
            self._window = None
            self._slot = None

        def flush_outputs(self, timeout_s: float = 2.0) -> None:
            """Wait (bounded) until reliable subscribers acknowledged what was published, so outputs of the
            last window are not lost when the process exits right after publishing them."""
            from rclpy.duration import Duration

            deadline = time.monotonic() + timeout_s
            for pub in list(self._pubs.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    pub.wait_for_all_acked(Duration(seconds=left))
                except Exception:  # noqa: BLE001 - best effort on shutdown
                    pass

        # ------------------------------------------------------------------ set-up helpers
        def _param_values(self) -> Dict[str, Any]:
            """Snapshot of every declared parameter (dotted names)."""
            return {name: self._p(name) for name in self._params}

        def _make_pipeline(self):
            from vggt4d_ros.pipeline import Pipeline, pipeline_config_from_params

            return Pipeline(pipeline_config_from_params(self._param_values()))

        def _qos_sensor(self, topic: str) -> QoSProfile:
            mode = str(self._p("qos.reliability"))
            if mode == "auto":
                reliable = self._publishers_reliable(topic)
            else:
                reliable = mode == "reliable"
            rel = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
            return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(self._p("qos.depth")), reliability=rel,
                              durability=DurabilityPolicy.VOLATILE)

        def _publishers_reliable(self, topic: str) -> bool:
            """True when every publisher of ``topic`` is reliable (then a reliable subscription matches them all
            and repairs lost fragments of large images); False with none or any best-effort publisher."""
            pubs = self.get_publishers_info_by_topic(topic)
            return bool(pubs) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)

        def _make_publishers(self) -> None:
            out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
            tf_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
            # Every output exists from configure on (publish.* switches are live); building is lazy.
            everything = dict(self._param_values(), **{k: True for k in (
                "publish.depth", "publish.confidence", "publish.dynamic_mask", "publish.camera_clouds",
                "publish.fused_cloud", "publish.keypoints", "publish.keypoint_markers", "publish_odom_tf")})
            types = {"nav_msgs/msg/Odometry": Odometry, "vggt4d_ros/msg/WindowStatus": WindowStatus,
                     "tf2_msgs/msg/TFMessage": TFMessage, "diagnostic_msgs/msg/DiagnosticArray": DiagnosticArray,
                     "sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
                     "sensor_msgs/msg/PointCloud2": PointCloud2, "vggt4d_ros/msg/TrackedKeypoints": TrackedKeypoints,
                     "visualization_msgs/msg/MarkerArray": MarkerArray}
            self._pubs = {}
            for topic, msgtype in outmsg.output_topics(everything, ns="~").items():
                self._pubs[topic] = self.create_publisher(types[msgtype], topic, tf_qos if topic == "/tf" else out_qos)
            if self._p("map.enable"):
                from vggt4d_ros.mapping import VoxelMap

                self._map = VoxelMap(float(self._p("map.voxel_size")), int(self._p("map.max_voxels")),
                                     int(self._p("map.min_observations")))
                self._pubs["~/map"] = self.create_publisher(PointCloud2, "~/map", QoSProfile(
                    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL))
                self._map_srv = self.create_service(Trigger, "~/save_map", self._on_save_map)

        def _destroy_publishers(self) -> None:
            for pub in self._pubs.values():
                self.destroy_publisher(pub)
            self._pubs = {}
            if self._map_srv is not None:
                self.destroy_service(self._map_srv)
            self._map_srv = None
            self._map = None

        # ------------------------------------------------------------------ static map
        def save_map(self, path: str = "") -> str:
            """Write the static map (PLY or PCD by extension); returns the path written."""
            if self._map is None:
                raise RuntimeError("map.enable is false")
            path = path or str(self._p("map.save_path")) or "vggt4d_map.ply"
            with self._map_lock:
                out = self._map.save_pcd(path) if path.lower().endswith(".pcd") else self._map.save_ply(path)
            return str(out)

        def _on_save_map(self, request, response):
            try:
                path = self.save_map()
                response.success, response.message = True, f"saved {len(self._map)} voxels to {path}"
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                response.success, response.message = False, f"saving the map failed: {exc}"
            return response

        def _publish_map(self) -> None:
            pub = self._pubs.get("~/map")
            if self._map is None or pub is None or pub.get_subscription_count() == 0 or self._last_map_stamp is None:
                return
            from std_msgs.msg import Header

            from vggt4d_ros.ros.pointcloud import points_to_cloud

            with self._map_lock:
                xyz, rgb, _ = self._map.points()
            header = Header(stamp=self._last_map_stamp, frame_id=str(self._p("odom_frame")))
            pub.publish(points_to_cloud(xyz, header, colors=rgb, organized=False))

        def _make_subscriptions(self) -> None:
            self._cam_subs = {}
            for c in self._cameras:
                topic = str(self._cam_p(c, "image_topic")) or f"/{c}/image_raw"
                info_topic = str(self._cam_p(c, "camera_info_topic")) or f"/{c}/camera_info"
                if self._cam_p(c, "compressed"):
                    self._subscribe(topic + "/compressed", CompressedImage, lambda m, c=c: self._on_image(c, m, True))
                else:
                    self._subscribe(topic, Image, lambda m, c=c: self._on_image(c, m, False))
                self._subscribe(info_topic, CameraInfo, lambda m, c=c: self._on_info(c, m))
            self._depth_matcher = None
            depth_topic = str(self._p("scale.depth_topic"))
            if depth_topic and self._cameras:  # metric depth registered to the first camera (scale source)
                from vggt4d_ros.scale import SensorDepthMatcher

                self._depth_matcher = SensorDepthMatcher(float(self._p("scale.depth_sync_tolerance_s")))
                self._subscribe(depth_topic, Image, self._on_depth)
            static_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                    reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self._subs.append(self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, static_qos))

        def _subscribe(self, topic: str, msg_type: Any, callback: Any, first: bool = True) -> None:
            qos = self._qos_sensor(topic)
            # qos_overrides parameters are declared with the first subscription of a topic only.
            kw = {"qos_overriding_options": QoSOverridingOptions.with_default_policies()} if first else {}
            sub = self.create_subscription(msg_type, topic, callback, qos, **kw)
            self._cam_subs[topic] = (sub, qos.reliability, msg_type, callback)

        def _recheck_subscriptions(self) -> None:
            """qos.reliability auto: follow the publishers (a camera driver started after the node, or
            restarted with other QoS) by re-subscribing with the matching reliability."""
            if str(self._p("qos.reliability")) != "auto":
                return
            for topic, (sub, rel, msg_type, cb) in list(self._cam_subs.items()):
                want = ReliabilityPolicy.RELIABLE if self._publishers_reliable(topic) else ReliabilityPolicy.BEST_EFFORT
                if want != rel and self.get_publishers_info_by_topic(topic):
                    self.destroy_subscription(sub)
                    self._subscribe(topic, msg_type, cb, first=False)
                    self.get_logger().info(f"{topic}: re-subscribed {want.name.lower()} to match its publishers")

        # ------------------------------------------------------------------ input callbacks
        def _reject(self, cam: str, reason: str) -> None:
            key = f"{cam}: {reason.split(':')[0]}"
            self._rejected[cam] = self._rejected.get(cam, 0) + 1
            if self._throttle.ready(key):
                self.get_logger().warning(f"rejected a message from camera {cam}: {reason}")

        def _on_info(self, cam: str, msg: CameraInfo) -> None:
            K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
            if (msg.width <= 0 or msg.height <= 0 or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0
                    or K[0, 0] > 1e6 or K[1, 1] > 1e6):
                self._reject(cam, f"camera_info: absurd intrinsics or size (fx={K[0, 0]}, fy={K[1, 1]}, "
                                  f"{msg.width}x{msg.height})")
                return
            if self._infos is not None:
                self._infos.update(cam, msg)
            pending = self._waiting_info.pop(cam, None)
            if pending is not None:  # an image that arrived just before its camera's first CameraInfo
                self._on_image(cam, *pending)

        def _on_depth(self, msg: Any) -> None:
            """scale.depth_topic: decode (16UC1 mm / 32FC1 m -> float32 m, NaN invalid) and pair by stamp."""
            matcher = getattr(self, "_depth_matcher", None)
            if matcher is None:
                return
            try:
                depth = conv.depth_from_msg(msg)
            except conv.ImageConversionError as exc:
                self._reject(f"{self._cameras[0]} depth", str(exc))
                return
            matcher.add_depth(conv.stamp_to_ns(msg.header.stamp), depth)

        def _on_image(self, cam: str, msg: Any, compressed: bool) -> None:
            if self._sync is None:
                return
            try:
                max_px = int(self._p("max_image_pixels"))
                rgb = conv.compressed_to_rgb(msg, max_pixels=max_px) if compressed else \
                    conv.image_to_rgb(msg, max_pixels=max_px)
            except conv.ImageConversionError as exc:
                self._reject(cam, str(exc))
                return
            info = self._infos.get(cam) if self._infos is not None else None
            if info is None and self._p("sync.require_camera_info"):
                if cam in self._waiting_info:  # a second image without CameraInfo: the older one is dropped
                    self._reject(cam, "no CameraInfo received yet on "
                                 f"{str(self._cam_p(cam, 'camera_info_topic')) or f'/{cam}/camera_info'}")
                self._waiting_info[cam] = (msg, compressed)  # newest only: bounded
                return
            if info is not None and (info.width != rgb.shape[1] or info.height != rgb.shape[0]):
                self._reject(cam, f"image size {rgb.shape[1]}x{rgb.shape[0]} differs from its CameraInfo "
                                  f"{info.width}x{info.height}")
                return
            stamp_ns = conv.stamp_to_ns(msg.header.stamp)
            frame_id = str(self._cam_p(cam, "optical_frame")) or msg.header.frame_id
            payload = {"rgb": rgb, "stamp": msg.header.stamp, "stamp_ns": stamp_ns, "frame_id": frame_id,
                       "info": info, "arrival": time.monotonic()}
            if cam == self._cameras[0] and getattr(self, "_depth_matcher", None) is not None:
                self._depth_matcher.add_frame(payload)  # "sensor_depth", now or when the depth image comes
            with self._lock:
                out = self._sync.add(cam, stamp_ns * 1e-9, payload, now=time.monotonic())
                if out.reset_reason:
                    self._on_reset(out.reset_reason)
                self._counters["frames_dropped"] += out.dropped
                for step in out.steps:
                    self._on_time_step(step)

        def _on_reset(self, reason: str) -> None:
            self._counters["resets"] += 1
            self.get_logger().warning(f"input reset ({reason}): window and tracking restart")
            with self._status.lock:
                self._status.restart(cleared=self._window.reset())
            self._last_step_stamp_ns = None
            self._pipeline.request_reset(reason)

        def _on_time_step(self, step) -> None:
            ref = self._cameras[0] if self._cameras[0] in step.frames else next(iter(step.frames))
            stamp_ns = step.frames[ref]["stamp_ns"]
            last = self._last_step_stamp_ns
            if last is not None:
                gap = (stamp_ns - last) * 1e-9
                jump = float(self._p("window.reset_on_time_jump_s"))
                if jump > 0 and gap > jump:
                    self._on_reset(f"stamps jumped forward by {gap:.3f} s")
                elif gap > float(self._p("window.max_gap_s")) and self._throttle.ready("gap"):
                    self.get_logger().warning(f"{gap:.3f} s between time steps (max_gap_s "
                                              f"{self._p('window.max_gap_s')})")
            self._last_step_stamp_ns = stamp_ns
            self._counters["steps_in"] += 1
            # Queueing and its status bookkeeping are one step for the inference thread (see StatusSequencer).
            with self._status.lock:
                res = self._window.push(step)
                self._counters["windows_skipped"] += int(res.skipped)
                if res.window is None:
                    self._publish_ack(step, message="" if res.accepted else "not a keyframe")
                    return
                self._status.window_queued(res.window.window_id, res.skipped)
            self._counters["windows"] += 1

        def _on_tf_static(self, msg: TFMessage) -> None:
            for t in msg.transforms:
                self._static_tf[t.child_frame_id] = (t.header.frame_id, transform_to_matrix(t.transform))

        # ------------------------------------------------------------------ extrinsics
        def _resolve_extrinsics(self, frames: Dict[str, str]) -> Dict[str, np.ndarray]:
            """base_frame <- optical frame per camera from <camera>.extrinsics or /tf_static."""
            return resolve_extrinsics(self._param_values(), self._static_tf, frames)

        def _wait_extrinsics(self, frames: Dict[str, str]) -> Dict[str, np.ndarray]:
            """Extrinsics for the window; before tracking starts, wait up to ``extrinsics_timeout_s`` for
            /tf_static to provide every camera (the odom frame is fixed by the first window)."""
            ext = self._resolve_extrinsics(frames)
            if self._pipeline.started or not str(self._p("base_frame")):
                return ext
            deadline = time.monotonic() + float(self._p("extrinsics_timeout_s"))
            while len(ext) < len(self._cameras) and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.05)
                ext = self._resolve_extrinsics(frames)
            missing = [c for c in self._cameras if c not in ext]
            if missing:
                self.get_logger().warning(
                    f"no extrinsics base_frame '{self._p('base_frame')}' <- optical frame for {missing} after "
                    f"{self._p('extrinsics_timeout_s')} s (from /tf_static or <camera>.extrinsics): assuming "
                    "camera 0 at the body origin looking along x; scale stays up to the model's unit")
            return ext

        # ------------------------------------------------------------------ worker
        def _run_worker(self, slot) -> None:
            while not self._stop.is_set():
                win = slot.get(timeout=0.1)
                if win is None:
                    continue
                t0 = time.monotonic()
                try:
                    V = win.num_views
                    newest = win.frames[(win.num_steps - 1) * V:]
                    frames = {c: f["frame_id"] for c, f in zip(win.camera_names, newest) if f is not None}
                    extrinsics = self._wait_extrinsics(frames)
                    # live parameters
                    self._pipeline.cfg.use_camera_info_intrinsics = bool(self._p("model.use_camera_info_intrinsics"))
                    self._pipeline.cfg.mask_threshold = float(self._p("mask.threshold"))
                    result = self._pipeline.process(win, extrinsics)
                except Exception as exc:  # noqa: BLE001 - drop the window, say why, keep running
                    self._counters["errors"] += 1
                    if self._throttle.ready("infer-" + type(exc).__name__):
                        self.get_logger().error(f"window dropped: inference failed: {exc!r}\n"
                                                f"{traceback.format_exc(limit=3)}")
                    self._publish_window_ack(win, message=f"window dropped: {exc!r}")
                    continue
                if self._stop.is_set():
                    break
                statuses: List[Any] = []
                try:
                    newest = [f["arrival"] for f in win.frames[(win.num_steps - 1) * win.num_views:]
                              if f is not None and "arrival" in f]
                    statuses = self._publish_result(result, max(newest) if newest else t0)
                except Exception as exc:  # noqa: BLE001
                    self._counters["errors"] += 1
                    if self._throttle.ready("publish"):
                        self.get_logger().error(f"publishing failed: {exc!r}\n{traceback.format_exc(limit=3)}")
                finally:
                    self._status.window_done(win.window_id, statuses)

        # ------------------------------------------------------------------ publishing
        def _subscribed(self, pub) -> bool:
            return pub is not None and pub.get_subscription_count() > 0

        def _publish_status(self, msg) -> None:
            pub = self._pubs.get("~/status")
            if pub is not None:
                pub.publish(msg)

        def _publish_window_ack(self, win, message: str) -> None:
            """Status of a dropped window (its newest step), in order through the sequencer."""
            V = win.num_views
            statuses = []
            for f in win.frames[(win.num_steps - 1) * V:]:
                if f is not None:
                    statuses = [(int(f["stamp_ns"]), self._ack_message(f["stamp"], V, message))]
                    break
            self._status.window_done(win.window_id, statuses)

        def _publish_ack(self, step, message: str = "") -> None:
            """Status for a time step consumed without a new inference (window filling or stride)."""
            ref = self._cameras[0] if self._cameras[0] in step.frames else next(iter(step.frames))
            f = step.frames[ref]
            self._status.ack(int(f["stamp_ns"]), self._ack_message(f["stamp"], len(step.frames), message))

        def _ack_message(self, stamp, num_views: int, message: str):
            _, _, st = outmsg.ack_message(
                self._param_values(), stamp, num_views, int(self._last_status["state"]), int(self._counters["windows"]),
                int(self._counters["frames_dropped"]), int(self._counters["windows_skipped"]), message, ns="~")
            return st

        def _publish_result(self, result, t0: float) -> List[Any]:
            """Publish a window's outputs; ``t0`` is the arrival (monotonic) of the newest frame, so the status
            latency covers waiting, inference and publishing. Returns the per-step statuses ``(stamp_ns,
            msg)`` for the sequencer (which publishes them in order)."""
            params = self._param_values()

            def want(topic: str) -> bool:
                pub = self._pubs.get(topic)
                return pub is not None and (topic == "/tf" or pub.get_subscription_count() > 0)

            for step in result.steps:
                for topic, _, msg in outmsg.step_messages(params, step, ns="~", want=want, markers=self._markers):
                    publish_spaced(self._pubs[topic], msg)  # large ones spaced: see publish_spaced
                if self._map is not None:
                    with self._map_lock:
                        self._map.insert_step(step, mask_threshold=float(params["mask.threshold"]),
                                              min_confidence=float(params["cloud.min_confidence"]),
                                              decimation=int(params["cloud.decimation"]))
                    self._last_map_stamp = step.stamp
            latency = time.monotonic() - t0
            self._latencies.append(latency)
            if len(self._latencies) > 200:
                del self._latencies[:100]
            self._last_status = {"state": result.tracking_state, "latency": latency, "message": result.message}
            msgs = outmsg.status_messages(params, result, latency, int(self._counters["frames_dropped"]),
                                          int(self._counters["windows_skipped"]), ns="~")
            return [(int(step.stamp_ns), st) for step, (_, _, st) in zip(result.steps, msgs)]

        def _publish_diagnostics(self) -> None:
            self._recheck_subscriptions()
            pub = self._pubs.get("/diagnostics")
            if pub is None or pub.get_subscription_count() == 0:
                return
            sync_diag = self._sync.diagnostics(now=time.monotonic()) if self._sync is not None else {}
            if self._sync is not None:  # queue lengths: unmatched images per camera, windows waiting for inference
                pending = self._sync.pending
                sync_diag = {c: dict(sync_diag.get(c, {}), pending=int(pending.get(c, 0))) for c in self._cameras}
            counters = dict(self._counters, inference_queue=len(self._slot) if self._slot is not None else 0)
            _, _, msg = outmsg.diagnostics_message(
                self.get_clock().now().to_msg(), self._cameras, sync_diag, self._rejected, counters,
                int(self._last_status["state"]), str(self._last_status["message"]), self._latencies,
                name=self.get_fully_qualified_name(), live=True)
            pub.publish(msg)

    return Vggt4dNode


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="vggt4d-node",
        description="vggt4d_ros lifecycle node. Parameters come from ROS arguments, e.g. "
                    "`vggt4d-node --ros-args --params-file config/tiny.yaml -r __ns:=/robot`. "
                    "Keep DDS local when testing: `source scripts/ros_env.sh` first.")
    ap.add_argument("--list-params", action="store_true", help="print every parameter with its description and exit")
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    args = ap.parse_args(own)
    if args.list_params:
        for p in NODE_PARAMS:
            print(f"{p.name} ({p.kind}, default {p.default!r}): {p.description}")
        for p in CAMERA_PARAMS:
            print(f"<camera>.{p.name} ({p.kind}, default {p.default!r}): {p.description}")
        return 0
    rclpy = _rclpy()
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from vggt4d_ros.ros.conversions import reuse_freed_memory

    reuse_freed_memory()  # multi-MB output buffers every step: reuse freed pages (see conversions)
    import signal

    from rclpy.signals import SignalHandlerOptions

    # rclpy's own handler would shut the context down at once; with ours the outputs still in flight are
    # flushed (flush_outputs) before the context goes.
    def _stop(signum, frame):
        raise KeyboardInterrupt

    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        node = build_node_class()()
    except ValueError as exc:
        print(f"vggt4d-node: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        # Short waits so that SIGINT/SIGTERM (our handler raises KeyboardInterrupt) are acted on even when
        # nothing else wakes the executor (e.g. an unconfigured node has no timers).
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            if node._map is not None and str(node._p("map.save_path")):
                try:
                    node.get_logger().info(f"static map saved to {node.save_map()}")
                except Exception as exc:  # noqa: BLE001
                    node.get_logger().error(f"saving the map on shutdown failed: {exc}")
            node.flush_outputs(timeout_s=5.0)
            node._teardown_runtime()
            if node._pipeline is not None:
                node._pipeline.close()
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
