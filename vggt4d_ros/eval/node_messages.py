"""The node's output messages for one pipeline result, built without a node (offline replay).

Same builders as :func:`vggt4d_ros.ros.messages.publish_step` and the node's status/diagnostics code
(conversions, pointcloud, transforms, diagnostics), with every topic "subscribed" (as under the
recorder of a ``--through-ros`` run), serialised to CDR with ``rclpy.serialization`` so the bytes equal
what the node puts on the wire. Needs the ROS message packages (rclpy itself is never initialised).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = ["NODE_NAMESPACE", "output_topics", "step_messages", "status_messages", "ack_message",
           "diagnostics_message", "serialize"]

NODE_NAMESPACE = "/vggt4d"

Out = Tuple[str, str, Any]  # (topic, msgtype, rclpy message)


def output_topics(params: Mapping[str, Any], ns: str = NODE_NAMESPACE) -> Dict[str, str]:
    """``{topic: msgtype}`` of everything the node publishes with these parameters."""
    t = {f"{ns}/odometry": "nav_msgs/msg/Odometry", f"{ns}/status": "vggt4d_ros/msg/WindowStatus",
         "/tf": "tf2_msgs/msg/TFMessage", "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}
    if params["publish.fused_cloud"]:
        t[f"{ns}/points/fused"] = "sensor_msgs/msg/PointCloud2"
    for c in params["cameras"]:
        if params["publish.depth"]:
            t[f"{ns}/{c}/depth"] = "sensor_msgs/msg/Image"
            t[f"{ns}/{c}/depth/camera_info"] = "sensor_msgs/msg/CameraInfo"
        if params["publish.confidence"]:
            t[f"{ns}/{c}/depth/confidence"] = "sensor_msgs/msg/Image"
        if params["publish.dynamic_mask"]:
            t[f"{ns}/{c}/dynamic_mask"] = "sensor_msgs/msg/Image"
            t[f"{ns}/{c}/dynamic_mask/camera_info"] = "sensor_msgs/msg/CameraInfo"
        if params["publish.camera_clouds"]:
            t[f"{ns}/{c}/points"] = "sensor_msgs/msg/PointCloud2"
        if params["publish.keypoints"]:
            t[f"{ns}/{c}/keypoints"] = "vggt4d_ros/msg/TrackedKeypoints"
    if not params["publish_odom_tf"]:
        t.pop("/tf")
    return t


def step_messages(params: Mapping[str, Any], step: Any, ns: str = NODE_NAMESPACE) -> List[Out]:
    """Messages of one :class:`~vggt4d_ros.pipeline.StepOutput`, in the node's publishing order."""
    from std_msgs.msg import Header

    from vggt4d_ros.ros import conversions as conv
    from vggt4d_ros.ros.messages import keypoints_msg
    from vggt4d_ros.ros.pointcloud import points_to_cloud
    from vggt4d_ros.ros.transforms import odometry_msg, tf_message, transform_stamped

    cams: Sequence[str] = params["cameras"]
    odom_frame = str(params["odom_frame"])
    child = str(params["base_frame"]) or step.cameras[cams[0]].frame_id
    out: List[Out] = []
    if params["publish_odom_tf"]:
        tfs = [transform_stamped(odom_frame, child, step.stamp, step.T_odom_base)]
        if params["publish_map_tf"]:
            tfs.append(transform_stamped(str(params["map_frame"]), odom_frame, step.stamp, np.eye(4)))
        out.append(("/tf", "tf2_msgs/msg/TFMessage", tf_message(tfs)))
    out.append((f"{ns}/odometry", "nav_msgs/msg/Odometry", odometry_msg(
        step.stamp, odom_frame, child, step.T_odom_base, twist=step.twist,
        pose_cov=list(params["odom.pose_covariance"]),
        twist_cov=list(params["odom.twist_covariance"]) if step.twist is not None else None)))
    thr = float(params["mask.threshold"])
    min_conf = float(params["cloud.min_confidence"])
    fused_pts, fused_rgb = [], []
    for ci, cam in enumerate(cams):
        o = step.cameras.get(cam)
        if o is None:
            continue
        header = Header(stamp=o.stamp, frame_id=o.frame_id)
        h, w = o.depth.shape
        p = f"{ns}/{cam}"
        if params["publish.depth"]:
            out.append((f"{p}/depth", "sensor_msgs/msg/Image",
                        conv.depth_to_msg(o.depth, header, encoding=str(params["depth.encoding"]))))
            out.append((f"{p}/depth/camera_info", "sensor_msgs/msg/CameraInfo", conv.camera_info_msg(o.K, w, h, header)))
        if params["publish.confidence"]:
            out.append((f"{p}/depth/confidence", "sensor_msgs/msg/Image", conv.confidence_to_msg(o.confidence, header)))
        if params["publish.dynamic_mask"]:
            out.append((f"{p}/dynamic_mask", "sensor_msgs/msg/Image", conv.mask_to_msg(o.dynamic, header, threshold=thr)))
            out.append((f"{p}/dynamic_mask/camera_info", "sensor_msgs/msg/CameraInfo",
                        conv.camera_info_msg(o.K, w, h, header)))
        valid = np.isfinite(o.depth)
        if min_conf > 0:
            valid &= o.confidence >= min_conf
        if params["publish.camera_clouds"]:
            out.append((f"{p}/points", "sensor_msgs/msg/PointCloud2",
                        points_to_cloud(o.points_cam, header, colors=o.rgb, valid=valid, organized=True)))
        if params["publish.fused_cloud"]:
            d = int(params["cloud.decimation"])
            sel = valid.copy()
            if params["cloud.drop_dynamic"]:
                sel &= o.dynamic < thr
            sel = sel[::d, ::d]
            pts = o.points_cam[::d, ::d][sel].astype(np.float64)
            T = step.T_odom_cam[cam]
            fused_pts.append((pts @ T[:3, :3].T + T[:3, 3]).astype(np.float32))
            fused_rgb.append(o.rgb[::d, ::d][sel])
        if params["publish.keypoints"] and o.keypoints is not None:
            out.append((f"{p}/keypoints", "vggt4d_ros/msg/TrackedKeypoints", keypoints_msg(header, ci, w, h, o.keypoints)))
    if params["publish.fused_cloud"] and fused_pts:
        header = Header(stamp=step.stamp, frame_id=odom_frame)
        out.append((f"{ns}/points/fused", "sensor_msgs/msg/PointCloud2",
                    points_to_cloud(np.concatenate(fused_pts), header, colors=np.concatenate(fused_rgb), organized=False)))
    return out


