"""vggt4d_ros.bag.io and the bag CLI's error paths: rosbags round trip, header stamps, bad input (no DDS)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vggt4d_ros.bag.io import (
    BagError,
    bag_time_range,
    bag_topics,
    header_stamp_ns,
    open_writer,
    read_messages,
)
from vggt4d_ros.bag.play import _merge_static
from vggt4d_ros.bag.synth import write_synthetic_bag
from vggt4d_ros.bag.typestore import get_typestore

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_synthetic_bag_round_trip(tmp_path, storage):
    bag = tmp_path / "b"
    stamps = write_synthetic_bag(bag, cameras=2, steps=5, storage=storage)
    topics = bag_topics(bag)
    assert topics["/cam0/image_raw"].msgtype == "sensor_msgs/msg/Image"
    assert topics["/cam1/camera_info"].count == 5
    assert topics["/tf_static"].latched and not topics["/cam0/image_raw"].latched
    # only the final bag exists, no temporary directory left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    got = {}
    last = -1
    for topic, msgtype, t_ns, raw in read_messages(bag):
        assert t_ns >= last  # log-time order
        last = t_ns
        stamp = header_stamp_ns(raw, msgtype)
        if msgtype == "tf2_msgs/msg/TFMessage":
            assert stamp is None  # no header field
            continue
        decoded = get_typestore().deserialize_cdr(raw, msgtype)
        assert stamp == decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec
        got.setdefault(topic, []).append(stamp)
    for topic, want in stamps.items():
        if topic != "/tf_static":
            assert got[topic] == want
    t0, t1 = bag_time_range(bag)
    assert t1 > t0


def test_read_messages_topics_filter_and_decode(tmp_path):
    bag = tmp_path / "b"
    write_synthetic_bag(bag, cameras=1, steps=3, tf_static=False)
    msgs = list(read_messages(bag, ["/cam0/image_raw"], decode=True))
    assert len(msgs) == 3 and all(m.topic == "/cam0/image_raw" for m in msgs)
    assert msgs[0].data.encoding == "rgb8" and np.asarray(msgs[0].data.data).size == 24 * 32 * 3
    with pytest.raises(BagError, match="/nope"):
        list(read_messages(bag, ["/nope"]))


def test_merge_static_keeps_every_child_frame(tmp_path):
    bag = tmp_path / "b"
    write_synthetic_bag(bag, cameras=3, steps=1)
    raw, n = _merge_static(bag, "/tf_static", "tf2_msgs/msg/TFMessage")
    assert n == 3
    msg = get_typestore().deserialize_cdr(raw, "tf2_msgs/msg/TFMessage")
    assert sorted(t.child_frame_id for t in msg.transforms) == ["cam0_optical", "cam1_optical", "cam2_optical"]
    assert [round(t.transform.translation.x, 6) for t in msg.transforms] == [0.0, 0.1, 0.2]


def test_writer_abort_and_refusals(tmp_path):
    out = tmp_path / "x"
    w = open_writer(out)
    w.add_topic("/a", "std_msgs/msg/String")
    w.write("/a", 1, get_typestore().serialize_cdr(get_typestore().types["std_msgs/msg/String"](data="hi"),
                                                    "std_msgs/msg/String"))
    assert not out.exists()  # nothing at the final path until close()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BagError, match="unsupported storage"):
        open_writer(tmp_path / "y", storage="bag1")
    with pytest.raises(BagError, match="no_such_pkg/msg/Foo"):
        with open_writer(tmp_path / "z") as w2:
            w2.add_topic("/b", "no_such_pkg/msg/Foo")
    assert list(tmp_path.iterdir()) == []  # the failed writer was aborted, nothing left
    write_synthetic_bag(tmp_path / "done", steps=1)
    with pytest.raises(BagError, match="exists already"):
        open_writer(tmp_path / "done")


def _mcap_records(path):
    """(chunk compressions, {topic: [(log_time, payload), ...]}) read with the mcap library (not rosbags)."""
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        compressions = {c.compression for c in summary.chunk_indexes}
        msgs = {}
        for _schema, channel, message in reader.iter_messages(log_time_order=True):
            msgs.setdefault(channel.topic, []).append((message.log_time, bytes(message.data)))
    return compressions, msgs


@pytest.mark.parametrize("compression", ["zstd", None])
def test_single_file_output_and_zstd_chunks_read_by_both_readers(tmp_path, compression):
    """x.mcap is written as that one file; zstd chunks are smaller and both readers give the same bytes."""
    store = get_typestore()
    rng = np.random.default_rng(0)
    depth = np.round(rng.uniform(1, 5, (140, 252)), 2).astype("<f4")  # smooth-ish float depth, as published
    img = store.types["sensor_msgs/msg/Image"]
    hdr = store.types["std_msgs/msg/Header"]
    stamp = store.types["builtin_interfaces/msg/Time"]
    out = tmp_path / "outputs.mcap"
    sent = []
    with open_writer(out, "mcap", compression=compression) as w:
        w.add_topic("/vggt4d/cam0/depth", "sensor_msgs/msg/Image")
        for i in range(40):
            msg = img(header=hdr(stamp=stamp(sec=i, nanosec=0), frame_id="cam0"), height=140, width=252,
                      encoding="32FC1", is_bigendian=0, step=252 * 4, data=depth.view(np.uint8).reshape(-1))
            raw = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
            sent.append((i * 1_000_000_000, raw))
            w.write("/vggt4d/cam0/depth", i * 1_000_000_000, raw)
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["outputs.mcap"]
    compressions, msgs = _mcap_records(out)
    assert compressions == ({"zstd"} if compression else {""})
    assert [(t, bytes(d)) for t, d in sent] == msgs["/vggt4d/cam0/depth"]
    ours = [(m.stamp_ns, bytes(m.data)) for m in read_messages(out)]  # rosbags
    assert ours == msgs["/vggt4d/cam0/depth"]
    raw_size = sum(len(d) for _, d in sent)
    size = out.stat().st_size
    if compression:
        assert size < 0.6 * raw_size  # 2-decimal depths: zstd takes off well over a third
    else:
        assert size > raw_size
    with pytest.raises(BagError, match="needs storage mcap"):
        open_writer(tmp_path / "s.db3", "sqlite3", compression="zstd")
    with pytest.raises(BagError, match="unsupported compression"):
        open_writer(tmp_path / "l", "mcap", compression="lz5")


def test_replay_output_bag_is_one_zstd_mcap(tmp_path):
    """OutputBag (the replay's outputs.mcap): one file, zstd chunks, readable by the mcap library."""
    from vggt4d_ros.eval.offline import OutputBag

    store = get_typestore()
    s = store.types["std_msgs/msg/String"]
    ob = OutputBag(tmp_path)
    payloads = [store.serialize_cdr(s(data="x" * 1000 + str(i)), "std_msgs/msg/String") for i in range(50)]
    for i, raw in enumerate(payloads):
        ob.write("/vggt4d/note", "std_msgs/msg/String", 10 + i, raw)
    assert not (tmp_path / "outputs.mcap").exists()  # only once closed
    path = ob.close()
    assert path == tmp_path / "outputs.mcap" and sorted(p.name for p in tmp_path.iterdir()) == ["outputs.mcap"]
    compressions, msgs = _mcap_records(path)
    assert compressions == {"zstd"} and msgs["/vggt4d/note"] == [(10 + i, p) for i, p in enumerate(payloads)]
    assert path.stat().st_size < sum(map(len, payloads)) / 5


def _cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "vggt4d_ros.bag.cli", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )


