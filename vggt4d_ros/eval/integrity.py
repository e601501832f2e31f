"""Output integrity of a running node: every message well-formed, stamps monotonic, odometry continuous.

:class:`IntegrityChecker` is fed decoded messages, from a live rclpy subscription or read back from a
bag with ``mcap_ros2`` (both expose the same field names), together with the ROS type name of each
topic. It never raises on a bad message: every finding is counted and the first few are kept with
their reason, so a soak run reports what went wrong rather than stopping.

Checks per type (``pkg/msg/Name``):

- ``sensor_msgs/msg/Image``: size > 0, ``step`` = width x bytes per pixel of the encoding, ``data``
  length = height x step, a known encoding; ``32FC1``: no +-Inf, every finite value > 0 (NaN is the
  REP 118 invalid marker); ``mono8`` masks (topic ending in ``dynamic_mask``): values only 0 or 255.
- ``sensor_msgs/msg/CameraInfo``: size > 0, K finite with fx, fy > 0, P[:, :3] = K.
- ``sensor_msgs/msg/PointCloud2``: row_step = point_step x width, data length = row_step x height,
  fields x, y, z inside point_step; an unorganised cloud (height 1) that says ``is_dense`` holds no NaN.
- ``nav_msgs/msg/Odometry``: finite position, unit quaternion, positive covariance diagonal, and
  the position step from the previous odometry at most ``max_odom_step_m`` (never a jump).
- ``vggt4d_ros/msg/TrackedKeypoints``: u, v finite inside the image, ids > 0.
- ``vggt4d_ros/msg/WindowStatus``: tracking state 0..3, finite scale > 0.
- ``tf2_msgs/msg/TFMessage``: unit quaternions, finite translations, non-empty frame ids.
- ``diagnostic_msgs/msg/DiagnosticArray``: level 0..3 (values are kept, see :attr:`last_diagnostics`).

Stamps: per topic the header stamps must increase strictly (``status`` too: the node orders its per-step
results and acknowledgements into one stream). A bag that loops makes the node reset and
its stamps start over: a backward step is accepted (and counted as ``loop_backsteps``) only when it
lands within ``loop_allow_s`` seconds of ``loop_start_ns`` (the first stamp of the bag); any other
backward or repeated stamp is a violation. When the caller counts the input's restarts (``loops``), a
backward step is accepted instead when it lands inside the input's stamp range and the topic has not
gone back more often than the input did, plus one (each loop restarts the stamps once; the node may see a
restart before the caller counts it). ``/diagnostics`` carries the node's clock, not acquisition
stamps, and is only required to be non-decreasing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["IntegrityChecker", "IntegrityReport", "stamp_ns"]

_BPP = {"32fc1": 4, "16uc1": 2, "mono8": 1, "8uc1": 1, "rgb8": 3, "bgr8": 3, "mono16": 2, "rgba8": 4,
        "bgra8": 4}


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rclpy or decoded) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class IntegrityReport:
    """Counts of what :class:`IntegrityChecker` saw (JSON-ready through :meth:`as_dict`)."""

    messages: Dict[str, int] = field(default_factory=dict)
    malformed: Dict[str, int] = field(default_factory=dict)
    stamp_violations: Dict[str, int] = field(default_factory=dict)
    loop_backsteps: Dict[str, int] = field(default_factory=dict)
    odom_steps: int = 0
    odom_max_step_m: float = 0.0
    odom_max_rot_step_deg: float = 0.0
    odom_jumps: int = 0
    examples: List[str] = field(default_factory=list)

    @property
    def total_messages(self) -> int:
        return int(sum(self.messages.values()))

    @property
    def ok(self) -> bool:
        return (self.total_messages > 0 and not any(self.malformed.values())
                and not any(self.stamp_violations.values()) and self.odom_jumps == 0)

    def as_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "total_messages": self.total_messages, "messages": dict(self.messages),
                "malformed": {k: v for k, v in self.malformed.items() if v},
                "stamp_violations": {k: v for k, v in self.stamp_violations.items() if v},
                "loop_backsteps": {k: v for k, v in self.loop_backsteps.items() if v},
                "odom_steps": self.odom_steps, "odom_max_step_m": self.odom_max_step_m,
                "odom_max_rot_step_deg": self.odom_max_rot_step_deg, "odom_jumps": self.odom_jumps,
                "examples": list(self.examples)}


class IntegrityChecker:
    """Check a stream of decoded node outputs; thread-safe enough for one executor thread per call.

    Args:
        max_odom_step_m: largest accepted position step between consecutive odometry messages.
        loop_start_ns: first acquisition stamp of the looping input (None: no backward step allowed).
        loop_allow_s: a backward step must land within this many seconds after ``loop_start_ns``.
        max_examples: how many violation texts are kept.
    """

    def __init__(self, max_odom_step_m: float = 1.0, loop_start_ns: Optional[int] = None, loop_allow_s: float = 2.0,
                 max_examples: int = 20, clock=None, loops=None, loop_end_ns: Optional[int] = None) -> None:
        self.max_odom_step_m = float(max_odom_step_m)
        self.loop_start_ns = loop_start_ns
        self.loop_allow_ns = int(loop_allow_s * 1e9)
        self.max_examples = int(max_examples)
        self.clock = clock  # optional callable -> seconds, printed with each violation
        # Optional callable -> number of times the input restarted so far (observed by the caller). With it,
        # a backward step is a loop when it lands inside [loop_start_ns, loop_end_ns] and the topic has not
        # gone back more often than the input did; without it, the landing rule of the module docstring.
        self.loops = loops
        self.loop_end_ns = loop_end_ns
        self.report = IntegrityReport()
        self._last_stamp: Dict[str, int] = {}
        self._last_seq: Dict[str, Optional[int]] = {}
        self._backsteps: Dict[str, int] = {}
        self._last_odom: Optional[tuple] = None  # (position (3,), quaternion xyzw (4,))
        self.last_diagnostics: Dict[str, Dict[str, str]] = {}

    # ------------------------------------------------------------------ bookkeeping
    def _bad(self, kind: str, topic: str, why: str) -> None:
        table = self.report.malformed if kind == "malformed" else self.report.stamp_violations
        table[topic] = table.get(topic, 0) + 1
        if len(self.report.examples) < self.max_examples:
            self.report.examples.append(f"{kind} {topic}: {why}{self._when() if kind == 'malformed' else ''}")

    def check(self, topic: str, msgtype: str, msg: Any, seq: Optional[int] = None) -> bool:
        """Check one message; returns True when it passed every check (odometry: and did not jump).

        ``seq``: the publisher's sequence number of the sample when the caller has it (rclpy's message
        info); a stamp violation then names both numbers, which tells a transport duplicate (same number)
        from a message the publisher sent twice (consecutive numbers)."""
        rep = self.report
        rep.messages[topic] = rep.messages.get(topic, 0) + 1
        before = rep.malformed.get(topic, 0) + rep.stamp_violations.get(topic, 0) + rep.odom_jumps
        fn = _CHECKS.get(msgtype)
        try:
            problems = fn(topic, msg) if fn is not None else []
        except Exception as exc:  # noqa: BLE001 - a message that breaks the checker is malformed
            problems = [f"unreadable ({exc!r})"]
        for p in problems:
            self._bad("malformed", topic, p)
        if msgtype == "nav_msgs/msg/Odometry" and not problems:
            self._odom_step(topic, msg)
        header = getattr(msg, "header", None)
        if header is not None:
            self._stamp(topic, stamp_ns(header.stamp), seq, diagnostics=msgtype.startswith("diagnostic_msgs/"))
        elif msgtype == "tf2_msgs/msg/TFMessage" and msg.transforms:
            self._stamp(topic, max(stamp_ns(t.header.stamp) for t in msg.transforms), seq)
        if msgtype == "diagnostic_msgs/msg/DiagnosticArray" and not problems:
            for st in msg.status:
                self.last_diagnostics[st.name] = {kv.key: kv.value for kv in st.values}
        return rep.malformed.get(topic, 0) + rep.stamp_violations.get(topic, 0) + rep.odom_jumps == before

    def _stamp(self, key: str, ns: int, seq: Optional[int] = None, diagnostics: bool = False) -> None:
        topic = key
        last = self._last_stamp.get(key)
        last_seq = self._last_seq.get(key)
        self._last_stamp[key] = ns
        self._last_seq[key] = seq
        if last is None:
            return
        if diagnostics:
            if ns < last:
                self._bad("stamp", topic, f"diagnostics stamp went back {(last - ns) * 1e-9:.3f} s")
            return
        if ns > last:
            return
        if ns < last and self._is_loop(key, ns):
            self.report.loop_backsteps[topic] = self.report.loop_backsteps.get(topic, 0) + 1
            self._backsteps[key] = self._backsteps.get(key, 0) + 1
            return
        what = "repeated" if ns == last else f"went back {(last - ns) * 1e-9:.3f} s"
        seqs = "" if seq is None else f", publisher sequence {last_seq} -> {seq}"
        self._bad("stamp", topic, f"stamp {ns} {what} (previous {last}{seqs}){self._when()}")

    def _is_loop(self, key: str, ns: int) -> bool:
        if self.loop_start_ns is None:
            return False
        if self.loops is None:
            return 0 <= ns - self.loop_start_ns <= self.loop_allow_ns
        end = self.loop_end_ns if self.loop_end_ns is not None else ns
        # One more than the restarts seen so far: the node may react to a restarted input before the
        # caller's own subscription counted it (two topics, no common order). A topic going back twice per
        # restart still fails from the second restart on.
        return self.loop_start_ns <= ns <= end and self._backsteps.get(key, 0) < int(self.loops()) + 1

    def _when(self) -> str:
        return "" if self.clock is None else f" at t={self.clock():.1f} s"

    def _odom_step(self, topic: str, msg: Any) -> None:
        p = msg.pose.pose.position
        q = msg.pose.pose.orientation
        pos = np.array([p.x, p.y, p.z], dtype=np.float64)
        quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
        last = self._last_odom
        self._last_odom = (pos, quat)
        if last is None:
            return
        rep = self.report
        rep.odom_steps += 1
        step = float(np.linalg.norm(pos - last[0]))
        dot = min(1.0, abs(float(np.dot(quat, last[1]))))
        rot = math.degrees(2.0 * math.acos(dot))
        rep.odom_max_step_m = max(rep.odom_max_step_m, step)
        rep.odom_max_rot_step_deg = max(rep.odom_max_rot_step_deg, rot)
        if step > self.max_odom_step_m:
            rep.odom_jumps += 1
            if len(rep.examples) < self.max_examples:
                rep.examples.append(f"jump {topic}: position step {step:.3f} m > {self.max_odom_step_m} m "
                                    f"at stamp {stamp_ns(msg.header.stamp)}{self._when()}")


# ---------------------------------------------------------------------- per-type checks
def _buf(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(bytes(data) if isinstance(data, list) else data, dtype=np.uint8)


def _frame(msg: Any) -> List[str]:
    return [] if str(msg.header.frame_id) else ["empty header.frame_id"]


def _image(topic: str, msg: Any) -> List[str]:
    out = _frame(msg)
    enc = str(msg.encoding).lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        return out + [f"zero size {w}x{h}"]
    bpp = _BPP.get(enc)
    if bpp is None:
        return out + [f"unexpected encoding {msg.encoding!r}"]
    if step != w * bpp:
        out.append(f"step {step} != width*{bpp}")
    data = _buf(msg.data)
    if data.size != h * step:
        return out + [f"data {data.size} bytes != height*step {h * step}"]
    if enc == "32fc1":
        v = data.view("<f4" if not int(msg.is_bigendian) else ">f4")
        if np.isinf(v).any():
            out.append("+-Inf in a 32FC1 image")
        fin = v[np.isfinite(v)]
        if topic.endswith("/depth") and fin.size and fin.min() <= 0:
            out.append(f"non-positive depth {float(fin.min())}")
    elif enc == "mono8" and topic.endswith("dynamic_mask"):
        if np.any((data != 0) & (data != 255)):
            out.append("mask values other than 0/255")
    return out


def _camera_info(topic: str, msg: Any) -> List[str]:
    out = _frame(msg)
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        out.append(f"zero size {msg.width}x{msg.height}")
    K = np.asarray(list(msg.k), dtype=np.float64).reshape(3, 3)
    P = np.asarray(list(msg.p), dtype=np.float64).reshape(3, 4)
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        out.append(f"bad K {K.ravel().tolist()}")
    elif not np.allclose(P[:, :3], K, rtol=1e-5, atol=1e-6):
        out.append("P[:, :3] differs from K")
    return out


def _cloud(topic: str, msg: Any) -> List[str]:
    out = _frame(msg)
    h, w, ps, rs = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    data = _buf(msg.data)
    if rs != ps * w:
        out.append(f"row_step {rs} != point_step*width {ps * w}")
    if data.size != rs * h:
        return out + [f"data {data.size} bytes != row_step*height {rs * h}"]
    fields = {f.name: int(f.offset) for f in msg.fields}
    if not {"x", "y", "z"} <= set(fields) or any(fields[k] + 4 > ps for k in "xyz"):
        return out + [f"fields {sorted(fields)} do not hold x, y, z inside point_step {ps}"]
    if h * w and ps % 4 == 0:
        xyz = data.view("<f4").reshape(h * w, ps // 4)[:, [fields["x"] // 4, fields["y"] // 4, fields["z"] // 4]]
        if np.isinf(xyz).any():
            out.append("+-Inf coordinates")
        if bool(msg.is_dense) and np.isnan(xyz).any():
            out.append("is_dense cloud holds NaN points")
    return out


def _unit_quat(q: Any) -> bool:
    n = q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w
    return math.isfinite(n) and abs(n - 1.0) < 1e-4


def _odometry(topic: str, msg: Any) -> List[str]:
    out = _frame(msg)
    if not str(msg.child_frame_id):
        out.append("empty child_frame_id")
    p = msg.pose.pose.position
    if not all(math.isfinite(v) for v in (p.x, p.y, p.z)):
        out.append("non-finite position")
    if not _unit_quat(msg.pose.pose.orientation):
        out.append("orientation is not a unit quaternion")
    cov = np.asarray(list(msg.pose.covariance), dtype=np.float64).reshape(6, 6)
    if not (np.diag(cov) > 0).all():
        out.append("pose covariance diagonal not positive")
    return out


def _keypoints(topic: str, msg: Any) -> List[str]:
    out = _frame(msg)
    w, h = int(msg.width), int(msg.height)
    if not msg.keypoints:
        return out
    uv = np.array([(k.u, k.v) for k in msg.keypoints], dtype=np.float64)
    ids = np.array([k.id for k in msg.keypoints], dtype=np.uint64)
    if not np.isfinite(uv).all():
        out.append("non-finite keypoint position")
    elif (uv < -0.5).any() or (uv[:, 0] > w - 0.5).any() or (uv[:, 1] > h - 0.5).any():
        out.append("keypoint outside the image")
    if (ids == 0).any() or len(np.unique(ids)) != len(ids):
        out.append("keypoint ids zero or repeated")
    return out


def _status(topic: str, msg: Any) -> List[str]:
    out = []
    if int(msg.tracking_state) not in (0, 1, 2, 3):
        out.append(f"tracking_state {msg.tracking_state}")
    if not (math.isfinite(msg.scale) and msg.scale > 0):
        out.append(f"scale {msg.scale}")
    return out


def _tf(topic: str, msg: Any) -> List[str]:
    out = []
    for t in msg.transforms:
        tr = t.transform.translation
        if not all(math.isfinite(v) for v in (tr.x, tr.y, tr.z)):
            out.append(f"non-finite translation {t.child_frame_id}")
        if not _unit_quat(t.transform.rotation):
            out.append(f"rotation of {t.child_frame_id} is not a unit quaternion")
        if not str(t.header.frame_id) or not str(t.child_frame_id):
            out.append("empty frame id")
    return out


def _diagnostics(topic: str, msg: Any) -> List[str]:
    out = []
    for st in msg.status:
        lvl = st.level[0] if isinstance(st.level, (bytes, bytearray)) else int(st.level)
        if lvl not in (0, 1, 2, 3):
            out.append(f"level {lvl} of {st.name}")
    return out


_CHECKS = {
    "sensor_msgs/msg/Image": _image,
    "sensor_msgs/msg/CameraInfo": _camera_info,
    "sensor_msgs/msg/PointCloud2": _cloud,
    "nav_msgs/msg/Odometry": _odometry,
    "vggt4d_ros/msg/TrackedKeypoints": _keypoints,
    "vggt4d_ros/msg/WindowStatus": _status,
    "tf2_msgs/msg/TFMessage": _tf,
    "diagnostic_msgs/msg/DiagnosticArray": _diagnostics,
}
