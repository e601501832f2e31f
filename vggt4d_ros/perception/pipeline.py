"""From a window of camera frames to per-time-step outputs, without ROS.

The node (:mod:`vggt4d_ros.ros.node`) and the offline replay tool both run this class, so the offline
and the ROS results are the same computation. One :class:`Pipeline` call per window:

1. the :class:`~vggt4d_ros.inference.predictor.Predictor` predicts poses, depth, confidence, dynamic
   masks and tracks for the V x T frames (world = the window's reference camera, model scale);
2. :class:`~vggt4d_ros.window.chain.WindowChainer` chains the window to the trajectory so far through
   the overlapping frames (robust Sim(3) on camera centres and static points), holding the scale;
   with two or more cameras whose extrinsics are known, the rig baselines make the scale metric; with
   one camera, a metric depth image (``"sensor_depth"`` in camera 0's frame payloads) or the known
   camera height above the ground (:mod:`vggt4d_ros.perception.scale`) does (``PipelineConfig.scale_source``);
3. every time step of the window not yet output gets a :class:`StepOutput`: per camera depth (odom
   units, NaN invalid), confidence, dynamic probability, intrinsics, points in the optical frame,
   colours, keypoints with stable ids, and the poses of the cameras and of the body in odom.

Frames: ``odom`` is the body frame at the first window (REP 105); when no body frame is used it is
the first camera's optical frame. ``T_base_cam`` maps a camera's optical frame to the body frame
(from /tf_static or parameters); without it, camera 0 is assumed at the body origin looking along
body x (REP 103 optical axes), and scale stays up to the model's unit.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from vggt4d_ros.frontend.frames import Frame
from vggt4d_ros.frontend.params import default as _default
from vggt4d_ros.perception.keypoints import GEOMETRY_CHECKS, KeypointSet, KeypointTracker
from vggt4d_ros.perception.motion_mask import MASK_SOURCES, MotionMaskConfig, motion_mask
from vggt4d_ros.perception.pose_refine import POSE_REFINE, PoseRefineConfig, refine_camera_poses, rig_depth_scale, to_gray
from vggt4d_ros.perception.stereo_depth import DEPTH_REFINE, DepthRefineConfig, refine_depth, triangulate_flow
from vggt4d_ros.perception.scale import ScaleEstimate, scale_from_camera_height, scale_from_sensor_depth, up_in_camera
from vggt4d_ros.window.chain import WindowChainer, metric_scale_from_rig

__all__ = ["SCALE_SOURCES", "DENSE_FRAMES", "pipeline_config_from_params", "PipelineConfig", "KeypointSet", "CameraOutput", "StepOutput", "WindowResult", "Pipeline"]

# Optical (x right, y down, z forward) -> body (x forward, y left, z up); REP 103.
_T_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0, 0, 0, 1.0]])

#: Metric scale sources (``PipelineConfig.scale_source``). "auto": the rig when 2+ cameras with known
#: extrinsics, else sensor depth when camera 0's frames carry ``"sensor_depth"``, else the camera height
#: when ``camera_height_m > 0``, else none (the first that fits in a window wins).
SCALE_SOURCES = ("auto", "rig", "depth", "camera_height", "none")

#: ``PipelineConfig.dense_frames`` / the node's ``model.dense_frames``.
DENSE_FRAMES = ("needed", "all")


@dataclass
class PipelineConfig:
    """Defaults are the node parameter table's (:mod:`vggt4d_ros.frontend.params`), named in the comments."""

    cameras: List[str]
    model_config: str = _default("model.config")
    checkpoint: Optional[str] = None  # model.checkpoint ("" -> None)
    device: str = _default("model.device")
    precision: str = _default("model.precision")
    compile: bool = _default("model.compile")  # torch.compile for the fixed window shape (eager fallback)
    target_width: int = _default("model.target_width")
    resize_mode: str = _default("model.resize_mode")
    layout: Optional[str] = None  # model.layout ("" -> None)
    num_steps: int = _default("window.num_steps")
    reference: str = _default("window.reference")  # "first" or "newest" (of camera 0)
    backend: str = _default("model.backend")  # "torch" or "onnxruntime" (an exported model, vggt4d-export)
    onnx_path: str = _default("model.onnx_path")
    keypoints_max: int = _default("keypoints.max_count")
    keypoints_geometry_check: str = _default("keypoints.geometry_check")  # keypoints.GEOMETRY_CHECKS
    keypoints_max_reprojection_px: float = _default("keypoints.max_reprojection_px")
    use_camera_info_intrinsics: bool = _default("model.use_camera_info_intrinsics")
    scale_source: str = _default("scale.source")  # one of SCALE_SOURCES
    camera_height_m: float = _default("scale.camera_height_m")  # camera 0's optical centre above the ground
    scale_depth_min_m: float = _default("scale.depth_min_m")  # sensor depth range gate (metres)
    scale_depth_max_m: float = _default("scale.depth_max_m")
    metric_scale: Optional[str] = None  # deprecated alias: "auto" -> scale_source "auto", "none" -> "none"
    chain_points_grid: int = 24  # pixels per side of the fixed sample used to chain windows
    mask_threshold: float = _default("mask.threshold")
    # "needed": dense heads and post-processing only for the frames a window's outputs, chain fit, keypoint
    # check and scale need (Pipeline._dense_frames); "all": every frame of every window.
    dense_frames: str = _default("model.dense_frames")
    pose_refine: str = _default("pose.refine")  # one of pose_refine.POSE_REFINE
    pose_max_features: int = _default("pose.max_features")
    pose_min_inliers: int = _default("pose.min_inliers")
    pose_ransac_px: float = _default("pose.ransac_px")
    mask_source: str = _default("mask.source")  # one of motion_mask.MASK_SOURCES
    mask_flow_min_px: float = _default("mask.flow_min_px")
    depth_refine: str = _default("depth.refine")  # one of stereo_depth.DEPTH_REFINE

    def __post_init__(self) -> None:
        if self.metric_scale is not None:
            if self.metric_scale not in ("auto", "none"):
                raise ValueError(f"metric_scale must be 'auto' or 'none', got {self.metric_scale!r}")
            self.scale_source = self.metric_scale
            self.metric_scale = None
        if self.scale_source not in SCALE_SOURCES:
            raise ValueError(f"scale_source must be one of {list(SCALE_SOURCES)}, got {self.scale_source!r}")
        if self.keypoints_geometry_check not in GEOMETRY_CHECKS:
            raise ValueError(f"keypoints_geometry_check must be one of {list(GEOMETRY_CHECKS)}, "
                             f"got {self.keypoints_geometry_check!r}")
        if self.dense_frames not in DENSE_FRAMES:
            raise ValueError(f"dense_frames must be one of {list(DENSE_FRAMES)}, got {self.dense_frames!r}")
        if self.pose_refine not in POSE_REFINE:
            raise ValueError(f"pose_refine must be one of {list(POSE_REFINE)}, got {self.pose_refine!r}")
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {list(MASK_SOURCES)}, got {self.mask_source!r}")
        if self.depth_refine not in DEPTH_REFINE:
            raise ValueError(f"depth_refine must be one of {list(DEPTH_REFINE)}, got {self.depth_refine!r}")
        if not self.keypoints_max_reprojection_px > 0:
            raise ValueError(f"keypoints_max_reprojection_px must be > 0, got {self.keypoints_max_reprojection_px!r}")