def _assert_one_line_error(proc, *words):
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("vggt4d-bag: error:")
    for w in words:
        assert w in err[0]
    assert "Traceback" not in proc.stderr


def test_cli_info_and_bad_bags(tmp_path):
    bag = tmp_path / "good"
    write_synthetic_bag(bag, cameras=1, steps=4)
    ok = _cli("info", str(bag))
    assert ok.returncode == 0 and "/cam0/image_raw  sensor_msgs/msg/Image  4" in ok.stdout

    # truncated MCAP: cut the storage file in half (metadata.yaml still claims it is complete)
    trunc = tmp_path / "trunc"
    write_synthetic_bag(trunc, cameras=1, steps=20)
    mcap_file = trunc / "trunc.mcap"
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(_cli("play", str(trunc), "--rate", "0"), "trunc")
    _assert_one_line_error(_cli("info", str(mcap_file)), "trunc")

    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(os.urandom(4096))
    _assert_one_line_error(_cli("play", str(garbage)), "garbage.mcap")

    _assert_one_line_error(_cli("play", str(tmp_path / "missing")), "not found")
    _assert_one_line_error(_cli("play", str(bag), "--topics", "/nope"), "/nope")
    _assert_one_line_error(_cli("record", "-o", str(tmp_path / "r"), "--storage", "bag1", "/a"), "bag1")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_of_an_older_message_definition_still_decodes(tmp_path, storage):
    """A bag recorded before TrackedKeypoint gained ``reprojection_error``: read with the bag's own
    definition (stored in the bag), not this version's, so the fields it has decode correctly."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_types_from_msg
    from rosbags.typesys import get_typestore as rosbags_typestore

    from vggt4d_ros.bag.io import STORAGES
    from vggt4d_ros.bag.typestore import msg_dir

    old = rosbags_typestore(Stores.ROS2_JAZZY)
    kp_text = "\n".join(line for line in (msg_dir() / "TrackedKeypoint.msg").read_text().splitlines()
                        if "reprojection_error" not in line)
    types = get_types_from_msg(kp_text, "vggt4d_ros/msg/TrackedKeypoint")
    types.update(get_types_from_msg((msg_dir() / "TrackedKeypoints.msg").read_text(),
                                    "vggt4d_ros/msg/TrackedKeypoints"))
    old.register(types)
    T = old.types
    kp = T["vggt4d_ros/msg/TrackedKeypoint"](id=7, camera_index=1, u=10.5, v=20.25, confidence=0.5, visible=True,
                                             age=3, position=T["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=3.0))
    hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=5, nanosec=6), frame_id="cam1")
    msg = T["vggt4d_ros/msg/TrackedKeypoints"](header=hdr, camera_index=1, width=64, height=48, keypoints=[kp])
    path = tmp_path / "old"
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as w:
        conn = w.add_connection("/gt/cam1/tracks", "vggt4d_ros/msg/TrackedKeypoints", typestore=old)
        w.write(conn, 5_000_000_006, old.serialize_cdr(msg, "vggt4d_ros/msg/TrackedKeypoints"))
    (got,) = list(read_messages(path, decode=True))
    k = got.data.keypoints[0]
    assert (k.id, k.u, k.v, k.age, k.position.z) == (7, 10.5, 20.25, 3, 3.0)
    assert not hasattr(k, "reprojection_error")
