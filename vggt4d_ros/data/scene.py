"""Analytic scene of the synthetic data generator: a room, static objects, moving objects, a rig path.

Everything here is a closed-form function of time, so poses and geometry are exact at any instant.
World frame (REP 103): x forward, y left, z up, metres; the floor is ``z = 0``.

Primitive kinds (all in the primitive's own object frame, world-from-object pose ``(R, t)``):

- ``"room"``: the inside of an axis-aligned box, half extents ``size`` (3,), rays leave through it;
- ``"box"``: an oriented box, half extents ``size`` (3,);
- ``"sphere"``: radius ``size[0]``;
- ``"ellipsoid"``: semi-axes ``size`` (3,) along the object axes;
- ``"cylinder"``: vertical cylinder, radius ``size[0]``, spanning object-frame ``z`` in ``[-size[2], size[2]]``
  (used for floor-to-ceiling pillars, so its caps are never seen and are not modelled).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

KINDS = ("room", "box", "sphere", "cylinder", "ellipsoid")
#: kinds a moving object can be
MOVING_KINDS = ("box", "sphere", "ellipsoid")


@dataclass
class Motion:
    """Smooth motion of a moving object; ``tau`` is scene time (seconds times the speed factor).

    position(tau) = centre + amplitude * sin(omega * tau + phase)   (per axis, (3,) arrays)
    rotation(tau) = Rotation.from_rotvec(spin_axis * spin_rate * tau) * rot0
    """

    centre: np.ndarray
    amplitude: np.ndarray
    omega: np.ndarray
    phase: np.ndarray
    spin_axis: np.ndarray
    spin_rate: float
    rot0: np.ndarray  # (3, 3)

    def pose(self, tau: float) -> Tuple[np.ndarray, np.ndarray]:
        """World-from-object rotation (3, 3) and translation (3,) at scene time ``tau``."""
        t = self.centre + self.amplitude * np.sin(self.omega * tau + self.phase)
        spin = Rotation.from_rotvec(self.spin_axis * (self.spin_rate * tau)).as_matrix()
        return spin @ self.rot0, t

    def positions(self, taus: np.ndarray) -> np.ndarray:
        """Object origin at many scene times: (T,) -> (T, 3)."""
        taus = np.asarray(taus, dtype=np.float64)[:, None]
        return self.centre + self.amplitude * np.sin(self.omega * taus + self.phase)


@dataclass
class Primitive:
    """One analytic surface with its material.

    ``size`` meaning depends on ``kind`` (see module docstring). ``material`` indexes the texture
    bank; ``tex_offset`` (2,) metres shifts the texture so equal materials look different.
    """

    kind: str
    size: np.ndarray
    material: int
    tex_offset: np.ndarray
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))
    motion: Optional[Motion] = None
    moving_index: int = -1  # index among the moving objects, -1 for static primitives
    face_materials: Optional[np.ndarray] = None  # (6,) per-face material of a box/room (face = 2 axis + side)

    @property
    def dynamic(self) -> bool:
        return self.motion is not None

    def pose(self, tau: float) -> Tuple[np.ndarray, np.ndarray]:
        """World-from-object rotation (3, 3) and translation (3,) at scene time ``tau``."""
        if self.motion is None:
            return self.R, self.t
        return self.motion.pose(tau)

    def bounding_radius(self) -> float:
        """Radius of a sphere around the object origin that contains the primitive."""
        if self.kind == "sphere":
            return float(self.size[0])
        if self.kind == "cylinder":
            return float(np.hypot(self.size[0], self.size[2]))
        if self.kind == "ellipsoid":
            return float(np.max(self.size))
        return float(np.linalg.norm(self.size))


@dataclass
class RigPath:
    """Smooth closed path of ``base_link``: an ellipse around the room centre with a gentle wobble.

    ``tau`` is scene time. Heading follows the path tangent plus small yaw/pitch/roll oscillations, plus
    an optional pan (yaw, ``pan_amp`` radians at ``pan_hz``) and tilt (pitch, ``tilt_amp``) so the cameras
    rotate on their own, not only as the path turns (0: none, the default).
    """

    a: float
    b: float
    height: float
    phi0: float
    direction: float  # +1 counter-clockwise, -1 clockwise
    speed_mps: float
    wobble_phase: np.ndarray  # (4,) phases of z, yaw, pitch, roll wobble
    pan_amp: float = 0.0  # radians
    pan_hz: float = 0.15  # cycles per unit of scene time
    tilt_amp: float = 0.0  # radians
    pan_phase: float = 0.0

    def _phi(self, tau: np.ndarray) -> np.ndarray:
        mean_radius = 0.5 * (self.a + self.b)
        return self.phi0 + self.direction * self.speed_mps / mean_radius * tau

    def position(self, tau: np.ndarray) -> np.ndarray:
        """Base origin in the world: (T,) -> (T, 3)."""
        tau = np.atleast_1d(np.asarray(tau, dtype=np.float64))
        phi = self._phi(tau)
        z = self.height + 0.06 * np.sin(2 * np.pi * 0.25 * tau + self.wobble_phase[0])
        return np.stack([self.a * np.cos(phi), self.b * np.sin(phi), z], axis=-1)

    def pose(self, tau: float) -> np.ndarray:
        """World-from-base 4x4 transform at scene time ``tau``."""
        phi = float(self._phi(np.asarray([tau]))[0])
        tangent = self.direction * np.array([-self.a * np.sin(phi), self.b * np.cos(phi)])
        w = self.wobble_phase
        yaw = np.arctan2(tangent[1], tangent[0]) + 0.12 * np.sin(2 * np.pi * 0.13 * tau + w[1])
        pitch = 0.04 * np.sin(2 * np.pi * 0.21 * tau + w[2])
        if self.pan_amp or self.tilt_amp:
            yaw += self.pan_amp * np.sin(2 * np.pi * self.pan_hz * tau + self.pan_phase)
            pitch += self.tilt_amp * np.sin(2 * np.pi * 0.7 * self.pan_hz * tau + 2.0 * self.pan_phase)
        roll = 0.025 * np.sin(2 * np.pi * 0.17 * tau + w[3])
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()
        T[:3, 3] = self.position(np.asarray([tau]))[0]
        return T


@dataclass
class Scene:
    """The whole static + dynamic scene. ``primitives[0]`` is the room."""

    primitives: List[Primitive]
    rig_path: RigPath
    room_half: np.ndarray  # (3,) half extents; the room spans x,y in [-hx, hx] x [-hy, hy], z in [0, 2 hz]

    @property
    def moving(self) -> List[Primitive]:
        """The moving primitives, ordered by ``moving_index``."""
        return [p for p in self.primitives if p.dynamic]


def _dist_to_polyline(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance in the xy plane from each of (P, 2) points to the closest of (Q, 2) dense samples."""
    d = points[:, None, :] - poly[None, :, :]
    return np.sqrt((d**2).sum(-1)).min(axis=1)


