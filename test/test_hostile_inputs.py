"""Hostile input reaches the in-process node over real DDS (the style of test_node_faults.py).

Each bad message must be rejected with a throttled warning (read back from /rosout) and a diagnostics
entry (read back from /diagnostics), never crash the node, and never corrupt the window of the other
camera: the good camera's outputs continue, every output stays well-formed with monotonic stamps
(checked by vggt4d_ros.eval.integrity). Also: the model raising (out of memory) drops one window and
says why, cameras that all stop and resume, and lifecycle deactivate/activate while images flow.
"""
import math
import threading
import re
import time

import numpy as np
import pytest
from node_harness import DT, H, T0, W, NodeHarness, harness_fixture

NODE_TYPES = {"/vggt4d/odometry": "nav_msgs/msg/Odometry", "/vggt4d/status": "vggt4d_ros/msg/WindowStatus",
              "/vggt4d/cam0/depth": "sensor_msgs/msg/Image", "/vggt4d/cam1/depth": "sensor_msgs/msg/Image",
              "/vggt4d/cam0/depth/camera_info": "sensor_msgs/msg/CameraInfo",
              "/vggt4d/cam1/depth/camera_info": "sensor_msgs/msg/CameraInfo"}


class Harness(NodeHarness):
    """The node and a test node in one process; the test node publishes inputs and records outputs,
    /diagnostics and the node's /rosout warnings."""

    def __init__(self, **overrides):
        params = {"publish.camera_clouds": False, "publish.fused_cloud": False, "publish.dynamic_mask": False}
        params.update(overrides)
        super().__init__("hostile", NODE_TYPES, params, diagnostics=True, rosout=True)
        self.last_t, self.last_i = None, 0
        self.capfd, self.err = None, ""
        self.started, self.started_wall = time.monotonic(), time.time()

    def drive(self, steps, start=0, cam1=None, cam0=None, pace=1.0):
        """One step per ``DT``: a good cam0 image (or ``cam0(i, t)``) and ``cam1(i, t)`` (a good one when
        None; a callable returning (image, info), either may be None for a good one, or "skip")."""
        for i in range(start, start + steps):
            t = T0 + i * DT
            self.last_t, self.last_i = t, i
            for cam, fn in (("cam0", cam0), ("cam1", cam1)):
                got = fn(i, t) if fn is not None else (None, None)
                if got == "skip":
                    continue
                self.send(cam, t, image=got[0], info=got[1])
            n = len(self.msgs["/vggt4d/status"])
            # Pace by the node's acks; a step whose other camera sent nothing usable waits for the
            # synchroniser's slack (the next step), so the wait is short.
            self.wait(lambda: len(self.msgs["/vggt4d/status"]) > n, pace)

    # ------------------------------------------------------------------ outputs
    def camera_diag(self, cam):
        """The newest /diagnostics entry of camera ``cam``: (level, message, values)."""
        for arr in reversed(self.diag):
            for st in arr.status:
                if st.name.endswith(f"camera {cam}"):
                    return st.level[0] if isinstance(st.level, bytes) else int(st.level), st.message, {
                        kv.key: kv.value for kv in st.values}
        return None

    def tracking_diag(self):
        for arr in reversed(self.diag):
            for st in arr.status:
                if st.name.endswith(": tracking"):
                    return st.message, {kv.key: kv.value for kv in st.values}
        return None

    def warnings(self, text):
        """Warnings/errors of the node containing ``text``: from /rosout, and from the process's stderr
        (rcutils console output, captured by pytest) in case /rosout matched late."""
        # (records stamped before this harness started are an earlier node's, delivered as transient local)
        out = [m.msg for m in self.logs if m.level >= 30 and text in m.msg
               and m.stamp.sec + 1e-9 * m.stamp.nanosec >= self.started_wall - 1.0]
        if self.capfd is not None:
            self.err += self.capfd.readouterr().err
        seen = set(out)
        for line in self.err.splitlines():
            if ("[WARN]" in line or "[ERROR]" in line) and "[vggt4d]:" in line:
                msg = line.split("[vggt4d]: ", 1)[-1]
                if text in msg and msg not in seen:
                    out.append(msg)
                    seen.add(msg)
        return out


@pytest.fixture
def harness(capfd):
    def factory(**kw):
        h = Harness(**kw)
        h.capfd = capfd
        return h

    hs, make = harness_fixture(factory)
    yield make
    for h in hs:
        h.close()


def _finite_depths(msgs):
    for m in msgs:
        d = np.frombuffer(bytes(m.data), "<f4")
        assert not np.isinf(d).any() and np.isfinite(d).mean() > 0.5