@dataclass
class CameraOutput:
    name: str
    frame_id: str
    stamp: Any  # the input header stamp object, passed through untouched
    stamp_ns: int
    depth: np.ndarray  # (H, W) float32 odom units, NaN invalid
    confidence: np.ndarray  # (H, W) float32
    dynamic: np.ndarray  # (H, W) float32 in [0, 1]
    K: np.ndarray  # (3, 3) float64 intrinsics of depth's pixel grid
    points_cam: np.ndarray  # (H, W, 3) float32 optical frame, NaN invalid
    rgb: np.ndarray  # (H, W, 3) uint8
    keypoints: Optional[KeypointSet] = None


@dataclass
class StepOutput:
    step_id: int
    stamp: Any  # acquisition stamp of camera 0 (or the first camera present)
    stamp_ns: int
    cameras: Dict[str, CameraOutput]
    T_odom_cam: Dict[str, np.ndarray]  # (4, 4) optical frame pose in odom
    T_odom_base: np.ndarray  # (4, 4) body (or camera-0 optical) pose in odom
    twist: Optional[np.ndarray] = None  # (6,) in the child frame
    scale_is_metric: bool = False  # depth, points and poses in metres
    scale_source: str = "none"  # "rig", "depth", "camera_height" or "none" (see WindowResult)


@dataclass
class WindowResult:
    window_index: int
    steps: List[StepOutput]
    num_views: int
    num_steps: int
    window_start: Any
    window_end: Any
    tracking_state: int
    scale: float
    scale_is_metric: bool
    chain_inlier_ratio: float
    inference_s: float
    total_s: float
    message: str = ""
    timing_ms: Dict[str, float] = field(default_factory=dict)
    # Which source made the scale metric: "rig", "depth" or "camera_height" (measured in this window or
    # held by the chain since the last window that measured it), "none" when the scale is not metric.
    scale_source: str = "none"
    # This window's own measurement (metres per model unit) and why it is missing (NaN / reason).
    scale_measured: float = float("nan")
    scale_note: str = ""
    # Where the outputs' dynamic masks came from ("flow": mask.source flow; the predictor's "head", "page4d",
    # "geometric"; "none") and
    # the keypoints ("track_head", "geometric": static points projected without a track head, "none").
    mask_source: str = "none"
    keypoint_source: str = "none"
    # Where camera 0's poses came from: "pnp" (model depth + optical-flow correspondences, pose.refine),
    # "camera_head", or "pnp+camera_head" (frames with too few PnP inliers kept the head's pose).
    pose_source: str = "camera_head"
    depth_source: str = "model"  # "stereo" when depth.refine corrected at least one output frame


#: ``model.checkpoint`` value that asks for seeded random weights (tests and benchmarks only).
RANDOM_INIT = "random-init"
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "resources" / "models"


def resolve_checkpoint(model_config: str, checkpoint: Optional[str]) -> Optional[str]:
    """The weights file to load: ``checkpoint`` when given (must exist), the embedded weights of a named
    configuration (``resources/models/<name>.safetensors``) when empty, None for :data:`RANDOM_INIT`.

    Raises FileNotFoundError with the reason otherwise.
    """
    if checkpoint == RANDOM_INIT:
        return None
    if checkpoint:
        p = Path(checkpoint).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"model.checkpoint {checkpoint!r} does not exist or is not a file")
        return str(p)
    embedded = EMBEDDED_DIR / f"{Path(model_config).stem}.safetensors"
    if embedded.is_file():
        return str(embedded)
    raise FileNotFoundError(
        f"model {model_config!r} ships no embedded weights: set model.checkpoint to a .safetensors/.pt file "
        f"(or {RANDOM_INIT!r} for random weights)")


