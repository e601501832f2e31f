"""A bounded, voxel-downsampled map of static points in the odom frame (no ROS).

:class:`VoxelMap` accumulates points over time: each occupied voxel (a cube of side ``voxel_size``) keeps
the running mean position and colour of the points that fell in it, how many points it received, and when
it was first and last observed. Everything is vectorised numpy: a point's voxel is packed into one int64
key (21 bits per axis), the keys are kept sorted and new points are merged with ``np.unique`` /
``np.searchsorted`` / ``np.insert`` (no per-point Python loop).

Memory is bounded by ``max_voxels``. When an insertion would exceed it, voxels are evicted in this order:

1. voxels still below ``min_observations`` (they are not part of :meth:`VoxelMap.points` anyway; mostly
   sensor noise and the "ghost" trail of moving objects the dynamic mask missed), oldest first;
2. then the least recently observed voxels (oldest ``last_seen``), fewest observations first among equals.

Recency, not observation count, decides among confirmed voxels because the odometry drifts: the parts of
the map seen long ago are the least consistent with the current poses, and a map that evicted the
least-observed voxels first would stop growing once full (every newly seen place starts at one
observation and would be evicted at once). The bounded map therefore becomes a rolling local map around
the robot. Voxels observed by the current insertion are evicted last.

:func:`static_points` turns one camera's pipeline output (points in the optical frame, colours,
dynamic probability, confidence) into odom-frame points with dynamic and low-confidence pixels removed;
:meth:`VoxelMap.insert_step` does that for every camera of a :class:`~vggt4d_ros.perception.pipeline.StepOutput`.

Files: :meth:`VoxelMap.save_ply` (binary little-endian PLY, ``x y z`` float32 + ``red green blue``
uchar) and :meth:`VoxelMap.save_pcd` (PCD v0.7 binary, ``x y z rgb``, colour packed as PCL does:
``0x00RRGGBB`` reinterpreted as float32). Both write a temporary file in the target directory and rename
it into place, so a reader never sees a half-written map. Written by hand: both formats are a short
text header plus one numpy structured array; the libraries that write them (open3d, plyfile, pypcd) are
either heavy, PLY-only or unmaintained, and none keeps a bounded incremental voxel map with counts.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np

__all__ = ["VoxelMap", "static_points", "read_ply", "read_pcd"]

_BITS = 21
_OFFSET = 1 << (_BITS - 1)  # voxel indices in [-2^20, 2^20) per axis
_MASK = (1 << _BITS) - 1


class VoxelMap:
    """Running-mean voxel map, bounded in memory.

    Args:
        voxel_size: voxel side in odom units (metres when the scale is metric), > 0.
        max_voxels: most voxels kept (>= 1); see the module docstring for the eviction rule.
        min_observations: a voxel appears in :meth:`points` (and the saved files) once it has received
            at least this many points (>= 1).

    Attributes (read-only views, sorted by key): ``size`` number of voxels; ``evicted`` voxels evicted so
    far; ``dropped_out_of_range`` points whose voxel index did not fit 21 bits per axis.
    """

    def __init__(self, voxel_size: float, max_voxels: int = 500_000, min_observations: int = 1) -> None:
        if not (np.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive number (got {voxel_size})")
        if int(max_voxels) < 1:
            raise ValueError(f"max_voxels must be >= 1 (got {max_voxels})")
        if int(min_observations) < 1:
            raise ValueError(f"min_observations must be >= 1 (got {min_observations})")
        self.voxel_size = float(voxel_size)
        self.max_voxels = int(max_voxels)
        self.min_observations = int(min_observations)
        self.evicted = 0
        self.dropped_out_of_range = 0
        self.clear()

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        """Forget every voxel (counters of evictions are kept)."""
        self._keys = np.zeros(0, np.int64)
        self._xyz = np.zeros((0, 3), np.float64)  # running mean position
        self._rgb = np.zeros((0, 3), np.float32)  # running mean colour
        self._count = np.zeros(0, np.int64)
        self._first = np.zeros(0, np.int64)  # stamp_ns of the first observation
        self._last = np.zeros(0, np.int64)  # stamp_ns of the latest observation

    @property
    def size(self) -> int:
        return int(self._keys.size)

    def __len__(self) -> int:
        return self.size

    def voxel_keys(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Packed int64 voxel keys of (N, 3) points -> ``(keys (M,), ok (N,) bool)``: keys of the finite
        points whose voxel index fits 21 bits per axis (``ok``), in their order."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        idx = np.floor(p / self.voxel_size)
        ok = np.isfinite(idx).all(axis=1) & (np.abs(idx + 0.5) < _OFFSET).all(axis=1)
        i = idx[ok].astype(np.int64) + _OFFSET
        keys = (i[:, 0] << (2 * _BITS)) | (i[:, 1] << _BITS) | i[:, 2]
        return keys, ok

    def keys(self) -> np.ndarray:
        """(M,) int64 sorted keys of the voxels held (all of them, whatever their count)."""
        return self._keys.copy()

    def voxel_index(self, keys: np.ndarray) -> np.ndarray:
        """(K, 3) int64 integer voxel indices of packed keys (``floor(p / voxel_size)`` per axis)."""
        k = np.asarray(keys, dtype=np.int64)
        return np.stack([(k >> (2 * _BITS)) & _MASK, (k >> _BITS) & _MASK, k & _MASK], axis=-1) - _OFFSET

    # ------------------------------------------------------------------ insertion
    def insert(self, points: np.ndarray, colors: Optional[np.ndarray], stamp_ns: int,
               dynamic: Optional[np.ndarray] = None) -> int:
        """Add points observed at ``stamp_ns``.

        Args:
            points: (N, 3) positions in the map frame; non-finite rows are ignored.
            colors: (N, 3) uint8 RGB, or None (grey 128).
            stamp_ns: observation time (nanoseconds), used by the eviction rule.
            dynamic: optional (N,) bool; flagged points are not inserted.
        Returns:
            the number of points inserted.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        n = p.shape[0]
        c = (np.full((n, 3), 128, np.uint8) if colors is None
             else np.asarray(colors).reshape(-1, 3))
        if c.shape[0] != n:
            raise ValueError(f"{n} points but {c.shape[0]} colours")
        if dynamic is not None:
            d = np.asarray(dynamic, dtype=bool).reshape(-1)
            if d.shape[0] != n:
                raise ValueError(f"{n} points but {d.shape[0]} dynamic flags")
            p, c = p[~d], c[~d]
        finite = np.isfinite(p).all(axis=1)
        keys, ok = self.voxel_keys(p)
        self.dropped_out_of_range += int(np.count_nonzero(finite & ~ok))
        if keys.size == 0:
            return 0
        p, c = p[ok], c[ok].astype(np.float64)
        u, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        sum_p = np.stack([np.bincount(inv, weights=p[:, j], minlength=u.size) for j in range(3)], axis=1)
        sum_c = np.stack([np.bincount(inv, weights=c[:, j], minlength=u.size) for j in range(3)], axis=1)
        stamp = int(stamp_ns)

        pos = np.searchsorted(self._keys, u)
        hit = pos < self._keys.size
        hit[hit] = self._keys[pos[hit]] == u[hit]
        # Existing voxels: running means.
        j = pos[hit]
        n_old = self._count[j].astype(np.float64)
        n_new = cnt[hit].astype(np.float64)
        tot = n_old + n_new
        self._xyz[j] = (self._xyz[j] * n_old[:, None] + sum_p[hit]) / tot[:, None]
        self._rgb[j] = ((self._rgb[j] * n_old[:, None] + sum_c[hit]) / tot[:, None]).astype(np.float32)
        self._count[j] += cnt[hit]
        self._last[j] = np.maximum(self._last[j], stamp)
        # New voxels: inserted at their sorted positions (np.insert keeps the key order).
        miss = ~hit
        if miss.any():
            at = pos[miss]
            m = cnt[miss].astype(np.float64)[:, None]
            self._keys = np.insert(self._keys, at, u[miss])
            self._xyz = np.insert(self._xyz, at, sum_p[miss] / m, axis=0)
            self._rgb = np.insert(self._rgb, at, (sum_c[miss] / m).astype(np.float32), axis=0)
            self._count = np.insert(self._count, at, cnt[miss])
            self._first = np.insert(self._first, at, np.full(int(miss.sum()), stamp, np.int64))
            self._last = np.insert(self._last, at, np.full(int(miss.sum()), stamp, np.int64))
        if self._keys.size > self.max_voxels:
            self._evict(self._keys.size - self.max_voxels, u)
        return int(p.shape[0])

    def _evict(self, n: int, current: np.ndarray) -> None:
        """Drop ``n`` voxels by the rule of the module docstring (``current``: keys seen just now)."""
        below = self._count < self.min_observations
        in_current = np.isin(self._keys, current, assume_unique=True)
        # np.lexsort sorts by the last key first: in_current (False first), then not-below (below
        # first), then last_seen (oldest first), then count (fewest first).
        order = np.lexsort((self._count, self._last, ~below, in_current))
        keep = np.ones(self._keys.size, bool)
        keep[order[:n]] = False
        self._keys, self._xyz, self._rgb = self._keys[keep], self._xyz[keep], self._rgb[keep]
        self._count, self._first, self._last = self._count[keep], self._first[keep], self._last[keep]
        self.evicted += int(n)

    def insert_step(self, step: Any, mask_threshold: float = 0.5, min_confidence: float = 0.0,
                    decimation: int = 1, drop_dynamic: bool = True) -> int:
        """Insert every camera of a :class:`~vggt4d_ros.perception.pipeline.StepOutput` (``cameras[name]`` with
        ``points_cam``, ``rgb``, ``dynamic``, ``confidence``; ``T_odom_cam[name]``); see :func:`static_points`.
        Returns the number of points inserted."""
        n = 0
        for name, cam in step.cameras.items():
            xyz, rgb = static_points(cam.points_cam, cam.rgb, step.T_odom_cam[name], cam.dynamic, cam.confidence,
                                     mask_threshold=mask_threshold if drop_dynamic else None,
                                     min_confidence=min_confidence, decimation=decimation)
            n += self.insert(xyz, rgb, int(cam.stamp_ns))
        return n

    # ------------------------------------------------------------------ output
    def points(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxels with at least ``min_observations`` points: ``xyz`` (M, 3) float32 mean positions,
        ``rgb`` (M, 3) uint8 mean colours, ``counts`` (M,) int64 points received."""
        sel = self._count >= self.min_observations
        rgb = np.clip(np.rint(self._rgb[sel]), 0, 255).astype(np.uint8)
        return self._xyz[sel].astype(np.float32), rgb, self._count[sel].copy()

    def last_seen(self) -> np.ndarray:
        """(M,) int64 stamp of the latest observation of each voxel of :meth:`points` (same order)."""
        return self._last[self._count >= self.min_observations].copy()

    def save_ply(self, path: Union[str, Path]) -> Path:
        """Binary little-endian PLY: one ``vertex`` element, ``x y z`` float32, ``red green blue`` uchar."""
        xyz, rgb, _ = self.points()
        rec = np.empty(xyz.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"),
                                            ("green", "u1"), ("blue", "u1")])
        for j, k in enumerate("xyz"):
            rec[k] = xyz[:, j]
        for j, k in enumerate(("red", "green", "blue")):
            rec[k] = rgb[:, j]
        header = ("ply\nformat binary_little_endian 1.0\ncomment vggt4d_ros static map, voxel "
                  f"{self.voxel_size:g}\nelement vertex {rec.size}\nproperty float x\nproperty float y\n"
                  "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
                  "end_header\n")
        return _atomic_write(path, lambda f: (f.write(header.encode("ascii")), f.write(rec.tobytes())))

    def save_pcd(self, path: Union[str, Path]) -> Path:
        """PCD v0.7, ``DATA binary``: ``x y z`` float32 and ``rgb`` (0x00RRGGBB as float32, PCL's packing)."""
        xyz, rgb, _ = self.points()
        packed = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2].astype(np.uint32)
        rec = np.empty(xyz.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
        for j, k in enumerate("xyz"):
            rec[k] = xyz[:, j]
        rec["rgb"] = packed  # stored as the bit pattern of a float32 field, as PCL reads it
        n = rec.size
        header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\n"
                  f"TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
                  "DATA binary\n")
        return _atomic_write(path, lambda f: (f.write(header.encode("ascii")), f.write(rec.tobytes())))


def static_points(points_cam: np.ndarray, rgb: np.ndarray, T_odom_cam: np.ndarray,
                  dynamic: Optional[np.ndarray] = None, confidence: Optional[np.ndarray] = None,
                  mask_threshold: Optional[float] = 0.5, min_confidence: float = 0.0,
                  decimation: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """One camera's valid static points in odom.

    Args:
        points_cam: (H, W, 3) optical-frame points (NaN invalid).
        rgb: (H, W, 3) uint8 colours of the same grid.
        T_odom_cam: (4, 4) optical frame pose in odom.
        dynamic: (H, W) dynamic probability in [0, 1] or None.
        confidence: (H, W) depth confidence or None.
        mask_threshold: pixels with ``dynamic >= mask_threshold`` are dropped; None keeps them.
        min_confidence: pixels with ``confidence < min_confidence`` are dropped.
        decimation: keep every n-th pixel in both directions (>= 1).
    Returns:
        ``xyz`` (N, 3) float64 in odom, ``rgb`` (N, 3) uint8.
    """
    s = max(1, int(decimation))
    P = np.asarray(points_cam)[::s, ::s].reshape(-1, 3).astype(np.float64)
    C = np.asarray(rgb)[::s, ::s].reshape(-1, 3)
    keep = np.isfinite(P).all(axis=1)
    if dynamic is not None and mask_threshold is not None:
        keep &= ~(np.asarray(dynamic)[::s, ::s].reshape(-1) >= mask_threshold)
    if confidence is not None and min_confidence > 0:
        conf = np.asarray(confidence)[::s, ::s].reshape(-1)
        keep &= conf >= min_confidence
    T = np.asarray(T_odom_cam, dtype=np.float64)
    xyz = P[keep] @ T[:3, :3].T + T[:3, 3]
    return xyz, C[keep].astype(np.uint8, copy=False)


def _atomic_write(path: Union[str, Path], write: Callable[[Any], Any]) -> Path:
    """Write through a temporary file in the target's directory, fsync, then rename over ``path``."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# ---------------------------------------------------------------------------------------------- readers
def _split_header(data: bytes, end: bytes) -> Tuple[list, bytes]:
    i = data.index(end) + len(end)
    return data[:i].decode("ascii").splitlines(), data[i:]


def read_ply(path: Union[str, Path]) -> Tuple[np.ndarray, np.ndarray]:
    """Read back a file of :meth:`VoxelMap.save_ply`: ``xyz`` (N, 3) float32, ``rgb`` (N, 3) uint8."""
    lines, body = _split_header(Path(path).read_bytes(), b"end_header\n")
    if lines[0] != "ply" or "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: not a binary little-endian PLY")
    n = next(int(ln.split()[2]) for ln in lines if ln.startswith("element vertex"))
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rec = np.frombuffer(body, dtype=dt, count=n)
    return (np.stack([rec["x"], rec["y"], rec["z"]], axis=1),
            np.stack([rec["red"], rec["green"], rec["blue"]], axis=1))


def read_pcd(path: Union[str, Path]) -> Tuple[np.ndarray, np.ndarray]:
    """Read back a file of :meth:`VoxelMap.save_pcd`: ``xyz`` (N, 3) float32, ``rgb`` (N, 3) uint8."""
    lines, body = _split_header(Path(path).read_bytes(), b"DATA binary\n")
    fields = {ln.split()[0]: ln.split()[1:] for ln in lines if ln and not ln.startswith("#")}
    if fields.get("FIELDS") != ["x", "y", "z", "rgb"]:
        raise ValueError(f"{path}: unexpected PCD fields {fields.get('FIELDS')}")
    n = int(fields["POINTS"][0])
    rec = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")], count=n)
    c = rec["rgb"]
    rgb = np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=1).astype(np.uint8)
    return np.stack([rec["x"], rec["y"], rec["z"]], axis=1), rgb
