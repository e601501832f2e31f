"""PointCloud2 writer checked with independent readers: rosbags' CDR deserialiser + a field table
written out here by hand (PCL PointXYZRGB: x, y, z at 0, 4, 8, rgb at 16, point_step 32)."""
import struct
import sys

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import PointCloud2, PointField

from vggt4d_ros.ros.conversions import make_header
from vggt4d_ros.ros.pointcloud import (PointCloudError, cloud_to_numpy, cloud_xyz, pack_rgb,
                                       points_to_cloud, unpack_rgb)

HDR = make_header("cam0_optical_frame", 1_700_000_000_000_000_123)
STORE = get_typestore(Stores.ROS2_JAZZY)
LE = sys.byteorder == "little"

# Written independently of the module: PCL's padded PointXYZRGB record.
PCL_XYZRGB = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                       "offsets": [0, 4, 8, 16], "itemsize": 32})


def decode(msg):
    """Serialise with rclpy, deserialise with rosbags (an independent CDR implementation)."""
    return STORE.deserialize_cdr(bytes(serialize_message(msg)), "sensor_msgs/msg/PointCloud2")


def scene(h=3, w=4, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-5, 5, (h, w, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return pts, cols


def test_organised_layout_values_nans_and_rgb_bits():
    pts, cols = scene()
    pts[0, 1, 2] = np.nan  # non-finite -> invalid
    valid = np.ones((3, 4), bool)
    valid[2, 3] = False  # masked -> invalid
    cloud = decode(points_to_cloud(pts, HDR, colors=cols, valid=valid))
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (3, 4, 32, 128)
    assert cloud.is_dense is False and cloud.is_bigendian is (not LE)
    assert cloud.header.frame_id == "cam0_optical_frame"
    assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) == (1_700_000_000, 123)
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 16, 7, 1)]
    assert cloud.data.size == 3 * 4 * 32
    rec = np.frombuffer(cloud.data.tobytes(), PCL_XYZRGB).reshape(3, 4)
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], -1)
    bad = np.zeros((3, 4), bool)
    bad[0, 1] = bad[2, 3] = True
    assert np.isnan(xyz[bad]).all()
    np.testing.assert_array_equal(xyz[~bad], pts[~bad])
    # 0x00RRGGBB packed in the float's bits, for every point (invalid ones keep their colour).
    expect = (cols[..., 0].astype(np.uint32) << 16) | (cols[..., 1].astype(np.uint32) << 8) | cols[..., 2]
    np.testing.assert_array_equal(rec["rgb"], expect)
    assert (rec["rgb"] >> 24 == 0).all()
    # padding bytes 12..15 and 20..31 are zero
    raw = cloud.data.reshape(12, 32)
    assert not raw[:, 12:16].any() and not raw[:, 20:32].any()


def test_one_point_byte_exact():
    pts = np.array([[1.0, -2.0, 3.5]], np.float32)
    cloud = decode(points_to_cloud(pts, HDR, colors=np.array([[255, 128, 1]], np.uint8)))
    assert (cloud.height, cloud.width, cloud.is_dense) == (1, 1, True)
    expect = struct.pack("<fff", 1.0, -2.0, 3.5) + bytes(4) + struct.pack("<I", 0x00FF8001) + bytes(12)
    assert cloud.data.tobytes() == expect


def test_unorganised_drops_invalid_and_is_dense():
    pts, cols = scene(4, 5, seed=1)
    valid = np.random.default_rng(2).random((4, 5)) > 0.3
    pts[0, 0] = np.inf
    keep = valid & np.isfinite(pts).all(-1)
    cloud = decode(points_to_cloud(pts, HDR, colors=cols, valid=valid, organized=False))
    n = int(keep.sum())
    assert (cloud.height, cloud.width, cloud.row_step, cloud.is_dense) == (1, n, 32 * n, True)
    rec = np.frombuffer(cloud.data.tobytes(), PCL_XYZRGB)
    np.testing.assert_array_equal(np.stack([rec["x"], rec["y"], rec["z"]], -1), pts[keep])
    np.testing.assert_array_equal(unpack_rgb(rec["rgb"]), cols[keep])