def pipeline_config_from_params(params: Mapping[str, Any]) -> PipelineConfig:
    """The :class:`PipelineConfig` for node parameters (dotted names, as declared in frontend/params.py; a
    :class:`~vggt4d_ros.frontend.Config` or a complete dict)."""
    return PipelineConfig(
        cameras=list(params["cameras"]), model_config=str(params["model.config"]),
        checkpoint=str(params["model.checkpoint"]) or None, device=str(params["model.device"]),
        precision=str(params["model.precision"]), compile=bool(params["model.compile"]),
        target_width=int(params["model.target_width"]),
        resize_mode=str(params["model.resize_mode"]), layout=str(params["model.layout"]) or None,
        num_steps=int(params["window.num_steps"]), reference=str(params["window.reference"]),
        keypoints_max=int(params["keypoints.max_count"]),
        keypoints_geometry_check=str(params["keypoints.geometry_check"]),
        keypoints_max_reprojection_px=float(params["keypoints.max_reprojection_px"]),
        use_camera_info_intrinsics=bool(params["model.use_camera_info_intrinsics"]),
        mask_threshold=float(params["mask.threshold"]),
        scale_source=str(params["scale.source"]), camera_height_m=float(params["scale.camera_height_m"]),
        scale_depth_min_m=float(params["scale.depth_min_m"]), scale_depth_max_m=float(params["scale.depth_max_m"]),
        backend=str(params["model.backend"]), onnx_path=str(params["model.onnx_path"]),
        dense_frames=str(params["model.dense_frames"]), pose_refine=str(params["pose.refine"]),
        pose_max_features=int(params["pose.max_features"]), pose_min_inliers=int(params["pose.min_inliers"]),
        pose_ransac_px=float(params["pose.ransac_px"]), mask_source=str(params["mask.source"]),
        mask_flow_min_px=float(params["mask.flow_min_px"]), depth_refine=str(params["depth.refine"]))


