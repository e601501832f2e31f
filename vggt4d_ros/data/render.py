"""Vectorised numpy ray caster for the analytic scene of :mod:`vggt4d_ros.data.scene`.

Camera rays are built with ``z = 1`` in the optical frame (x right, y down, z forward), so the ray
parameter of the nearest hit IS the metric depth along the optical axis: depth is exact, not estimated.
Each primitive is intersected in its own object frame, only over the pixel rectangle that its bounding
sphere can cover; the nearest hit wins. Surface coordinates of the hit select a procedural texture
(:class:`~vggt4d_ros.data.textures.TextureBank`) and a Lambert model shades it: by default ambient plus two
fixed white directional lights, or any :class:`Lighting` (coloured lights, another ambient level).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .scene import Primitive, Scene
from .textures import TextureBank

Pose = Tuple[np.ndarray, np.ndarray]  # world-from-object rotation (3, 3), translation (3,)
EPS_T = 1e-6
_FACE_SHIFT = np.array([1.37, 2.71])
_LIGHTS = (
    (np.array([0.35, 0.25, 0.9]) / np.linalg.norm([0.35, 0.25, 0.9]), 0.55),
    (np.array([-0.6, -0.5, 0.3]) / np.linalg.norm([-0.6, -0.5, 0.3]), 0.25),
)
_AMBIENT = 0.42


class Lighting:
    """Ambient level plus directional lights: ``lights`` is a list of (unit direction (3,) in the world, RGB
    weight (3,)); ``ambient`` is an RGB (3,) level. :meth:`default` is the fixed two-light set-up."""

    def __init__(self, lights: Sequence[Tuple[np.ndarray, np.ndarray]], ambient: np.ndarray) -> None:
        self.lights = [(np.asarray(d, np.float64) / np.linalg.norm(d), np.asarray(w, np.float64).reshape(3))
                       for d, w in lights]
        self.ambient = np.asarray(ambient, np.float64).reshape(3)

    @classmethod
    def default(cls) -> "Lighting":
        return cls([(d, np.full(3, w)) for d, w in _LIGHTS], np.full(3, _AMBIENT))

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Lighting":
        """1-3 lights from random directions (mostly from above), warm or cool tints, ambient 0.25-0.6."""
        n = int(rng.integers(1, 4))
        lights = []
        for _ in range(n):
            d = rng.normal(size=3)
            d[2] = abs(d[2]) + 0.2 * float(rng.uniform() < 0.8)
            tint = 1.0 + rng.uniform(-0.15, 0.15, 3)
            lights.append((d, rng.uniform(0.15, 0.7) * tint))
        ambient = rng.uniform(0.25, 0.6) * (1.0 + rng.uniform(-0.08, 0.08, 3))
        return cls(lights, ambient)


def _mul(v: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``v @ M`` for (..., 3) rows and a (3, 3) or (3,) right operand.

    einsum is used because numpy's matmul of a tall (N, 3) array by a 3x3 matrix is several times slower.
    """
    return np.einsum("...j,jk->...k", v, M) if M.ndim == 2 else np.einsum("...j,j->...", v, M)


def pixel_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Optical-frame ray directions with z = 1 through every pixel centre: (H, W, 3) float64.

    Pixel (0, 0) is the centre of the top-left pixel (OpenCV / ROS CameraInfo convention).
    """
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    x = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def _slab(size: np.ndarray, o: np.ndarray, d: np.ndarray, exit_only: bool = False
          ) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """Entry and exit ray parameters of an origin-centred box with half extents ``size``: (N,), (N,).

    Per-axis loops over columns: numpy reductions over a length-3 last axis are several times slower.
    With ``exit_only`` (a ray starting inside the box) only the exit is computed and entry is None.
    """
    t_in: Optional[np.ndarray] = None
    t_out: Optional[np.ndarray] = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            dk = d[:, k]
            ok = o[..., k]
            inv = 1.0 / dk
            if exit_only:
                far = (np.where(dk > 0, size[k], -size[k]) - ok) * inv
            else:
                a = (-size[k] - ok) * inv
                b = (size[k] - ok) * inv
                near, far = np.minimum(a, b), np.maximum(a, b)
                t_in = near if t_in is None else np.maximum(t_in, near)
            t_out = far if t_out is None else np.minimum(t_out, far)
    assert t_out is not None
    return t_in, t_out


def intersect_local(kind: str, size: np.ndarray, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Nearest positive ray parameter against one primitive in its object frame.

    Args:
        kind: primitive kind; size: its size vector (see :mod:`scene`).
        o: (3,) ray origin, or (N, 3) one origin per ray; d: (N, 3) directions (any length).
    Returns:
        (N,) ray parameters, ``inf`` where the ray misses.
    """
    if kind == "room":
        _, t_exit = _slab(size, o, d, exit_only=True)
        return np.where(t_exit > EPS_T, t_exit, np.inf)
    if kind == "box":
        t_in, t_out = _slab(size, o, d)
        return np.where((t_out >= t_in) & (t_in > EPS_T), t_in, np.inf)
    if kind == "sphere":
        a = (d * d).sum(1)
        b = (d * o).sum(-1) if o.ndim == 2 else _mul(d, o)
        c = float(o @ o) - size[0] ** 2 if o.ndim == 1 else (o * o).sum(1) - size[0] ** 2
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / a
        return np.where((disc >= 0) & (t > EPS_T), t, np.inf)
    if kind == "ellipsoid":
        # the unit sphere in coordinates scaled by 1 / semi-axes (the ray parameter is unchanged)
        inv = 1.0 / np.asarray(size, np.float64)
        return intersect_local("sphere", np.ones(3), o * inv, d * inv)
    if kind == "cylinder":
        dx, dy = d[:, 0], d[:, 1]
        ox, oy, oz = (o[..., 0], o[..., 1], o[..., 2])
        a = dx * dx + dy * dy
        b = dx * ox + dy * oy
        c = ox * ox + oy * oy - size[0] ** 2
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-b - np.sqrt(disc)) / a
        z = oz + t * d[:, 2]
        return np.where((disc >= 0) & (t > EPS_T) & (np.abs(z) <= size[2]), t, np.inf)
    raise ValueError(f"unknown primitive kind {kind!r}")