def _assert_rejected_cleanly(h, cam, n_bad, reason):
    """``cam`` counted ``n_bad`` rejections, one throttled warning names the reason, diagnostics say WARN."""
    assert h.node.frontend.rejected.get(cam, 0) >= n_bad, h.node.frontend.rejected
    warns = h.warnings(f"camera {cam}")
    assert any(reason in w for w in warns), [m.msg for m in h.logs][-10:]
    # Throttled: at most one warning per kind of reason (its text before any ':' detail, numbers aside) per 5 s
    # of the harness's life, however long the machine's load stretches it, and far fewer than the rejections.
    same = [w for w in warns if reason in w]
    assert len(same) < n_bad, warns
    kinds: dict = {}
    for w in same:
        kind = re.sub(r"[0-9]+", "#", w.split(f"camera {cam}: ", 1)[-1].split(":")[0])
        kinds[kind] = kinds.get(kind, 0) + 1
    allowed = 1 + int((time.monotonic() - h.started) / 5.0)
    assert all(n <= allowed for n in kinds.values()), (kinds, allowed, same)
    assert h.wait(lambda: (h.camera_diag(cam) or (0,))[0] == 1
                  and int(h.camera_diag(cam)[2]["rejected"]) >= n_bad, 10), h.camera_diag(cam)
    level, text, values = h.camera_diag(cam)
    # A camera that sends only bad messages is also reported stale (no usable image); the count is there.
    assert ("rejected" in text or text.startswith("stale")) and int(values["rejected"]) >= n_bad, (text, values)


def _stamps(h, topic):
    from vggt4d_ros.eval.integrity import stamp_ns

    with h.lock:
        return [stamp_ns(m.header.stamp) for m in h.msgs[topic]]


def _assert_good_camera_and_integrity(h, good="cam0", min_outputs=2, errors=0):
    """After two more regular steps, the good camera's outputs reach the newest step sent (a slow model skips
    windows, never the newest one), all finite; every output well-formed with monotonic stamps; no inference
    error. (The regular steps matter: a step whose partner camera sent nothing usable is held by the
    synchroniser until a newer frame decides it, so the hostile phase's last step may be output late.)"""
    topic = f"/vggt4d/{good}/depth"
    h.drive(2, start=h.last_i + 1)
    assert h.wait(lambda: h.last_t in _stamps(h, topic), 120), (h.last_t, _stamps(h, topic)[-3:])
    assert h.count(topic) >= min_outputs
    _finite_depths(h.msgs[topic])
    time.sleep(0.3)
    rep = h.checker.report
    assert rep.ok, rep.as_dict()
    assert h.node.frontend.counters["errors"] == errors


def test_zero_size_huge_and_inconsistent_images(harness):
    h = harness(max_image_pixels=W * H)
    bad = [
        lambda t: h.image("cam1", t, width=0, height=0, data=b""),  # zero size
        lambda t: h.image("cam1", t, width=2 * W, height=H),  # above max_image_pixels
        lambda t: h.image("cam1", t, width=100_000, height=100_000, data=b"\x00" * 30),  # huge claim, tiny data
        lambda t: h.image("cam1", t, step=W * 3 - 1, data=b"\x00" * ((W * 3 - 1) * H)),  # step < width * 3
        lambda t: h.image("cam1", t, step=W * 3 + 16),  # padded rows, but data one row short
    ]
    bad[4] = lambda t, f=bad[4]: _short_by_a_row(f(t))
    h.drive(10, cam1=lambda i, t: (bad[i % len(bad)](t), None))
    assert h.count("/vggt4d/cam1/depth") == 0
    _assert_good_camera_and_integrity(h)
    for reason in ("zero size", "exceeds max_pixels", "step", "data has"):
        _assert_rejected_cleanly(h, "cam1", 10, reason)  # each distinct reason named, throttled


def _short_by_a_row(msg):
    msg.data = bytes(msg.data)[: -msg.step]
    return msg


@pytest.mark.parametrize("encoding,bpp,fill", [("foo42", 3, None), ("", 3, None), ("32FC1", 4, "nan-inf"),
                                              ("32FC3", 12, "nan-inf"), ("64FC1", 8, "inf")])
