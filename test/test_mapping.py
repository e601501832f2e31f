"""VoxelMap against hand-made points; PLY/PCD read back by parsers written here (not the module's)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

from vggt4d_ros.perception.mapping import VoxelMap, read_pcd, read_ply, static_points


def _by_position(xyz, *arrays):
    order = np.lexsort((xyz[:, 2], xyz[:, 1], xyz[:, 0]))
    return (xyz[order],) + tuple(a[order] for a in arrays)


def test_voxel_means_colours_and_counts():
    m = VoxelMap(voxel_size=1.0)
    pts = np.array([[0.1, 0.2, 0.3], [0.5, 0.6, 0.7], [0.9, 0.1, 0.2],  # voxel (0, 0, 0)
                    [1.5, 0.5, 0.5],  # voxel (1, 0, 0)
                    [-0.5, -0.5, -0.5], [-0.25, -0.75, -0.1]])  # voxel (-1, -1, -1)
    cols = np.array([[0, 0, 0], [30, 60, 90], [60, 120, 180], [7, 8, 9], [10, 10, 10], [20, 21, 22]], np.uint8)
    assert m.insert(pts, cols, stamp_ns=1) == 6
    xyz, rgb, cnt = _by_position(*m.points())
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8 and len(m) == 3
    np.testing.assert_allclose(xyz[0], [-0.375, -0.625, -0.3], atol=1e-6)
    np.testing.assert_allclose(xyz[1], [0.5, 0.3, 0.4], atol=1e-6)
    np.testing.assert_allclose(xyz[2], [1.5, 0.5, 0.5], atol=1e-6)
    np.testing.assert_array_equal(rgb, [[15, 16, 16], [30, 60, 90], [7, 8, 9]])
    np.testing.assert_array_equal(cnt, [2, 3, 1])
    # A second insertion updates the running mean with the right weights.
    m.insert(np.array([[0.9, 0.9, 0.9]]), np.array([[255, 255, 255]], np.uint8), stamp_ns=2)
    xyz, rgb, cnt = _by_position(*m.points())
    np.testing.assert_allclose(xyz[1], [(1.5 + 0.9) / 4, (0.9 + 0.9) / 4, (1.2 + 0.9) / 4], atol=1e-6)
    np.testing.assert_array_equal(rgb[1], np.rint([(90 + 255) / 4, (180 + 255) / 4, (270 + 255) / 4]))
    np.testing.assert_array_equal(cnt, [2, 4, 1])
    np.testing.assert_array_equal(m.voxel_index(m.keys()), [[-1, -1, -1], [0, 0, 0], [1, 0, 0]])


def test_dynamic_flags_nonfinite_and_min_observations():
    m = VoxelMap(voxel_size=0.5, min_observations=2)
    pts = np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [3.1, 0.1, 0.1], [3.2, 0.2, 0.2], [np.nan, 0, 0],
                    [7.0, 7.0, 7.0]])
    dyn = np.array([False, False, True, True, False, False])
    assert m.insert(pts, None, stamp_ns=5, dynamic=dyn) == 3  # 2 static + the lone one; NaN ignored
    assert len(m) == 2  # the dynamic voxel at x = 3 never exists
    xyz, rgb, cnt = m.points()  # the lone voxel has 1 < 2 observations: not shown
    np.testing.assert_allclose(xyz, [[0.15, 0.15, 0.15]], atol=1e-6)
    np.testing.assert_array_equal(rgb, [[128, 128, 128]])
    np.testing.assert_array_equal(cnt, [2])
    with pytest.raises(ValueError):
        m.insert(pts, None, 0, dynamic=dyn[:2])
    m.clear()
    assert len(m) == 0 and m.points()[0].shape == (0, 3)


def test_bound_and_eviction_rule():
    m = VoxelMap(voxel_size=1.0, max_voxels=4, min_observations=2)
    c = lambda n: np.zeros((n, 3), np.uint8)  # noqa: E731
    # t=1: voxels A (x=0) twice, B (x=1) twice -> confirmed; t=2: C (x=2) twice; t=3: D (x=3) once.
    m.insert(np.array([[0.5, 0, 0], [0.5, 0, 0], [1.5, 0, 0], [1.5, 0, 0]]), c(4), stamp_ns=1)
    m.insert(np.array([[2.5, 0, 0], [2.5, 0, 0]]), c(2), stamp_ns=2)
    m.insert(np.array([[3.5, 0, 0]]), c(1), stamp_ns=3)
    assert len(m) == 4 and m.evicted == 0
    # t=4: a new voxel E (x=4). Over the bound by one: the unconfirmed D goes first although it is newer.
    m.insert(np.array([[4.5, 0, 0], [4.5, 0, 0]]), c(2), stamp_ns=4)
    assert len(m) == 4 and m.evicted == 1
    assert sorted(m.voxel_index(m.keys())[:, 0]) == [0, 1, 2, 4]
    # A is seen again at t=5; then F and G (t=6): the oldest confirmed ones (B, then C) are evicted.
    m.insert(np.array([[0.5, 0, 0]]), c(1), stamp_ns=5)
    m.insert(np.array([[5.5, 0, 0], [5.5, 0, 0], [6.5, 0, 0], [6.5, 0, 0]]), c(4), stamp_ns=6)
    assert len(m) == 4 and m.evicted == 3
    assert sorted(m.voxel_index(m.keys())[:, 0]) == [0, 4, 5, 6]
    # Ties in last_seen: the fewest observations go first.
    m2 = VoxelMap(voxel_size=1.0, max_voxels=2)
    m2.insert(np.array([[0.5, 0, 0]] * 3 + [[1.5, 0, 0]]), c(4), stamp_ns=1)
    m2.insert(np.array([[2.5, 0, 0]]), c(1), stamp_ns=2)
    assert sorted(m2.voxel_index(m2.keys())[:, 0]) == [0, 2]
    # One insertion larger than the bound keeps its most observed voxels.
    m3 = VoxelMap(voxel_size=1.0, max_voxels=2)
    m3.insert(np.array([[0.5, 0, 0], [1.5, 0, 0], [1.5, 0, 0], [2.5, 0, 0], [2.5, 0, 0], [2.5, 0, 0]]), c(6), 1)
    assert sorted(m3.voxel_index(m3.keys())[:, 0]) == [1, 2]


def test_many_random_points_match_a_reference_groupby():
    rng = np.random.default_rng(3)
    pts = rng.uniform(-2, 2, (5000, 3))
    cols = rng.integers(0, 256, (5000, 3), dtype=np.uint8)
    m = VoxelMap(voxel_size=0.5)
    for k in range(5):  # inserted in chunks: running means must equal the batch means
        m.insert(pts[k * 1000:(k + 1) * 1000], cols[k * 1000:(k + 1) * 1000], stamp_ns=k)
    idx = np.floor(pts / 0.5).astype(np.int64)
    uniq, inv, cnt = np.unique(idx, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    ref = np.zeros((len(uniq), 3))
    np.add.at(ref, inv, pts)
    ref /= cnt[:, None]
    xyz, _rgb, counts = m.points()
    got = np.floor(xyz.astype(np.float64) / 0.5).astype(np.int64)
    order = np.lexsort(got.T[::-1])
    np.testing.assert_array_equal(got[order], uniq)  # np.unique(axis=0) is lexicographic
    np.testing.assert_allclose(xyz[order], ref, atol=1e-5)
    np.testing.assert_array_equal(counts[order], cnt)


def _parse_ply(path):
    data = open(path, "rb").read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    head = data[:end].decode("ascii").split("\n")
    assert head[0] == "ply" and head[1] == "format binary_little_endian 1.0"
    props = [ln.split()[1:] for ln in head if ln.startswith("property")]
    assert props == [["float", "x"], ["float", "y"], ["float", "z"], ["uchar", "red"], ["uchar", "green"],
                     ["uchar", "blue"]]
    n = int([ln for ln in head if ln.startswith("element vertex")][0].split()[2])
    body = data[end:]
    assert len(body) == n * 15  # 3 float32 + 3 uint8, packed
    raw = np.frombuffer(body, np.uint8).reshape(n, 15)
    xyz = raw[:, :12].copy().view("<f4").reshape(n, 3)
    return xyz, raw[:, 12:15].copy()


def _parse_pcd(path):
    data = open(path, "rb").read()
    end = data.index(b"DATA binary\n") + len(b"DATA binary\n")
    head = dict(ln.split(" ", 1) for ln in data[:end].decode("ascii").strip().split("\n") if not ln.startswith("#"))
    assert head["VERSION"] == "0.7" and head["FIELDS"] == "x y z rgb" and head["SIZE"] == "4 4 4 4"
    assert head["TYPE"] == "F F F F" and head["COUNT"] == "1 1 1 1" and head["HEIGHT"] == "1"
    n = int(head["POINTS"])
    assert int(head["WIDTH"]) == n and len(data) - end == n * 16
    raw = np.frombuffer(data[end:], "<f4").reshape(n, 4)
    packed = raw[:, 3].copy().view("<u4")
    rgb = np.stack([packed >> 16 & 0xFF, packed >> 8 & 0xFF, packed & 0xFF], axis=1).astype(np.uint8)
    return raw[:, :3].copy(), rgb


def test_ply_and_pcd_read_back(tmp_path):
    rng = np.random.default_rng(0)
    m = VoxelMap(voxel_size=0.25)
    m.insert(rng.normal(0, 3, (800, 3)), rng.integers(0, 256, (800, 3), dtype=np.uint8), stamp_ns=1)
    xyz, rgb, _ = m.points()
    assert len(xyz) > 100
    ply = m.save_ply(tmp_path / "sub" / "map.ply")
    pcd = m.save_pcd(tmp_path / "map.pcd")
    for parsed in (_parse_ply(ply), read_ply(ply), _parse_pcd(pcd), read_pcd(pcd)):
        np.testing.assert_array_equal(parsed[0], xyz)
        np.testing.assert_array_equal(parsed[1], rgb)
    # No temporary file is left behind, and saving again replaces the file.
    assert sorted(os.listdir(tmp_path)) == ["map.pcd", "sub"] and os.listdir(tmp_path / "sub") == ["map.ply"]
    m.clear()
    m.save_ply(ply)
    assert _parse_ply(ply)[0].shape == (0, 3)


def test_static_points_and_insert_step():
    H, W = 4, 5
    pts = np.zeros((H, W, 3), np.float32)
    pts[..., 0] = np.arange(W)[None, :]
    pts[..., 1] = np.arange(H)[:, None]
    pts[..., 2] = 2.0
    pts[0, 0] = np.nan
    rgb = np.full((H, W, 3), 9, np.uint8)
    dyn = np.zeros((H, W), np.float32)
    dyn[3, :] = 0.9  # the last row is dynamic
    conf = np.full((H, W), 5.0, np.float32)
    conf[1, 1] = 1.0  # low confidence
    T = np.eye(4)
    T[:3, 3] = [10.0, 0.0, 0.0]
    xyz, c = static_points(pts, rgb, T, dyn, conf, mask_threshold=0.5, min_confidence=2.0)
    assert xyz.shape == (H * W - 1 - W - 1, 3) and c.shape == xyz.shape
    assert np.all(xyz[:, 1] < 3) and not np.any((xyz[:, 0] == 11) & (xyz[:, 1] == 1))
    assert np.all(xyz[:, 0] >= 10) and np.all(xyz[:, 2] == 2.0)
    xyz_all, _ = static_points(pts, rgb, T, dyn, None, mask_threshold=None)
    assert xyz_all.shape == (H * W - 1, 3)
    xyz_dec, _ = static_points(pts, rgb, T, None, None, decimation=2)
    assert xyz_dec.shape == (2 * 3 - 1, 3)

    cam = SimpleNamespace(points_cam=pts, rgb=rgb, dynamic=dyn, confidence=conf, stamp_ns=7)
    step = SimpleNamespace(cameras={"cam0": cam}, T_odom_cam={"cam0": T})
    m = VoxelMap(voxel_size=0.5)
    assert m.insert_step(step, mask_threshold=0.5, min_confidence=2.0) == len(xyz)
    assert m.points()[0][:, 1].max() < 3
    m.clear()
    assert m.insert_step(step, drop_dynamic=False) == H * W - 1


def test_invalid_arguments():
    for kw in ({"voxel_size": 0.0}, {"voxel_size": float("nan")}, {"voxel_size": 1.0, "max_voxels": 0},
               {"voxel_size": 1.0, "min_observations": 0}):
        with pytest.raises(ValueError):
            VoxelMap(**kw)
    m = VoxelMap(voxel_size=1e-6)
    assert m.insert(np.array([[1e3, 0, 0], [0.0, 0, 0]]), None, 0) == 1  # 1e9 voxels: out of the key range
    assert m.dropped_out_of_range == 1
