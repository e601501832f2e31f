"""Synthetic dynamic multi-camera sequences with exact ground truth.

A rig of ``num_cameras`` pinhole cameras (``base_link``: x forward, y left, z up; each camera an optical
frame: x right, y down, z forward) moves along a smooth closed path through a textured room with static
objects and ``num_moving_objects`` independently moving boxes and spheres. Frames are rendered on
demand by :mod:`vggt4d_ros.data.render`; everything is deterministic from ``SynthConfig.seed``.

Per frame and camera: RGB (H, W, 3) uint8, metric depth along the optical axis (H, W) float32, dynamic
mask (H, W) bool, world-from-camera pose (4, 4), intrinsics (3, 3) and ground-truth tracks of a fixed set
of surface points (static and attached to moving objects) with exact visibility (a ray cast from the
camera centre to the point hits nothing closer).

Example::

    seq = SynthSequence(SynthConfig(num_cameras=2, width=160, height=96, duration_s=1.2))
    f = seq.frame(0)
    f.cameras["cam0"].depth  # (96, 160) float32 metres
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

import cv2

from .render import Lighting, Pose, cast_geometry, first_hit, pixel_rays, shade
from .scene import Scene, build_scene
from .textures import TextureBank

BASE_FRAME = "base_link"
WORLD_FRAME = "world"
# base_link-from-optical rotation of a camera looking along base +x: optical x = -y_base (right),
# optical y = -z_base (down), optical z = +x_base (forward). Columns are the optical axes in base.
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _stack_poses(poses: List[Pose]) -> Tuple[np.ndarray, np.ndarray]:
    """(P, 3, 3) rotations and (P, 3) translations of a pose list."""
    return np.stack([p[0] for p in poses]), np.stack([p[1] for p in poses])


@dataclass
class SynthConfig:
    """Every knob of a synthetic sequence. Distances in metres, angles in degrees, times in seconds."""

    seed: int = 0
    num_cameras: int = 2
    width: int = 518
    height: int = 294
    rate_hz: float = 10.0
    duration_s: float = 10.0
    speed: float = 1.0  # multiplies all motion (rig and objects); 0 gives a frozen scene
    rig_speed_mps: float = 0.6  # rig speed along its path at speed = 1
    object_speed_mps: float = 0.6  # typical moving-object speed at speed = 1
    num_moving_objects: int = 3
    num_static_objects: int = 10
    baseline_m: float = 0.3  # spacing of neighbouring cameras along base_link y
    yaw_spread_deg: float = 15.0  # camera yaws spread evenly over [+spread/2, -spread/2] (cam0 leftmost)
    pitch_deg: float = -4.0  # camera pitch, negative looks down
    fov_deg: float = 70.0  # horizontal field of view
    num_tracks: int = 512
    dynamic_track_fraction: float = 0.3
    jitter_ms: float = 0.0  # per-camera stamp jitter, uniform in [-jitter, +jitter]
    noise_std: float = 1.5  # Gaussian sensor noise (8-bit levels)
    start_time_s: float = 1_700_000_000.0  # stamp of frame 0
    num_materials: int = 12
    texture_px: int = 512  # material tile size (texels), tiles span 2 m
    # Variety (training data; the defaults give the original scenes exactly). Extra randomness comes from
    # its own generator (seed, 17), so the defaults draw nothing new.
    texture_kinds: Tuple[str, ...] = ()  # texture patterns (textures.ALL_PATTERNS); () = textures.PATTERNS
    static_kinds: Tuple[str, ...] = ("box", "box", "cylinder", "sphere")  # drawn uniformly (repeat to weight)
    moving_kinds: Tuple[str, ...] = ("box", "sphere")  # box | sphere | ellipsoid
    room_size: Tuple[float, float, float] = (12.0, 9.0, 3.2)  # metres
    lighting: str = "fixed"  # fixed (ambient + two white lights) | random (1-3 tinted lights, random ambient)
    exposure: Tuple[float, float] = (1.0, 1.0)  # per-frame gain drawn uniformly from this range
    gamma: float = 1.0  # tone curve 255 * (x / 255) ** (1 / gamma), per sequence
    blur_sigma: float = 0.0  # Gaussian optical blur (pixels), applied before the noise
    pan_deg: float = 0.0  # extra yaw oscillation of the rig (real camera rotation), amplitude in degrees
    pan_hz: float = 0.15  # its frequency at speed 1
    tilt_deg: float = 0.0  # extra pitch oscillation, amplitude in degrees

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an invalid configuration."""
        positive = {"num_cameras": self.num_cameras, "width": self.width, "height": self.height,
                    "rate_hz": self.rate_hz, "duration_s": self.duration_s, "fov_deg": self.fov_deg,
                    "num_materials": self.num_materials, "texture_px": self.texture_px}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive (got {value})")
        non_negative = {"speed": self.speed, "num_moving_objects": self.num_moving_objects,
                        "num_static_objects": self.num_static_objects, "num_tracks": self.num_tracks,
                        "baseline_m": self.baseline_m, "jitter_ms": self.jitter_ms,
                        "noise_std": self.noise_std, "rig_speed_mps": self.rig_speed_mps,
                        "object_speed_mps": self.object_speed_mps, "start_time_s": self.start_time_s}
        for name, value in non_negative.items():
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 (got {value})")
        if self.fov_deg >= 170:
            raise ValueError(f"fov_deg must be below 170 (got {self.fov_deg})")
        if self.texture_px & (self.texture_px - 1) or self.texture_px < 64:
            raise ValueError(f"texture_px must be a power of two >= 64 (got {self.texture_px})")
        if self.jitter_ms * 1e-3 >= 0.25 / self.rate_hz:
            raise ValueError(f"jitter_ms must be below a quarter of the frame period ({250.0 / self.rate_hz:g} ms)")
        if not 0.0 <= self.dynamic_track_fraction <= 1.0:
            raise ValueError("dynamic_track_fraction must be in [0, 1]")
        if self.baseline_m * (self.num_cameras - 1) > 2.0:
            raise ValueError("the rig is wider than 2 m: lower baseline_m or num_cameras")
        if self.lighting not in ("fixed", "random"):
            raise ValueError(f"lighting must be 'fixed' or 'random' (got {self.lighting!r})")
        if not 0 < self.exposure[0] <= self.exposure[1]:
            raise ValueError(f"exposure must be a range 0 < lo <= hi (got {self.exposure})")
        if not self.gamma > 0 or not self.blur_sigma >= 0 or not self.pan_hz > 0:
            raise ValueError("gamma and pan_hz must be positive and blur_sigma >= 0")
        if min(self.room_size) <= 1.0:
            raise ValueError(f"room_size must exceed 1 m per side (got {self.room_size})")
        from .textures import ALL_PATTERNS

        bad = [k for k in self.texture_kinds if k not in ALL_PATTERNS]
        if bad:
            raise ValueError(f"unknown texture_kinds {bad}; known: {list(ALL_PATTERNS)}")

    @property
    def num_frames(self) -> int:
        return max(1, int(np.floor(self.duration_s * self.rate_hz + 1e-9)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        """Inverse of :meth:`to_dict` (lists back to tuples; unknown keys are an error)."""
        d = dict(d)
        for k in ("texture_kinds", "static_kinds", "moving_kinds", "room_size", "exposure"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class Tracks:
    """Ground-truth tracks of one camera at one frame; N is the number of track points (all of them).

    ids (N,) int64 stable ids; uv (N, 2) float32 pixel position of the projection (x right, y down,
    (0, 0) = centre of the top-left pixel); xyz_cam (N, 3) float32 point in the optical frame;
    in_image (N,) bool: in front of the camera and inside the image; visible (N,) bool: in_image and
    not occluded; age (N,) int32: consecutive frames visible up to this one (0 when not visible);
    dynamic (N,) bool: the point is attached to a moving object.
    """

    ids: np.ndarray
    uv: np.ndarray
    xyz_cam: np.ndarray
    in_image: np.ndarray
    visible: np.ndarray
    age: np.ndarray
    dynamic: np.ndarray


@dataclass
class CameraFrame:
    """One camera's image of one time step with its ground truth.

    rgb (H, W, 3) uint8; depth (H, W) float32 metres along the optical axis (every pixel hits a surface);
    dynamic_mask (H, W) bool; instance (H, W) int16 moving-object index or -1 for static surfaces;
    T_world_cam (4, 4) float64 world-from-optical; K (3, 3) float64; stamp_ns acquisition stamp;
    time_s seconds since the start of the sequence (stamp minus the start time).
    """

    name: str
    rgb: np.ndarray
    depth: np.ndarray
    dynamic_mask: np.ndarray
    instance: np.ndarray
    T_world_cam: np.ndarray
    K: np.ndarray
    stamp_ns: int
    time_s: float
    tracks: Tracks


@dataclass
class SynthFrame:
    """One time step: ``cameras[name]`` per camera plus the rig pose at the step's nominal stamp."""

    index: int
    stamp_ns: int
    time_s: float
    T_world_base: np.ndarray
    cameras: Dict[str, CameraFrame] = field(default_factory=dict)

    def __getitem__(self, cam: str) -> CameraFrame:
        return self.cameras[cam]


class SynthSequence:
    """A deterministic synthetic sequence; frames are rendered on demand with :meth:`frame`.

    Attributes:
        config: the validated :class:`SynthConfig`.
        num_frames: number of time steps.
        camera_names: ``["cam0", ...]``; ``optical_frames[cam]`` is ``"<cam>_optical_frame"``.
        intrinsics: ``{cam: (3, 3) K}``; ``T_base_cam``: ``{cam: (4, 4) base_link-from-optical}``.
        scene: the analytic :class:`~vggt4d_ros.data.scene.Scene` (moving objects: ``scene.moving``).
        track_prim (N,) int primitive index and track_local (N, 3) object-frame position of every track point.
    """

    def __init__(self, config: Optional[SynthConfig] = None) -> None:
        cfg = config if config is not None else SynthConfig()
        cfg.validate()
        self.config = cfg
        self.num_frames = cfg.num_frames
        self.camera_names: List[str] = [f"cam{i}" for i in range(cfg.num_cameras)]
        self.optical_frames = {c: f"{c}_optical_frame" for c in self.camera_names}
        rng = np.random.default_rng(cfg.seed)

        fx = (cfg.width / 2.0) / np.tan(np.radians(cfg.fov_deg) / 2.0)
        K = np.array([[fx, 0.0, (cfg.width - 1) / 2.0], [0.0, fx, (cfg.height - 1) / 2.0], [0.0, 0.0, 1.0]])
        self.intrinsics: Dict[str, np.ndarray] = {c: K.copy() for c in self.camera_names}
        self.T_base_cam: Dict[str, np.ndarray] = {}
        n = cfg.num_cameras
        yaws = np.linspace(cfg.yaw_spread_deg / 2, -cfg.yaw_spread_deg / 2, n) if n > 1 else np.zeros(1)
        for i, cam in enumerate(self.camera_names):
            T = np.eye(4)
            R_body = Rotation.from_euler("ZY", [yaws[i], -cfg.pitch_deg], degrees=True).as_matrix()
            T[:3, :3] = R_body @ R_BASE_OPTICAL
            T[:3, 3] = [0.1, ((n - 1) / 2.0 - i) * cfg.baseline_m, 0.0]
            self.T_base_cam[cam] = T
        reach = max(float(np.linalg.norm(T[:3, 3])) for T in self.T_base_cam.values())

        self._jitter_s = rng.uniform(-1, 1, (self.num_frames, n)) * cfg.jitter_ms * 1e-3
        taus = np.concatenate([self._nominal_times(), (self._nominal_times()[:, None] + self._jitter_s).ravel()])
        self.scene: Scene = build_scene(
            rng, num_static_objects=cfg.num_static_objects, num_moving_objects=cfg.num_moving_objects,
            num_materials=cfg.num_materials, rig_speed_mps=cfg.rig_speed_mps,
            object_speed_mps=cfg.object_speed_mps, rig_taus=taus * cfg.speed, rig_reach=reach,
            room_size=tuple(cfg.room_size), static_kinds=tuple(cfg.static_kinds),
            moving_kinds=tuple(cfg.moving_kinds))
        self.textures = TextureBank.generate(rng, cfg.num_materials, tile_px=cfg.texture_px,
                                             kinds=tuple(cfg.texture_kinds) or None)
        extra = np.random.default_rng([cfg.seed, 17])  # variety draws (nothing is drawn with the defaults)
        path = self.scene.rig_path
        path.pan_amp, path.tilt_amp = np.radians(cfg.pan_deg), np.radians(cfg.tilt_deg)
        path.pan_hz = cfg.pan_hz
        path.pan_phase = float(extra.uniform(0, 2 * np.pi)) if (cfg.pan_deg or cfg.tilt_deg) else 0.0
        self.lighting = Lighting.random(extra) if cfg.lighting == "random" else None
        self._rays = pixel_rays(K, cfg.width, cfg.height)
        self._sample_tracks(rng)
        self._age_memo: Dict[int, np.ndarray] = {}
        self._proj_cache: Dict[Tuple[int, str], Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    # ---- time and poses -------------------------------------------------------------------------
    def _nominal_times(self) -> np.ndarray:
        return np.arange(self.num_frames) / self.config.rate_hz

    def camera_time(self, index: int, cam: str) -> float:
        """Acquisition time of camera ``cam`` at step ``index`` in seconds since the start (with jitter)."""
        return index / self.config.rate_hz + float(self._jitter_s[index, self.camera_names.index(cam)])

    def stamp_ns(self, time_s: float) -> int:
        """ROS stamp in nanoseconds of a time in seconds since the start."""
        return int(round(self.config.start_time_s * 1e9)) + int(round(time_s * 1e9))

    def T_world_base(self, time_s: float) -> np.ndarray:
        """World-from-base_link (4, 4) at ``time_s`` seconds since the start."""
        return self.scene.rig_path.pose(time_s * self.config.speed)

    def T_world_cam(self, time_s: float, cam: str) -> np.ndarray:
        """World-from-optical (4, 4) of camera ``cam`` at ``time_s``."""
        return self.T_world_base(time_s) @ self.T_base_cam[cam]

    def prim_poses(self, time_s: float) -> List[Pose]:
        """World-from-object (R, t) of every primitive at ``time_s``."""
        tau = time_s * self.config.speed
        return [p.pose(tau) for p in self.scene.primitives]

    def base_twist(self, time_s: float, h: float = 1e-4) -> Tuple[np.ndarray, np.ndarray]:
        """Linear (m/s) and angular (rad/s) velocity of base_link, both expressed in base_link: (3,), (3,)."""
        Ta, Tb = self.T_world_base(time_s - h), self.T_world_base(time_s + h)
        T0 = self.T_world_base(time_s)
        v = T0[:3, :3].T @ (Tb[:3, 3] - Ta[:3, 3]) / (2 * h)
        w = Rotation.from_matrix(Ta[:3, :3].T @ Tb[:3, :3]).as_rotvec() / (2 * h)
        return v, w

    # ---- tracks ---------------------------------------------------------------------------------
    def _sample_tracks(self, rng: np.random.Generator) -> None:
        """Pick track points on surfaces seen from a few low-resolution views spread over the sequence."""
        cfg = self.config
        n_tracks = cfg.num_tracks
        self.track_ids = np.arange(n_tracks, dtype=np.int64)
        if n_tracks == 0:
            self.track_prim = np.zeros(0, np.int64)
            self.track_local = np.zeros((0, 3))
            self.track_dynamic = np.zeros(0, bool)
            return
        scale = 0.25
        w, h = max(8, int(cfg.width * scale)), max(8, int(cfg.height * scale))
        K = self.intrinsics[self.camera_names[0]].copy()
        K[0] *= w / cfg.width
        K[1] *= h / cfg.height
        rays = pixel_rays(K, w, h).reshape(-1, 3)
        steps = np.unique(np.linspace(0, self.num_frames - 1, min(8, self.num_frames)).round().astype(int))
        prims, locals_, dyn = [], [], []
        dyn_flags = np.array([p.dynamic for p in self.scene.primitives], bool)
        for i in steps:
            time_s = i / cfg.rate_hz
            poses = self.prim_poses(time_s)
            for cam in self.camera_names:
                T = self.T_world_cam(time_s, cam)
                depth, ids, d_world = cast_geometry(self.scene, poses, K, T, w, h, rays.reshape(h, w, 3))
                pts = T[:3, 3] + d_world.reshape(-1, 3) * depth.reshape(-1, 1)
                pid = ids.ravel()
                R_stack, t_stack = _stack_poses(poses)
                local = np.einsum("nji,nj->ni", R_stack[pid], pts - t_stack[pid])
                prims.append(pid)
                locals_.append(local)
                dyn.append(dyn_flags[pid])
        prims_a, local_a, dyn_a = np.concatenate(prims), np.concatenate(locals_), np.concatenate(dyn)
        n_dyn_avail = int(dyn_a.sum())
        n_dyn = min(int(round(n_tracks * cfg.dynamic_track_fraction)), n_dyn_avail)
        pick_dyn = rng.choice(np.nonzero(dyn_a)[0], n_dyn, replace=False) if n_dyn else np.zeros(0, np.int64)
        static_idx = np.nonzero(~dyn_a)[0]
        pick_static = rng.choice(static_idx, n_tracks - n_dyn, replace=(n_tracks - n_dyn) > static_idx.size)
        pick = np.concatenate([pick_static, pick_dyn])
        pick = pick[rng.permutation(pick.size)]
        self.track_prim = prims_a[pick].astype(np.int64)
        self.track_local = local_a[pick]
        self.track_dynamic = dyn_flags[self.track_prim]

    def track_points_world(self, time_s: float) -> np.ndarray:
        """World position of every track point at ``time_s``: (N, 3)."""
        R_stack, t_stack = _stack_poses(self.prim_poses(time_s))
        return np.einsum("nij,nj->ni", R_stack[self.track_prim], self.track_local) + t_stack[self.track_prim]

    def _project_tracks(self, index: int, cam: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """uv (N, 2), xyz_cam (N, 3), in_image (N,), visible (N,) of every track point (cached per step)."""
        key = (index, cam)
        if key not in self._proj_cache:
            if len(self._proj_cache) > 64:
                self._proj_cache.pop(next(iter(self._proj_cache)))
            self._proj_cache[key] = self._project_tracks_uncached(index, cam)
        return self._proj_cache[key]

    def _project_tracks_uncached(self, index: int, cam: str
                                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        time_s = self.camera_time(index, cam)
        X = self.track_points_world(time_s)
        T = self.T_world_cam(time_s, cam)
        R, c = T[:3, :3], T[:3, 3]
        Xc = (X - c) @ R
        K = self.intrinsics[cam]
        z = Xc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (Xc[:, :2] / z[:, None]) @ K[:2, :2].T + K[:2, 2]
        in_image = (z > 1e-3) & (uv[:, 0] >= -0.5) & (uv[:, 0] < cfg.width - 0.5) \
            & (uv[:, 1] >= -0.5) & (uv[:, 1] < cfg.height - 0.5)
        visible = np.zeros_like(in_image)
        if in_image.any():
            d = X[in_image] - c  # ray reaches the point at parameter 1
            t_hit = first_hit(self.scene, self.prim_poses(time_s), c, d)
            visible[in_image] = t_hit >= 1.0 - 1e-6
        uv = np.where(np.isfinite(uv), uv, np.nan)
        return uv, Xc, in_image, visible

    def _ages(self, index: int) -> np.ndarray:
        """(C, N) int32 consecutive-visible counts at step ``index`` (memoised for sequential access)."""
        if index in self._age_memo:
            return self._age_memo[index]
        start = max([k for k in self._age_memo if k < index], default=-1)
        ages = self._age_memo[start] if start >= 0 else np.zeros((len(self.camera_names), self.track_ids.size),
                                                                 np.int32)
        for i in range(start + 1, index + 1):
            vis = np.stack([self._project_tracks(i, cam)[3] for cam in self.camera_names])
            ages = np.where(vis, ages + 1, 0).astype(np.int32)
        if len(self._age_memo) > 256:
            self._age_memo.pop(min(self._age_memo))
        self._age_memo[index] = ages
        return ages

    # ---- frames ---------------------------------------------------------------------------------
    def frame(self, index: int) -> SynthFrame:
        """Render time step ``index`` (0 <= index < num_frames) for every camera."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame index {index} outside [0, {self.num_frames})")
        cfg = self.config
        t0 = index / cfg.rate_hz
        out = SynthFrame(index=index, stamp_ns=self.stamp_ns(t0), time_s=t0, T_world_base=self.T_world_base(t0))
        ages = self._ages(index)
        for ci, cam in enumerate(self.camera_names):
            time_s = self.camera_time(index, cam)
            poses = self.prim_poses(time_s)
            T = self.T_world_cam(time_s, cam)
            K = self.intrinsics[cam]
            depth, ids, d_world = cast_geometry(self.scene, poses, K, T, cfg.width, cfg.height, self._rays)
            colour = shade(self.scene, poses, self.textures, depth, ids, d_world, T[:3, 3], K[0, 0], self.lighting)
            colour = self._photometric(colour, index, ci)
            if cfg.noise_std > 0:
                noise_rng = np.random.default_rng([cfg.seed, index, ci])
                colour = colour + noise_rng.normal(0.0, cfg.noise_std, colour.shape).astype(np.float32)
            rgb = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
            moving_index = np.array([p.moving_index for p in self.scene.primitives], np.int16)
            instance = moving_index[ids]
            uv, xyz, in_image, visible = self._project_tracks(index, cam)
            tracks = Tracks(ids=self.track_ids, uv=uv.astype(np.float32), xyz_cam=xyz.astype(np.float32),
                            in_image=in_image, visible=visible, age=ages[ci].copy(), dynamic=self.track_dynamic)
            out.cameras[cam] = CameraFrame(
                name=cam, rgb=rgb, depth=depth.astype(np.float32), dynamic_mask=instance >= 0, instance=instance,
                T_world_cam=T, K=K.copy(), stamp_ns=self.stamp_ns(time_s), time_s=time_s, tracks=tracks)
        return out

    def _photometric(self, colour: np.ndarray, index: int, ci: int) -> np.ndarray:
        """Exposure gain (per frame and camera), tone curve and optical blur; identity with the defaults."""
        cfg = self.config
        lo, hi = cfg.exposure
        if hi > lo or lo != 1.0:
            gain = float(np.random.default_rng([cfg.seed, index, ci, 23]).uniform(lo, hi)) if hi > lo else lo
            colour = colour * np.float32(gain)
        if cfg.gamma != 1.0:
            colour = 255.0 * np.power(np.clip(colour, 0.0, None) / 255.0, 1.0 / cfg.gamma, dtype=np.float32)
        if cfg.blur_sigma > 0:
            colour = cv2.GaussianBlur(np.ascontiguousarray(colour, np.float32), (0, 0), float(cfg.blur_sigma))
        return colour

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self):
        for i in range(self.num_frames):
            yield self.frame(i)