def build_scene(
    rng: np.random.Generator,
    *,
    num_static_objects: int,
    num_moving_objects: int,
    num_materials: int,
    rig_speed_mps: float,
    object_speed_mps: float,
    rig_taus: np.ndarray,
    room_size: Tuple[float, float, float] = (12.0, 9.0, 3.2),
    rig_height: float = 1.3,
    rig_reach: float = 0.0,
    static_kinds: Tuple[str, ...] = ("box", "box", "cylinder", "sphere"),
    moving_kinds: Tuple[str, ...] = ("box", "sphere"),
) -> Scene:
    """Lay out a random but valid scene.

    Static objects keep clear of the whole rig path; moving objects keep clear of the rig positions at
    ``rig_taus`` (the scene times of every frame), so the cameras never enter an object. ``rig_reach`` is
    the largest distance of a camera from ``base_link``. ``static_kinds`` / ``moving_kinds``: the kinds drawn
    (uniformly from the list; repeat a kind to weight it) for static and moving objects.
    """
    for k in tuple(static_kinds) + tuple(moving_kinds):
        if k not in KINDS or k == "room":
            raise ValueError(f"unknown object kind {k!r}; known: {list(KINDS[1:])}")
    if "cylinder" in moving_kinds:
        raise ValueError("a moving object cannot be a cylinder (pillars span floor to ceiling)")
    hx, hy, hz = room_size[0] / 2, room_size[1] / 2, room_size[2] / 2
    room = Primitive(
        "room", np.array([hx, hy, hz]), int(rng.integers(num_materials)), rng.uniform(0, 50, 2),
        t=np.array([0.0, 0.0, hz]),
        face_materials=rng.choice(num_materials, 6, replace=num_materials < 6),
    )
    path = RigPath(
        a=hx * 0.5, b=hy * 0.45, height=rig_height, phi0=float(rng.uniform(0, 2 * np.pi)),
        direction=float(rng.choice([-1.0, 1.0])), speed_mps=rig_speed_mps,
        wobble_phase=rng.uniform(0, 2 * np.pi, 4),
    )
    phis = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    ellipse = np.stack([path.a * np.cos(phis), path.b * np.sin(phis)], -1)
    prims = [room]

    def material() -> int:
        return int(rng.integers(num_materials))

    placed = 0
    tries = 0
    while placed < num_static_objects and tries < 200 * max(1, num_static_objects):
        tries += 1
        kind = rng.choice(list(static_kinds))
        if kind == "cylinder":
            size = np.array([rng.uniform(0.15, 0.4), 0.0, hz])
            foot = size[0]
        elif kind == "box":
            size = np.array([rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.2, 1.0)])
            foot = float(np.hypot(size[0], size[1]))
        elif kind == "ellipsoid":
            size = rng.uniform([0.15, 0.15, 0.15], [0.6, 0.6, 0.6])
            foot = float(size.max())
        else:
            size = np.array([rng.uniform(0.2, 0.6), 0.0, 0.0])
            foot = size[0]
        xy = rng.uniform([-hx + foot + 0.05, -hy + foot + 0.05], [hx - foot - 0.05, hy - foot - 0.05])
        if _dist_to_polyline(xy[None], ellipse)[0] < foot + 0.8 + rig_reach:
            continue
        if kind == "cylinder":
            t = np.array([xy[0], xy[1], hz])
            R = np.eye(3)
        elif kind == "box":
            stacked = rng.uniform() < 0.3
            t = np.array([xy[0], xy[1], size[2] + (rng.uniform(0.3, 1.2) if stacked else 0.0)])
            R = Rotation.from_euler("z", rng.uniform(0, np.pi)).as_matrix()
        else:
            t = np.array([xy[0], xy[1], foot + rng.uniform(0.0, 1.2)])
            R = Rotation.from_quat(rng.normal(size=4)).as_matrix()  # uniform rotation; any scipy
        prims.append(Primitive(str(kind), size, material(), rng.uniform(0, 50, 2), R=R, t=t))
        placed += 1

    rig_xyz = path.position(rig_taus)
    moving_index = 0
    for _ in range(num_moving_objects):
        for attempt in range(400):
            kind = str(rng.choice(list(moving_kinds)))
            if kind == "box":
                size = rng.uniform([0.15, 0.15, 0.15], [0.45, 0.45, 0.45])
            elif kind == "ellipsoid":
                size = rng.uniform([0.12, 0.12, 0.12], [0.5, 0.5, 0.5])
            else:
                size = np.array([rng.uniform(0.2, 0.5), 0.0, 0.0])
            radius = float(np.linalg.norm(size)) if kind == "box" else float(np.max(size))
            amp_xy = rng.uniform(0.4, 1.5, 2)
            amplitude = np.array([amp_xy[0], amp_xy[1], rng.uniform(0.0, 0.3)])
            margin = radius + 0.05
            lo = np.array([-hx + margin + amplitude[0], -hy + margin + amplitude[1], margin + amplitude[2]])
            hi = np.array([hx - margin - amplitude[0], hy - margin - amplitude[1], 2 * hz - margin - amplitude[2]])
            if np.any(hi <= lo):
                continue
            # centre the motion a few metres ahead of the rig at a random frame, so it is seen
            T_view = path.pose(float(rng.choice(rig_taus)))
            ahead = T_view[:3, :3] @ np.array([rng.uniform(1.8, 4.5), rng.uniform(-1.5, 1.5), 0.0])
            centre = np.clip(T_view[:3, 3] + ahead, lo, hi)
            centre[2] = np.clip(rng.uniform(0.4, 2.0), lo[2], hi[2])
            # per-axis angular rates giving roughly object_speed_mps along the path
            omega = np.concatenate([
                object_speed_mps / np.maximum(amplitude[:2], 1e-3) * rng.uniform(0.5, 1.0, 2),
                [rng.uniform(0.5, 1.5)],
            ])
            motion = Motion(
                centre=centre, amplitude=amplitude, omega=omega, phase=rng.uniform(0, 2 * np.pi, 3),
                spin_axis=(lambda v: v / np.linalg.norm(v))(rng.normal(size=3) if kind != "box"
                                                           else np.array([0.0, 0.0, 1.0])),
                spin_rate=float(rng.uniform(-1.0, 1.0)),
                rot0=Rotation.from_euler("z", rng.uniform(0, np.pi)).as_matrix(),
            )
            obj_xyz = motion.positions(rig_taus)
            clearance = np.linalg.norm(obj_xyz - rig_xyz, axis=-1).min()
            if clearance < radius + 0.6 + rig_reach - 0.001 * attempt:
                continue
            prims.append(Primitive(kind, size, material(), rng.uniform(0, 50, 2), motion=motion,
                                   moving_index=moving_index))
            moving_index += 1
            break
    return Scene(prims, path, np.array([hx, hy, hz]))
