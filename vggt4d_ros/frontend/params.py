"""Every parameter of the vggt4d_ros node, declared from one table with a description and a range (no ROS).

The table is the single source of truth: the node declares from it, the front end's configuration
snapshot (:class:`vggt4d_ros.frontend.config.Config`) and the pipeline take their defaults from it, README's
parameter table and the YAML files in config/ are checked against it by the tests. Parameters marked ``static`` are read-only
while the node runs (they shape the model, topics or buffers; change them with a lifecycle
cleanup + configure after editing the YAML); the others are applied live and validated on set.
Per-camera parameters (``<camera>.image_topic`` ...) are declared after ``cameras`` is read.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = ["Param", "ParamError", "NODE_PARAMS", "CAMERA_PARAMS", "param_table", "default", "validate",
           "coerce", "cross_check", "advice", "check_params", "closest_name"]


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: Optional[Tuple[float, float]] = None  # inclusive; ints and floats
    choices: Optional[Sequence[str]] = None
    static: bool = True
    unit: str = ""
    array_kind: str = ""  # for arrays whose default is empty: "double_array" or "string_array"

    @property
    def kind(self) -> str:
        if self.array_kind:
            return self.array_kind
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "double"
        if isinstance(self.default, str):
            return "string"
        if isinstance(self.default, (list, tuple)):
            if self.default and isinstance(self.default[0], float):
                return "double_array"
            return "string_array"
        raise TypeError(f"unsupported default for {self.name}: {self.default!r}")


_C = ("cpu", "cuda", "auto")

NODE_PARAMS: List[Param] = [
    # --- model -------------------------------------------------------------------------------------
    Param("autostart", True, "Configure and activate on start (set false when a lifecycle manager drives the node)."),
    Param("model.config", "tiny", "Model configuration: a name from config/models (tiny, tiny-4d, vggt-1b, "
          "page4d, page4d-mask, 4d-vggt, 4d-vggt-small, 4d-vggt-page4d, vggt4d-spatiotemporal) or a path to a "
          "model YAML."),
    Param("model.checkpoint", "", "Weights (.safetensors, or .pt/.pth loaded with weights_only). Empty: the "
          "embedded weights of the configuration when it ships some (tiny), else configure fails."),
    Param("model.backend", "torch", "Inference backend: torch (model.config + model.checkpoint) or onnxruntime "
          "(model.onnx_path from vggt4d-export; CPU, CUDA or TensorRT providers; no keypoint tracks).",
          choices=("torch", "onnxruntime")),
    Param("model.onnx_path", "", "Exported model for model.backend onnxruntime; its window shape (views, steps, "
          "reference) must match the node's."),
    Param("model.device", "auto", "Inference device: cpu, cuda, or auto (cuda when available).", choices=_C),
    Param("model.precision", "fp32", "Weights and activations precision: fp32, fp16 or bf16 (fp16/bf16 on GPU).",
          choices=("fp32", "fp16", "bf16")),
    Param("model.compile", False, "torch.compile the model for the node's fixed window shape (first window "
          "eager, then compiled; compiling takes tens of seconds to minutes; a failure logs a warning and stays "
          "eager). Pays off on GPU (fused kernels), measured no gain on the tiny model on CPU."),
    Param("model.dense_frames", "needed", "Frames that get the dense heads (depth, mask) and their post-processing: "
          "needed (the output steps' frames, camera 0 at the previous newest step for the window chain, the "
          "keypoint query frame, the scale source's frames; every frame in the first window after a reset) or "
          "all (every frame of every window; slower; the window chain, the scale and the outputs read the same "
          "frames as with needed, so the outputs are the same).",
          choices=("needed", "all")),
    Param("model.target_width", 518, "Model input width in pixels (height follows the aspect, multiple of 14).",
          range=(56, 1036), unit="px"),
    Param("model.resize_mode", "crop", "Fit to the model grid: crop (keep width, crop height to a multiple of 14) "
          "or pad.", choices=("crop", "pad")),
    Param("model.layout", "", "Attention layout override: global (VGGT) or spatiotemporal (4D-VGGT); empty = "
          "the model configuration's.", choices=("", "global", "spatiotemporal")),
    Param("model.use_camera_info_intrinsics", False, "Use CameraInfo K instead of the predicted field of view "
          "for unprojection (trust calibrated cameras).", static=False),
    # --- inputs --------------------------------------------------------------------------------------
    Param("cameras", ["cam0"], "Camera names, in rig order; each has <name>.image_topic, .camera_info_topic, "
          ".compressed, .optical_frame. The first camera is the reference of the trajectory."),
    Param("qos.reliability", "auto", "Reliability of the image and camera_info subscriptions: auto (reliable when "
          "every publisher is reliable, else best effort; re-checked every diagnostics period), best_effort (sensor "
          "data QoS) or reliable. Also overridable with qos_overrides.", choices=("auto", "best_effort", "reliable")),
    Param("qos.depth", 5, "History depth of the image subscriptions.", range=(1, 100), unit="messages"),
    Param("sync.tolerance_ms", 10.0, "Images of the cameras whose stamps differ by at most this are one time step.",
          range=(0.0, 1000.0), unit="ms"),
    Param("sync.min_cameras", 0, "Cameras needed for a time step (0 = all); fewer lets the node continue when a "
          "camera stops.", range=(0, 16)),
    Param("sync.require_camera_info", True, "Wait for a CameraInfo of each camera before accepting its images."),
    Param("sync.max_pending", 30, "Unmatched images kept per camera before the oldest are dropped.", range=(1, 1000),
          unit="messages"),
    Param("max_image_pixels", 16_777_216, "Images above this many pixels are rejected.", range=(1, 268_435_456),
          unit="px"),
    # --- window --------------------------------------------------------------------------------------
    Param("window.num_steps", 4, "Time steps T in the sliding window (the window holds V cameras x T frames).",
          range=(1, 64)),
    Param("window.stride", 1, "New time steps between two inferences (1 = a new output every time step).",
          range=(1, 64)),
    Param("window.keyframe_motion", 0.0, "Only add a time step when the mean absolute grey difference to the last "
          "kept one exceeds this (0 = every step).", range=(0.0, 255.0), unit="grey levels"),
    Param("window.max_gap_s", 1.0, "Warn when consecutive time steps are further apart than this.",
          range=(0.0, 3600.0), unit="s"),
    Param("window.reset_on_time_jump_s", 5.0, "Reset the window and tracking when stamps jump forward more than "
          "this (backward jumps always reset).", range=(0.0, 86400.0), unit="s"),
    Param("window.reference", "first", "World frame of each window: first (oldest time step) or newest, of the "
          "reference camera.", choices=("first", "newest")),
    # --- camera poses -------------------------------------------------------------------------------
    Param("pose.refine", "auto", "Camera 0's poses in each window: pnp (corners of the chain's anchor frame "
          "tracked into the window's other frames with pyramidal Lucas-Kanade, lifted with the model's depth, "
          "solved by RANSAC PnP; a frame with fewer than pose.min_inliers keeps the camera head's pose; with a "
          "calibrated rig, the metric scale comes from dense stereo triangulation of camera 0's pixels in the "
          "other cameras, in the depth's units), none (the model's camera "
          "head as is) or auto (pnp for the embedded weights, whose camera head is weak; none for a "
          "model.checkpoint you give, so a released model's poses are its own). Other cameras keep the head's "
          "pose relative to camera 0.",
          choices=("auto", "pnp", "none")),
    Param("pose.max_features", 400, "Corners detected in the anchor frame for pose.refine pnp.",
          range=(20, 5000)),
    Param("pose.min_inliers", 30, "PnP inliers a frame needs for its pose to replace the camera head's.",
          range=(6, 5000)),
    Param("pose.ransac_px", 2.0, "RANSAC reprojection threshold of pose.refine pnp (input image pixels).",
          range=(0.1, 50.0), unit="px"),
    # --- metric scale ------------------------------------------------------------------------------
    Param("scale.source", "auto", "Metric scale source: auto (rig when 2+ cameras have known extrinsics, else "
          "scale.depth_topic when it delivers, else scale.camera_height_m when > 0, else none), rig, depth, "
          "camera_height, or none (outputs up to scale, WindowStatus.scale_is_metric false).",
          choices=("auto", "rig", "depth", "camera_height", "none")),
    Param("scale.camera_height_m", 0.0, "Height of the first camera's optical centre above a flat ground "
          "(metres) for the camera_height scale source; 0 = unknown. The ground's up is base_frame z "
          "through the camera's extrinsics (level body assumed).", range=(0.0, 100.0), unit="m"),
    Param("scale.depth_topic", "", "Metric depth image registered to the first camera (same field of view, "
          "any resolution), e.g. /camera/aligned_depth_to_color/image_raw; 16UC1 mm or 32FC1 m, 0/NaN = no "
          "data. Empty = not subscribed."),
    Param("scale.depth_sync_tolerance_s", 0.02, "A depth image is attached to the first camera's image whose "
          "stamp is within this.", range=(0.0, 1.0), unit="s"),
    Param("scale.depth_wait_s", 0.1, "Live: how long a time step whose first-camera image has no depth image yet "
          "waits for it before it enters the window without one (the depth of a driver's alignment often comes "
          "after its colour image). A replay waits until the depth image or the next time step, so offline and "
          "through-ROS runs see the same depth. 0 = never wait.", range=(0.0, 1.0), unit="s"),
    Param("scale.depth_min_m", 0.1, "Sensor depth below this is ignored by the depth scale source.",
          range=(0.0, 100.0), unit="m"),
    Param("scale.depth_max_m", 10.0, "Sensor depth above this is ignored by the depth scale source.",
          range=(0.01, 1000.0), unit="m"),
    # --- frames and TF -------------------------------------------------------------------------------
    Param("map_frame", "map", "Map frame (REP 105)."),
    Param("odom_frame", "odom", "Odometry frame (REP 105): fixed at the rig pose when tracking starts."),
    Param("base_frame", "base_link", "Robot body frame; empty = publish the pose of the first camera's optical "
          "frame instead."),
    Param("publish_odom_tf", True, "Publish odom -> base_frame on /tf (switch off beside wheel odometry).",
          static=False),
    Param("publish_map_tf", False, "Publish an identity map -> odom on /tf (no loop closure is done).",
          static=False),
    Param("extrinsics_timeout_s", 2.0, "How long to wait for /tf_static camera extrinsics before assuming the "
          "camera optical frames from parameters (or identity for one camera).", range=(0.0, 600.0), unit="s"),
    # --- outputs -------------------------------------------------------------------------------------
    Param("publish.depth", True, "Publish <camera>/depth and its camera_info.", static=False),
    Param("depth.encoding", "32FC1", "Depth encoding: 32FC1 (metres or model unit, NaN invalid) or 16UC1 "
          "(millimetres, 0 invalid; needs metric scale).", choices=("32FC1", "16UC1"), static=False),
    Param("publish.confidence", False, "Publish <camera>/depth/confidence (32FC1).", static=False),
    Param("publish.dynamic_mask", True, "Publish <camera>/dynamic_mask (mono8, 255 dynamic) and camera_info.",
          static=False),
    Param("mask.threshold", 0.5, "Dynamic probability above which a pixel is dynamic.", range=(0.0, 1.0),
          static=False),
    Param("mask.source", "auto", "Dynamic masks: flow (dense optical flow against the static-scene motion of the "
          "window's depth and poses: a pixel whose match lies off the epipolar segment its depth, taken as uncertain "
          "by a factor 2, allows, by more than the threshold of mask.flow_min_px, is dynamic), model (the model's own mask: its dense mask head, PAGE-4D's mask "
          "predictor, or the training-free depth-consistency estimate for a model with neither) or auto (flow for "
          "the embedded weights, whose mask outputs are weak; model for a model.checkpoint you give).",
          choices=("auto", "flow", "model")),
    Param("mask.flow_min_px", 1.0, "mask.source flow calls a pixel dynamic when its optical-flow match lies further "
          "from its static-scene segment than the larger of this and 4x the frame's median distance, against each "
          "of the two nearest older frames of its camera (images wider than 640 px are compared at 640).",
          range=(0.1, 50.0), unit="px"),
    Param("depth.refine", "auto", "Published depth: stereo (the newest output step's depth, per camera, corrected "
          "toward dense two-view triangulation along optical flow: with a calibrated rig against the other camera at "
          "the same stamp, then against the two frames of the same camera furthest from it in the window with the "
          "window's poses re-estimated from the flow, pixels they disagree on or the mask calls dynamic left out; "
          "the log ratio of triangulated to predicted depth, less its median, is interpolated over the "
          "image and multiplies the model's depth, so the depth keeps its scale and the model's edges), none (the "
          "model's depth) or auto (stereo for the embedded weights, none for a model.checkpoint you give).",
          choices=("auto", "stereo", "none")),
    Param("publish.camera_clouds", True, "Publish organised <camera>/points in the optical frame.", static=False),
    Param("publish.fused_cloud", True, "Publish points/fused: all cameras of the newest time step in odom_frame.",
          static=False),
    Param("cloud.min_confidence", 0.0, "Drop points whose depth confidence is below this (0 = keep all).",
          range=(0.0, 1e6), static=False),
    Param("cloud.drop_dynamic", True, "Drop dynamic points from the fused cloud.", static=False),
    Param("cloud.decimation", 2, "Keep every n-th pixel (rows and columns) in the fused cloud.", range=(1, 32),
          static=False),
    Param("publish.keypoints", True, "Track keypoints and publish <camera>/keypoints.", static=False),
    Param("keypoints.max_count", 64, "Keypoints tracked per camera.", range=(0, 1024)),
    Param("keypoints.geometry_check", "correct", "Geometric track check: a static keypoint (dynamic mask below "
          "mask.threshold at its query) must stay where its query pixel + predicted depth projects with each "
          "frame's predicted pose. off: the track head as is; reject: observations further than "
          "keypoints.max_reprojection_px are not visible, not carried, and count towards the invisible steps "
          "that kill a track; correct: static keypoints take the geometric position (works without a track "
          "head), dynamic ones keep the head's.", choices=("off", "reject", "correct")),
    Param("keypoints.max_reprojection_px", 8.0, "Reprojection error above which a static keypoint observation "
          "fails keypoints.geometry_check.", range=(0.1, 1000.0), unit="px"),
    Param("publish.keypoint_markers", True, "Publish <camera>/keypoints/markers (visualization_msgs/MarkerArray "
          "with ids) for RViz.", static=False),
    Param("map.enable", True, "Accumulate a voxel map of static points (dynamic masks removed) in odom_frame."),
    Param("map.voxel_size", 0.05, "Voxel edge of the static map (odom units: metres when the scale is metric).",
          range=(0.001, 10.0), unit="m"),
    Param("map.max_voxels", 500_000, "Voxels kept; when full, the least observed and oldest are evicted.",
          range=(1000, 50_000_000), unit="voxels"),
    Param("map.min_observations", 2, "Points a voxel needs before it is published or saved.", range=(1, 1000)),
    Param("map.publish_period_s", 2.0, "Period of ~/map (PointCloud2 in odom_frame, published when subscribed).",
          range=(0.1, 3600.0), unit="s"),
    Param("map.save_path", "", "PLY or PCD file (by extension) the map is saved to on shutdown and by the "
          "~/save_map service; empty = not saved on shutdown, the service writes ./vggt4d_map.ply."),
    Param("odom.pose_covariance", [0.01, 0.01, 0.01, 0.005, 0.005, 0.005],
          "Diagonal of the Odometry pose covariance (x y z roll pitch yaw).", static=False, unit="m^2, rad^2"),
    Param("odom.twist_covariance", [0.05, 0.05, 0.05, 0.02, 0.02, 0.02],
          "Diagonal of the Odometry twist covariance.", static=False, unit="(m/s)^2, (rad/s)^2"),
    Param("diagnostics_period_s", 1.0, "Period of /diagnostics.", range=(0.05, 60.0), unit="s"),
]

CAMERA_PARAMS: List[Param] = [
    Param("image_topic", "", "Image topic (default /<camera>/image_raw)."),
    Param("camera_info_topic", "", "CameraInfo topic (default /<camera>/camera_info)."),
    Param("compressed", False, "Subscribe to sensor_msgs/CompressedImage on <image_topic>/compressed."),
    Param("optical_frame", "", "Optical frame id (default: the images' header.frame_id)."),
    Param("extrinsics", [], "base_frame <- optical frame as [x y z qx qy qz qw] when /tf_static has "
          "none (empty = from /tf_static).", array_kind="double_array", unit="m, quaternion"),
]


class ParamError(ValueError):
    """A parameter problem; ``str()`` is one line naming the parameter, the value and the rule."""


#: Parameters the table does not declare that are accepted anyway under the node's name (rclpy's own).
FOREIGN_PREFIXES = ("qos_overrides.", "use_sim_time", "start_type_description_service")

_TABLE: Dict[str, Param] = {p.name: p for p in NODE_PARAMS}
_CAM_TABLE: Dict[str, Param] = {p.name: p for p in CAMERA_PARAMS}


def param_table() -> Dict[str, Param]:
    return dict(_TABLE)


def default(name: str) -> Any:
    """The table's default of a node parameter (lists copied)."""
    d = _TABLE[name].default
    return list(d) if isinstance(d, (list, tuple)) else d


