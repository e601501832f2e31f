"""vggt4d-bag record + play between processes over real (localhost-only) DDS.

A synthetic bag is played by one subprocess and recorded by another; the recorded bag must hold
the same messages, byte for byte, in order, with the same header stamps, and open with rosbags and
with the independent mcap + mcap_ros2 reader. /tf_static must reach a subscriber that starts after
the player published it.
"""
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vggt4d_ros.bag.io import bag_time_range, bag_topics, read_messages
from vggt4d_ros.bag.synth import write_synthetic_bag
from vggt4d_ros.bag.typestore import get_typestore
from vggt4d_ros.rosenv import localhost_env

ROOT = Path(__file__).resolve().parents[1]
_BASE = random.randint(10, 60)
_counter = iter(range(100))


def _domain() -> int:
    return _BASE + next(_counter)


def _start(domain, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "vggt4d_ros.bag.cli", *args], cwd=ROOT, env=localhost_env(domain_id=domain),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc, timeout=60):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process timed out:\n{out}\n{err}")
    return proc.returncode, out, err


def _wait_for_line(proc, text, timeout=30.0):
    """Read the child's stderr until a line containing ``text``; return the lines read."""
    lines = []
    result = {}

    def reader():
        for line in proc.stderr:
            lines.append(line)
            if text in line:
                result["ok"] = True
                return

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    th.join(timeout)
    assert result.get("ok"), f"no line with {text!r} within {timeout} s: {''.join(lines)}"
    return lines


def _by_topic(bag):
    out = {}
    for topic, _msgtype, t_ns, raw in read_messages(bag):
        out.setdefault(topic, []).append((t_ns, bytes(raw)))
    return out


def _strip_dds_padding(have: bytes, want: bytes) -> bytes:
    """DDS sends serialized payloads padded with zeros to a multiple of 4 bytes (rosbag2 records
    the same padding); remove exactly that padding, and only if it is zeros."""
    pad = (-len(want)) % 4
    if len(have) == len(want) + pad and have[len(want):] == bytes(pad):
        return have[: len(want)]
    return have


