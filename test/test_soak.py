"""Soak testing: the integrity checker against messages built by the node's own converters (good ones pass,
each kind of damage is caught), the verdict on synthetic time series, and a short real soak (`vggt4d-soak`
for about a minute: the node as a subprocess on a looping synthetic bag over DDS)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vggt4d_ros.eval.integrity import IntegrityChecker
from vggt4d_ros.perception.pipeline import EMBEDDED_DIR
from vggt4d_ros.rosenv import localhost_env
from vggt4d_ros.tools.soak import effective_params, output_topics, proc_status, verdict

ROOT = Path(__file__).resolve().parents[1]
D, M = "/vggt4d/cam0/depth", "/vggt4d/cam0/dynamic_mask"
T0 = 1_700_000_000_000_000_000
DT = 100_000_000


def _header(t_ns, frame="cam0_optical_frame"):
    from std_msgs.msg import Header

    from vggt4d_ros.ros.conversions import ns_to_stamp

    return Header(stamp=ns_to_stamp(t_ns), frame_id=frame)


def _depth(t_ns, value=2.0):
    from vggt4d_ros.ros.conversions import depth_to_msg

    d = np.full((6, 8), value, np.float32)
    d[0, 0] = np.nan  # REP 118 invalid marker: allowed
    return depth_to_msg(d, _header(t_ns))


def _odom(t_ns, x):
    from vggt4d_ros.ros.transforms import odometry_msg

    T = np.eye(4)
    T[0, 3] = x
    return odometry_msg(_header(t_ns, "odom").stamp, "odom", "base_link", T, pose_cov=[0.01] * 6)


def test_good_stream_passes_and_each_damage_is_caught():
    from vggt4d_ros.ros.conversions import camera_info_msg, mask_to_msg
    from vggt4d_ros.ros.pointcloud import points_to_cloud

    chk = IntegrityChecker(max_odom_step_m=0.5)
    K = np.array([[50.0, 0, 4], [0, 50.0, 3], [0, 0, 1]])
    for i in range(5):
        t = T0 + i * DT
        assert chk.check(D, "sensor_msgs/msg/Image", _depth(t))
        assert chk.check("/i", "sensor_msgs/msg/CameraInfo", camera_info_msg(K, 8, 6, _header(t)))
        assert chk.check(M, "sensor_msgs/msg/Image", mask_to_msg(np.eye(6, 8, dtype=np.float32), _header(t)))
        pts = np.random.default_rng(i).normal(size=(6, 8, 3)).astype(np.float32)
        assert chk.check("/p", "sensor_msgs/msg/PointCloud2", points_to_cloud(pts, _header(t), organized=True))
        assert chk.check("/o", "nav_msgs/msg/Odometry", _odom(t, 0.1 * i))
    assert chk.report.ok and chk.report.total_messages == 25
    assert math.isclose(chk.report.odom_max_step_m, 0.1, rel_tol=1e-9)

    t = T0 + 10 * DT
    bad = _depth(t)
    bad.data = np.full(48, np.inf, "<f4").tobytes()  # (the converter itself writes NaN for Inf)
    assert not chk.check(D, "sensor_msgs/msg/Image", bad)  # Inf depth
    bad = _depth(t + DT)
    bad.step = 31
    assert not chk.check(D, "sensor_msgs/msg/Image", bad)  # step inconsistent with width
    bad = _depth(t + 2 * DT)
    bad.data = bytes(bad.data)[:-4]
    assert not chk.check(D, "sensor_msgs/msg/Image", bad)  # data short
    bad = _depth(t + 3 * DT)
    bad.data = np.full(48, -1.0, "<f4").tobytes()
    assert not chk.check(D, "sensor_msgs/msg/Image", bad)  # negative depth
    m = mask_to_msg(np.zeros((6, 8), np.float32), _header(t))
    m.data = bytes([7] * 48)
    assert not chk.check(M, "sensor_msgs/msg/Image", m)  # mask not 0/255
    info = camera_info_msg(K, 8, 6, _header(t))
    info.k = [0.0] * 9
    assert not chk.check("/i", "sensor_msgs/msg/CameraInfo", info)  # fx = 0
    cloud = points_to_cloud(np.full((2, 2, 3), np.nan, np.float32), _header(t), organized=True)
    cloud.is_dense = True
    assert not chk.check("/p", "sensor_msgs/msg/PointCloud2", cloud)  # says dense, holds NaN
    assert not chk.check("/o", "nav_msgs/msg/Odometry", _odom(t, 3.0))  # a 2.6 m jump: well-formed, but a jump
    assert chk.report.odom_jumps == 1
    assert not chk.check("/o", "nav_msgs/msg/Odometry", _odom(t - 20 * DT, 3.0))  # stamp went back, no loop
    rep = chk.report.as_dict()
    assert not rep["ok"]
    assert rep["malformed"] == {D: 5, M: 1, "/i": 1, "/p": 1}  # one per problem: the bad step is two
    assert rep["stamp_violations"] == {"/o": 1}


def test_loop_backsteps_allowed_once_per_input_restart():
    restarts = {"n": 0}
    chk = IntegrityChecker(loop_start_ns=T0, loop_end_ns=T0 + 39 * DT, loops=lambda: restarts["n"])
    for i in range(10, 40):
        assert chk.check("/d", "sensor_msgs/msg/Image", _depth(T0 + i * DT))
    # The node may see a restart before the monitor counts it: one backstep ahead of the count passes.
    assert chk.check("/d", "sensor_msgs/msg/Image", _depth(T0 + 2 * DT))
    assert chk.check("/d", "sensor_msgs/msg/Image", _depth(T0 + 5 * DT))
    assert not chk.check("/d", "sensor_msgs/msg/Image", _depth(T0 + 3 * DT))  # a second backstep, no restart
    restarts["n"] = 1  # the monitor now counted the one restart
    assert not chk.check("/d", "sensor_msgs/msg/Image", _depth(T0 + 3 * DT))  # repeated stamp
    assert chk.check("/d", "sensor_msgs/msg/Image", _depth(T0 + 45 * DT))  # forward again: fine
    rep = chk.report.as_dict()
    assert rep["loop_backsteps"] == {"/d": 1} and rep["stamp_violations"] == {"/d": 2}


def test_status_is_one_strictly_increasing_stream():
    from vggt4d_ros.msg import WindowStatus

    chk = IntegrityChecker()

    def st(t, steps):
        m = WindowStatus(num_time_steps=steps, scale=1.0)
        m.header = _header(t, "odom")
        return m

    # acks for a filling window, then the window's result for its newest step (the node's sequencer)
    for t, n in [(T0, 0), (T0 + DT, 0), (T0 + 2 * DT, 4), (T0 + 3 * DT, 0)]:
        assert chk.check("/s", "vggt4d_ros/msg/WindowStatus", st(t, n))
    assert not chk.check("/s", "vggt4d_ros/msg/WindowStatus", st(T0 + 3 * DT, 4))  # re-reported step
    assert not chk.check("/s", "vggt4d_ros/msg/WindowStatus", st(T0 + 2 * DT, 0))  # an ack going back


def test_verdict_on_synthetic_series():
    def series(rss, threads):
        return [{"t_s": float(i), "rss_mib": r, "threads": th, "outputs": {"odometry": i}}
                for i, (r, th) in enumerate(zip(rss, threads))]

    n = 120
    flat = [300.0 + 200 * min(1.0, i / 10) for i in range(n)]  # warm-up ramp, then flat
    v = verdict(series(flat, [20] * n), True, True, True, 2.0)
    assert v["pass"] and v["flat"] and abs(v["rss_slope_second_half_mib_per_min"]) < 1e-9
    leak = [500.0 + 0.1 * i for i in range(n)]  # 6 MiB/min
    v = verdict(series(leak, [20] * n), True, True, True, 2.0)
    assert not v["flat"] and not v["pass"] and math.isclose(v["rss_slope_second_half_mib_per_min"], 6.0)
    v = verdict(series(flat, [20] * 60 + [21] * 60), True, True, True, 2.0)
    assert not v["no_thread_growth"] and not v["pass"]
    stalled = series(flat, [20] * n)
    for s in stalled[80:]:
        s["outputs"]["odometry"] = 80
    assert not verdict(stalled, True, True, True, 2.0)["outputs_continue"]
    assert not verdict(series(flat[:3], [20] * 3), True, True, True, 2.0)["pass"]


def test_proc_status_and_params():
    import os
    import threading

    s = proc_status(os.getpid())
    assert s["threads"] >= threading.active_count()
    assert 10_000 < s["rss_kib"] < 64 * 1024 * 1024
    assert proc_status(2 ** 22 + 12345) is None
    p = effective_params(ROOT / "config/tiny.yaml", ["window.num_steps:=3", "publish.confidence:=true"])
    assert p["window.num_steps"] == 3 and p["cameras"] == ["cam0", "cam1"] and p["model.device"] == "cpu"
    topics = output_topics(p)
    assert topics["/vggt4d/cam1/depth/confidence"] == "sensor_msgs/msg/Image"
    assert topics["/tf"] == "tf2_msgs/msg/TFMessage" and len(topics) == 5 + 2 * 7


@pytest.mark.skipif(not (EMBEDDED_DIR / "tiny.safetensors").is_file(), reason="embedded tiny weights missing")
def test_short_soak(tmp_path):
    """About a minute of the real thing. Memory flatness over hours is judged by the 10/30-minute benchmarks;
    here the leak bound is 250 MiB/min over the second half: the node's RSS moves in steps of tens of MiB
    (allocator arenas under changing load), and over every 30 s window of the committed 10- and 30-minute
    soaks (bench/results/soak-*.json) the fitted slope stayed at or below 104 / 145 MiB/min (30-60 s: +0.2 /
    -3.1); keeping each output step's messages (2 x 252x140 depth, mask, clouds: about 1 MB at 10 Hz) would
    grow about 600 MiB/min, keeping two input steps per step about 250."""
    out = tmp_path / "soak.json"
    res = subprocess.run([sys.executable, "-m", "vggt4d_ros.tools.soak", "--duration", "60", "--out", str(out),
                          "--rss-slope-mib-per-min", "250", "--keep", str(tmp_path / "keep"), "--quiet"],
                         env=localhost_env(), capture_output=True, text=True, timeout=400, cwd=ROOT)
    log = (tmp_path / "keep" / "node.log").read_text(errors="replace") if (tmp_path / "keep").exists() else ""
    assert out.is_file(), res.stdout + res.stderr + log[-2000:]
    r = json.loads(out.read_text())
    v = r["verdict"]
    assert res.returncode == (0 if v["pass"] else 1)
    assert v["pass"], (v, r["integrity"]["examples"], res.stderr[-2000:])
    assert r["summary"]["rss_mib_max"] < 1500, r["summary"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    # The bag looped: the node saw each restart, reset, and its outputs stayed consistent.
    assert r["input_restarts_seen"] >= 8 and r["player"]["loops"] >= 9
    assert r["summary"]["resets"] >= r["input_restarts_seen"] - 2
    ig = r["integrity"]
    assert ig["ok"] and not ig["missing_topics"] and ig["messages"]["/vggt4d/odometry"] >= 20
    assert ig["loop_backsteps"]["/vggt4d/odometry"] >= 5
    assert 0 < ig["odom_max_step_m"] < 1.0
    assert r["summary"]["errors"] == 0 and r["node_log"]["tracebacks"] == 0 and r["node_exit_code"] == 0
    s = r["samples"]
    assert len(s) >= 50 and all(x["threads"] > 0 and x["rss_mib"] > 50 for x in s)
    assert s[-1]["cameras"]["cam0"]["received"] > 400