def coerce(p: Param, value: Any) -> Any:
    """``value`` in the parameter's declared type where that is lossless (YAML writes 10 for 10.0)."""
    if p.kind == "double" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if p.kind == "double_array" and isinstance(value, (list, tuple)):
        return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    if p.kind.endswith("_array") and isinstance(value, tuple):
        return list(value)
    return value


_KIND_TEXT = {"bool": "true or false", "int": "an integer", "double": "a number", "string": "a string",
              "double_array": "a list of numbers", "string_array": "a list of strings"}


def _type_ok(p: Param, value: Any) -> bool:
    kind = p.kind
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "double":
        return isinstance(value, float)
    if kind == "string":
        return isinstance(value, str)
    if kind == "double_array":
        return isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value)
    if kind == "string_array":
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return False


def validate(p: Param, value: Any, name: Optional[str] = None) -> Optional[str]:
    """Return None when ``value`` is acceptable for ``p`` (type, choices, range), else the reason (one line)."""
    name = name or p.name
    if not _type_ok(p, value):
        return f"{name} must be {_KIND_TEXT[p.kind]}, got {value!r} ({type(value).__name__})"
    if p.choices is not None and value not in p.choices:
        return f"{name} must be one of {list(p.choices)}, got {value!r}"
    if p.range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = p.range
        if not (lo <= value <= hi):
            return f"{name} must be in [{lo:g}, {hi:g}], got {value!r}"
    if p.name.endswith("_covariance"):
        if len(value) != 6 or any(v <= 0 for v in value):
            return f"{name} must be 6 positive numbers (zeros break robot_localization), got {list(value)}"
    if p.name == "extrinsics" and len(value) not in (0, 7):
        return f"{name} must be empty or [x y z qx qy qz qw], got {len(value)} numbers"
    return None


