"""The synthetic bag read back with an independent reader (mcap + mcap_ros2, not rosbags).

Checks the ground truth geometrically: depth + pose + intrinsics agree across cameras, masks lie on the
moving objects' surfaces, tracks reproject onto the same static 3D points over time.
"""
from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.records import Schema
from mcap_ros2.decoder import DecoderFactory
from scipy.spatial.transform import Rotation

from vggt4d_ros.data.bagwriter import write_synth_bag
from vggt4d_ros.data.synth import SynthConfig, SynthSequence

CFG = dict(seed=1, num_cameras=2, width=160, height=96, rate_hz=10.0, duration_s=1.2, texture_px=128,
           num_tracks=256)


def read_mcap(path: Path):
    """{topic: [(log_time_ns, decoded), ...]} of one .mcap file (or a rosbag2 directory holding one)."""
    (mcap_file,) = [path] if path.is_file() else sorted(path.glob("*.mcap"))
    out = defaultdict(list)
    with open(mcap_file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            out[channel.topic].append((message.log_time, decoded))
    return out


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def same_header(a, b) -> bool:
    return stamp_ns(a) == stamp_ns(b) and a.frame_id == b.frame_id


def image_array(msg) -> np.ndarray:
    data = bytes(msg.data)
    if msg.encoding == "32FC1":
        assert msg.is_bigendian == 0
        return np.frombuffer(data, "<f4").reshape(msg.height, msg.width)
    if msg.encoding == "mono8":
        return np.frombuffer(data, np.uint8).reshape(msg.height, msg.width)
    assert msg.encoding == "rgb8"
    return np.frombuffer(data, np.uint8).reshape(msg.height, msg.width, 3)


def pose_matrix(p) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]).as_matrix()
    T[:3, 3] = [p.position.x, p.position.y, p.position.z]
    return T


def transform_matrix(tf) -> np.ndarray:
    T = np.eye(4)
    r = tf.rotation
    T[:3, :3] = Rotation.from_quat([r.x, r.y, r.z, r.w]).as_matrix()
    T[:3, 3] = [tf.translation.x, tf.translation.y, tf.translation.z]
    return T


def unproject(depth: np.ndarray, K: np.ndarray, T: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) of every pixel of a depth image (pixel centres at integer coordinates)."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    pc = np.stack([x, y, depth.astype(np.float64)], -1)
    return pc @ T[:3, :3].T + T[:3, 3]


def bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray):
    """Bilinear samples and the 2x2 corner indices; u, v must lie in [0, W-1] x [0, H-1]."""
    h, w = img.shape
    u0 = np.clip(np.floor(u).astype(int), 0, w - 2)
    v0 = np.clip(np.floor(v).astype(int), 0, h - 2)
    fu, fv = u - u0, v - v0
    a, b, c, d = img[v0, u0], img[v0, u0 + 1], img[v0 + 1, u0], img[v0 + 1, u0 + 1]
    val = (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv
    return val, (u0, v0)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    seq = SynthSequence(SynthConfig(**CFG))
    out = tmp_path_factory.mktemp("synth") / "seq.mcap"
    summary = write_synth_bag(seq, out, compressed=True)
    return seq, summary, read_mcap(summary.path)


def per_frame(msgs, topic):
    return [m for _, m in msgs[topic]]


def test_layout_stamps_and_counts(bag):
    seq, summary, msgs = bag
    assert summary.path.name == "seq.mcap" and summary.path.is_file()  # the single file the name says
    n = seq.num_frames
    assert n == 12
    for cam in ("cam0", "cam1"):
        for topic in (f"/{cam}/image_raw", f"/{cam}/image_raw/compressed", f"/{cam}/camera_info",
                      f"/gt/{cam}/depth", f"/gt/{cam}/dynamic_mask", f"/gt/{cam}/pose", f"/gt/{cam}/tracks"):
            assert len(msgs[topic]) == n, topic
    assert len(msgs["/gt/odom"]) == n and len(msgs["/tf_static"]) == 1
    # header stamp == log time, realistic epoch, cameras share the stamp, 10 Hz spacing
    for topic, items in msgs.items():
        for log_time, m in items:
            if hasattr(m, "header"):
                assert stamp_ns(m.header) == log_time, topic
    s0 = [stamp_ns(m.header) for m in per_frame(msgs, "/cam0/image_raw")]
    s1 = [stamp_ns(m.header) for m in per_frame(msgs, "/cam1/image_raw")]
    assert s0 == s1
    assert s0[0] == 1_700_000_000 * 10**9
    assert np.allclose(np.diff(s0), 1e8, atol=1)
    img = per_frame(msgs, "/cam0/image_raw")[0]
    assert (img.encoding, img.width, img.height, img.step, img.header.frame_id) == \
        ("rgb8", 160, 96, 480, "cam0_optical_frame")
    d = per_frame(msgs, "/gt/cam0/depth")[0]
    assert (d.encoding, d.step, d.header.frame_id) == ("32FC1", 640, "cam0_optical_frame")
    assert per_frame(msgs, "/gt/cam0/pose")[0].header.frame_id == "world"
    odom = per_frame(msgs, "/gt/odom")[0]
    assert (odom.header.frame_id, odom.child_frame_id) == ("world", "base_link")
    assert np.all(np.diag(np.asarray(odom.pose.covariance).reshape(6, 6)) > 0)


def test_tf_static_rep103_and_pose_chain(bag):
    seq, _, msgs = bag
    (tfmsg,) = per_frame(msgs, "/tf_static")
    tfs = {t.child_frame_id: t for t in tfmsg.transforms}
    assert set(tfs) == {"cam0_optical_frame", "cam1_optical_frame"}
    for cam in ("cam0", "cam1"):
        t = tfs[f"{cam}_optical_frame"]
        assert t.header.frame_id == "base_link"
        T_bc = transform_matrix(t.transform)
        np.testing.assert_allclose(T_bc, seq.T_base_cam[cam], atol=1e-9)
        R = T_bc[:3, :3]
        # optical z (forward) ~ base +x, optical x (right) ~ base -y, optical y (down) ~ base -z
        assert R[:, 2] @ [1, 0, 0] > 0.9 and R[:, 0] @ [0, -1, 0] > 0.9 and R[:, 1] @ [0, 0, -1] > 0.9
        for odom, pose in zip(per_frame(msgs, "/gt/odom"), per_frame(msgs, f"/gt/{cam}/pose")):
            np.testing.assert_allclose(pose_matrix(odom.pose.pose) @ T_bc, pose_matrix(pose.pose), atol=1e-9)
    # cam0 is left of cam1 (base +y is left), baseline 0.3 m
    y0 = transform_matrix(tfs["cam0_optical_frame"].transform)[1, 3]
    y1 = transform_matrix(tfs["cam1_optical_frame"].transform)[1, 3]
    assert y0 - y1 == pytest.approx(0.3)


def test_depth_consistent_across_cameras(bag):
    """cam0's static pixels, unprojected with GT depth/pose/K, land on cam1's GT depth surface."""
    _, _, msgs = bag
    checked = 0
    for i in (0, 5, 11):
        d0, d1 = (image_array(per_frame(msgs, f"/gt/{c}/depth")[i]) for c in ("cam0", "cam1"))
        m0, m1 = (image_array(per_frame(msgs, f"/gt/{c}/dynamic_mask")[i]) for c in ("cam0", "cam1"))
        K0, K1 = (np.asarray(per_frame(msgs, f"/{c}/camera_info")[i].k).reshape(3, 3) for c in ("cam0", "cam1"))
        T0, T1 = (pose_matrix(per_frame(msgs, f"/gt/{c}/pose")[i].pose) for c in ("cam0", "cam1"))
        X = unproject(d0, K0, T0)[m0 == 0]
        Xc = (X - T1[:3, 3]) @ T1[:3, :3]
        z = Xc[:, 2]
        u = K1[0, 0] * Xc[:, 0] / z + K1[0, 2]
        v = K1[1, 1] * Xc[:, 1] / z + K1[1, 2]
        ok = (z > 0.1) & (u >= 0) & (u <= d1.shape[1] - 1) & (v >= 0) & (v <= d1.shape[0] - 1)
        inv, (u0, v0) = bilinear(1.0 / d1.astype(np.float64), u[ok], v[ok])  # 1/z is affine on planes
        static = (m1[v0, u0] == 0) & (m1[v0, u0 + 1] == 0) & (m1[v0 + 1, u0] == 0) & (m1[v0 + 1, u0 + 1] == 0)
        rel = np.abs(inv * z[ok] - 1.0)[static]
        assert rel.size > 0.3 * d0.size  # the cameras overlap a lot
        assert np.median(rel) < 1e-6  # float32 depth; a 5 mm pose error gives ~1e-3
        assert np.mean(rel < 1e-4) > 0.8  # the rest: occlusions and depth edges
        checked += rel.size
    assert checked > 10000


def _moving_sdf(seq: SynthSequence, X: np.ndarray, time_s: float) -> np.ndarray:
    """Distance of world points (N, 3) to the nearest moving object's surface at ``time_s``: (N,)."""
    tau = time_s * seq.config.speed
    best = np.full(X.shape[0], np.inf)
    for prim in seq.scene.moving:
        R, t = prim.pose(tau)
        p = (X - t) @ R
        if prim.kind == "sphere":
            sdf = np.linalg.norm(p, axis=1) - prim.size[0]
        else:
            q = np.abs(p) - prim.size
            sdf = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
        best = np.minimum(best, np.abs(sdf))
    return best


def test_dynamic_mask_is_exactly_the_moving_objects(bag):
    seq, _, msgs = bag
    start = int(seq.config.start_time_s * 1e9)
    n_dynamic = 0
    for cam in ("cam0", "cam1"):
        for i in range(seq.num_frames):
            depth = image_array(per_frame(msgs, f"/gt/{cam}/depth")[i])
            mask = image_array(per_frame(msgs, f"/gt/{cam}/dynamic_mask")[i])
            info = per_frame(msgs, f"/{cam}/camera_info")[i]
            pose = per_frame(msgs, f"/gt/{cam}/pose")[i]
            X = unproject(depth, np.asarray(info.k).reshape(3, 3), pose_matrix(pose.pose)).reshape(-1, 3)
            dist = _moving_sdf(seq, X, (stamp_ns(pose.header) - start) * 1e-9)
            dyn = mask.reshape(-1) == 255
            assert set(np.unique(mask)) <= {0, 255}
            assert np.all(dist[dyn] < 1e-4)  # every masked pixel lies on a moving surface
            assert np.mean(dist[~dyn] < 1e-4) < 1e-3  # and (almost) no other pixel does
            n_dynamic += int(dyn.sum())
    assert n_dynamic > 200


def test_tracks_reproject_to_fixed_static_points(bag):
    seq, _, msgs = bag
    worlds = defaultdict(dict)  # id -> frame -> world point (from uv + GT depth + pose)
    exact = defaultdict(dict)  # id -> frame -> world point (from the message's position)
    n_visible = n_occluded = n_occluded_ok = 0
    for i in range(seq.num_frames):
        tr = per_frame(msgs, "/gt/cam0/tracks")[i]
        depth = image_array(per_frame(msgs, "/gt/cam0/depth")[i]).astype(np.float64)
        mask = image_array(per_frame(msgs, "/gt/cam0/dynamic_mask")[i])
        K = np.asarray(per_frame(msgs, "/cam0/camera_info")[i].k).reshape(3, 3)
        T = pose_matrix(per_frame(msgs, "/gt/cam0/pose")[i].pose)
        assert same_header(tr.header, per_frame(msgs, "/cam0/image_raw")[i].header)
        assert (tr.width, tr.height, tr.camera_index) == (160, 96, 0)
        ids = np.array([k.id for k in tr.keypoints])
        assert len(set(ids.tolist())) == len(ids)
        uv = np.array([[k.u, k.v] for k in tr.keypoints], np.float64)
        pos = np.array([[k.position.x, k.position.y, k.position.z] for k in tr.keypoints])
        vis = np.array([k.visible for k in tr.keypoints])
        ages = np.array([k.age for k in tr.keypoints])
        assert np.all((ages > 0) == vis)
        # the message's 3D point projects exactly to its uv
        proj = pos[:, :2] / pos[:, 2:] @ K[:2, :2].T + K[:2, 2]
        np.testing.assert_allclose(proj, uv, atol=2e-3)
        inside = (uv[:, 0] <= 159) & (uv[:, 1] <= 95) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0)
        inv, _ = bilinear(1.0 / depth, np.clip(uv[:, 0], 0, 159), np.clip(uv[:, 1], 0, 95))
        z_img = 1.0 / inv
        # occluded points lie behind the rendered surface
        occl = ~vis & inside
        n_occluded += int(occl.sum())
        n_occluded_ok += int((z_img[occl] < pos[occl, 2] - 1e-3).sum())
        static = vis & inside & ~seq.track_dynamic[ids] & (mask[np.round(uv[:, 1]).astype(int),
                                                                 np.round(uv[:, 0]).astype(int)] == 0)
        n_visible += int(static.sum())
        pts = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))], 1)
        X_img = (pts * z_img[:, None]) @ T[:3, :3].T + T[:3, 3]
        X_pos = pos @ T[:3, :3].T + T[:3, 3]
        for j in np.nonzero(static)[0]:
            worlds[ids[j]][i] = X_img[j]
            exact[ids[j]][i] = X_pos[j]
    assert n_visible > 500
    assert n_occluded > 20 and n_occluded_ok / n_occluded > 0.8  # the rest: at depth edges
    err_img, err_pos = [], []
    for tid, frames in worlds.items():
        for i in frames:
            if i + 1 in frames:
                err_img.append(np.linalg.norm(frames[i] - frames[i + 1]))
                err_pos.append(np.linalg.norm(exact[tid][i] - exact[tid][i + 1]))
    err_img, err_pos = np.array(err_img), np.array(err_pos)
    assert err_img.size > 300
    assert err_pos.max() < 1e-5  # the static point itself does not move
    assert np.median(err_img) < 1e-3 and np.mean(err_img < 1e-2) > 0.9  # uv + depth + pose recover it