def status_messages(params: Mapping[str, Any], result: Any, latency_s: float, frames_dropped: int,
                    windows_skipped: int, ns: str = NODE_NAMESPACE) -> List[Out]:
    """One WindowStatus per output step of ``result``, as the node's ``_publish_result``."""
    from vggt4d_ros.msg import WindowStatus

    out: List[Out] = []
    for step in result.steps:
        st = WindowStatus()
        st.header.stamp = step.stamp
        st.header.frame_id = str(params["odom_frame"])
        st.tracking_state = int(result.tracking_state)
        st.window_index = int(result.window_index)
        st.num_views = int(result.num_views)
        st.num_time_steps = int(result.num_steps)
        st.window_start = result.window_start
        st.window_end = result.window_end
        st.latency = float(latency_s)
        st.inference_time = float(result.inference_s)
        st.scale = float(result.scale)
        st.scale_is_metric = bool(result.scale_is_metric)
        st.chain_inlier_ratio = float(result.chain_inlier_ratio)
        st.frames_dropped = int(frames_dropped)
        st.windows_skipped = int(windows_skipped)
        st.message = result.message
        out.append((f"{ns}/status", "vggt4d_ros/msg/WindowStatus", st))
    return out


def ack_message(params: Mapping[str, Any], stamp: Any, num_views: int, tracking_state: int, window_index: int,
                frames_dropped: int, windows_skipped: int, message: str, ns: str = NODE_NAMESPACE) -> Out:
    """The node's status for a time step consumed without an inference (``_publish_ack_stamp``)."""
    from vggt4d_ros.msg import WindowStatus

    st = WindowStatus()
    st.header.stamp = stamp
    st.header.frame_id = str(params["odom_frame"])
    st.tracking_state = int(tracking_state)
    st.window_index = int(window_index)
    st.num_views = int(num_views)
    st.num_time_steps = 0
    st.frames_dropped = int(frames_dropped)
    st.windows_skipped = int(windows_skipped)
    st.scale = 1.0
    st.latency = float("nan")
    st.inference_time = float("nan")
    st.message = message or "buffering"
    return (f"{ns}/status", "vggt4d_ros/msg/WindowStatus", st)


def diagnostics_message(stamp_ns: int, cameras: Sequence[str], sync_diag: Mapping[str, Mapping[str, Any]],
                        rejected: Mapping[str, int], counters: Mapping[str, Any], tracking_state: int,
                        state_message: str, latencies: Sequence[float], ns: str = NODE_NAMESPACE) -> Out:
    """A DiagnosticArray with the node's statuses (per camera, tracking), stamped with bag time."""
    from vggt4d_ros.ros import diagnostics as diag

    name = ns
    statuses = []
    for c in cameras:
        d = dict(sync_diag.get(c, {}))
        d["stale"] = False  # bag time: a camera is never stale offline
        r = int(rejected.get(c, 0))
        statuses.append({"name": f"{name}: camera {c}", "level": "WARN" if r else "OK",
                         "message": f"{r} messages rejected" if r else "ok", "values": dict(d, rejected=r)})
    lat = sorted(latencies)
    names = {0: "initializing", 1: "ok", 2: "lost", 3: "recovered"}
    statuses.append({"name": f"{name}: tracking", "level": "WARN" if tracking_state == 2 else "OK",
                     "message": names.get(tracking_state, "?") + (f" ({state_message})" if state_message else ""),
                     "values": dict(counters, latency_median_s=lat[len(lat) // 2] if lat else float("nan"),
                                    latency_max_s=lat[-1] if lat else float("nan"))})
    return ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", diag.diagnostic_array(int(stamp_ns), statuses))


def serialize(msg: Any) -> bytes:
    """CDR bytes of an rclpy message (what the node sends over DDS)."""
    from rclpy.serialization import serialize_message

    return serialize_message(msg)