def cross_check(values: Mapping[str, Any]) -> Optional[str]:
    """Rules between parameters (one line each), on a complete parameter set."""
    cams = list(values.get("cameras") or [])
    if not cams or len(set(cams)) != len(cams) or any(not isinstance(c, str) or not c or "/" in c or "." in c
                                                      for c in cams):
        return f"cameras must be distinct non-empty names without '/' or '.', got {cams!r}"
    T, stride = int(values["window.num_steps"]), int(values["window.stride"])
    if stride >= T:
        return (f"window.stride ({stride}) must be below window.num_steps ({T}): consecutive windows must share "
                f"time steps to chain (raise window.num_steps or lower window.stride)")
    if int(values["sync.min_cameras"]) > len(cams):
        return (f"sync.min_cameras ({values['sync.min_cameras']}) exceeds the number of cameras ({len(cams)}); "
                "0 = all")
    if float(values["scale.depth_min_m"]) >= float(values["scale.depth_max_m"]):
        return (f"scale.depth_min_m ({values['scale.depth_min_m']}) must be below scale.depth_max_m "
                f"({values['scale.depth_max_m']})")
    if values["scale.source"] == "depth" and not str(values["scale.depth_topic"]):
        return "scale.source is depth but scale.depth_topic is empty: set the registered depth image topic"
    if values["scale.source"] == "camera_height" and not float(values["scale.camera_height_m"]) > 0:
        return "scale.source is camera_height but scale.camera_height_m is 0: set the camera's height (m)"
    if values["model.backend"] == "onnxruntime" and not str(values["model.onnx_path"]):
        return "model.backend is onnxruntime but model.onnx_path is empty: export one with vggt4d-export"
    return None