def test_unknown_and_float_encodings(harness, encoding, bpp, fill):
    h = harness()

    def bad(i, t):
        data = None
        if fill is not None:
            dtype = "<f8" if bpp == 8 else "<f4"
            n = W * H * bpp // np.dtype(dtype).itemsize
            vals = np.full(n, np.inf, dtype)
            if fill == "nan-inf":
                vals[::2] = np.nan
                vals[1::4] = -np.inf
            data = vals.tobytes()
        return h.image("cam1", t, encoding=encoding, bpp=bpp, data=data), None

    h.drive(6, cam1=bad)
    assert h.count("/vggt4d/cam1/depth") == 0
    _assert_good_camera_and_integrity(h)
    _assert_rejected_cleanly(h, "cam1", 6, "encoding")


@pytest.mark.parametrize("k", [
    [-100.0, 0, 56, 0, 100.0, 35, 0, 0, 1],  # negative focal
    [0.0, 0, 56, 0, 0.0, 35, 0, 0, 1],  # zero focal
    [1e12, 0, 56, 0, 1e12, 35, 0, 0, 1],  # huge focal
    [math.nan, 0, 56, 0, 100.0, 35, 0, 0, 1],  # NaN
    [100.0, 0, math.inf, 0, 100.0, 35, 0, 0, 1],  # Inf centre
])
def test_absurd_camera_info_never_reaches_the_model(harness, k):
    """With the CameraInfo intrinsics in use, a good CameraInfo first, then absurd ones: each absurd one is
    rejected (the good one stays), cam1's outputs stay finite, cam0 is untouched."""
    h = harness(**{"model.use_camera_info_intrinsics": True})
    h.drive(2)
    h.drive(6, start=2, cam1=lambda i, t: (None, h.camera_info("cam1", t, k=k)))
    _assert_good_camera_and_integrity(h)
    _assert_rejected_cleanly(h, "cam1", 6, "camera_info: absurd")
    _finite_depths(h.msgs["/vggt4d/cam1/depth"])
    for m in h.msgs["/vggt4d/cam1/depth/camera_info"]:
        assert all(math.isfinite(v) for v in m.k) and 0 < m.k[0] < 1e6
    assert h.wait(lambda: h.last_t in _stamps(h, "/vggt4d/cam1/depth"))  # it keeps its last good CameraInfo


def test_absurd_camera_info_from_the_start_holds_that_camera(harness):
    h = harness()
    h.drive(6, cam1=lambda i, t: (None, h.camera_info("cam1", t, width=0, height=0)))
    assert h.count("/vggt4d/cam1/depth") == 0
    _assert_good_camera_and_integrity(h)  # and cam1 starts once a valid CameraInfo comes
    _assert_rejected_cleanly(h, "cam1", 6, "camera_info: absurd")


def test_duplicated_and_reordered_messages(harness):
    h = harness()
    h.drive(3)
    # cam1 sends every frame twice, and pairs of frames in swapped order; cam0 is regular.
    t_list = [T0 + i * DT for i in range(3, 11)]
    order = [1, 0, 3, 2, 5, 4, 7, 6]
    for j, i in enumerate(order):
        h.send("cam0", t_list[j])
        img = h.image("cam1", t_list[i])
        h.send("cam1", t_list[i], image=img)
        h.send("cam1", t_list[i], image=img)  # duplicate
        n = h.count("/vggt4d/status")
        h.wait(lambda: h.count("/vggt4d/status") > n, 1.0)
    h.drive(3, start=11)
    _assert_good_camera_and_integrity(h)
    assert h.wait(lambda: h.camera_diag("cam1") is not None and int(h.camera_diag("cam1")[2]["duplicates"]) >= 4, 5), \
        h.camera_diag("cam1")
    # Outputs of cam1 stay in stamp order (checked by the integrity checker) and resume after the disorder.
    assert h.wait(lambda: h.last_t in _stamps(h, "/vggt4d/cam1/depth"))


def test_camera_info_changes_size_mid_stream(harness):
    h = harness()
    h.drive(3)
    n1 = h.count("/vggt4d/cam1/depth")
    assert n1 >= 1
    # CameraInfo says 160x90 while images are still 112x70: images rejected.
    h.info["cam1"].publish(h.camera_info("cam1", T0 + 3 * DT, 160, 90))
    assert h.wait(lambda: h.node.frontend.infos.get("cam1").width == 160, 10)
    h.drive(4, start=3, cam1=lambda i, t: (None, h.camera_info("cam1", t, 160, 90)))
    _assert_rejected_cleanly(h, "cam1", 4, "differs from its CameraInfo")
    # Then the images follow: the camera works at its new size.
    h.drive(5, start=7, cam1=lambda i, t: (h.image("cam1", t, width=160, height=90),
                                            h.camera_info("cam1", t, 160, 90)))
    # Step 10 or 11 (11 waits for a newer frame, or for the sync timeout when the machine is slow; a slow model
    # may then skip 10 for the newer 11).
    assert h.wait(lambda: {T0 + 10 * DT, T0 + 11 * DT} & set(_stamps(h, "/vggt4d/cam1/depth")))
    sizes = [(m.width, m.height) for m in h.msgs["/vggt4d/cam1/depth"]]
    assert sizes[0] == (W, H) and sizes[-1] == (160, 90)
    # A camera reconfigured between two frames (CameraInfo and images change together, no gap): the window
    # then holds both sizes of that camera.
    h.drive(4, start=12)
    _assert_good_camera_and_integrity(h)
    assert h.wait(lambda: h.msgs["/vggt4d/cam1/depth"][-1].width == W)
    infos = {(m.width, m.height) for m in h.msgs["/vggt4d/cam1/depth/camera_info"]}
    assert infos == {(W, H), (160, 90)}