def test_compressed_images_decode_close_to_raw(bag):
    _, _, msgs = bag
    for cam in ("cam0", "cam1"):
        raws = [image_array(m).astype(int) for m in per_frame(msgs, f"/{cam}/image_raw")]
        comps = per_frame(msgs, f"/{cam}/image_raw/compressed")
        for i, comp in enumerate(comps):
            assert same_header(comp.header, per_frame(msgs, f"/{cam}/image_raw")[i].header)
            assert "jpeg" in comp.format
            rgb = cv2.imdecode(np.frombuffer(bytes(comp.data), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            diff = np.abs(rgb.astype(int) - raws[i]).mean()
            assert diff < 12.0  # JPEG q90 with 4:2:0 chroma on noisy, high-frequency texture
            assert np.abs(rgb.astype(int) - raws[(i + 6) % len(raws)]).mean() > 2 * diff  # not any image


def test_sqlite3_storage_and_jitter(tmp_path):
    """sqlite3 bag read with the stdlib + mcap_ros2's CDR decoder; jittered stamps stay consistent."""
    cfg = SynthConfig(seed=2, num_cameras=2, width=64, height=40, duration_s=0.4, texture_px=64, num_tracks=32,
                      jitter_ms=4.0)
    seq = SynthSequence(cfg)
    summary = write_synth_bag(seq, tmp_path / "sq.db3")
    assert summary.storage == "sqlite3"
    db = summary.path
    assert db.name == "sq.db3" and db.is_file()
    con = sqlite3.connect(db)
    topics = {tid: (name, typ) for tid, name, typ in con.execute("SELECT id, name, type FROM topics")}
    defs = {typ: (enc, text) for typ, enc, text in
            con.execute("SELECT topic_type, encoding, encoded_message_definition FROM message_definitions")}
    factory = DecoderFactory()
    decoders = {}
    got = defaultdict(list)
    for tid, ts, data in con.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp"):
        name, typ = topics[tid]
        if typ not in decoders:
            enc, text = defs[typ]
            schema = Schema(id=len(decoders) + 1, name=typ, encoding=enc, data=text.encode())  # ids key its cache
            decoders[typ] = factory.decoder_for("cdr", schema)
        got[name].append((ts, decoders[typ](bytes(data))))
    con.close()
    assert len(got["/cam0/image_raw"]) == seq.num_frames == 4
    for i in range(seq.num_frames):
        f = seq.frame(i)
        for cam in ("cam0", "cam1"):
            ts, depth = got[f"/gt/{cam}/depth"][i]
            assert ts == stamp_ns(depth.header) == f[cam].stamp_ns
            np.testing.assert_array_equal(image_array(depth), f[cam].depth)
            np.testing.assert_array_equal(image_array(got[f"/{cam}/image_raw"][i][1]), f[cam].rgb)
            assert abs(f[cam].stamp_ns - f.stamp_ns) <= 4_000_000
            assert stamp_ns(got[f"/gt/{cam}/pose"][i][1].header) == f[cam].stamp_ns
        assert f["cam0"].stamp_ns != f["cam1"].stamp_ns  # jitter applied per camera
