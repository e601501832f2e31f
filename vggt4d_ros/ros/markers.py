"""RViz markers for the persistent keypoints: ``visualization_msgs/MarkerArray``.

One ``SPHERE_LIST`` marker (id 0) holds every keypoint with a known 3D position, each point coloured by
its keypoint id (the same id keeps its colour from window to window); with ``labels`` a
``TEXT_VIEW_FACING`` marker per keypoint shows its id just above the sphere (marker id = keypoint id
modulo 2^31, in namespace ``<ns>/ids``). When the set of ids differs from the previous message's
(``previous_ids``), the array starts with a ``DELETEALL`` marker so labels of dead tracks disappear at once
instead of waiting for their lifetime. :class:`KeypointMarkers` remembers the previous set for you.

Positions are in ``header.frame_id`` (the optical frame of the camera the keypoints come from, or odom
after transforming them); rows with a non-finite coordinate (depth unknown) are skipped.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

__all__ = ["keypoint_markers", "id_colors", "KeypointMarkers"]

_GOLDEN = 0.6180339887498949


def id_colors(ids: np.ndarray) -> np.ndarray:
    """(N,) ids -> (N, 3) float RGB in [0, 1]: hue = frac(id * golden ratio), saturation 0.8, value 1."""
    h = np.mod(np.asarray(ids, dtype=np.float64) * _GOLDEN, 1.0) * 6.0
    s, v = 0.8, 1.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    vv = np.full_like(h, v)
    pp = np.full_like(h, p)
    table = np.stack([np.stack([vv, t, pp], -1), np.stack([q, vv, pp], -1), np.stack([pp, vv, t], -1),
                      np.stack([pp, q, vv], -1), np.stack([t, pp, vv], -1), np.stack([vv, pp, q], -1)])
    return table[i, np.arange(h.size)] if h.size else np.zeros((0, 3))


def _duration(seconds: float) -> Duration:
    seconds = max(0.0, float(seconds))
    sec = int(math.floor(seconds))
    return Duration(sec=sec, nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


def keypoint_markers(header: Header, xyz: np.ndarray, ids: np.ndarray, ns: str = "keypoints",
                     lifetime_s: float = 0.0, previous_ids: Optional[Iterable[int]] = None,
                     labels: bool = True, scale: float = 0.05, alpha: float = 1.0,
                     label_offset: Optional[Sequence[float]] = None) -> MarkerArray:
    """MarkerArray of keypoints.

    Args:
        header: frame and stamp of the positions.
        xyz: (N, 3) positions in ``header.frame_id``; non-finite rows are skipped.
        ids: (N,) keypoint ids (unsigned; stable across windows).
        ns: marker namespace (the id labels use ``<ns>/ids``).
        lifetime_s: marker lifetime in seconds (0 = until replaced or deleted).
        previous_ids: ids of the previous message; a DELETEALL comes first when the set differs
            (None: always, which also clears markers left by an earlier run).
        labels: add one text marker per keypoint with its id.
        scale: sphere diameter and text height (frame units).
        alpha: opacity of spheres and labels.
        label_offset: (3,) shift of a label from its point; default ``(0, -1.5 * scale, 0)``, "up" in an
            optical frame (y down); pass ``(0, 0, 1.5 * scale)`` for a z-up frame such as odom.
    Returns:
        ``[DELETEALL?] + [SPHERE_LIST id 0] + [TEXT_VIEW_FACING per keypoint]`` (the sphere list is
        always present, empty when no keypoint has a position).
    """
    P = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    I = np.asarray(ids).reshape(-1).astype(np.uint64)
    if P.shape[0] != I.shape[0]:
        raise ValueError(f"{P.shape[0]} positions but {I.shape[0]} ids")
    ok = np.isfinite(P).all(axis=1)
    P, I = P[ok], I[ok]
    out = MarkerArray()
    prev = None if previous_ids is None else {int(i) for i in previous_ids}
    if prev is None or prev != {int(i) for i in I}:
        out.markers.append(Marker(header=header, ns=ns, id=0, action=Marker.DELETEALL))
    life = _duration(lifetime_s)
    off = np.array([0.0, -1.5 * scale, 0.0]) if label_offset is None else np.asarray(label_offset, np.float64)
    cols = id_colors(I)
    spheres = Marker(header=header, ns=ns, id=0, type=Marker.SPHERE_LIST, action=Marker.ADD, lifetime=life,
                     frame_locked=False)
    spheres.pose.orientation.w = 1.0
    spheres.scale.x = spheres.scale.y = spheres.scale.z = float(scale)
    spheres.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=float(alpha))
    # One Python object per point is unavoidable with rclpy message sequences.
    spheres.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in P]
    spheres.colors = [ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=float(alpha)) for c in cols]
    out.markers.append(spheres)
    if labels:
        for p, k, c in zip(P, I, cols):
            m = Marker(header=header, ns=f"{ns}/ids", id=int(k) & 0x7FFFFFFF, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, lifetime=life, text=str(int(k)))
            q = p + off
            m.pose.position = Point(x=float(q[0]), y=float(q[1]), z=float(q[2]))
            m.pose.orientation.w = 1.0
            m.scale.z = float(scale)
            m.color = ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=float(alpha))
            out.markers.append(m)
    return out


class KeypointMarkers:
    """Keeps the previous id set per namespace so :func:`keypoint_markers` sends DELETEALL only when the set
    of keypoints changes."""

    def __init__(self, lifetime_s: float = 0.0, labels: bool = True, scale: float = 0.05) -> None:
        self.lifetime_s = float(lifetime_s)
        self.labels = bool(labels)
        self.scale = float(scale)
        self._prev: dict = {}

    def reset(self) -> None:
        self._prev.clear()

    def build(self, header: Header, xyz: np.ndarray, ids: np.ndarray, ns: str = "keypoints") -> MarkerArray:
        msg = keypoint_markers(header, xyz, ids, ns=ns, lifetime_s=self.lifetime_s, previous_ids=self._prev.get(ns),
                               labels=self.labels, scale=self.scale)
        P = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        self._prev[ns] = {int(i) for i, ok in zip(np.asarray(ids).reshape(-1), np.isfinite(P).all(axis=1)) if ok}
        return msg