def test_all_cameras_stop_then_resume(harness):
    h = harness()
    h.drive(5)
    assert h.wait(lambda: h.count("/vggt4d/odometry") >= 3)
    n = h.count("/vggt4d/odometry")
    # Silence: the diagnostics report both cameras stale.
    assert h.wait(lambda: all((h.camera_diag(c) or (0, ""))[1].startswith("stale") for c in ("cam0", "cam1")), 10)
    assert all(h.camera_diag(c)[0] == 1 for c in ("cam0", "cam1"))
    # Resume 3 s later in stamp time (below window.reset_on_time_jump_s): tracking goes on, no jump.
    h.drive(5, start=35)
    assert h.wait(lambda: h.count("/vggt4d/odometry") >= n + 3)
    assert h.wait(lambda: h.camera_diag("cam0")[1] == "ok", 15), h.camera_diag("cam0")
    _assert_good_camera_and_integrity(h)


@pytest.mark.parametrize("exc_name", ["OutOfMemoryError", "RuntimeError"])
def test_model_failure_drops_one_window_and_recovers(harness, exc_name):
    import torch

    h = harness()
    h.drive(3)
    assert h.wait(lambda: h.count("/vggt4d/odometry") >= 1)
    real = h.node._pipeline.predictor.predict
    calls = {"n": 0}
    exc_type = torch.cuda.OutOfMemoryError if exc_name == "OutOfMemoryError" else RuntimeError

    def failing_once(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise exc_type("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        return real(*a, **kw)

    h.node._pipeline.predictor.predict = failing_once
    n_odom = h.count("/vggt4d/odometry")
    i = 3
    while calls["n"] < 2 and i < 60:  # until a window after the failing one reached the model
        h.drive(1, start=i)
        i += 1
    h.drive(2, start=i)
    assert calls["n"] >= 2
    _assert_good_camera_and_integrity(h, errors=1)  # later windows processed, newest step output
    assert h.count("/vggt4d/odometry") > n_odom
    assert h.node.frontend.counters["errors"] == 1, h.node.frontend.counters
    said = [m.message for m in h.msgs["/vggt4d/status"] if "window dropped" in m.message]
    assert len(said) == 1 and exc_name in said[0] and "out of memory" in said[0], said
    assert any("inference failed" in w and exc_name in w for w in h.warnings("window dropped"))
    assert h.wait(lambda: h.tracking_diag() is not None and int(h.tracking_diag()[1]["errors"]) == 1, 5)
    rep = h.checker.report
    assert rep.ok, rep.as_dict()


def test_deactivate_activate_under_load_repeated(harness):
    h = harness()
    stop = threading.Event()
    sent = {"i": 0}

    def feed():
        while not stop.is_set():
            t = T0 + sent["i"] * DT
            for c in ("cam0", "cam1"):
                h.send(c, t)
            sent["i"] += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert h.wait(lambda: h.count("/vggt4d/odometry") >= 2)
        base = threading.active_count()
        for _ in range(3):
            h.node.trigger_deactivate()
            assert h.node._state_machine.current_state[1] == "inactive"
            assert h.node._worker is None and not h.node._subs
            time.sleep(0.3)  # images keep arriving while inactive
            h.node.trigger_activate()
            assert h.node._state_machine.current_state[1] == "active"
            n = h.count("/vggt4d/odometry")
            assert h.wait(lambda: h.count("/vggt4d/odometry") >= n + 1, 30)  # outputs resume each time
            assert threading.active_count() <= base
    finally:
        stop.set()
        feeder.join(timeout=5)
    assert h.node.frontend.counters["errors"] == 0
    for m in h.msgs["/vggt4d/odometry"]:
        p = m.pose.pose.position
        assert all(math.isfinite(v) for v in (p.x, p.y, p.z))
