"""vggt4d-replay end to end on small synthetic bags (tiny model, random weights unless embedded ones exist).

The outputs bag is read back with the independent mcap + mcap_ros2 reader; the depth metric is recomputed
here from the decoded messages to check the stamp pairing behind metrics.json.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from vggt4d_ros.data.bagwriter import write_synth_bag
from vggt4d_ros.data.synth import SynthConfig, SynthSequence
from vggt4d_ros.eval.config import ConfigError, load_params, resolve_cameras
from vggt4d_ros.eval.node_messages import output_topics
from vggt4d_ros.perception.pipeline import EMBEDDED_DIR, RANDOM_INIT
from vggt4d_ros.rosenv import localhost_env
from vggt4d_ros.tools.replay import main

ROOT = Path(__file__).resolve().parents[1]
SYNTH = dict(seed=3, num_cameras=2, width=160, height=96, rate_hz=10.0, texture_px=128, num_tracks=256)
STEPS = 8  # time steps in the bag; window T=4, stride 2 -> windows end at steps 3, 5, 7
# Steps output: all 3 of the first window, then the new steps of each window while tracking holds (the
# pipeline outputs only a window's newest step while tracking is lost, frequent with random weights).
CHECKPOINT = "" if (EMBEDDED_DIR / "tiny.safetensors").is_file() else RANDOM_INIT


def write_config(path: Path, **extra) -> Path:
    params = {"model": {"config": "tiny", "checkpoint": CHECKPOINT, "device": "cpu", "target_width": 112},
              "cameras": ["cam0", "cam1"], "window": {"num_steps": 4, "stride": 2}, "keypoints": {"max_count": 16}}
    params.update(extra)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def read_mcap(path: Path):
    """{topic: [(log_time, decoded), ...]} of a single MCAP file, with the mcap + mcap_ros2 reader."""
    out = defaultdict(list)
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            out[channel.topic].append((message.log_time, decoded))
    return out


def stamp(h) -> int:
    return h.stamp.sec * 1_000_000_000 + h.stamp.nanosec


def image(msg) -> np.ndarray:
    data = bytes(msg.data)
    if msg.encoding == "32FC1":
        return np.frombuffer(data, "<f4").reshape(msg.height, msg.width)
    assert msg.encoding == "mono8"
    return np.frombuffer(data, np.uint8).reshape(msg.height, msg.width)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay")
    seq = SynthSequence(SynthConfig(duration_s=STEPS / 10.0, **SYNTH))
    write_synth_bag(seq, d / "gt_bag")
    (mcap_file,) = sorted((d / "gt_bag").glob("*.mcap"))
    return {"dir": d, "bag": d / "gt_bag", "bag_mcap": mcap_file, "cfg": write_config(d / "cfg.yaml"),
            "input": read_mcap(mcap_file)}


@pytest.fixture(scope="module")
def offline(data):
    out = data["dir"] / "offline"
    rc = main([str(data["bag"]), "--config", str(data["cfg"]), "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_outputs_bag_has_every_topic_with_input_stamps(data, offline):
    out = read_mcap(offline / "outputs.mcap")
    params = load_params(data["cfg"])
    assert set(out) == set(output_topics(params))
    inp = data["input"]
    status = [m for _t, m in out["/vggt4d/status"]]
    # one status per input step, in stamp order (as the node's sequencer: the first window's steps were
    # acknowledged while it filled); a window's own status for each of its newer output steps
    assert [stamp(m.header) for m in status] == [stamp(m.header) for _t, m in inp["/cam0/image_raw"]]
    produced = [stamp(m.header) for _t, m in out["/vggt4d/odometry"]]
    cam0_stamps = [stamp(m.header) for _t, m in inp["/cam0/image_raw"]]
    assert {stamp(m.header) for m in status if m.num_time_steps > 0} <= set(produced)
    assert len(cam0_stamps) == STEPS and sorted(set(produced)) == produced
    assert produced[:4] == cam0_stamps[:4] and set(produced) <= set(cam0_stamps)
    assert {cam0_stamps[5], cam0_stamps[7]} <= set(produced)  # each window's newest step, whatever the tracking
    for cam in ("cam0", "cam1"):
        in_stamps = [stamp(m.header) for _t, m in inp[f"/{cam}/image_raw"]]
        frame_id = inp[f"/{cam}/image_raw"][0][1].header.frame_id
        assert in_stamps == cam0_stamps  # synthetic rig: cameras share stamps
        for topic in ("depth", "depth/camera_info", "dynamic_mask", "dynamic_mask/camera_info", "points", "keypoints"):
            msgs = [m for _t, m in out[f"/vggt4d/{cam}/{topic}"]]
            assert sorted(stamp(m.header) for m in msgs) == produced, topic
            assert {m.header.frame_id for m in msgs} == {frame_id}
        d = image(out[f"/vggt4d/{cam}/depth"][0][1])
        assert d.shape == (96, 160) and np.isfinite(d).mean() > 0.5
    odom = [m for _t, m in out["/vggt4d/odometry"]]
    assert [stamp(m.header) for m in odom] == produced
    assert odom[0].child_frame_id == "base_link" and odom[0].header.frame_id == "odom"
    assert all(np.any(np.asarray(m.pose.covariance) > 0) for m in odom)
    assert [stamp(m.header) for _t, m in out["/vggt4d/points/fused"]] == produced
    # offline log time = header stamp (deterministic, on the input bag's time line)
    assert all(t == stamp(m.header) for t, m in out["/vggt4d/odometry"])


def test_metrics_json_has_every_key_and_matches_a_recomputation(data, offline):
    m = json.loads((offline / "metrics.json").read_text())
    assert m["incomplete"] is False
    assert {"run", "runtime", "trajectory", "depth", "dynamic_mask", "tracks"} <= set(m)
    rt = m["runtime"]
    for key in ("frames_in", "frames_used", "frames_out", "steps_in", "steps_out", "windows", "windows_skipped",
                "frames_dropped", "latency_s", "wall_s", "throughput_steps_per_s", "throughput_frames_per_s",
                "jitter_s"):
        assert key in rt, key
    assert set(rt["latency_s"]) >= {"min", "median", "p95", "max"}
    n_out = len(read_mcap(offline / "outputs.mcap")["/vggt4d/odometry"])
    assert (rt["frames_in"], rt["steps_in"], rt["steps_out"], rt["windows"]) == (2 * STEPS, STEPS, n_out, 3)
    assert 0 < rt["latency_s"]["min"] <= rt["latency_s"]["median"] <= rt["latency_s"]["max"]
    tr = m["trajectory"]
    assert tr["available"] and tr["num_poses"] == n_out and tr["reference"] == "/gt/odom"
    for align in ("sim3", "se3", "baseline_constant_pose"):
        assert set(tr[align]) >= {"ate_rmse", "rpe_trans_rmse", "rpe_rot_deg_rmse"}
        assert tr[align]["ate_rmse"] >= 0
    assert tr["sim3"]["ate_rmse"] <= tr["se3"]["ate_rmse"] + 1e-9  # Sim(3) has one more degree of freedom
    de = m["depth"]
    assert de["available"] and de["frames"] == 2 * n_out
    for key in ("per_frame", "per_sequence", "raw", "baseline_constant_depth"):
        assert key in de
    dm = m["dynamic_mask"]
    assert dm["available"] and set(dm) >= {"iou_dynamic", "iou_static", "miou", "accuracy", "baseline_all_static"}
    assert dm["baseline_all_static"]["iou_dynamic"] == 0.0
    tk = m["tracks"]
    assert tk["available"] and set(tk) >= {"epe_mean", "visibility_accuracy", "baseline_static_points"}
    assert tk["keypoints_matched"] > 0

    # Recompute per-frame AbsRel (median-aligned) from the decoded messages with plain numpy.
    out = read_mcap(offline / "outputs.mcap")
    inp = data["input"]
    vals, base = [], []
    for cam in ("cam0", "cam1"):
        gt = {stamp(mm.header): image(mm) for _t, mm in inp[f"/gt/{cam}/depth"]}
        for _t, mm in out[f"/vggt4d/{cam}/depth"]:
            p, g = image(mm).astype(np.float64), gt[stamp(mm.header)].astype(np.float64)
            ok = np.isfinite(p) & np.isfinite(g) & (p > 0) & (g > 0)
            q = p[ok] * np.median(g[ok]) / np.median(p[ok])
            vals.append(np.mean(np.abs(q - g[ok]) / g[ok]))
            base.append(np.mean(np.abs(np.median(g[ok]) - g[ok]) / g[ok]))
    assert de["per_frame"]["abs_rel"] == pytest.approx(np.mean(vals), rel=1e-5)
    assert de["baseline_constant_depth"]["per_frame"]["abs_rel"] == pytest.approx(np.mean(base), rel=1e-5)


def test_plots_and_report(offline):
    for name in ("trajectory.png", "panels.png", "errors.png"):
        f = offline / name
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (offline / "report.md").read_text()
    assert "INCOMPLETE" not in report
    for name in ("trajectory.png", "panels.png", "errors.png"):
        assert f"]({name})" in report
    assert "baseline: constant pose" in report and "baseline: all static" in report
    assert (offline / "params.yaml").is_file()


def test_bag_without_ground_truth_skips_gt_metrics(data):
    seq = SynthSequence(SynthConfig(duration_s=0.4, **SYNTH))
    write_synth_bag(seq, data["dir"] / "nogt_bag", ground_truth=False, storage="sqlite3")  # sqlite3 reads too
    out = data["dir"] / "nogt"
    rc = main([str(data["dir"] / "nogt_bag"), "--config", str(data["cfg"]), "--out", str(out), "--quiet"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for sec in ("trajectory", "depth", "dynamic_mask", "tracks"):
        assert m[sec]["available"] is False
        assert "ground-truth" in m[sec]["reason"]
    assert m["runtime"]["steps_out"] == 4  # 4 steps, one window of T=4
    assert "skipped: the bag has no ground-truth poses" in (out / "report.md").read_text()
    assert set(read_mcap(out / "outputs.mcap")) == set(output_topics(load_params(data["cfg"])))


@pytest.mark.parametrize("case", ["model", "checkpoint", "bag"])
def test_bad_input_fails_before_work_with_one_line(data, tmp_path, capsys, case):
    cfg, bag = data["cfg"], data["bag"]
    args = []
    if case == "model":
        args = ["--model", "no-such-model"]
    elif case == "checkpoint":
        args = ["--checkpoint", str(tmp_path / "missing.safetensors")]
    else:
        bag = tmp_path / "no_bag"
    out = tmp_path / "out"
    rc = main([str(bag), "--config", str(cfg), "--out", str(out), "--quiet"] + args)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("vggt4d-replay: error:")
    assert {"model": "no-such-model", "checkpoint": "does not exist", "bag": "bag not found"}[case] in err
    assert not out.exists()  # nothing was started


def test_config_topics_missing_from_bag_fall_back_to_discovery(data):
    from vggt4d_ros.bag.io import bag_topics

    topics = bag_topics(data["bag"])
    params = load_params(write_config(data["dir"] / "left.yaml", cameras=["left"],
                                      left={"image_topic": "/left/image_raw"}))
    cams = resolve_cameras(params, topics)
    assert cams.names == ["cam0", "cam1"]  # /gt/<cam>/depth is an Image without a camera_info: not a camera
    assert cams.image == {"cam0": "/cam0/image_raw", "cam1": "/cam1/image_raw"}
    assert "not in the bag" in cams.note and params["cameras"] == ["cam0", "cam1"]
    assert params["cam1.camera_info_topic"] == "/cam1/camera_info"
    params = load_params(data["cfg"])
    cams = resolve_cameras(params, topics, ["/cam1/image_raw"])
    assert cams.names == ["cam1"] and cams.info == {"cam1": "/cam1/camera_info"}
    with pytest.raises(ConfigError):
        resolve_cameras(load_params(data["cfg"]), topics, ["/nope/image_raw"])
    # compressed-only cameras are found too, and raw is preferred when both exist
    types = {"/a/image_raw/compressed": "sensor_msgs/msg/CompressedImage", "/a/camera_info": "sensor_msgs/msg/CameraInfo",
             "/b/image_raw": "sensor_msgs/msg/Image", "/b/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
             "/b/camera_info": "sensor_msgs/msg/CameraInfo", "/depth/image": "sensor_msgs/msg/Image"}
    params = load_params(data["cfg"])
    cams = resolve_cameras(params, types)
    assert cams.names == ["a", "b"] and cams.compressed == {"a": True, "b": False}
    assert cams.image == {"a": "/a/image_raw/compressed", "b": "/b/image_raw"}
    assert params["a.image_topic"] == "/a/image_raw" and params["a.compressed"] is True


def test_help_is_true():
    env = localhost_env()
    r = subprocess.run([sys.executable, "-m", "vggt4d_ros.tools.replay", "--help"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0
    for opt in ("--config", "--out", "--through-ros", "--cameras", "--checkpoint", "--model", "--device",
                "--max-steps", "--quiet"):
        assert opt in r.stdout


def test_interrupted_run_leaves_readable_truncated_outputs(data):
    seq = SynthSequence(SynthConfig(duration_s=2.0, **SYNTH))
    write_synth_bag(seq, data["dir"] / "long_bag", ground_truth=True)
    out = data["dir"] / "interrupted"
    cfg = write_config(data["dir"] / "int.yaml", window={"num_steps": 3, "stride": 1})
    proc = subprocess.Popen([sys.executable, "-m", "vggt4d_ros.tools.replay", str(data["dir"] / "long_bag"),
                             "--config", str(cfg), "--out", str(out), "--quiet"], env=localhost_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # until the first chunk of outputs is on disk
        if any(f.stat().st_size > 0 for f in out.rglob("*.mcap")):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _o, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["incomplete"] is True
    assert (out / "report.md").read_text().startswith("# vggt4d replay report - INCOMPLETE")
    bag = read_mcap(out / "outputs.mcap")  # finalised: the independent reader opens it
    n = len(bag["/vggt4d/odometry"])
    assert 1 <= n < 19 and m["runtime"]["steps_out"] == n  # 20 steps, window of 3: 18 when complete
    assert not (out / "outputs.bag").exists()


def _fields(msg):
    slots = getattr(type(msg), "__slots__", None)
    return [f.lstrip("_") for f in slots] if slots else [k for k in vars(msg) if not k.startswith("_")]


def assert_same(a, b, path="", skip=("latency", "inference_time"), rtol=None):
    """Two decoded messages equal field by field: floats and float buffers to RTOL (or ``rtol``) / ATOL (NaN
    equal), the rest exactly; ``skip`` lists timing fields that legitimately differ between two runs."""
    rtol = RTOL if rtol is None else rtol
    if isinstance(a, (bytes, bytearray, memoryview)) or (isinstance(a, list) and a and isinstance(a[0], int)
                                                          and path.endswith(".data")):
        x, y = bytes(a), bytes(b)
        if path.split("@")[0].endswith("points/fused"):  # dynamic / invalid points dropped: a few may flip
            assert abs(len(x) - len(y)) <= 0.01 * len(y), path
            return
        assert len(x) == len(y), path
        if x != y and path.split("@")[0].endswith("dynamic_mask"):  # mono8: a pixel on the threshold may flip
            assert np.mean(np.frombuffer(x, np.uint8) != np.frombuffer(y, np.uint8)) < 0.01, path
        elif x != y:  # depth / cloud payloads: float32
            np.testing.assert_allclose(np.frombuffer(x, "<f4"), np.frombuffer(y, "<f4"), rtol=rtol, atol=ATOL,
                                       equal_nan=True, err_msg=path)
        return
    if isinstance(a, float):
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= ATOL + rtol * abs(b), (path, a, b)
        return
    if isinstance(a, (int, str, bool)) or a is None:
        if path.endswith((".width", ".row_step")) and "points/fused" in path:  # the cloud's point count
            assert abs(a - b) <= 0.01 * b + 1, (path, a, b)
            return
        assert a == b, (path, a, b)
        return
    if isinstance(a, (list, tuple, np.ndarray)):
        assert len(a) == len(b), path
        if isinstance(a, np.ndarray) or (len(a) and isinstance(a[0], float)):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=ATOL,
                                       equal_nan=True, err_msg=path)
            return
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{k}]", skip, rtol)
        return
    for f in _fields(a):
        if f not in skip:
            assert_same(getattr(a, f), getattr(b, f), f"{path}.{f}", skip, rtol)


def _by_stamp(msgs):
    out = {}
    for _t, m in msgs:
        h = m.header if hasattr(m, "header") else (m.transforms[0].header if getattr(m, "transforms", None) else
                                                   m.markers[0].header if getattr(m, "markers", None) else None)
        if h is not None:
            out.setdefault(stamp(h), []).append(m)
    return out


# Two processes: float reduction order differs at the last bits; chained over windows this stays well under
# 0.5 %.
RTOL, ATOL = 5e-3, 1e-4


def _same_keypoints(a, b, path):
    """Keypoints: the same tracks (ids) at the same pixels; a track whose visibility sits on the threshold may
    flip between two processes' last-bit differences, so up to 10 % of the ids may differ."""
    ka = {k.id: k for k in a.keypoints}
    kb = {k.id: k for k in b.keypoints}
    common = set(ka) & set(kb)
    assert len(common) >= 0.9 * max(len(ka), len(kb)), (path, len(ka), len(kb), len(common))
    for i in common:
        assert abs(ka[i].u - kb[i].u) < 0.5 and abs(ka[i].v - kb[i].v) < 0.5, (path, i)