def test_record_play_round_trip_mcap(tmp_path):
    dom = _domain()
    ns = f"/rt{dom}"
    src = tmp_path / "src"
    stamps = write_synthetic_bag(src, cameras=2, steps=12, hz=40.0, namespace=ns)
    camera_topics = sorted(t for t in stamps if t != "/tf_static")
    out = tmp_path / "rec"
    t_begin = time.time_ns()
    rec = _start(dom, "record", "-o", str(out), *camera_topics, f"{ns}/tf_static",
                 "--until-topic-idle", "1.5", "--duration", "40")
    _wait_for_line(rec, "recording to")
    play = _start(dom, "play", str(src), "--remap", f"/tf_static:={ns}/tf_static", "--wait-subscribers",
                  "--wait-timeout", "20")
    rc_p, out_p, err_p = _finish(play)
    assert rc_p == 0, err_p
    assert "played 49 messages on 5 topics" in out_p, out_p  # 48 camera messages + 1 merged /tf_static
    rc_r, out_r, err_r = _finish(rec)
    t_end = time.time_ns()
    assert rc_r == 0, err_r
    assert "recorded 49 messages" in out_r, out_r + err_r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec", "src"]  # no .partial left

    played = _by_topic(src)
    got = _by_topic(out)
    for topic in camera_topics:
        want = [raw for _t, raw in played[topic]]
        have = [_strip_dds_padding(raw, w) for (_t, raw), w in zip(got[topic], want)]
        assert len(got[topic]) == len(want)
        assert have == want, f"{topic}: payloads differ or are out of order"  # byte-identical, none lost
        log_times = [t for t, _raw in got[topic]]
        assert log_times == sorted(log_times)
        assert t_begin <= log_times[0] and log_times[-1] <= t_end  # receive times, not bag times
    info = bag_topics(out)
    assert info[f"{ns}/cam0/image_raw"].msgtype == "sensor_msgs/msg/Image"
    assert info[f"{ns}/tf_static"].latched  # offered QoS of the player recorded in metadata

    # the merged static transforms: ONE message holding every camera's transform
    store = get_typestore()
    (tf_raw,) = [raw for _t, raw in got[f"{ns}/tf_static"]]
    tf = store.deserialize_cdr(tf_raw, "tf2_msgs/msg/TFMessage")
    assert sorted(t.child_frame_id for t in tf.transforms) == ["cam0_optical", "cam1_optical"]

    # independent reader: mcap + mcap_ros2 decode with the definitions the recorder wrote
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    mcap_files = list(out.glob("*.mcap"))
    assert len(mcap_files) == 1
    seen = {}
    with open(mcap_files[0], "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, _message, msg in reader.iter_decoded_messages(log_time_order=True):
            if channel.topic.endswith("image_raw") or channel.topic.endswith("camera_info"):
                st = msg.header.stamp
                seen.setdefault(channel.topic, []).append(st.sec * 10**9 + st.nanosec)
            if channel.topic.endswith("image_raw"):
                assert msg.encoding == "rgb8" and len(msg.data) == 24 * 32 * 3
    assert seen == {t: stamps[t] for t in camera_topics}


def _late_tf_static(domain, topic, timeout=10.0):
    """Subscribe (transient local) in this process and return the first TFMessage's child frames."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    try:
        node = rclpy.create_node("late_tf_listener", context=ctx)
        got = []
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(TFMessage, topic, got.append, qos)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        deadline = time.monotonic() + timeout
        while not got and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
        ex.shutdown()
        node.destroy_node()
        return [sorted(t.child_frame_id for t in m.transforms) for m in got]
    finally:
        rclpy.try_shutdown(context=ctx)


def test_tf_static_reaches_late_subscriber(tmp_path):
    pytest.importorskip("tf2_msgs.msg")
    dom = _domain()
    src = tmp_path / "src"
    write_synthetic_bag(src, cameras=3, steps=10, hz=20.0, namespace=f"/late{dom}")
    # loop forever: the player stays alive (its latched history with it) until SIGINT
    play = _start(dom, "play", str(src), "--loop", "0", "--remap", f"/tf_static:=/late{dom}/tf_static")
    readers = []
    logs = {"out": [], "err": []}
    try:
        _wait_for_line(play, "latched 3 static transforms")
        # The looping player keeps writing: read its pipes from here on, or on a slow machine they fill and
        # block it (then it cannot even handle SIGINT)
        readers += [threading.Thread(target=lambda k=k, f=f: logs[k].extend(f), daemon=True)
                   for k, f in (("out", play.stdout), ("err", play.stderr))]
        for r in readers:
            r.start()
        time.sleep(0.5)  # the subscriber below starts well after the one publish
        frames = _late_tf_static(dom, f"/late{dom}/tf_static")
        assert frames == [["cam0_optical", "cam1_optical", "cam2_optical"]]
        assert play.poll() is None  # still playing: the message came from the latched history
    finally:
        play.send_signal(signal.SIGINT)
        try:
            rc = play.wait(timeout=60)
        except subprocess.TimeoutExpired:
            play.kill()
            rc = None
        for r in readers:
            r.join(10)
    out, err = "".join(logs["out"]), "".join(logs["err"])
    assert rc is not None, f"player did not stop on SIGINT within 60 s:\n{out}\n{err}"
    assert rc == 0 and "[interrupted]" in out, out + err


def test_sigterm_finalises_sqlite3_bag_best_effort(tmp_path):
    dom = _domain()
    ns = f"/st{dom}"
    src = tmp_path / "src"
    stamps = write_synthetic_bag(src, cameras=1, steps=20, hz=50.0, tf_static=False, namespace=ns)
    out = tmp_path / "rec"
    rec = _start(dom, "record", "-o", str(out), "/clock", "--types", "sensor_msgs/msg/Image", "--storage",
                 "sqlite3")
    _wait_for_line(rec, "recording to")
    play = _start(dom, "play", str(src), "--best-effort", "--clock", "--wait-subscribers", "--wait-topics",
                  f"{ns}/cam0/image_raw", "/clock", "--wait-timeout", "20")
    rc_p, out_p, err_p = _finish(play)
    assert rc_p == 0, err_p
    time.sleep(0.5)
    assert not out.exists()  # still recording: nothing at the final path yet
    rec.send_signal(signal.SIGTERM)
    rc_r, out_r, err_r = _finish(rec)
    assert rc_r == 0, err_r
    assert "(SIGTERM)" in out_r and "best effort" in err_r, out_r + err_r
    info = bag_topics(out)
    assert set(info) == {f"{ns}/cam0/image_raw", "/clock"}  # --types selected the Image topic only
    assert list(out.glob("*.db3"))
    got = [get_typestore().deserialize_cdr(raw, "sensor_msgs/msg/Image").header.stamp
           for _t, raw in _by_topic(out)[f"{ns}/cam0/image_raw"]]
    assert [s.sec * 10**9 + s.nanosec for s in got] == stamps[f"{ns}/cam0/image_raw"]
    # /clock carried bag time: non-decreasing, within the bag, ending at the last message's log time
    clock = [get_typestore().deserialize_cdr(raw, "rosgraph_msgs/msg/Clock").clock
             for _t, raw in _by_topic(out)["/clock"]]
    clock_ns = [c.sec * 10**9 + c.nanosec for c in clock]
    bag_start, bag_end = bag_time_range(src)
    assert clock_ns == sorted(clock_ns) and len(clock_ns) >= 2
    assert bag_start <= clock_ns[0] and clock_ns[-1] == bag_end