def test_flat_input_and_no_colour_layout():
    pts = np.arange(12, dtype=np.float64).reshape(4, 3)
    cloud = decode(points_to_cloud(pts, HDR))
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step, cloud.is_dense) == (1, 4, 16, 64, True)
    assert [f.name for f in cloud.fields] == ["x", "y", "z"]
    rec = np.frombuffer(cloud.data.tobytes(), "<f4").reshape(4, 4)
    np.testing.assert_array_equal(rec[:, :3], pts)
    assert not rec[:, 3].any()
    # organised (N, 3) with an invalid point keeps it as NaN
    cloud = decode(points_to_cloud(pts, HDR, valid=np.array([True, False, True, True])))
    assert cloud.width == 4 and cloud.is_dense is False
    assert np.isnan(np.frombuffer(cloud.data.tobytes(), "<f4").reshape(4, 4)[1, :3]).all()


def test_all_invalid_unorganised_is_empty():
    pts = np.full((2, 2, 3), np.nan, np.float32)
    msg = points_to_cloud(pts, HDR, organized=False)
    assert (msg.height, msg.width, len(msg.data)) == (1, 0, 0)
    assert cloud_to_numpy(msg).shape == (1, 0)


def test_bad_inputs():
    with pytest.raises(ValueError):
        points_to_cloud(np.zeros((4, 2)), HDR)
    with pytest.raises(ValueError):
        points_to_cloud(np.zeros((2, 2, 3)), HDR, colors=np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError):
        points_to_cloud(np.zeros((2, 2, 3)), HDR, valid=np.ones(3, bool))


def test_reader_roundtrip_and_foreign_layouts():
    pts, cols = scene(2, 3, seed=3)
    msg = points_to_cloud(pts, HDR, colors=cols)
    arr = cloud_to_numpy(msg)
    assert arr.shape == (2, 3)
    np.testing.assert_array_equal(cloud_xyz(msg), pts)
    np.testing.assert_array_equal(unpack_rgb(arr["rgb"]), cols)
    assert arr["rgb"].dtype == np.float32
    np.testing.assert_array_equal(pack_rgb(cols), arr["rgb"].view(np.uint32))

    # A big-endian cloud with a float64 field, a uint16 field with count 2, and row padding.
    h, w, step, row_step = 2, 3, 24, 3 * 24 + 8
    rng = np.random.default_rng(4)
    x = rng.normal(size=(h, w))
    ring = rng.integers(0, 60000, (h, w, 2)).astype(np.uint16)
    inten = rng.normal(size=(h, w)).astype(np.float32)
    buf = bytearray(h * row_step)
    for r in range(h):
        for c in range(w):
            o = r * row_step + c * step
            buf[o:o + 8] = struct.pack(">d", x[r, c])
            buf[o + 8:o + 12] = struct.pack(">HH", *ring[r, c])
            buf[o + 16:o + 20] = struct.pack(">f", inten[r, c])
    foreign = PointCloud2(height=h, width=w, point_step=step, row_step=row_step, is_bigendian=True,
                          fields=[PointField(name="x", offset=0, datatype=PointField.FLOAT64, count=1),
                                  PointField(name="ring", offset=8, datatype=PointField.UINT16, count=2),
                                  PointField(name="intensity", offset=16, datatype=PointField.FLOAT32,
                                             count=1)])
    foreign.data = bytes(buf)
    arr = cloud_to_numpy(foreign)
    np.testing.assert_array_equal(arr["x"], x)
    np.testing.assert_array_equal(arr["ring"], ring)
    np.testing.assert_array_equal(arr["intensity"], inten)

    foreign.fields[2].offset = 22  # overruns point_step 24
    with pytest.raises(PointCloudError, match="overruns"):
        cloud_to_numpy(foreign)
    foreign.fields[2].offset = 16
    foreign.data = bytes(buf[:-1])
    with pytest.raises(PointCloudError, match="expected height"):
        cloud_to_numpy(foreign)
