"""Training windows rendered on the fly from :class:`~vggt4d_ros.data.synth.SynthSequence`.

A window is ``V`` cameras x ``T`` time steps (time-major, ``s = t * V + v``) of one random synthetic
sequence, with ground truth expressed like VGGT's: world = the reference frame's camera (frame 0), OpenCV
axes, and every length divided by the mean distance of the valid ground-truth points to the origin.

Train seeds and evaluation seeds are disjoint (:data:`TRAIN_SEED_BASE`, :data:`EVAL_SEEDS`).
Rendering is cached per sequence (frames memoised) so several windows are drawn from one sequence.

Scene families (``WindowConfig.family``, :data:`FAMILIES`): ``"legacy"`` is the original renderer set-up
(fixed lighting, 70 degree cameras, the default texture patterns, boxes and spheres); ``"train"`` randomises
per sequence the field of view (50-90 degrees), room size, texture patterns, lighting, exposure, tone curve,
noise, blur, rig speed, camera pan/tilt (real rotation), object shapes and speeds; ``"heldout"`` draws from
the same photometric ranges but with texture patterns, a moving-object shape and room sizes the train family
never uses (and seeds below :data:`TRAIN_SEED_BASE`), so it measures generalisation, not memory.
"""

from __future__ import annotations

import threading
import queue
from collections import OrderedDict
from dataclasses import dataclass, field, asdict
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.synth import SynthConfig, SynthSequence
from ..geometry import extri_intri_to_pose_encoding

TRAIN_SEED_BASE = 1000  # train sequences use seeds >= 1000
EVAL_SEEDS = tuple(range(10))  # held-out sequences

#: Per-family scene settings drawn in :func:`synth_config` (ranges are uniform). The held-out family's
#: texture patterns ("dots", "marble"), moving shape ("ellipsoid") and room sizes (larger) never occur in "train".
FAMILIES: Dict[str, Dict[str, Any]] = {
    "train": {
        "texture_kinds": ("noise", "checkers", "stripes", "patches", "bricks", "wood", "grid", "gradient"),
        "static_kinds": ("box", "box", "cylinder", "sphere"),
        "moving_kinds": ("box", "sphere"),
        "room": ((8.0, 14.0), (6.5, 10.0), (2.6, 3.5)),
    },
    "heldout": {
        "texture_kinds": ("dots", "marble", "noise", "bricks"),
        "static_kinds": ("box", "cylinder", "ellipsoid"),
        "moving_kinds": ("ellipsoid", "ellipsoid", "box"),
        "room": ((14.5, 17.0), (10.5, 12.0), (3.6, 4.2)),
    },
}
FOV_RANGE_DEG = (50.0, 90.0)


