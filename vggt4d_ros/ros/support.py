"""The node's ROS-side helpers that are not the input path: parameter descriptors from the table, camera
subscriptions whose reliability follows their publishers (``qos.reliability: auto``), and the static voxel map
(``~/map``, ``~/save_map``)."""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from vggt4d_ros.frontend.params import Param
from vggt4d_ros.ros.pointcloud import points_to_cloud

__all__ = ["descriptor", "SensorSubscriptions", "MapOutput"]

_TYPES = {"bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "double": Parameter.Type.DOUBLE,
          "string": Parameter.Type.STRING, "double_array": Parameter.Type.DOUBLE_ARRAY,
          "string_array": Parameter.Type.STRING_ARRAY}

def descriptor(p: Param, name: str) -> ParameterDescriptor:
    """The rclpy descriptor of a table entry (description with unit and choices, range, read-only if static)."""
    text = p.description + (f" [{p.unit}]" if p.unit else "")
    if p.choices:
        text += f" One of: {', '.join(repr(c) for c in p.choices)}."
    d = ParameterDescriptor(name=name, type=_TYPES[p.kind].value, description=text, read_only=p.static)
    if p.range is not None and p.kind == "int":
        d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    elif p.range is not None and p.kind == "double":
        d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]),
                                                     step=0.0)]
    return d




class SensorSubscriptions:
    """Image / CameraInfo / depth subscriptions of a node with ``qos.reliability`` auto | reliable | best_effort
    and ``qos.depth``; in auto mode :meth:`recheck` re-subscribes when the publishers' reliability changes (a
    driver started after the node, or restarted with other QoS)."""

    def __init__(self, node: Any, get_cfg: Callable[[], Any]) -> None:
        self.node = node
        self.get_cfg = get_cfg
        self.subs: Dict[str, tuple] = {}  # topic -> (subscription, reliability, type, callback)

    def reliable(self, topic: str) -> bool:
        """True when every publisher of ``topic`` is reliable (then a reliable subscription matches them all and
        repairs lost fragments of large images); False with none or any best-effort publisher."""
        pubs = self.node.get_publishers_info_by_topic(topic)
        return bool(pubs) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)

    def subscribe(self, topic: str, msg_type: Any, callback: Any, first: bool = True) -> None:
        cfg = self.get_cfg()
        mode = str(cfg["qos.reliability"])
        reliable = self.reliable(topic) if mode == "auto" else mode == "reliable"
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(cfg["qos.depth"]),
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
        # qos_overrides parameters are declared with the first subscription of a topic only.
        kw = {"qos_overriding_options": QoSOverridingOptions.with_default_policies()} if first else {}
        sub = self.node.create_subscription(msg_type, topic, callback, qos, **kw)
        self.subs[topic] = (sub, qos.reliability, msg_type, callback)

    def recheck(self) -> None:
        if str(self.get_cfg()["qos.reliability"]) != "auto":
            return
        for topic, (sub, rel, msg_type, cb) in list(self.subs.items()):
            want = ReliabilityPolicy.RELIABLE if self.reliable(topic) else ReliabilityPolicy.BEST_EFFORT
            if want != rel and self.node.get_publishers_info_by_topic(topic):
                self.node.destroy_subscription(sub)
                self.subscribe(topic, msg_type, cb, first=False)
                self.node.get_logger().info(f"{topic}: re-subscribed {want.name.lower()} to match its publishers")

    def destroy(self) -> None:
        for sub, *_ in self.subs.values():
            self.node.destroy_subscription(sub)
        self.subs = {}


class MapOutput:
    """Static voxel map in ``odom_frame``: filled with every output step, published on ``~/map`` (transient
    local, when subscribed), saved by ``~/save_map`` and on shutdown (``map.save_path``)."""

    def __init__(self, node: Any, cfg: Any) -> None:
        from vggt4d_ros.perception.mapping import VoxelMap

        self.node = node
        self.cfg = cfg
        self.map = VoxelMap(float(cfg["map.voxel_size"]), int(cfg["map.max_voxels"]), int(cfg["map.min_observations"]))
        self.lock = threading.Lock()
        self.last_stamp: Optional[Any] = None
        self.pub = node.create_publisher(PointCloud2, "~/map", QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.srv = node.create_service(Trigger, "~/save_map", self._on_save)

    def clear(self) -> None:
        with self.lock:
            self.map.clear()

    def insert(self, step: Any, cfg: Any) -> None:
        with self.lock:
            self.map.insert_step(step, mask_threshold=float(cfg["mask.threshold"]),
                                 min_confidence=float(cfg["cloud.min_confidence"]), decimation=int(cfg["cloud.decimation"]))
        self.last_stamp = step.stamp

    def publish(self) -> None:
        if self.pub.get_subscription_count() == 0 or self.last_stamp is None:
            return
        with self.lock:
            xyz, rgb, _ = self.map.points()
        header = Header(stamp=self.last_stamp, frame_id=str(self.cfg["odom_frame"]))
        self.pub.publish(points_to_cloud(xyz, header, colors=rgb, organized=False))

    def save(self, path: str = "") -> str:
        """Write the map (PLY or PCD by extension); returns the path written."""
        path = path or str(self.cfg["map.save_path"]) or "vggt4d_map.ply"
        with self.lock:
            out = self.map.save_pcd(path) if path.lower().endswith(".pcd") else self.map.save_ply(path)
        return str(out)

    def _on_save(self, request, response):
        try:
            path = self.save()
            response.success, response.message = True, f"saved {len(self.map)} voxels to {path}"
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            response.success, response.message = False, f"saving the map failed: {exc}"
        return response

    def destroy(self) -> None:
        self.node.destroy_publisher(self.pub)
        self.node.destroy_service(self.srv)
