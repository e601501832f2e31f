"""Pipeline outputs (numpy) -> the node's messages, published lazily.

Every message carries the acquisition stamp of the image it describes (the input header's stamp object,
passed through untouched). A message is built only when its publisher has a subscriber and its
``publish.*`` switch is on.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import Header

from vggt4d_ros.ros import conversions as conv
from vggt4d_ros.ros.pointcloud import points_to_cloud
from vggt4d_ros.ros.transforms import odometry_msg, tf_message, transform_stamped

__all__ = ["publish_step", "keypoints_msg"]


def _has_sub(pub: Any) -> bool:
    return pub is not None and pub.get_subscription_count() > 0


def keypoints_msg(header: Header, camera_index: int, width: int, height: int, kp: Any):
    """vggt4d_ros/TrackedKeypoints from a pipeline KeypointSet (ids, uv, conf, visible, age, xyz)."""
    from vggt4d_ros.msg import TrackedKeypoint, TrackedKeypoints

    msg = TrackedKeypoints(header=header, camera_index=int(camera_index), width=int(width), height=int(height))
    out = []
    n = 0 if kp is None else len(kp.ids)
    for i in range(n):  # one Python object per keypoint is unavoidable with rclpy message sequences
        x, y, z = (float(v) for v in kp.xyz[i])
        out.append(TrackedKeypoint(
            id=int(kp.ids[i]), camera_index=int(camera_index), u=float(kp.uv[i, 0]), v=float(kp.uv[i, 1]),
            confidence=float(kp.conf[i]), visible=bool(kp.visible[i]), age=int(kp.age[i]),
            position=Point(x=x, y=y, z=z)))
    msg.keypoints = out
    return msg


def publish_step(node: Any, step: Any, result: Any, odom_frame: str, base_frame: str) -> None:
    """Publish every output of one time step through ``node``'s publishers."""
    p = node.get_parameter
    pubs = node._pubs
    child = base_frame or step.cameras[node._cameras[0]].frame_id
    # Pose: TF and odometry.
    if p("publish_odom_tf").value:
        tfs = [transform_stamped(odom_frame, child, step.stamp, step.T_odom_base)]
        if p("publish_map_tf").value:
            tfs.append(transform_stamped(str(p("map_frame").value), odom_frame, step.stamp, np.eye(4)))
        pubs["tf"].publish(tf_message(tfs))
    if _has_sub(pubs["odom"]):
        pubs["odom"].publish(odometry_msg(
            step.stamp, odom_frame, child, step.T_odom_base, twist=step.twist,
            pose_cov=list(p("odom.pose_covariance").value), twist_cov=list(p("odom.twist_covariance").value)
            if step.twist is not None else None))
    thr = float(p("mask.threshold").value)
    fused_pts, fused_rgb = [], []
    want_fused = p("publish.fused_cloud").value and _has_sub(pubs["fused"])
    min_conf = float(p("cloud.min_confidence").value)
    for ci, cam in enumerate(node._cameras):
        out = step.cameras.get(cam)
        if out is None:
            continue
        cp = node._cam_pubs[cam]
        header = Header(stamp=out.stamp, frame_id=out.frame_id)
        h, w = out.depth.shape
        if p("publish.depth").value and (_has_sub(cp["depth"]) or _has_sub(cp["depth_info"])):
            enc = str(p("depth.encoding").value)
            cp["depth"].publish(conv.depth_to_msg(out.depth, header, encoding=enc))
            cp["depth_info"].publish(conv.camera_info_msg(out.K, w, h, header))
        if p("publish.confidence").value and _has_sub(cp["conf"]):
            cp["conf"].publish(conv.confidence_to_msg(out.confidence, header))
        if p("publish.dynamic_mask").value and (_has_sub(cp["mask"]) or _has_sub(cp["mask_info"])):
            cp["mask"].publish(conv.mask_to_msg(out.dynamic, header, threshold=thr))
            cp["mask_info"].publish(conv.camera_info_msg(out.K, w, h, header))
        valid = np.isfinite(out.depth)
        if min_conf > 0:
            valid &= out.confidence >= min_conf
        if p("publish.camera_clouds").value and _has_sub(cp["points"]):
            cp["points"].publish(points_to_cloud(out.points_cam, header, colors=out.rgb, valid=valid,
                                                 organized=True))
        if want_fused:
            d = int(p("cloud.decimation").value)
            sel = valid.copy()
            if p("cloud.drop_dynamic").value:
                sel &= out.dynamic < thr
            sel = sel[::d, ::d]
            pts = out.points_cam[::d, ::d][sel].astype(np.float64)
            T = step.T_odom_cam[cam]
            fused_pts.append((pts @ T[:3, :3].T + T[:3, 3]).astype(np.float32))
            fused_rgb.append(out.rgb[::d, ::d][sel])
        if p("publish.keypoints").value and out.keypoints is not None and _has_sub(cp["keypoints"]):
            cp["keypoints"].publish(keypoints_msg(header, ci, w, h, out.keypoints))
    if want_fused and fused_pts:
        header = Header(stamp=step.stamp, frame_id=odom_frame)
        pubs["fused"].publish(points_to_cloud(np.concatenate(fused_pts), header, colors=np.concatenate(fused_rgb),
                                              organized=False))