def advice(values: Mapping[str, Any]) -> List[str]:
    """Valid but self-defeating settings, one line each (the node logs them at start)."""
    out = []
    T, stride = int(values["window.num_steps"]), int(values["window.stride"])
    if T - stride < 2:
        out.append(f"window.num_steps {T} with window.stride {stride} leaves {T - stride} time step shared by "
                   "consecutive windows; the window chain needs 2, so tracking is lost from the second window on "
                   "(use window.stride <= window.num_steps - 2)")
    return out


def closest_name(name: str, valid: Iterable[str]) -> Optional[str]:
    """The valid parameter name nearest to a misspelled one (difflib), or None."""
    best = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return best[0] if best else None


def _foreign(name: str) -> bool:
    return any(name == p or name.startswith(p) for p in FOREIGN_PREFIXES)


def check_params(given: Mapping[str, Any], allow_unknown: bool = False) -> Tuple[Dict[str, Any], List[str]]:
    """The complete parameter set (dotted names) from ``given`` over the table's defaults.

    Every value is coerced to its declared type and validated; then the cross-parameter rules. Unknown names
    (not in the table, not ``<camera>.<camera parameter>``, not rclpy's own) raise with the closest valid
    name, unless ``allow_unknown``: then they are returned as warnings (one line each) and dropped.

    Raises:
        ParamError: the first problem, one line.
    """
    values: Dict[str, Any] = {p.name: default(p.name) for p in NODE_PARAMS}
    if "cameras" in given:
        values["cameras"] = coerce(_TABLE["cameras"], given["cameras"])
    cams = values["cameras"]
    reason = validate(_TABLE["cameras"], cams)
    if reason:
        raise ParamError(reason)
    for c in cams:
        for cp in CAMERA_PARAMS:
            values[f"{c}.{cp.name}"] = list(cp.default) if isinstance(cp.default, list) else cp.default
    valid = list(values)
    warnings: List[str] = []
    for name, value in given.items():
        head, _, tail = name.partition(".")
        p = _TABLE.get(name) or (_CAM_TABLE.get(tail) if head in cams else None)
        if p is None:
            if _foreign(name):
                continue
            near = closest_name(name, valid)
            msg = f"unknown parameter {name!r}" + (f" (did you mean {near!r}?)" if near else "")
            if not allow_unknown:
                raise ParamError(msg + " (vggt4d-node --allow-unknown-parameters ignores it)")
            warnings.append(msg + ": ignored")
            continue
        value = coerce(p, value)
        reason = validate(p, value, name)
        if reason:
            raise ParamError(reason)
        values[name] = value
    reason = cross_check(values)
    if reason:
        raise ParamError(reason)
    return values, warnings + advice(values)
