"""The node's output messages, built from pipeline outputs (numpy) - one builder for the node and the
offline replay (:mod:`vggt4d_ros.eval.offline`), so both put the same bytes on the wire.

Every message carries the acquisition stamp of the image it describes (the input header's stamp object,
passed through untouched). The node asks ``want(topic)`` before each message, answering with its
publishers' subscriber counts, so a message nobody listens to is never built. Topic names are
``<ns>/<suffix>`` (the node uses ``ns="~"``, the replay ``/vggt4d``) or absolute (``/tf``, ``/diagnostics``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import Header

from vggt4d_ros.ros import conversions as conv
from vggt4d_ros.ros.pointcloud import points_to_cloud
from vggt4d_ros.ros.transforms import odometry_msg, tf_message, transform_stamped

__all__ = ["NODE_NAMESPACE", "output_topics", "step_messages", "status_messages", "ack_message",
           "diagnostics_message", "keypoints_msg"]

NODE_NAMESPACE = "/vggt4d"

Out = Tuple[str, str, Any]  # (topic, msgtype, rclpy message)


def keypoints_msg(header: Header, camera_index: int, width: int, height: int, kp: Any):
    """vggt4d_ros/TrackedKeypoints from a pipeline KeypointSet (ids, uv, conf, visible, age, xyz)."""
    from vggt4d_ros.msg import TrackedKeypoint, TrackedKeypoints

    msg = TrackedKeypoints(header=header, camera_index=int(camera_index), width=int(width), height=int(height))
    out = []
    n = 0 if kp is None else len(kp.ids)
    err = getattr(kp, "reprojection_px", None)
    for i in range(n):  # one Python object per keypoint is unavoidable with rclpy message sequences
        x, y, z = (float(v) for v in kp.xyz[i])
        out.append(TrackedKeypoint(
            id=int(kp.ids[i]), camera_index=int(camera_index), u=float(kp.uv[i, 0]), v=float(kp.uv[i, 1]),
            confidence=float(kp.conf[i]), visible=bool(kp.visible[i]), age=int(kp.age[i]),
            reprojection_error=float(err[i]) if err is not None else float("nan"),
            position=Point(x=x, y=y, z=z)))
    msg.keypoints = out
    return msg


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
        if params.get("publish.keypoint_markers", False):
            t[f"{ns}/{c}/keypoints/markers"] = "visualization_msgs/msg/MarkerArray"
    if not params["publish_odom_tf"]:
        t.pop("/tf")
    return t


def step_messages(params: Mapping[str, Any], step: Any, ns: str = NODE_NAMESPACE,
                  want: Callable[[str], bool] = lambda topic: True, markers: Any = None) -> List[Out]:
    """Messages of one :class:`~vggt4d_ros.perception.pipeline.StepOutput`, in the node's publishing order.

    ``want(topic)`` is asked before building a message (the node answers with its subscriber counts:
    a message nobody listens to is never built); /tf is always built when ``publish_odom_tf``.
    ``markers``: a :class:`vggt4d_ros.ros.markers.KeypointMarkers` keeping the previous id sets (None: every
    MarkerArray starts with DELETEALL).
    """
    cams: Sequence[str] = params["cameras"]
    odom_frame = str(params["odom_frame"])
    child = str(params["base_frame"]) or step.cameras[cams[0]].frame_id
    out: List[Out] = []
    if params["publish_odom_tf"]:
        tfs = [transform_stamped(odom_frame, child, step.stamp, step.T_odom_base)]
        if params["publish_map_tf"]:
            tfs.append(transform_stamped(str(params["map_frame"]), odom_frame, step.stamp, np.eye(4)))
        out.append(("/tf", "tf2_msgs/msg/TFMessage", tf_message(tfs)))
    if want(f"{ns}/odometry"):
        out.append((f"{ns}/odometry", "nav_msgs/msg/Odometry", odometry_msg(
            step.stamp, odom_frame, child, step.T_odom_base, twist=step.twist,
            pose_cov=list(params["odom.pose_covariance"]),
            twist_cov=list(params["odom.twist_covariance"]) if step.twist is not None else None)))
    thr = float(params["mask.threshold"])
    min_conf = float(params["cloud.min_confidence"])
    fused_pts, fused_rgb = [], []
    want_fused = bool(params["publish.fused_cloud"]) and want(f"{ns}/points/fused")
    for ci, cam in enumerate(cams):
        o = step.cameras.get(cam)
        if o is None:
            continue
        header = Header(stamp=o.stamp, frame_id=o.frame_id)
        h, w = o.depth.shape
        p = f"{ns}/{cam}"
        if params["publish.depth"] and (want(f"{p}/depth") or want(f"{p}/depth/camera_info")):
            out.append((f"{p}/depth", "sensor_msgs/msg/Image",
                        conv.depth_to_msg(o.depth, header, encoding=str(params["depth.encoding"]))))
            out.append((f"{p}/depth/camera_info", "sensor_msgs/msg/CameraInfo", conv.camera_info_msg(o.K, w, h, header)))
        if params["publish.confidence"] and want(f"{p}/depth/confidence"):
            out.append((f"{p}/depth/confidence", "sensor_msgs/msg/Image", conv.confidence_to_msg(o.confidence, header)))
        if params["publish.dynamic_mask"] and (want(f"{p}/dynamic_mask") or want(f"{p}/dynamic_mask/camera_info")):
            out.append((f"{p}/dynamic_mask", "sensor_msgs/msg/Image", conv.mask_to_msg(o.dynamic, header, threshold=thr)))
            out.append((f"{p}/dynamic_mask/camera_info", "sensor_msgs/msg/CameraInfo",
                        conv.camera_info_msg(o.K, w, h, header)))
        valid = np.isfinite(o.depth)
        if min_conf > 0:
            valid &= o.confidence >= min_conf
        if params["publish.camera_clouds"] and want(f"{p}/points"):
            out.append((f"{p}/points", "sensor_msgs/msg/PointCloud2",
                        points_to_cloud(o.points_cam, header, colors=o.rgb, valid=valid, organized=True)))
        if want_fused:
            # Decimate first, then select by integer index and transform in float32 (cloud precision):
            # 2.3 -> ~1 ms per step for 2 cameras at 518x294 (bench/conversions.py node_step_ms).
            d = int(params["cloud.decimation"])
            sel = valid[::d, ::d]
            if params["cloud.drop_dynamic"]:
                sel = sel & (o.dynamic[::d, ::d] < thr)
            ys, xs = np.nonzero(sel)
            idx = ys * (d * w) + xs * d  # flat indices into the full grid (no copy of strided views)
            pts = np.take(o.points_cam.reshape(-1, 3), idx, axis=0)
            T = step.T_odom_cam[cam]
            R, t = T[:3, :3].astype(np.float32), T[:3, 3].astype(np.float32)
            fused_pts.append(pts @ R.T + t)
            fused_rgb.append(np.take(o.rgb.reshape(-1, 3), idx, axis=0))
        if params["publish.keypoints"] and o.keypoints is not None and want(f"{p}/keypoints"):
            out.append((f"{p}/keypoints", "vggt4d_ros/msg/TrackedKeypoints", keypoints_msg(header, ci, w, h, o.keypoints)))
        if params.get("publish.keypoint_markers", False) and o.keypoints is not None and \
                want(f"{p}/keypoints/markers"):
            from vggt4d_ros.ros.markers import KeypointMarkers

            mk = markers if markers is not None else KeypointMarkers()
            out.append((f"{p}/keypoints/markers", "visualization_msgs/msg/MarkerArray",
                        mk.build(header, o.keypoints.xyz, o.keypoints.ids, ns=f"{cam}/keypoints")))
    if want_fused and fused_pts:
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
        st.scale_source = str(getattr(result, "scale_source", "none") or "none")
        st.mask_source = str(getattr(result, "mask_source", "none") or "none")
        st.keypoint_source = str(getattr(result, "keypoint_source", "none") or "none")
        st.pose_source = str(getattr(result, "pose_source", "camera_head") or "camera_head")
        st.depth_source = str(getattr(result, "depth_source", "model") or "model")
        st.chain_inlier_ratio = float(result.chain_inlier_ratio)
        st.frames_dropped = int(frames_dropped)
        st.windows_skipped = int(windows_skipped)
        note = str(getattr(result, "scale_note", "") or "")
        st.message = "; ".join(x for x in (result.message, f"scale: {note}" if note else "") if x)
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


def diagnostics_message(stamp: Any, cameras: Sequence[str], sync_diag: Mapping[str, Mapping[str, Any]],
                        rejected: Mapping[str, int], counters: Mapping[str, Any], tracking_state: int,
                        state_message: str, latencies: Sequence[float], ns: str = NODE_NAMESPACE,
                        name: str = "", live: bool = False, health: str = "",
                        sources: Optional[Mapping[str, str]] = None) -> Out:
    """A DiagnosticArray with the node's statuses (per camera, tracking).

    ``stamp``: Time or int ns (the node's clock; bag time offline). ``live``: a camera can be stale (no
    images for a while); offline, in bag time, it never is. ``health``: an input problem (e.g. cameras without
    images past the front end's timeout) that makes the tracking status WARN with that message. ``sources``:
    the last window's output sources (``FrontEnd.output_sources``: mask_source, keypoint_source, pose_source,
    depth_source), shown in the tracking status's values.
    """
    from vggt4d_ros.ros import diagnostics as diag

    name = name or ns
    statuses = []
    for c in cameras:
        d = dict(sync_diag.get(c, {}))
        if not live:
            d["stale"] = False
        stale = bool(d.get("stale", False))
        r = int(rejected.get(c, 0))
        text = f"{r} messages rejected" if r else "ok"
        if stale:
            text = "stale: no images" + (f" ({r} rejected)" if r else "")
        statuses.append({"name": f"{name}: camera {c}", "level": "WARN" if (r or stale) else "OK",
                         "message": text,
                         "values": dict(d, rejected=r)})
    lat = sorted(latencies)
    names = {0: "initializing", 1: "ok", 2: "lost", 3: "recovered"}
    text = names.get(tracking_state, "?") + (f" ({state_message})" if state_message else "")
    statuses.append({"name": f"{name}: tracking", "level": "WARN" if tracking_state == 2 or health else "OK",
                     "message": text + (f"; {health}" if health else ""),
                     "values": dict(counters, **dict(sources or {}), latency_median_s=lat[len(lat) // 2] if lat else float("nan"),
                                    latency_max_s=lat[-1] if lat else float("nan"))})
    return ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", diag.diagnostic_array(
        stamp if not isinstance(stamp, (int, np.integer)) else int(stamp), statuses))


