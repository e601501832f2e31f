"""Image / CompressedImage / depth / mask / CameraInfo conversions against hand-made ground truth."""
import math
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest

from vggt4d_ros.ros.conversions import (
    ImageConversionError, camera_info_msg, compressed_image_size, compressed_to_rgb,
    confidence_to_msg, depth_from_msg, depth_to_msg, image_to_rgb, make_header, mask_to_msg,
    ns_to_stamp, rgb_to_image_msg, scale_camera_info, stamp_to_ns)

HDR = make_header("cam0_optical_frame", 1_700_000_000_250_000_000)


def pattern(h=6, w=7):
    """Coloured pattern with distinct R, G, B per pixel (so any channel swap shows)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(10 * y + x) % 256, (50 + 3 * x) % 256, (200 + 7 * y) % 256], -1).astype(np.uint8)


def raw_image(arr, encoding, pad=0, big=0):
    """Image message with ``pad`` extra bytes per row (filled with 0xEE) from (H, W[, C]) array."""
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8)
    rows = np.full((h, row.shape[1] + pad), 0xEE, np.uint8)
    rows[:, : row.shape[1]] = row
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=big, step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


# ----------------------------------------------------------------------------- raw images

@pytest.mark.parametrize("pad", [0, 5])
def test_rgb_bgr_rgba_bgra_exact(pad):
    rgb = pattern()
    alpha = np.full(rgb.shape[:2] + (1,), 77, np.uint8)
    cases = {
        "rgb8": rgb, "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], -1), "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], -1),
    }
    for enc, arr in cases.items():
        out = image_to_rgb(raw_image(arr, enc, pad))
        assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous, enc
        np.testing.assert_array_equal(out, rgb, err_msg=enc)
        assert out[0, 1, 0] == 1 and out[0, 1, 1] == 53 and out[0, 1, 2] == 200  # R, G, B of (0, 1)


def test_mono_and_generic_encodings():
    grey = pattern()[:, :, 0]
    for enc in ("mono8", "8UC1"):
        out = image_to_rgb(raw_image(grey, enc, pad=3))
        np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, 2))
    rgb = pattern()
    np.testing.assert_array_equal(image_to_rgb(raw_image(rgb[:, :, ::-1], "8UC3")), rgb)  # BGR default
    np.testing.assert_array_equal(image_to_rgb(raw_image(rgb, "8UC3"), generic_order="rgb"), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.zeros(rgb.shape[:2] + (1,), np.uint8)], -1)
    np.testing.assert_array_equal(image_to_rgb(raw_image(bgra, "8UC4")), rgb)


@pytest.mark.parametrize("big", [0, 1])
def test_16bit_encodings_keep_high_byte_in_either_byte_order(big):
    rgb = pattern()
    v16 = rgb.astype(np.uint16) * 256 + 0xAB  # low byte garbage, high byte = the 8-bit value
    arr = v16.astype(">u2" if big else "<u2")
    np.testing.assert_array_equal(image_to_rgb(raw_image(arr, "rgb16", pad=2, big=big)), rgb)
    np.testing.assert_array_equal(image_to_rgb(raw_image(arr[:, :, ::-1], "bgr16", big=big)), rgb)
    mono = arr[:, :, 0]
    np.testing.assert_array_equal(image_to_rgb(raw_image(mono, "mono16", big=big))[:, :, 1], rgb[:, :, 0])


def test_copy_semantics():
    rgb = pattern()
    msg = raw_image(rgb, "rgb8")
    owned = image_to_rgb(msg)
    owned[0, 0] = 0
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)  # the message is untouched
    view = image_to_rgb(msg, copy_data=False)
    assert not view.flags.writeable
    np.testing.assert_array_equal(view, rgb)


@pytest.mark.parametrize("enc, pattern_offsets", [
    ("bayer_rggb8", {"r": (0, 0), "g": [(0, 1), (1, 0)], "b": (1, 1)}),
    ("bayer_bggr8", {"b": (0, 0), "g": [(0, 1), (1, 0)], "r": (1, 1)}),
    ("bayer_gbrg8", {"g": [(0, 0), (1, 1)], "b": (0, 1), "r": (1, 0)}),
    ("bayer_grbg8", {"g": [(0, 0), (1, 1)], "r": (0, 1), "b": (1, 0)}),
])
def test_bayer_patterns_demosaic_a_uniform_colour(enc, pattern_offsets):
    colour = {"r": 200, "g": 100, "b": 30}
    h, w = 12, 16
    mosaic = np.zeros((h, w), np.uint8)
    for ch, offs in pattern_offsets.items():
        for dy, dx in (offs if isinstance(offs, list) else [offs]):
            mosaic[dy::2, dx::2] = colour[ch]
    out = image_to_rgb(raw_image(mosaic, enc, pad=4))
    assert out.shape == (h, w, 3)
    np.testing.assert_array_equal(out[2:-2, 2:-2].reshape(-1, 3),
                                  np.tile([200, 100, 30], ((h - 4) * (w - 4), 1)))


def test_yuv422_packings_agree_and_colour_is_right():
    h, w = 4, 6
    Y, U, V = 120, 90, 220  # strong red (V high), little blue
    uyvy = np.tile(np.array([U, Y, V, Y], np.uint8), (h, w // 2))
    yuyv = np.tile(np.array([Y, U, Y, V], np.uint8), (h, w // 2))
    a = image_to_rgb(raw_image(uyvy.reshape(h, w, 2), "yuv422", pad=2))
    b = image_to_rgb(raw_image(yuyv.reshape(h, w, 2), "yuv422_yuy2"))
    np.testing.assert_array_equal(a, b)
    r, g, bl = (int(v) for v in a[0, 0])
    assert r > g and r > bl and len(np.unique(a.reshape(-1, 3), axis=0)) == 1
    odd = raw_image(np.zeros((2, 3, 2), np.uint8), "yuv422")
    with pytest.raises(ImageConversionError, match="even width"):
        image_to_rgb(odd)


def test_rosbags_style_message_with_ndarray_data():
    rgb = pattern()
    msg = SimpleNamespace(height=6, width=7, encoding="bgr8", is_bigendian=0, step=21,
                          data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


# ----------------------------------------------------------------------------- hostile input

def _msg(**kw):
    base = dict(height=4, width=4, encoding="rgb8", is_bigendian=0, step=12, data=bytes(48))
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("kw, match", [
    (dict(encoding="16UC1", step=8, data=bytes(32)), "not a supported colour"),
    (dict(encoding="32FC1", step=16, data=bytes(64)), "not a supported colour"),
    (dict(encoding="bayer_rggb16", step=8, data=bytes(32)), "not a supported colour"),
    (dict(encoding="nv21"), "not a supported colour"),
    (dict(encoding="weird"), "unsupported image encoding"),
    (dict(encoding=""), "unsupported image encoding"),
    (dict(height=0, data=b""), "zero size"),
    (dict(width=0, step=0, data=b""), "zero size"),
    (dict(height=-3), "zero size"),
    (dict(height=100_000, width=100_000, step=300_000), "max_pixels"),
    (dict(height=2**31, width=2**31, step=3 * 2**31), "max_pixels"),
    (dict(step=11, data=bytes(44)), "smaller than width"),
    (dict(data=bytes(47)), "expected height\\*step"),
    (dict(data=bytes(49)), "expected height\\*step"),
    (dict(step=2**40, data=bytes(48)), "expected height\\*step"),
    (dict(data=None), "not a byte buffer"),
    (dict(height="x"), "integer"),
])
def test_hostile_images_raise_conversion_error(kw, match):
    with pytest.raises(ImageConversionError, match=match):
        image_to_rgb(_msg(**kw))


def test_configurable_max_pixels():
    msg = raw_image(pattern(), "rgb8")
    image_to_rgb(msg, max_pixels=42)
    with pytest.raises(ImageConversionError, match="max_pixels=41"):
        image_to_rgb(msg, max_pixels=41)


def test_error_message_is_one_line():
    with pytest.raises(ImageConversionError) as err:
        image_to_rgb(_msg(encoding="yuv420"))
    assert "\n" not in str(err.value)


_ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3", "8UC4", "mono16", "rgb16",
              "bgra16", "yuv422", "yuv422_yuy2", "bayer_grbg8", "16UC1", "32FC1", "nv21", "jpeg", ""]
_BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3, "8UC4": 4,
        "mono16": 2, "rgb16": 6, "bgra16": 8, "yuv422": 2, "yuv422_yuy2": 2, "bayer_grbg8": 1}


def _reference(enc, rows, h, w, big):
    """Slow, independent reference for the simple encodings (None when not covered here)."""
    bpp = _BPP[enc]
    px = rows[:, : w * bpp]
    if enc.endswith("16"):
        hi = px.reshape(h, -1, 2)[:, :, 0 if big else 1]
        ch = bpp // 2
        px, enc = hi.reshape(h, w, ch), enc[:-2] + "8"
    else:
        px = px.reshape(h, w, bpp)
    if enc in ("mono8", "8UC1"):
        return np.concatenate([px[:, :, :1]] * 3, -1)
    if enc in ("rgb8", "rgba8"):
        return px[:, :, :3]
    if enc in ("bgr8", "bgra8", "8UC3", "8UC4"):
        return px[:, :, [2, 1, 0]]
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(enc=st.sampled_from(_ENCODINGS),
       h=st.one_of(st.integers(1, 6), st.integers(1, 6), st.sampled_from([0, 2**16, 2**31 - 1, 2**32 - 1])),
       w=st.one_of(st.integers(1, 6), st.integers(1, 6), st.sampled_from([0, 2**20, 2**32 - 1])),
       step_delta=st.sampled_from([0, 0, 0, 0, 2, 5, -1, -3]),
       data_delta=st.sampled_from([0, 0, 0, 0, 0, 1, -1, -4]),
       big=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_property_random_messages_convert_or_raise(enc, h, w, step_delta, data_delta, big, seed):
    """Any rclpy Image gives either the right RGB array or ImageConversionError, nothing else."""
    bpp = _BPP.get(enc, 1)
    step = max(0, min(w * bpp + step_delta, 2**32 - 1))
    n = max(0, min(h * step, 4096) + data_delta)  # never allocate much, whatever the header says
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
    msg = Image(height=h, width=w, encoding=enc, is_bigendian=big, step=step)
    msg.data = data.tobytes()
    try:
        out = image_to_rgb(msg, max_pixels=10_000)
    except ImageConversionError as exc:
        assert str(exc) and "\n" not in str(exc)
        event("rejected")
        return
    event("converted")
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert n == h * step and step >= w * bpp and h * w > 0
    ref = _reference(enc, data.reshape(h, step), h, w, big)
    if ref is not None:
        np.testing.assert_array_equal(out, ref)


# ----------------------------------------------------------------------------- compressed

def _compressed(rgb, ext, fmt):
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV encodes from BGR
    assert ok
    msg = CompressedImage(format=fmt)
    msg.header = HDR
    msg.data = buf.tobytes()
    return msg


def test_png_decode_is_exact_and_rgb_ordered():
    rgb = pattern(20, 30)
    msg = _compressed(rgb, ".png", "rgb8; png compressed bgr8")
    assert compressed_image_size(msg.data) == ("png", 30, 20)
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


def test_jpeg_decode_blocks_of_colour():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (220, 30, 30)
    rgb[:, 16:32] = (30, 220, 30)
    rgb[:, 32:] = (30, 30, 220)
    for fmt in ("jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8"):
        msg = _compressed(rgb, ".jpg", fmt)
        assert compressed_image_size(msg.data) == ("jpeg", 48, 32)
        out = compressed_to_rgb(msg)
        assert out.shape == rgb.shape
        centre = out[8:24, [4, 8, 20, 24, 36, 40]].astype(int)
        assert np.abs(centre - rgb[8:24, [4, 8, 20, 24, 36, 40]].astype(int)).max() <= 12


def test_grey_jpeg_comes_back_with_three_channels():
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    ok, buf = cv2.imencode(".png", grey)
    msg = CompressedImage(format="mono8; png compressed mono8")
    msg.data = buf.tobytes()
    out = compressed_to_rgb(msg)
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, 2))


def test_hostile_compressed_images():
    good = _compressed(pattern(8, 8), ".png", "png")
    raw = bytes(good.data)
    cases = {
        "no data": b"",
        "neither JPEG nor PNG": b"GIF89a" + bytes(40),
        "cannot decode": raw[:40],  # valid header, truncated body
    }
    for match, data in cases.items():
        msg = CompressedImage(format="png")
        msg.data = data
        with pytest.raises(ImageConversionError, match=match):
            compressed_to_rgb(msg)
    # A PNG header announcing 100000 x 100000 pixels is refused before decoding.
    huge = bytearray(raw)
    huge[16:24] = (100_000).to_bytes(4, "big") * 2
    msg = CompressedImage(format="png")
    msg.data = bytes(huge)
    with pytest.raises(ImageConversionError, match="max_pixels"):
        compressed_to_rgb(msg)
    # Same for JPEG: patch the SOF0 frame size.
    jpg = bytearray(_compressed(pattern(8, 8), ".jpg", "jpeg").data)
    i = jpg.index(b"\xff\xc0")
    jpg[i + 5:i + 9] = (60_000).to_bytes(2, "big") * 2
    msg.data = bytes(jpg)
    with pytest.raises(ImageConversionError, match="max_pixels"):
        compressed_to_rgb(msg)
    msg = CompressedImage(format="16UC1; compressedDepth png")
    msg.data = raw
    with pytest.raises(ImageConversionError, match="compressedDepth"):
        compressed_to_rgb(msg)


# ----------------------------------------------------------------------------- outputs

def test_depth_32fc1_exact_with_nan_invalid():
    d = np.array([[1.5, 0.0, -2.0], [np.inf, np.nan, 70.25]], np.float32)
    msg = depth_to_msg(d, HDR)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("32FC1", 2, 3, 12)
    assert msg.is_bigendian == (sys.byteorder == "big") and msg.header == HDR
    vals = np.frombuffer(bytes(msg.data), dtype="<f4" if sys.byteorder == "little" else ">f4").reshape(2, 3)
    np.testing.assert_array_equal(vals, [[1.5, np.nan, np.nan], [np.nan, np.nan, 70.25]])
    np.testing.assert_array_equal(depth_from_msg(msg), vals)


def test_depth_16uc1_millimetres_zero_invalid_clipped():
    d = np.array([[1.2344, 1.2346, 0.0], [np.nan, 70.0, 0.0002]], np.float32)
    msg = depth_to_msg(d[:, :, None], HDR, encoding="16UC1")
    assert (msg.encoding, msg.step) == ("16UC1", 6)
    mm = np.frombuffer(bytes(msg.data), dtype=np.uint16).reshape(2, 3)
    np.testing.assert_array_equal(mm, [[1234, 1235, 0], [0, 65535, 1]])
    back = depth_from_msg(msg)
    np.testing.assert_allclose(back[0, :2], [1.234, 1.235], rtol=0, atol=1e-6)
    assert np.isnan(back[0, 2]) and np.isnan(back[1, 0])
    with pytest.raises(ValueError):
        depth_to_msg(d, HDR, encoding="mono8")


def test_depth_roundtrip_through_serialisation():
    d = np.random.default_rng(0).uniform(0.1, 20, (294, 518)).astype(np.float32)
    msg = deserialize_message(serialize_message(depth_to_msg(d, HDR)), Image)
    np.testing.assert_array_equal(depth_from_msg(msg), d)


def test_mask_and_confidence():
    m = np.array([[0.2, 0.5, 0.51], [np.nan, 1.0, 0.0]], np.float32)
    msg = mask_to_msg(m, HDR)
    assert (msg.encoding, msg.step) == ("mono8", 3)
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(2, 3),
                                  [[0, 0, 255], [0, 255, 0]])
    msg = mask_to_msg(m, HDR, threshold=0.1)
    assert bytes(msg.data) == bytes([255, 255, 255, 0, 255, 0])
    msg = mask_to_msg(np.array([[True, False]]), HDR)
    assert bytes(msg.data) == bytes([255, 0])
    c = np.array([[1.0, 2.5], [np.nan, 7.0]], np.float32)
    msg = confidence_to_msg(c, HDR)
    assert msg.encoding == "32FC1" and msg.step == 8
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.float32).reshape(2, 2), c)


def test_rgb_to_image_msg_roundtrip():
    rgb = pattern()
    for enc in ("rgb8", "bgr8"):
        msg = rgb_to_image_msg(rgb, HDR, enc)
        assert msg.encoding == enc and msg.step == 21
        np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    assert bytes(rgb_to_image_msg(rgb, HDR, "bgr8").data)[:3] == bytes(rgb[0, 0, ::-1])
    msg = rgb_to_image_msg(rgb[:, :, 0], HDR)
    assert msg.encoding == "mono8"


def test_stamps():
    assert stamp_to_ns(ns_to_stamp(1_700_000_000_250_000_000)) == 1_700_000_000_250_000_000
    h = make_header("f", 12.5)
    assert (h.stamp.sec, h.stamp.nanosec, h.frame_id) == (12, 500_000_000, "f")
    assert make_header("f", h.stamp).stamp == h.stamp


# ----------------------------------------------------------------------------- camera info

K = np.array([[500.0, 0.5, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])


def test_camera_info_msg_fields():
    info = camera_info_msg(K, 640, 480, HDR)
    assert (info.width, info.height, info.distortion_model) == (640, 480, "plumb_bob")
    np.testing.assert_array_equal(info.k, K.reshape(-1))
    np.testing.assert_array_equal(info.r, np.eye(3).reshape(-1))
    np.testing.assert_array_equal(info.p, [500, 0.5, 320, 0, 0, 510, 240, 0, 0, 0, 1, 0])
    assert list(info.d) == [0.0] * 5 and info.binning_x == 0 and info.roi.width == 0
    info = camera_info_msg(K, 640, 480, HDR, D=[0.1, -0.2, 0, 0, 0.01, 0, 0, 0],
                           distortion_model="rational_polynomial")
    assert list(info.d) == [0.1, -0.2, 0, 0, 0.01, 0, 0, 0]
    assert len(camera_info_msg(K, 6, 4, HDR, distortion_model="equidistant").d) == 4
    with pytest.raises(ValueError):
        camera_info_msg(K[:2], 640, 480, HDR)


def test_scale_camera_info_matches_image_proc_by_hand():
    info = camera_info_msg(K, 1280, 720, HDR, D=[0.1, 0.2, 0.0, 0.0, 0.3])
    p = np.array(info.p)
    p[3] = -50.0  # a right stereo camera: Tx = -fx * baseline
    info.p = p
    out = scale_camera_info(info, 518, 294)
    sx, sy = 518 / 1280, 294 / 720  # 0.4046875, 0.408333...
    assert (out.width, out.height) == (518, 294)
    # fx, skew (unchanged), cx, fy, cy by hand:
    np.testing.assert_allclose(out.k, [202.34375, 0.5, 129.5, 0, 208.25, 98.0, 0, 0, 1], rtol=1e-12)
    np.testing.assert_allclose(out.p, [202.34375, 0.5, 129.5, -20.234375, 0, 208.25, 98.0, 0, 0, 0, 1, 0],
                               rtol=1e-12)
    assert math.isclose(out.k[0], 500 * sx) and math.isclose(out.k[5], 240 * sy)
    assert list(out.d) == list(info.d) and out.header == info.header
    np.testing.assert_array_equal(info.k, K.reshape(-1))  # input untouched


def test_scale_camera_info_roi_truncated_like_image_proc():
    info = camera_info_msg(K, 640, 480, HDR)
    info.roi = RegionOfInterest(x_offset=0, y_offset=0, width=0, height=0)
    out = scale_camera_info(info, 320, 240)
    np.testing.assert_allclose(out.k, [250, 0.5, 160, 0, 255, 120, 0, 0, 1])
    # binning 2: the image is 320x240, its resize to 160x120 is a factor 0.5 (not 0.25).
    info.binning_x = info.binning_y = 2
    out = scale_camera_info(info, 160, 120)
    assert (out.width, out.height, out.binning_x, out.binning_y) == (320, 240, 2, 2)
    np.testing.assert_allclose(out.k, [250, 0.5, 160, 0, 255, 120, 0, 0, 1])
    # ROI 301x201 at (11, 21), no binning: image is 301 wide; resize to 100x67.
    info = camera_info_msg(K, 640, 480, HDR)
    info.roi = RegionOfInterest(x_offset=11, y_offset=21, width=301, height=201, do_rectify=True)
    out = scale_camera_info(info, 100, 67)
    sx, sy = 100 / 301, 67 / 201
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height) == (3, 7, 100, 67)
    assert out.roi.do_rectify and (out.width, out.height) == (round(640 * sx), round(480 * sy))
    np.testing.assert_allclose(out.k[[0, 2, 4, 5]], [500 * sx, 320 * sx, 510 * sy, 240 * sy])


def test_output_data_is_prebuilt_array_not_copied_per_element():
    """Output messages carry an array.array('B') (the fast path in rclpy; no per-element checks)."""
    import array

    from vggt4d_ros.ros.conversions import message_buffer, reuse_freed_memory
    from vggt4d_ros.ros.pointcloud import points_to_cloud

    d = np.ones((3, 4), np.float32)
    for msg in (depth_to_msg(d, HDR), mask_to_msg(d, HDR), confidence_to_msg(d, HDR),
                rgb_to_image_msg(pattern(), HDR), points_to_cloud(np.ones((3, 4, 3)), HDR)):
        assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    buf, view = message_buffer((2, 3), np.float32)
    view[1, 2] = 2.5
    assert len(buf) == 24 and np.frombuffer(buf, np.float32)[5] == 2.5 and not any(buf[:20])
    assert reuse_freed_memory() is (sys.platform.startswith("linux"))