def surface_local(kind: str, size: np.ndarray, p: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal, surface coordinates and face index of object-frame surface points.

    Args:
        p: (N, 3) points on the primitive's surface (object frame).
    Returns:
        normal (N, 3) unit, object frame, pointing towards the viewer side (into the room for the room);
        st (N, 2) surface coordinates in metres; face (N,) int.
    """
    n = p.shape[0]
    if kind in ("box", "room"):
        q = np.abs(p) / size
        axis = q.argmax(axis=1)
        sign = np.sign(p[np.arange(n), axis])
        normal = np.zeros_like(p)
        normal[np.arange(n), axis] = sign if kind == "box" else -sign
        other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        st = np.take_along_axis(p, other, axis=1)
        face = axis * 2 + (sign > 0)
        return normal, st, face
    if kind == "sphere":
        r = size[0]
        normal = p / r
        st = np.stack([np.arctan2(normal[:, 1], normal[:, 0]) * r,
                       np.arccos(np.clip(normal[:, 2], -1, 1)) * r], axis=1)
        return normal, st, np.zeros(n, np.int64)
    if kind == "ellipsoid":
        g = p / (np.asarray(size, np.float64) ** 2)  # gradient of sum((p / size)^2)
        normal = g / np.linalg.norm(g, axis=1, keepdims=True)
        q = p / np.asarray(size, np.float64)
        r = float(np.mean(size))
        st = np.stack([np.arctan2(q[:, 1], q[:, 0]) * r, np.arccos(np.clip(q[:, 2], -1, 1)) * r], axis=1)
        return normal, st, np.zeros(n, np.int64)
    if kind == "cylinder":
        r = size[0]
        normal = np.stack([p[:, 0] / r, p[:, 1] / r, np.zeros(n)], axis=1)
        st = np.stack([np.arctan2(p[:, 1], p[:, 0]) * r, p[:, 2]], axis=1)
        return normal, st, np.zeros(n, np.int64)
    raise ValueError(f"unknown primitive kind {kind!r}")


def _cull_rect(prim: Primitive, pose: Pose, R_wc: np.ndarray, c: np.ndarray, K: np.ndarray,
               width: int, height: int) -> Optional[Tuple[int, int, int, int]]:
    """Pixel rectangle (v0, v1, u0, u1) that can see the primitive, ``None`` if none can."""
    if prim.kind == "room":
        return 0, height, 0, width
    r = prim.bounding_radius()
    pc = R_wc.T @ (pose[1] - c)
    z = pc[2]
    if z + r <= 1e-3:
        return None
    if z - r <= 1e-2:
        return 0, height, 0, width
    xs = np.array([(pc[0] - r) / (z - r), (pc[0] - r) / (z + r), (pc[0] + r) / (z - r), (pc[0] + r) / (z + r)])
    ys = np.array([(pc[1] - r) / (z - r), (pc[1] - r) / (z + r), (pc[1] + r) / (z - r), (pc[1] + r) / (z + r)])
    us = K[0, 0] * xs + K[0, 1] * ys.mean() + K[0, 2]
    vs = K[1, 1] * ys + K[1, 2]
    skew_margin = abs(K[0, 1]) * (ys.max() - ys.min())
    u0 = int(np.clip(np.floor(us.min() - skew_margin) - 1, 0, width))
    u1 = int(np.clip(np.ceil(us.max() + skew_margin) + 2, 0, width))
    v0 = int(np.clip(np.floor(vs.min()) - 1, 0, height))
    v1 = int(np.clip(np.ceil(vs.max()) + 2, 0, height))
    if u1 <= u0 or v1 <= v0:
        return None
    return v0, v1, u0, u1


def cast_geometry(scene: Scene, poses: Sequence[Pose], K: np.ndarray, T_world_cam: np.ndarray,
                  width: int, height: int, rays: Optional[np.ndarray] = None
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit per pixel.

    Returns:
        depth (H, W) float64 metres along the optical axis, prim (H, W) int32 primitive index,
        world ray directions (H, W, 3) float64 (z = 1 in the optical frame).
    """
    if rays is None:
        rays = pixel_rays(K, width, height)
    R_wc, c = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d_world = _mul(rays, R_wc.T)
    zbuf = np.full((height, width), np.inf)
    ids = np.full((height, width), -1, np.int32)
    for pid, prim in enumerate(scene.primitives):
        R, t = poses[pid]
        rect = _cull_rect(prim, (R, t), R_wc, c, K, width, height)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        d_sub = d_world[v0:v1, u0:u1].reshape(-1, 3)
        o_l = R.T @ (c - t)
        hit = intersect_local(prim.kind, prim.size, o_l, _mul(d_sub, R)).reshape(v1 - v0, u1 - u0)
        zsub = zbuf[v0:v1, u0:u1]
        closer = hit < zsub
        zsub[closer] = hit[closer]
        ids[v0:v1, u0:u1][closer] = pid
    return zbuf, ids, d_world


def shade(scene: Scene, poses: Sequence[Pose], textures: TextureBank, depth: np.ndarray, ids: np.ndarray,
          d_world: np.ndarray, c: np.ndarray, focal: float, lighting: Optional[Lighting] = None) -> np.ndarray:
    """Textured, shaded colour of every pixel: (H, W, 3) float32 in [0, 255] (not clipped); ``lighting``
    default :meth:`Lighting.default`."""
    h, w = depth.shape
    flat_ids = ids.ravel()
    flat_depth = depth.ravel()
    dirs = d_world.reshape(-1, 3)
    n_pix = flat_ids.shape[0]
    normal_w = np.zeros((n_pix, 3))
    st = np.zeros((n_pix, 2))
    material = np.zeros(n_pix, np.int64)
    order = np.argsort(flat_ids, kind="stable")
    bounds = np.searchsorted(flat_ids[order], np.arange(len(scene.primitives) + 1))
    for pid, prim in enumerate(scene.primitives):
        sel = order[bounds[pid]:bounds[pid + 1]]
        if sel.size == 0:
            continue
        R, t = poses[pid]
        p_world = c + dirs[sel] * flat_depth[sel, None]
        p_local = _mul(p_world - t, R)
        n_l, st_l, face = surface_local(prim.kind, prim.size, p_local)
        normal_w[sel] = _mul(n_l, R.T)
        st[sel] = st_l + prim.tex_offset + face[:, None] * _FACE_SHIFT
        material[sel] = prim.material if prim.face_materials is None else prim.face_materials[face]
    dir_norm = np.linalg.norm(dirs, axis=1)
    cos_inc = np.abs((normal_w * dirs).sum(1)) / dir_norm
    footprint = flat_depth * dir_norm / focal / np.maximum(cos_inc, 0.2)
    albedo = textures.sample(material, st[:, 0], st[:, 1], footprint)
    if lighting is None:  # the fixed white set-up: one grey level per pixel
        light = np.full(n_pix, _AMBIENT)
        for ldir, weight in _LIGHTS:
            light += weight * np.maximum(_mul(normal_w, ldir), 0.0)
        return (albedo * light[:, None].astype(np.float32)).reshape(h, w, 3)
    light3 = np.broadcast_to(lighting.ambient, (n_pix, 3)).copy()
    for ldir, weight in lighting.lights:
        light3 += np.maximum(_mul(normal_w, ldir), 0.0)[:, None] * weight[None]
    return (albedo * light3.astype(np.float32)).reshape(h, w, 3)


def first_hit(scene: Scene, poses: Sequence[Pose], origin: np.ndarray, d: np.ndarray,
              skip: Optional[List[int]] = None) -> np.ndarray:
    """Nearest hit parameter along (N, 3) world rays from one (3,) origin, over every primitive: (N,)."""
    best = np.full(d.shape[0], np.inf)
    for pid, prim in enumerate(scene.primitives):
        if skip and pid in skip:
            continue
        R, t = poses[pid]
        best = np.minimum(best, intersect_local(prim.kind, prim.size, R.T @ (origin - t), _mul(d, R)))
    return best