@dataclass
class WindowConfig:
    """How training / evaluation windows are drawn.

    Resolution: ``sizes`` is a list of ``(height, width)`` (multiples of 14); one is drawn per batch.
    Randomised per sequence: ``speed`` range, ``moving_objects`` range (inclusive), per window: ``strides``.
    """

    num_views: int = 2
    num_steps: int = 4
    sizes: List[Tuple[int, int]] = field(default_factory=lambda: [(140, 252)])
    strides: List[int] = field(default_factory=lambda: [1, 2, 3])
    speed: Tuple[float, float] = (0.6, 1.6)
    moving_objects: Tuple[int, int] = (1, 4)
    num_queries: int = 32  # track queries per window (visible in frame 0)
    duration_s: float = 4.0  # length of every generated sequence
    cache_sequences: int = 12  # rendered sequences kept (per worker)
    windows_per_sequence: int = 6  # mean windows drawn from a sequence before it is replaced
    texture_px: int = 256
    family: str = "legacy"  # legacy | train | heldout (see FAMILIES)
    views: List[int] = field(default_factory=list)  # cameras per window, one drawn per batch; [] = [num_views]
    photometric: bool = True  # train/heldout: random lighting, exposure, tone, noise, blur (False: fixed)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "WindowConfig":
        d = dict(d or {})
        if "sizes" in d:
            d["sizes"] = [tuple(int(x) for x in s) for s in d["sizes"]]
        for k in ("speed", "moving_objects"):
            if k in d:
                d[k] = tuple(d[k])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown data settings {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.family not in ("legacy",) + tuple(FAMILIES):
            raise ValueError(f"family must be one of {['legacy'] + list(FAMILIES)}, got {self.family!r}")
        if any(int(v) < 1 for v in self.views):
            raise ValueError(f"views must be positive camera counts, got {self.views}")


def synth_config(seed: int, size: Tuple[int, int], cfg: WindowConfig, rng: np.random.Generator,
                 num_views: Optional[int] = None) -> SynthConfig:
    """The :class:`SynthConfig` of sequence ``seed``: randomised speed and number of moving objects, and for
    the ``train`` / ``heldout`` families every scene setting of :data:`FAMILIES` (drawn from ``rng``)."""
    lo, hi = cfg.moving_objects
    base = dict(
        seed=int(seed), num_cameras=int(num_views or cfg.num_views), width=size[1], height=size[0],
        duration_s=cfg.duration_s, speed=float(rng.uniform(*cfg.speed)), num_moving_objects=int(rng.integers(lo, hi + 1)),
        num_tracks=max(4 * cfg.num_queries, 64), texture_px=cfg.texture_px,
    )
    if cfg.family == "legacy":
        return SynthConfig(**base)
    fam = FAMILIES[cfg.family]
    room = tuple(float(rng.uniform(*r)) for r in fam["room"])
    extra = dict(
        fov_deg=float(rng.uniform(*FOV_RANGE_DEG)), room_size=room,
        texture_kinds=tuple(fam["texture_kinds"]), static_kinds=tuple(fam["static_kinds"]),
        moving_kinds=tuple(fam["moving_kinds"]), num_static_objects=int(rng.integers(4, 15)),
        rig_speed_mps=float(rng.uniform(0.3, 1.0)), object_speed_mps=float(rng.uniform(0.3, 1.3)),
        pan_deg=float(rng.uniform(0.0, 25.0)), pan_hz=float(rng.uniform(0.1, 0.35)),
        tilt_deg=float(rng.uniform(0.0, 8.0)), baseline_m=float(rng.uniform(0.15, 0.5)),
        yaw_spread_deg=float(rng.uniform(0.0, 30.0)), pitch_deg=float(rng.uniform(-12.0, 4.0)),
    )
    if cfg.photometric:
        extra.update(
            lighting="random", exposure=(float(rng.uniform(0.55, 1.0)), float(rng.uniform(1.0, 1.5))),
            gamma=float(rng.uniform(0.8, 1.25)), noise_std=float(rng.uniform(0.5, 6.0)),
            blur_sigma=float(rng.uniform(0.3, 1.2)) if rng.uniform() < 0.5 else 0.0,
        )
    return SynthConfig(**base, **extra)


class CachedSequence:
    """A :class:`SynthSequence` whose rendered frames are memoised."""

    def __init__(self, config: SynthConfig) -> None:
        self.seq = SynthSequence(config)
        self.frames: Dict[int, Any] = {}
        self.uses = 0

    def frame(self, i: int):
        if i not in self.frames:
            self.frames[i] = self.seq.frame(i)
        return self.frames[i]


def make_window(seq: CachedSequence, start: int, stride: int, num_steps: int, num_queries: int,
                rng: np.random.Generator) -> Dict[str, torch.Tensor]:
    """Build one window's tensors (S = T * V frames, reference = frame 0 = first camera at the first step).

    Returns a dict of tensors:
        images (S, 3, H, W) float32 in [0, 1]; depth (S, H, W) normalised; depth_metric (S, H, W) metres;
        valid (S, H, W) bool; world_points (S, H, W, 3) normalised, in the reference camera frame;
        dynamic_mask (S, H, W) float32 0/1; extrinsics (S, 3, 4) camera-from-world (normalised translation);
        intrinsics (S, 3, 3); pose_enc (S, 9); scale () the metres-per-unit divisor;
        query_points (N, 2) pixels in frame 0; tracks (S, N, 2); track_vis (S, N) float; track_valid (N,) bool.
    """
    cams = seq.seq.camera_names
    V = len(cams)
    frames = [seq.frame(start + t * stride) for t in range(num_steps)]
    cf = [f.cameras[c] for f in frames for c in cams]  # time-major
    rgb = np.stack([c.rgb for c in cf])  # (S,H,W,3)
    depth = np.stack([c.depth for c in cf]).astype(np.float64)
    dyn = np.stack([c.dynamic_mask for c in cf])
    T_wc = np.stack([c.T_world_cam for c in cf])  # world-from-cam
    K = np.stack([c.K for c in cf])
    S, H, W = depth.shape
    T_ref = np.linalg.inv(T_wc[0])
    T_rc = T_ref @ T_wc  # reference-from-cam
    cam_from_ref = np.linalg.inv(T_rc)
    # unproject: pixel centres at integer coordinates
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    x = (u[None] - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None] * depth
    y = (v[None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None] * depth
    pc = np.stack([x, y, depth], -1)  # (S,H,W,3)
    pw = np.einsum("sij,shwj->shwi", T_rc[:, :3, :3], pc) + T_rc[:, None, None, :3, 3]
    valid = np.isfinite(depth) & (depth > 1e-3)
    scale = float(np.linalg.norm(pw[valid], axis=-1).mean())
    extr = cam_from_ref[:, :3, :].copy()
    extr[:, :, 3] /= scale
    ext_t = torch.from_numpy(extr).float()
    K_t = torch.from_numpy(K).float()
    pose_enc = extri_intri_to_pose_encoding(ext_t, K_t, (H, W))

    # tracks: points visible in frame 0, followed through the window
    trk = [c.tracks for c in cf]
    vis0 = trk[0].visible & np.isfinite(trk[0].uv).all(-1)
    cand = np.nonzero(vis0)[0]
    n = num_queries
    pick = rng.choice(cand, min(n, cand.size), replace=False) if cand.size else np.zeros(0, np.int64)
    track_valid = np.zeros(n, bool)
    track_valid[: pick.size] = True
    pick = np.concatenate([pick, np.zeros(n - pick.size, np.int64)]).astype(np.int64)
    uv = np.stack([np.nan_to_num(t.uv[pick], nan=0.0) for t in trk])  # (S,N,2)
    tvis = np.stack([t.visible[pick] for t in trk]) & track_valid[None]
    return {
        "images": torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255.0),
        "depth": torch.from_numpy(depth / scale).float(),
        "depth_metric": torch.from_numpy(depth).float(),
        "valid": torch.from_numpy(valid),
        "world_points": torch.from_numpy(pw / scale).float(),
        "dynamic_mask": torch.from_numpy(dyn).float(),
        "extrinsics": ext_t,
        "intrinsics": K_t,
        "pose_enc": pose_enc.float(),
        "scale": torch.tensor(scale, dtype=torch.float32),
        "query_points": torch.from_numpy(uv[0]).float(),
        "tracks": torch.from_numpy(uv).float(),
        "track_vis": torch.from_numpy(tvis).float(),
        "track_valid": torch.from_numpy(track_valid),
        "num_views": torch.tensor(V),
    }


def collate(items: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack window dicts along a new batch dimension."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class WindowSampler:
    """Random training batches from synthetic sequences with seeds >= ``seed_base``.

    Batch ``k`` is a pure function of ``(seed, k)``: step ``k`` draws its windows from a sliding pool of
    ``cache_sequences`` sequences (ids ``g .. g+P-1`` with ``g = k // windows_per_sequence``), so a new
    sequence enters the pool every ``windows_per_sequence`` steps and rendered frames are reused (LRU cache).
    Resuming at step ``k`` therefore gives exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, cfg: WindowConfig, batch_size: int, seed: int = 0, seed_base: int = TRAIN_SEED_BASE) -> None:
        self.cfg = cfg
        self.batch_size = batch_size
        self.seed = int(seed)
        self.seed_base = seed_base
        self.cache: "OrderedDict[Tuple[int, Tuple[int, int], int], CachedSequence]" = OrderedDict()

    def sequence_seed(self, idx: int) -> int:
        """Synthetic-scene seed of pool sequence ``idx`` (always >= ``seed_base``)."""
        return self.seed_base + self.seed * 1_000_003 + idx

    def _sequence(self, idx: int, size: Tuple[int, int], num_views: Optional[int] = None) -> CachedSequence:
        key = (idx, size, int(num_views or self.cfg.num_views))
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        sseed = self.sequence_seed(idx)
        seq = CachedSequence(synth_config(sseed, size, self.cfg, np.random.default_rng([sseed, 1]), num_views))
        self.cache[key] = seq
        while len(self.cache) > self.cfg.cache_sequences + 1:
            self.cache.popitem(last=False)
        return seq

    def batch(self, step: int) -> Dict[str, torch.Tensor]:
        """The batch of training step ``step`` (deterministic)."""
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, int(step), 3])
        size = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
        views = int(cfg.views[int(rng.integers(len(cfg.views)))]) if cfg.views else None
        g = int(step) // max(cfg.windows_per_sequence, 1)
        items = []
        for _ in range(self.batch_size):
            seq = self._sequence(g + int(rng.integers(max(cfg.cache_sequences, 1))), size, views)
            strides = [s for s in cfg.strides if (cfg.num_steps - 1) * s < seq.seq.num_frames] or [1]
            stride = int(strides[int(rng.integers(len(strides)))])
            last = seq.seq.num_frames - (cfg.num_steps - 1) * stride
            start = int(rng.integers(0, max(last, 1)))
            items.append(make_window(seq, start, stride, cfg.num_steps, cfg.num_queries, rng))
        return collate(items)


class Prefetcher:
    """Render batches ``start_step, start_step+1, ...`` in a background thread (overlaps with compute)."""

    def __init__(self, sampler: WindowSampler, start_step: int = 0, depth: int = 3) -> None:
        self.q: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self.sampler = sampler
        self.step = int(start_step)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                b = self.sampler.batch(self.step)
                self.step += 1
                while not self._stop.is_set():
                    try:
                        self.q.put(b, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surface rendering errors in the consumer
            self.q.put(exc)

    def __next__(self) -> Dict[str, torch.Tensor]:
        b = self.q.get()
        if isinstance(b, BaseException):
            raise b
        return b

    def __iter__(self) -> "Prefetcher":
        return self

    def close(self) -> None:
        self._stop.set()


def eval_windows(cfg: WindowConfig, seeds: Sequence[int] = EVAL_SEEDS, windows_per_seed: int = 2,
                 size: Optional[Tuple[int, int]] = None, stride: int = 2) -> Iterator[Tuple[int, Dict[str, torch.Tensor]]]:
    """Deterministic held-out windows: for each seed, ``windows_per_seed`` windows spread over the sequence.

    Without ``size`` the ``legacy`` family uses ``cfg.sizes[-1]``; the other families cycle through
    ``cfg.sizes`` and ``cfg.views`` by seed (seed ``k``: ``sizes[k % len]``, ``views[k % len]``).
    """
    for seed in seeds:
        rng = np.random.default_rng([int(seed), 99])
        if cfg.family == "legacy":
            sz, views = size or cfg.sizes[-1], None
        else:
            sz = size or cfg.sizes[int(seed) % len(cfg.sizes)]
            views = int(cfg.views[int(seed) % len(cfg.views)]) if cfg.views else None
        seq = CachedSequence(synth_config(seed, sz, cfg, rng, views))
        last = seq.seq.num_frames - (cfg.num_steps - 1) * stride
        for start in np.linspace(0, max(last - 1, 0), windows_per_seed).round().astype(int):
            yield int(seed), make_window(seq, int(start), stride, cfg.num_steps, cfg.num_queries, rng)