def _compare_runs(ros, off, rtol=None):
    """Every output topic of a through-ROS run equals the offline run's, stamp by stamp, over the whole bag."""
    topics = {t for t in off if t != "/diagnostics"}
    assert {t for t in ros if t != "/diagnostics"} == topics
    stamps = {t: (sorted(_by_stamp(ros[t])), sorted(_by_stamp(off[t]))) for t in topics}
    assert all(r == o for r, o in stamps.values()), {t: v for t, v in stamps.items() if v[0] != v[1]}
    for t in sorted(topics):
        r, o = _by_stamp(ros[t]), _by_stamp(off[t])
        for st in o:
            assert len(r[st]) == len(o[st]), (t, st)
            for a, b in zip(r[st], o[st]):
                if t.endswith("/keypoints"):
                    _same_keypoints(a, b, f"{t}@{st}")
                elif t.endswith("/keypoints/markers"):  # drawn from the keypoints above
                    assert abs(len(a.markers) - len(b.markers)) <= 0.1 * len(b.markers) + 1, (t, st)
                else:
                    assert_same(a, b, f"{t}@{st}", rtol=rtol)


@pytest.mark.parametrize("num_cameras", [1, 2])
def test_through_ros_equals_offline_over_the_whole_bag(tmp_path, num_cameras):
    """One bag replayed offline and through the real node (lock-step over DDS), with scale.depth_topic: poses,
    depth, masks, keypoints, clouds, markers, TF and status are the same over every step of the bag (1 camera:
    the scale comes from the depth topic; 2 cameras: from the rig)."""
    steps = 6 if num_cameras == 1 else 7
    # 1 camera at 4:3 (the depth-topic scale failed there in the replay, issue 15), 2 cameras at 5:3
    size = dict(width=128, height=96) if num_cameras == 1 else {}
    seq = SynthSequence(SynthConfig(duration_s=steps / 10.0, **dict(SYNTH, num_cameras=num_cameras, **size)))
    write_synth_bag(seq, tmp_path / "bag")
    cams = ["cam0", "cam1"][:num_cameras]
    cfg = write_config(tmp_path / "cfg.yaml", cameras=cams, window={"num_steps": 3, "stride": 1},
                       scale={"depth_topic": "/gt/cam0/depth"})
    for mode in ("offline", "ros"):
        extra = ["--through-ros"] if mode == "ros" else []
        rc = main([str(tmp_path / "bag"), "--config", str(cfg), "--out", str(tmp_path / mode), "--quiet"] + extra)
        log = tmp_path / mode / "node.log"
        assert rc == 0, log.read_text()[-2000:] if log.exists() else ""
    ros, off = read_mcap(tmp_path / "ros" / "outputs.mcap"), read_mcap(tmp_path / "offline" / "outputs.mcap")
    # A step waits for its first camera's depth image (scale.depth_wait_s) in both runs, so both see the same
    # depth: the same tolerance with a depth topic as without (it was 1 % before the hold, issue 15).
    _compare_runs(ros, off)
    status = [m for _t, m in off["/vggt4d/status"]]
    assert len(status) == steps and len(off["/vggt4d/odometry"]) == steps
    results = [m for m in status if m.num_time_steps > 0]
    assert all(m.scale_is_metric for m in results)
    assert {m.scale_source for m in results} == {"depth" if num_cameras == 1 else "rig"}
    m = json.loads((tmp_path / "ros" / "metrics.json").read_text())
    assert m["run"]["mode"] == "through-ros" and m["runtime"]["windows"] == steps - 2
    assert m["runtime"]["steps_out"] == steps and m["runtime"]["steps_in"] == steps