def _resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def unproject_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, W) z-depth + (3, 3) K -> (H, W, 3) float32 points in the optical frame (NaN stays NaN)."""
    h, w = depth.shape
    u = np.arange(w, dtype=np.float32)
    v = np.arange(h, dtype=np.float32)
    x = (u[None, :] - np.float32(K[0, 2])) / np.float32(K[0, 0])
    y = (v[:, None] - np.float32(K[1, 2])) / np.float32(K[1, 1])
    d = depth.astype(np.float32, copy=False)
    return np.stack([x * d, np.broadcast_to(y, d.shape) * d, d], axis=-1)


class Pipeline:
    """Runs windows through the model and the chainer; see the module docstring."""

    def __init__(self, config: PipelineConfig, predictor: Any = None) -> None:
        self.cfg = config
        # pose.refine auto: PnP for the embedded weights only (their camera head is a motion prior); a
        # checkpoint the user gives (a released model) keeps its own poses, as its release computes them.
        embedded = config.backend == "torch" and not config.checkpoint and \
            (EMBEDDED_DIR / f"{Path(config.model_config).stem}.safetensors").is_file()
        self.pose_refine = config.pose_refine if config.pose_refine != "auto" else ("pnp" if embedded else "none")
        # mask.source auto: the flow estimate for the embedded weights (their mask outputs are weak), the model's
        # own mask for a checkpoint the user gives.
        self.mask_source = config.mask_source if config.mask_source != "auto" else ("flow" if embedded else "model")
        # depth.refine auto: stereo for the embedded weights, a given checkpoint's depth as its release computes it
        self.depth_refine = config.depth_refine if config.depth_refine != "auto" else ("stereo" if embedded else "none")
        if predictor is None and config.backend == "onnxruntime":
            predictor = self._onnx_predictor(config)
        if predictor is None:
            from vggt4d_ros.inference.predictor import Predictor
            from vggt4d_ros.model.configs import load_model_config

            load_model_config(config.model_config)  # clear error for an unknown name before any work
            ckpt = resolve_checkpoint(config.model_config, config.checkpoint)
            if ckpt is None:
                import torch

                torch.manual_seed(0)  # RANDOM_INIT: deterministic random weights (tests, benchmarks)
            predictor = Predictor.from_config(
                config.model_config, checkpoint=ckpt, device=_resolve_device(config.device),
                precision=config.precision, target_width=config.target_width, mode=config.resize_mode,
                layout=config.layout, compile=config.compile,
                # with the flow mask the model's own (mask head, or the geometric one that needs every frame
                # dense) is not computed
                **({"dynamic_mask": "none"} if self.mask_source == "flow" else {}))
        self.predictor = predictor
        self._flow_masks: Dict[tuple, np.ndarray] = {}  # masks of the last window's frames, by (camera, stamp)
        self.device_name = str(getattr(predictor, "device", "cpu"))
        self._chainer: Optional[WindowChainer] = None
        self._last_step_id: Optional[int] = None
        self._last_pose: Optional[tuple] = None  # (stamp_ns, T_odom_base)
        self._window_index = 0
        self._reset_reason: Optional[str] = None
        self._T_base_cam0: Optional[np.ndarray] = None
        self._tracks = None
        self._scale_source = "none"  # source of the chain's metric scale
        self._prev_step_ids: Optional[List[int]] = None  # step ids of the last window chained
        self.last_dense_frames: Optional[List[int]] = None  # frames of the last window with dense outputs
        self._gray: Dict[tuple, np.ndarray] = {}  # grey images of the last window, by (camera, stamp)

    @staticmethod
    def _onnx_predictor(config: "PipelineConfig"):
        """A Predictor on an exported model; the window shape must be the one it was exported for."""
        from vggt4d_ros.export.ort_backend import OrtBackend
        from vggt4d_ros.inference.predictor import Predictor

        if not config.onnx_path or not Path(config.onnx_path).is_file():
            raise FileNotFoundError(f"model.onnx_path {config.onnx_path!r} does not exist (export one with vggt4d-export)")
        backend = OrtBackend(config.onnx_path)
        info = backend.info
        want = {"num_views": len(config.cameras), "num_steps": config.num_steps, "reference": config.reference}
        have = {k: info.get(k) for k in want}
        if any(have[k] is not None and have[k] != v for k, v in want.items()):
            raise ValueError(f"{config.onnx_path} was exported for {have}, the node is configured for {want}")
        return Predictor(backend, device="cpu" if config.device == "auto" else config.device, precision="fp32",
                         target_width=backend.width, mode=config.resize_mode, layout=None)

    # ------------------------------------------------------------------ state
    @property
    def started(self) -> bool:
        """True once the first window fixed the odom frame."""
        return self._chainer is not None

    def reset(self, reason: str = "") -> None:
        """Forget everything (lifecycle activate): the next window starts a new odom frame."""
        self._chainer = None
        self._last_step_id = None
        self._last_pose = None
        self._T_base_cam0 = None
        self._tracks = None
        self._reset_reason = None
        self._scale_source = "none"
        self._prev_step_ids = None
        self._flow_masks = {}

    def request_reset(self, reason: str) -> None:
        """Input discontinuity (bag loop, time jump): restart the window chain without an odom jump."""
        self._reset_reason = reason

    def close(self) -> None:
        """Free the model (and GPU memory)."""
        self.predictor = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ main
    def process(self, win: Any, T_base_cam: Optional[Dict[str, np.ndarray]] = None) -> WindowResult:
        """Run one :class:`vggt4d_ros.window.window.Window` of :class:`~vggt4d_ros.frontend.frames.Frame`
        (or mappings with the same keys, for windows built by hand) and None for missing cameras."""
        t_start = time.perf_counter()
        T_base_cam = dict(T_base_cam or {})
        T = win.num_steps
        V_all = win.num_views
        # Cameras without any frame in this window (stopped, rejected input) are left out of the model
        # input; camera 0 is the trajectory reference and must be there.
        keep = [v for v in range(V_all) if any(win.frames[t * V_all + v] is not None for t in range(T))]
        if 0 not in keep:
            raise ValueError(f"camera {win.camera_names[0]} (the trajectory reference) has no frame in this window")
        cams = [win.camera_names[v] for v in keep]
        V = len(cams)
        frames = [None if win.frames[t * V_all + v] is None else Frame.of(win.frames[t * V_all + v])
                  for t in range(T) for v in keep]
        present = [f is not None for f in frames]
        # A camera missing at some step: reuse its nearest frame in the window so the grid stays full;
        # the substitute is never output.
        for v in range(V):
            idx = [t * V + v for t in range(T) if frames[t * V + v] is not None]
            for t in range(T):
                s = t * V + v
                if frames[s] is None:
                    frames[s] = frames[min(idx, key=lambda j: abs(j - s))]
        sub = SimpleNamespace(num_views=V, num_steps=T, step_ids=win.step_ids, frames=frames, camera_names=cams)
        rgbs = [f.rgb for f in frames]
        intr = None
        if self.cfg.use_camera_info_intrinsics and all(f.info is not None for f in frames):
            intr = np.stack([np.asarray(f.info.k, dtype=np.float64).reshape(3, 3) for f in frames])
        ref = ("first",) if self.cfg.reference == "first" else ("newest", 0)

        if self._reset_reason is not None and self._chainer is not None:
            self._chainer.reset()
            self._last_step_id = None
            self._tracks = None
        self._reset_reason = None

        queries = self._track_queries(sub, ref)
        # Steps this window may output (the chain fit can only shorten the list): those newer than the last
        # output step, every step after a reset.
        new_t = [t for t in range(T) if self._last_step_id is None or win.step_ids[t] > self._last_step_id]
        needed = self._needed_frames(win.step_ids, V, new_t, present, queries is not None,
                                     self._scale_candidates(V, cams, T_base_cam, frames), frames)
        dense = None if self.cfg.dense_frames == "all" else needed
        self.last_dense_frames = list(range(T * V)) if dense is None else dense
        t0 = time.perf_counter()
        kw = {}
        if getattr(self.predictor, "supports_frame_keys", True) and self.cfg.backend == "torch":
            # Patch embeddings depend on the frame only: overlapping windows embed just their new frames.
            kw["frame_keys"] = [(cams[s % V], int(frames[s].stamp_ns)) for s in range(len(frames))]
        if dense is not None:
            kw["dense_frames"] = dense
        pred = self.predictor.predict(rgbs, num_views=V, intrinsics=intr, query_points=queries, reference=ref,
                                      time_index=list(win.step_ids), **kw)
        inference_s = time.perf_counter() - t0
        pose_source = "camera_head"
        if self.pose_refine == "pnp" or self.mask_source == "flow" or self.depth_refine == "stereo":
            self._cache_gray(frames, cams)
        if self.pose_refine == "pnp":
            pred, pose_source = self._refine_poses(pred, frames, cams, win.step_ids)
        if self.mask_source == "flow":
            pred = self._flow_mask(pred, frames, present, cams)

        E = np.stack([f.cam_from_world for f in pred.frames]).reshape(T, V, 4, 4)
        src, est = self._measure_scale(E, pred, frames, present, cams, T_base_cam, needed)
        metric = est.scale if est.ok else None
        if self._chainer is None:
            T_base_cam0 = T_base_cam.get(cams[0], _T_BODY_OPTICAL)
            self._T_base_cam0 = T_base_cam0
            # Chained on camera 0 (always present) so a camera that comes and goes never changes the
            # chain's layout; the other cameras follow from the window's own relative poses.
            self._chainer = WindowChainer(1, T_odom_cam0=T_base_cam0)
        pts, wts, dyn = self._chain_sample(pred, V, needed)
        chain = self._chainer.add_window(win.step_ids, E[:, :1], points=pts, weights=wts, dynamic=dyn,
                                         metric_scale=metric)
        self._prev_step_ids = [int(i) for i in win.step_ids]
        scale = float(chain.scale)
        if metric is not None:
            self._scale_source = src
        if not chain.scale_is_metric:
            self._scale_source = "none"
        # T_odom_camv = T_odom_cam0 @ T_cam0_camv, with the window's relative pose in odom units.
        rel = E[:, :1] @ np.linalg.inv(E)  # (T, V, 4, 4) cam0 <- camv in window units
        rel[..., :3, 3] *= scale
        T_odom_cam_all = chain.T_odom_cam[:, :1] @ rel

        steps: List[StepOutput] = []
        if not chain.fit_ok and self._last_pose is not None:
            # Lost, or re-attached after a reset: only the newest step is placed at a continuous pose; the
            # window's older steps would follow its own (untrusted) motion, so they are not output.
            new_t = new_t[-1:]
        kp_by_frame = self._tracks.update(pred, sub, ref, new_t, scale=scale) if self._tracks is not None else {}
        # Only the newest output step is refined: a window that outputs a backlog (the first one, or the node
        # behind the cameras) would otherwise cost up to T times as much just when time is short, and a slower
        # window spaces the next window's frames further apart (live at 30 Hz this lost the track).
        refined = (self._stereo_depth(pred, frames, present, cams, T_base_cam, new_t[-1:])
                   if self.depth_refine == "stereo" else {})
        inv_base0 = np.linalg.inv(self._T_base_cam0)
        for t in new_t:
            outs: Dict[str, CameraOutput] = {}
            poses: Dict[str, np.ndarray] = {}
            for v, c in enumerate(cams):
                s = t * V + v
                T_oc = T_odom_cam_all[t, v]
                poses[c] = T_oc
                if not present[s]:
                    continue
                fp = pred.frames[s]
                f = frames[s]
                depth = (refined.get(s, fp.depth) * scale).astype(np.float32)
                outs[c] = CameraOutput(
                    name=c, frame_id=f.frame_id, stamp=f.stamp, stamp_ns=int(f.stamp_ns), depth=depth,
                    confidence=fp.depth_conf.astype(np.float32),
                    dynamic=(fp.dynamic_mask if fp.dynamic_mask is not None
                             else np.zeros(depth.shape, np.float32)).astype(np.float32),
                    K=np.asarray(fp.intrinsics, dtype=np.float64), points_cam=unproject_depth(depth, fp.intrinsics),
                    rgb=f.rgb, keypoints=kp_by_frame.get(s))
            if not outs:
                continue
            first = outs[cams[0]] if cams[0] in outs else next(iter(outs.values()))
            T_odom_base = poses[cams[0]] @ inv_base0
            twist = None
            if self._last_pose is not None:
                dt = (first.stamp_ns - self._last_pose[0]) * 1e-9
                if dt > 0:
                    twist = _body_twist(self._last_pose[1], T_odom_base, dt)
            self._last_pose = (first.stamp_ns, T_odom_base)
            steps.append(StepOutput(step_id=int(win.step_ids[t]), stamp=first.stamp, stamp_ns=first.stamp_ns,
                                    cameras=outs, T_odom_cam=poses, T_odom_base=T_odom_base, twist=twist,
                                    scale_is_metric=bool(chain.scale_is_metric), scale_source=self._scale_source))
        if new_t:
            self._last_step_id = int(win.step_ids[new_t[-1]])
        self._window_index += 1
        start = next(f.stamp for f in frames[:V])
        end = next(f.stamp for f in frames[(T - 1) * V:])
        return WindowResult(
            window_index=self._window_index, steps=steps, num_views=V, num_steps=T, window_start=start,
            window_end=end, tracking_state=int(chain.state), scale=scale, scale_is_metric=bool(chain.scale_is_metric),
            chain_inlier_ratio=float(chain.inlier_ratio) if np.isfinite(chain.inlier_ratio) else 0.0,
            inference_s=inference_s, total_s=time.perf_counter() - t_start, message=chain.message,
            timing_ms=dict(pred.timing_ms), scale_source=self._scale_source, scale_measured=float(est.scale),
            scale_note=est.reason if src != "none" else "", mask_source=str(pred.dynamic_mask_source),
            keypoint_source=("none" if not any(len(k.ids) for k in kp_by_frame.values()) else
                             "track_head" if pred.frames[0].tracks is not None else "geometric"),
            pose_source=pose_source, depth_source="stereo" if refined else "model")

    # ------------------------------------------------------------------ helpers
    def _refine_poses(self, pred: Any, frames: List[Frame], cams: List[str], step_ids) -> tuple:
        """Camera 0's window poses by PnP against an anchor frame with depth (:mod:`.pose_refine`); the other
        cameras keep the head's pose relative to camera 0, and every frame's world points move with its pose.
        Returns (prediction, pose source)."""
        T, V = len(step_ids), len(cams)
        cam0 = [pred.frames[t * V] for t in range(T)]
        with_depth = [t for t in range(T) if cam0[t].depth is not None]
        if not with_depth:
            return pred, "camera_head"
        # The anchor: the newest step shared with the previously chained window (the chain attaches there),
        # else the oldest frame with depth.
        prev = set(self._prev_step_ids or []) if self._chainer is not None else set()
        shared = [t for t in with_depth if int(step_ids[t]) in prev]
        anchor = shared[-1] if shared else with_depth[0]
        gray = [self._gray_of(frames[t * V], cams[0]) for t in range(T)]
        E_old = np.stack([np.asarray(f.cam_from_world, np.float64) for f in pred.frames]).reshape(T, V, 4, 4)
        res = refine_camera_poses(gray, E_old[:, 0], np.stack([np.asarray(f.intrinsics) for f in cam0]), anchor,
                                  cam0[anchor].depth,
                                  PoseRefineConfig(max_features=self.cfg.pose_max_features,
                                                   min_inliers=self.cfg.pose_min_inliers,
                                                   ransac_px=self.cfg.pose_ransac_px),
                                  depths=[f.depth for f in cam0])
        new_frames = list(pred.frames)
        for t in range(T):
            if t == anchor or not res.solved[t]:
                continue
            # Camera 0 moved by D = E_new^-1... : every camera of step t keeps its pose relative to camera 0.
            delta = np.linalg.inv(E_old[t, 0]) @ res.cam_from_world[t]  # cam0_old <- world applied after E_new
            for v in range(V):
                fp = pred.frames[t * V + v]
                E_new = E_old[t, v] @ delta
                upd: Dict[str, Any] = {"cam_from_world": E_new}
                if fp.points_world is not None:
                    M = np.linalg.inv(E_new) @ E_old[t, v]  # world_new <- world_old for this frame's points
                    upd["points_world"] = (fp.points_world.astype(np.float64) @ M[:3, :3].T
                                           + M[:3, 3]).astype(np.float32)
                new_frames[t * V + v] = dataclasses.replace(fp, **upd)
        return dataclasses.replace(pred, frames=new_frames), res.source

    def _rig_scale_pnp(self, pred: Any, frames: List[Frame], present: List[bool], V: int, rig: np.ndarray,
                       cams: List[str], needed: Optional[List[int]]) -> Optional[float]:
        """Metres per window unit from the rig, measured on the depth (pose.refine pnp): at the newest two steps
        where camera 0 has depth, its pixels are densely triangulated with each other camera's image of the same
        stamp and the known extrinsics (:func:`.pose_refine.rig_depth_scale`, CameraInfo intrinsics when the
        frames have them), and compared with the predicted depth.

        With PnP the trajectory's translation is in the depth's units, so this makes depth and poses metric at
        once; the camera head's own baselines (:func:`metric_scale_from_rig`) are in its translation units, which
        a small model does not keep equal to its depth's. Median over those steps and the cameras (two steps:
        about 25 ms per camera pair at 518x294 on a CPU core); None when no pair gave a scale (the caller then
        uses the head's baselines). Only the frames in ``needed`` (the dense frames of
        ``model.dense_frames: needed``) are read, so both dense settings give the same scale."""
        T = len(frames) // V
        cfg = PoseRefineConfig(max_features=self.cfg.pose_max_features, min_inliers=self.cfg.pose_min_inliers,
                               ransac_px=self.cfg.pose_ransac_px)
        scales = []
        steps = [t for t in range(T) if present[t * V] and pred.frames[t * V].depth is not None
                 and (needed is None or t * V in needed)]
        for t in steps[-2:]:
            f0 = pred.frames[t * V]
            g0 = self._gray_of(frames[t * V], cams[0])
            for v in range(1, V):
                s = t * V + v
                if not present[s] or np.linalg.norm(rig[v][:3, 3]) <= 1e-9:
                    continue
                K0, K1 = (np.asarray(frames[i].info.k, np.float64).reshape(3, 3) if frames[i].info is not None
                          else np.asarray(pred.frames[i].intrinsics, np.float64) for i in (t * V, s))
                m, _ = rig_depth_scale(g0, self._gray_of(frames[s], cams[v]), f0.depth, K0, K1,
                                       np.linalg.inv(rig[v]), cfg)
                if np.isfinite(m) and m > 0:
                    scales.append(m)
        return float(np.median(scales)) if scales else None

    def _stereo_depth(self, pred: Any, frames: List[Frame], present: List[bool], cams: List[str],
                      T_base_cam: Dict[str, np.ndarray], new_t: List[int]) -> Dict[int, np.ndarray]:
        """depth.refine stereo: the output frames' depth corrected toward dense two-view triangulation
        (:mod:`.stereo_depth`), by frame index; a frame nothing triangulates keeps the model's depth.

        Two partners, merged in this order: with a calibrated rig (2+ cameras with extrinsics) the next camera
        at the same stamp (camera 0 with camera 1, the others with camera 0; metric, moving objects included);
        then the two frames of the same camera furthest from it in the window, with the window's poses
        (:meth:`_motion_triangulation`), which see what the other camera does not."""
        V = len(cams)
        T = len(frames) // V
        out: Dict[int, np.ndarray] = {}
        rig = None
        if V >= 2 and all(c in T_base_cam for c in cams):
            inv0 = np.linalg.inv(T_base_cam[cams[0]])
            rig = [inv0 @ T_base_cam[c] for c in cams]  # cam0 <- camv
        cfg = DepthRefineConfig()

        def K_of(i: int) -> np.ndarray:
            f = frames[i]
            return (np.asarray(f.info.k, np.float64).reshape(3, 3) if f.info is not None
                    else np.asarray(pred.frames[i].intrinsics, np.float64))

        def tri(s: int, p: int, T_ps: np.ndarray, guess: bool = False):
            return triangulate_flow(self._gray_of(frames[s], cams[s % V]), self._gray_of(frames[p], cams[p % V]),
                                    K_of(s), K_of(p), T_ps, fb_max_px=cfg.fb_max_px,
                                    min_parallax_px=cfg.min_parallax_px, max_width=cfg.max_width,
                                    reestimate_pose=guess)

        for t in new_t:
            for v in range(V):
                s = t * V + v
                fp = pred.frames[s]
                if not present[s] or fp.depth is None:
                    continue
                tris = []
                if rig is not None:
                    w = 1 if v == 0 else 0
                    T_wv = np.linalg.inv(rig[w]) @ rig[v]  # cam_w <- cam_v, metres
                    if present[t * V + w] and np.linalg.norm(T_wv[:3, 3]) > 1e-9:
                        tris.append(tri(s, t * V + w, T_wv))
                tt = self._motion_triangulation(pred, frames, present, cams, s, tri, cfg)
                if tt is not None:
                    tris.append(tt)
                d = refine_depth(fp.depth, tris, cfg)
                if d is not None:
                    out[s] = d
        return out

    def _motion_triangulation(self, pred: Any, frames: List[Frame], present: List[bool], cams: List[str], s: int,
                              tri: Callable, cfg: DepthRefineConfig):
        """Frame ``s`` triangulated against the two frames of its camera furthest from it in time, with the
        window's poses (window units): a pixel is kept where both agree within ``cfg.motion_agree`` (log) and
        its frame's mask does not call it dynamic. A moving object's match gives a different, wrong depth
        against each partner, so the agreement also drops what the mask misses. None without two partners."""
        import cv2

        V = len(cams)
        t, v = divmod(s, V)
        T = len(frames) // V
        fp = pred.frames[s]
        others = sorted((r for r in range(T) if present[r * V + v] and frames[r * V + v].stamp_ns != frames[s].stamp_ns),
                        key=lambda r: -abs(r - t))[:2]
        if len(others) < 2:
            return None
        E_s = np.linalg.inv(np.asarray(fp.cam_from_world, np.float64))
        got = []
        for r in others:
            T_ps = np.asarray(pred.frames[r * V + v].cam_from_world, np.float64) @ E_s
            if np.linalg.norm(T_ps[:3, 3]) <= 1e-9:
                return None
            got.append(tri(s, r * V + v, T_ps, True))
        a, b = got[0].depth, got[1].depth
        with np.errstate(invalid="ignore", divide="ignore"):
            dl = np.log(a) - np.log(b)
        both = np.isfinite(dl)
        if both.sum() < 50:
            return None
        # the two baselines' lengths come from the window's poses: their units may differ by a factor
        offset = float(np.median(dl[both]))
        dl -= offset
        b = b * np.exp(offset)
        keep = both & (np.abs(dl) <= cfg.motion_agree)
        z = np.where(keep, np.sqrt(a * b), np.nan)
        if fp.dynamic_mask is not None:
            h, w = z.shape
            moving = cv2.resize((fp.dynamic_mask >= self.cfg.mask_threshold).astype(np.uint8), (w, h),
                                interpolation=cv2.INTER_NEAREST) > 0
            z[moving] = np.nan
        return dataclasses.replace(got[0], depth=z)

    def _cache_gray(self, frames: List[Frame], cams: List[str]) -> None:
        """Grey images of every frame of this window (PnP, the rig scale and the flow mask read them), cached
        by (camera, stamp) for the next window; hand-built windows without stamps are not cached."""
        V = len(cams)
        cache = {}
        for s, f in enumerate(frames):
            if f.stamp_ns:
                cache[(cams[s % V], int(f.stamp_ns))] = self._gray_of(f, cams[s % V])
        self._gray = cache  # this window's frames only: <= T * V

    def _flow_mask(self, pred: Any, frames: List[Frame], present: List[bool], cams: List[str]) -> Any:
        """mask.source flow: the dynamic mask of every frame with depth from dense optical flow against its
        camera's nearest older frames in the window (newer ones for the oldest step), with the window's poses
        (:mod:`.motion_mask`). A frame's mask is computed once, in the first window that gives it depth, and
        kept by (camera, stamp) while the frame stays in the window."""
        V = len(cams)
        T = len(frames) // V
        cfg = MotionMaskConfig(min_px=self.cfg.mask_flow_min_px)
        done: Dict[tuple, np.ndarray] = {}
        new = list(pred.frames)
        for s, fp in enumerate(pred.frames):
            if fp.depth is None or not present[s]:
                continue
            t, v = divmod(s, V)
            key = (cams[v], int(frames[s].stamp_ns)) if frames[s].stamp_ns else None
            m = self._flow_masks.get(key) if key is not None else None
            if m is None:
                # distinct images of this camera, nearest older first (substitutes of a missing frame are skipped)
                order = list(range(t - 1, -1, -1)) or list(range(t + 1, T))
                refs = [(self._gray_of(frames[r * V + v], cams[v]), np.asarray(pred.frames[r * V + v].intrinsics),
                         pred.frames[r * V + v].cam_from_world) for r in order
                        if present[r * V + v] and frames[r * V + v].stamp_ns != frames[s].stamp_ns]
                m = motion_mask(self._gray_of(frames[s], cams[v]), fp.depth, np.asarray(fp.intrinsics),
                                fp.cam_from_world, refs, cfg)
                if m is None:  # no other image of this camera in the window: no evidence of motion
                    m = np.zeros(fp.depth.shape, np.float32)
            if key is not None:
                done[key] = m
            new[s] = dataclasses.replace(fp, dynamic_mask=m)
        self._flow_masks = done  # this window's frames only
        return dataclasses.replace(pred, frames=new, dynamic_mask_source="flow")

    def _gray_of(self, f: Frame, camera: str) -> np.ndarray:
        """Grey image of a frame of ``camera``, from the last window's cache when the frame has a stamp."""
        key = (camera, int(f.stamp_ns)) if f.stamp_ns else None
        g = self._gray.get(key) if key is not None else None
        return to_gray(f.rgb) if g is None else g

    def _scale_candidates(self, V: int, cams: List[str], T_base_cam: Dict[str, np.ndarray],
                          frames: List[Frame]) -> List[str]:
        """The metric scale sources to try for this window, in order (see :data:`SCALE_SOURCES`)."""
        src = self.cfg.scale_source
        if src == "none":
            return []
        if src != "auto":
            return [src]
        out = []
        if V >= 2 and all(c in T_base_cam for c in cams):
            out.append("rig")
        if any(f.sensor_depth is not None for f in frames[::V]):
            out.append("depth")
        if self.cfg.camera_height_m > 0:
            out.append("camera_height")
        return out

    def _measure_scale(self, E: np.ndarray, pred: Any, frames: List[Frame], present: List[bool],
                       cams: List[str], T_base_cam: Dict[str, np.ndarray], needed: Optional[List[int]] = None):
        """This window's metric scale: (source, :class:`ScaleEstimate`), the first candidate that fits.

        ``E`` (T, V, 4, 4) predicted cam_from_world; ``frames``/``present`` time-major (T * V). Sensor depth
        and ground planes use camera 0's own frames only (not the substitutes of missing steps).
        """
        T, V = E.shape[:2]
        est = ScaleEstimate(float("nan"), reason="no metric scale source")
        tried = "none"
        for src in self._scale_candidates(V, cams, T_base_cam, frames):
            tried = src
            # camera 0's own frames with dense outputs (see _dense_frames)
            idx = [t * V for t in range(T) if present[t * V] and pred.frames[t * V].depth is not None]
            if src == "rig":
                if V < 2 or not all(c in T_base_cam for c in cams):
                    est = ScaleEstimate(float("nan"), reason="rig: needs 2+ cameras with known extrinsics")
                    continue
                inv0 = np.linalg.inv(T_base_cam[cams[0]])
                rig = np.stack([inv0 @ T_base_cam[c] for c in cams])
                m = self._rig_scale_pnp(pred, frames, present, V, rig, cams, needed) if self.pose_refine == "pnp" else None
                if m is None:
                    m = metric_scale_from_rig(E.reshape(-1, 4, 4), V, rig)
                est = ScaleEstimate(m, V * T, T, reason="" if np.isfinite(m) and m > 0 else "rig: degenerate baselines")
            elif src == "depth":
                est = scale_from_sensor_depth([pred.frames[s].depth for s in idx],
                                              [frames[s].sensor_depth for s in idx],
                                              min_depth_m=self.cfg.scale_depth_min_m,
                                              max_depth_m=self.cfg.scale_depth_max_m)
            elif src == "camera_height":
                up = up_in_camera(T_base_cam.get(cams[0]))
                est = scale_from_camera_height(
                    [unproject_depth(pred.frames[s].depth, pred.frames[s].intrinsics) for s in idx], up,
                    self.cfg.camera_height_m)
            if est.ok:
                return src, est
        return tried, est

    def _needed_frames(self, step_ids, V: int, new_t: List[int], present: List[bool], keypoints: bool,
                       scale_sources: List[str], frames: List[Frame]) -> Optional[List[int]]:
        """Window frames (``s = t * V + v``) that need dense outputs, or None for every frame. With
        ``model.dense_frames: all`` every frame gets them anyway; what reads them (the PnP rig scale) still
        reads these only, so both settings give the same outputs.

        ``"needed"``: every present frame of the steps that may be output (``new_t``); camera 0 at the newest
        step shared with the previous window (its newest step, whose points the chain fit matches);
        the reference frame 0 when keypoints are tracked (depth at the queries for the geometric check);
        for the scale sources tried: camera 0's frames carrying ``sensor_depth`` ("depth") and camera 0's
        newest frame ("camera_height"). Every frame when the chain has no reference yet (first window, or
        the first after a reset), so the first fit sees every point as before, and for ``"all"``.
        """
        T = len(step_ids)
        if self._chainer is None or self._last_step_id is None or self._prev_step_ids is None:
            return None
        need = {t * V + v for t in new_t for v in range(V) if present[t * V + v]}
        prev = set(self._prev_step_ids)
        shared = [t for t in range(T) if int(step_ids[t]) in prev and t not in new_t]
        if shared:
            need.add(shared[-1] * V)
        if keypoints:
            need.add(0)
        if "depth" in scale_sources:
            need.update(t * V for t in range(T) if present[t * V] and frames[t * V].sensor_depth is not None)
        if "camera_height" in scale_sources:
            last = [t for t in range(T) if present[t * V]]
            if last:
                need.add(last[-1] * V)
        if not need:
            need.add((T - 1) * V)
        return sorted(need)

    def _chain_sample(self, pred, num_views: int, needed: Optional[List[int]] = None):
        """A fixed pixel grid of camera 0's world points, weights and dynamic flags per step (same pixels every
        window), (T, P, 3), (T, P), (T, P); NaN points and weight 0 on frames without dense outputs and on frames
        outside ``needed`` (so ``model.dense_frames: all`` fits the chain on the same points as ``needed``)."""
        n = self.cfg.chain_points_grid
        if n <= 0:
            return None, None, None
        P, W, D = [], [], []
        for t, fp in enumerate(pred.frames[::num_views]):
            if fp.depth is None or (needed is not None and t * num_views not in needed):  # no points, weight 0
                P.append(np.full((n * n, 3), np.nan))
                W.append(np.zeros(n * n))
                D.append(np.zeros(n * n, bool))
                continue
            h, w = fp.depth.shape
            ys = np.linspace(0, h - 1, n).round().astype(int)
            xs = np.linspace(0, w - 1, n).round().astype(int)
            g = np.ix_(ys, xs)
            P.append(fp.points_world[g].reshape(-1, 3))
            c = fp.depth_conf[g].reshape(-1)
            W.append(np.where(np.isfinite(c), c, 0.0))
            dm = fp.dynamic_mask
            D.append((dm[g].reshape(-1) >= self.cfg.mask_threshold) if dm is not None else np.zeros(n * n, bool))
        return np.stack(P), np.stack(W), np.stack(D)

    def _track_queries(self, win, ref) -> Optional[np.ndarray]:
        if self.cfg.keypoints_max <= 0:
            return None
        if self._tracks is None:
            self._tracks = KeypointTracker(max_count=self.cfg.keypoints_max)
        # Every window: the check follows the config (mask.threshold is a live parameter).
        self._tracks.configure_check(self.cfg.keypoints_geometry_check, self.cfg.keypoints_max_reprojection_px,
                                     self.cfg.mask_threshold)
        return self._tracks.queries(win, ref)


def _body_twist(T0: np.ndarray, T1: np.ndarray, dt: float) -> np.ndarray:
    """Twist (vx vy vz wx wy wz) in the child frame of T1 from two poses dt seconds apart."""
    from scipy.spatial.transform import Rotation

    D = np.linalg.inv(T0) @ T1  # motion expressed in the frame of T0
    v = D[:3, 3] / dt
    w = Rotation.from_matrix(D[:3, :3]).as_rotvec() / dt
    R = D[:3, :3].T  # express in the frame of T1
    return np.concatenate([R @ v, R @ w])
