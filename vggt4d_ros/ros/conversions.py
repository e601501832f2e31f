"""sensor_msgs Image / CompressedImage / CameraInfo <-> numpy, exact to the ROS conventions.

Inputs (camera images to an (H, W, 3) uint8 RGB array):

- :func:`image_to_rgb` reads ``sensor_msgs/Image`` in the encodings below, honouring ``step`` padding
  and ``is_bigendian`` (16-bit encodings). Everything is vectorised numpy or one OpenCV call.

  ==========================================  =====================================================
  encoding                                    conversion
  ==========================================  =====================================================
  rgb8, bgr8, rgba8, bgra8                    channel order / alpha dropped
  mono8, 8UC1                                 grey replicated to 3 channels
  8UC3                                        BGR by default (OpenCV's native order, which is what
                                              cv_bridge users put in generic 3-channel images);
                                              ``generic_order="rgb"`` reads it as RGB
  8UC4                                        BGRA by default (same rule)
  rgb16, bgr16, rgba16, bgra16, mono16        high byte kept (value >> 8), either byte order
  yuv422 (UYVY), yuv422_yuy2 (YUYV)           OpenCV cvtColor (BT.601), even width required
  bayer_rggb8, bayer_bggr8, bayer_gbrg8,      OpenCV bilinear demosaicing
  bayer_grbg8
  ==========================================  =====================================================

  Depth and float data (16UC1, 32FC1, 16SC1, ...), 16-bit Bayer and planar YUV (nv21, nv24) are not
  camera colour images for this node: they raise :class:`ImageConversionError`, as does every
  inconsistent ("hostile") message: zero size, more than ``max_pixels`` pixels, ``step`` smaller than
  a row, ``data`` length different from ``height * step``.
- :func:`compressed_to_rgb` decodes ``sensor_msgs/CompressedImage`` (JPEG or PNG, as written by
  compressed_image_transport: format "jpeg", "png" or "rgb8; jpeg compressed bgr8") with
  ``cv2.imdecode``; the image size is read from the JPEG/PNG header first, so an oversized image is
  rejected before any pixel buffer is allocated. ``compressedDepth`` is rejected.

Outputs (numpy to messages; ``data`` is always a prebuilt ``array.array('B')`` filled through a numpy
view, see :func:`message_buffer`: assigning an ndarray costs ~70 ms per image in rclpy, ``bytes`` one
extra copy):

- :func:`depth_to_msg` (REP 118: 32FC1 metres with NaN invalid, or 16UC1 millimetres with 0 invalid),
  :func:`mask_to_msg` (mono8, 255 = dynamic), :func:`confidence_to_msg` (32FC1),
  :func:`rgb_to_image_msg` (rgb8 / bgr8 / mono8).
- :func:`camera_info_msg` builds a CameraInfo from K; :func:`scale_camera_info` rescales one exactly as
  image_proc's resize node does (see its docstring for binning and ROI).
- :func:`depth_from_msg` reads a 32FC1 / 16UC1 depth image back to metres (tools, tests).
"""
from __future__ import annotations

import array
import copy
import sys
from typing import Any, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

__all__ = [
    "ImageConversionError",
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_ENCODINGS",
    "image_to_rgb",
    "compressed_to_rgb",
    "compressed_image_size",
    "rgb_to_image_msg",
    "depth_to_msg",
    "depth_from_msg",
    "mask_to_msg",
    "confidence_to_msg",
    "camera_info_msg",
    "camera_info_K",
    "scale_camera_info",
    "make_header",
    "stamp_to_ns",
    "ns_to_stamp",
    "message_buffer",
    "reuse_freed_memory",
]

#: Largest image accepted by default (pixels): 64 Mpx, above any camera this node is meant for.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

_HOST_BIG_ENDIAN = sys.byteorder == "big"
_ZERO_BYTE = b"\x00"


class ImageConversionError(ValueError):
    """An image message that cannot be converted (unsupported encoding or inconsistent fields)."""


# encoding -> (bytes per pixel, channels, bytes per channel)
_LAYOUT = {
    "rgb8": (3, 3, 1), "bgr8": (3, 3, 1), "rgba8": (4, 4, 1), "bgra8": (4, 4, 1),
    "mono8": (1, 1, 1), "8uc1": (1, 1, 1), "8uc3": (3, 3, 1), "8uc4": (4, 4, 1),
    "rgb16": (6, 3, 2), "bgr16": (6, 3, 2), "rgba16": (8, 4, 2), "bgra16": (8, 4, 2),
    "mono16": (2, 1, 2),
    "yuv422": (2, 2, 1), "uyvy": (2, 2, 1), "yuv422_yuy2": (2, 2, 1), "yuyv": (2, 2, 1),
    "bayer_rggb8": (1, 1, 1), "bayer_bggr8": (1, 1, 1),
    "bayer_gbrg8": (1, 1, 1), "bayer_grbg8": (1, 1, 1),
}
SUPPORTED_ENCODINGS = tuple(sorted(_LAYOUT))

# ROS names Bayer patterns by their first row; OpenCV's legacy names by the second row's middle pair.
# OpenCV >= 4.10 has the explicit RGGB/BGGR/... aliases; fall back to the legacy names before that.
_BAYER = {
    "bayer_rggb8": getattr(cv2, "COLOR_BayerRGGB2RGB", cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": getattr(cv2, "COLOR_BayerBGGR2RGB", cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": getattr(cv2, "COLOR_BayerGBRG2RGB", cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": getattr(cv2, "COLOR_BayerGRBG2RGB", cv2.COLOR_BayerGB2RGB),
}
_YUV = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}
_NOT_COLOUR = ("16uc", "16sc", "32fc", "32sc", "64fc", "8sc", "bayer_", "nv21", "nv24", "yuv420")


def _u8_buffer(data: Any) -> np.ndarray:
    """Flat uint8 view of a message's ``data`` (rclpy array.array, bytes, or a rosbags ndarray)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ImageConversionError(f"image data is not a byte buffer ({type(data).__name__})") from exc


def _checked_rows(msg: Any, bpp: int, max_pixels: int) -> Tuple[np.ndarray, int, int]:
    """Validate height/width/step/data of an Image-like message; return (rows (H, W*bpp), H, W)."""
    try:
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ImageConversionError(f"image message lacks integer height/width/step: {exc}") from exc
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"image has zero size ({w}x{h})")
    if h * w > max_pixels:
        raise ImageConversionError(f"image {w}x{h} exceeds max_pixels={max_pixels}")
    if step < w * bpp:
        raise ImageConversionError(f"step {step} is smaller than width*bytes_per_pixel = {w * bpp}")
    buf = _u8_buffer(msg.data)
    if buf.size != h * step:
        raise ImageConversionError(f"data has {buf.size} bytes, expected height*step = {h * step}")
    rows = buf.reshape(h, step)[:, : w * bpp]
    return rows, h, w


def image_to_rgb(
    msg: Any,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    generic_order: str = "bgr",
    copy_data: bool = True,
) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` (rclpy or rosbags) to an RGB array.

    Args:
        msg: the image message.
        max_pixels: images with more than this many pixels are rejected before any conversion.
        generic_order: channel order assumed for the generic ``8UC3`` / ``8UC4`` encodings, "bgr"
            (default, OpenCV's order) or "rgb".
        copy_data: when False, an rgb8 image without padding is returned as a read-only view of
            ``msg.data`` (no copy); otherwise the result always owns its memory.

    Returns:
        (H, W, 3) uint8, C-contiguous, channel order R, G, B.

    Raises:
        ImageConversionError: unsupported encoding or inconsistent message (one-line reason).
    """
    enc_raw = getattr(msg, "encoding", "")
    enc = str(enc_raw).strip().lower()
    layout = _LAYOUT.get(enc)
    if layout is None:
        if enc.startswith(_NOT_COLOUR):
            raise ImageConversionError(
                f"encoding '{enc_raw}' is not a supported colour image encoding "
                f"(depth, float and 16-bit Bayer images cannot be model input)")
        raise ImageConversionError(
            f"unsupported image encoding '{enc_raw}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    if generic_order not in ("bgr", "rgb"):
        raise ValueError(f"generic_order must be 'bgr' or 'rgb', not {generic_order!r}")
    bpp, channels, depth_bytes = layout
    rows, h, w = _checked_rows(msg, bpp, max_pixels)

    if enc in _YUV:
        if w % 2:
            raise ImageConversionError(f"{enc} needs an even width, got {w}")
        return cv2.cvtColor(np.ascontiguousarray(rows).reshape(h, w, 2), _YUV[enc])
    if enc in _BAYER:
        return cv2.cvtColor(np.ascontiguousarray(rows), _BAYER[enc])

    if depth_bytes == 2:
        big = bool(int(getattr(msg, "is_bigendian", 0)))
        # High byte of each 16-bit value: byte 0 of the pair when big-endian, byte 1 when little.
        px = rows.reshape(h, w * channels, 2)[:, :, 0 if big else 1].reshape(h, w, channels)
    else:
        px = rows.reshape(h, w, channels)

    if channels == 1:
        return np.repeat(px, 3, axis=2)  # (H, W, 1) -> (H, W, 3), a new array
    order = enc[:3]
    if enc in ("8uc3", "8uc4"):
        order = generic_order
    if order == "bgr":
        out = px[:, :, 2::-1] if channels == 4 else px[:, :, ::-1]
    else:
        out = px[:, :, :3]
    if copy_data or not out.flags.c_contiguous:
        return np.array(out, order="C", copy=True)
    view = out.view()
    view.flags.writeable = False
    return view


# ----------------------------------------------------------------------------- compressed images

def compressed_image_size(data: Union[bytes, np.ndarray]) -> Tuple[str, int, int]:
    """Read (kind, width, height) from a JPEG or PNG header without decoding pixels.

    Raises ImageConversionError when the bytes are neither, or the header is truncated/corrupt.
    The JPEG scan walks marker segments (a few dozen at most), never pixels.
    """
    buf = _u8_buffer(data)
    n = buf.size
    if n >= 24 and bytes(buf[:8]) == b"\x89PNG\r\n\x1a\n":
        if bytes(buf[12:16]) != b"IHDR":
            raise ImageConversionError("PNG without IHDR chunk")
        w = int.from_bytes(bytes(buf[16:20]), "big")
        h = int.from_bytes(bytes(buf[20:24]), "big")
        return "png", w, h
    if n >= 4 and buf[0] == 0xFF and buf[1] == 0xD8:
        i = 2
        sof = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
        while i + 4 <= n:
            if buf[i] != 0xFF:
                raise ImageConversionError("corrupt JPEG header (marker expected)")
            marker = int(buf[i + 1])
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            seg_len = (int(buf[i + 2]) << 8) | int(buf[i + 3])
            if seg_len < 2:
                raise ImageConversionError("corrupt JPEG header (segment length)")
            if marker in sof:
                if i + 9 > n:
                    break
                h = (int(buf[i + 5]) << 8) | int(buf[i + 6])
                w = (int(buf[i + 7]) << 8) | int(buf[i + 8])
                return "jpeg", w, h
            if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
                break
            i += 2 + seg_len
        raise ImageConversionError("JPEG without a frame header (SOF)")
    raise ImageConversionError("compressed image is neither JPEG nor PNG")


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG/PNG) to (H, W, 3) uint8 RGB.

    The stored JPEG/PNG is a standard colour (or grey) file whatever the ``format`` string says about
    the original encoding ("rgb8; jpeg compressed bgr8" means: the rgb8 image was encoded through
    OpenCV as bgr8, i.e. a normal JPEG), so decoding always yields true RGB. Grey images come back
    with 3 equal channels, alpha is dropped, 16-bit PNG is reduced to 8 bits.

    Raises:
        ImageConversionError: empty data, compressedDepth, unknown format, oversize, decode failure.
    """
    fmt = str(getattr(msg, "format", "")).lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(f"compressedDepth images are not colour images (format '{fmt}')")
    buf = _u8_buffer(msg.data)
    if buf.size == 0:
        raise ImageConversionError("compressed image has no data")
    kind, w, h = compressed_image_size(buf)
    if w <= 0 or h <= 0:
        raise ImageConversionError(f"compressed {kind} has zero size ({w}x{h})")
    if w * h > max_pixels:
        raise ImageConversionError(f"compressed {kind} {w}x{h} exceeds max_pixels={max_pixels}")
    flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR if flag is None else flag)
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        raise ImageConversionError(f"cannot decode compressed {kind} image (format '{fmt}')")
    if img.shape[:2] != (h, w):
        raise ImageConversionError(f"decoded {kind} is {img.shape[1]}x{img.shape[0]}, header says {w}x{h}")
    if flag is None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


# ----------------------------------------------------------------------------- headers and stamps

def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (negative times floor towards -inf)."""
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


def make_header(frame_id: str, stamp: Union[Time, int, float, Any]) -> Header:
    """std_msgs/Header from a frame id and a stamp (Time, int nanoseconds or float seconds)."""
    if isinstance(stamp, Time):
        t = Time(sec=stamp.sec, nanosec=stamp.nanosec)
    elif isinstance(stamp, (int, np.integer)):
        t = ns_to_stamp(int(stamp))
    elif isinstance(stamp, (float, np.floating)):
        t = ns_to_stamp(int(round(float(stamp) * 1e9)))
    else:  # any object with sec/nanosec (rosbags Time)
        t = Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec))
    return Header(stamp=t, frame_id=str(frame_id))


# ----------------------------------------------------------------------------- outputs

def message_buffer(shape: Tuple[int, ...], dtype: Any) -> Tuple[array.array, np.ndarray]:
    """A zeroed ``array.array('B')`` for a message's ``data`` and a writable numpy view of it.

    Filling the view and assigning the array.array to ``msg.data`` costs one pass over memory: rclpy
    keeps an ``array.array('B')`` as is, whereas ``bytes`` are copied into a new array.array and an
    ndarray goes through a per-element conversion (~70 ms per image). With
    ``ROS_PYTHON_CHECK_FIELDS=1`` an array.array is also the only form not checked element by element.
    """
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buf = array.array("B", _ZERO_BYTE) * (count * dt.itemsize)  # zeroed, no temporary bytes object
    view = np.frombuffer(buf, dtype=dt, count=count).reshape(shape) if count else np.zeros(shape, dt)
    return buf, view


def reuse_freed_memory(threshold_bytes: int = 256 * 1024 * 1024) -> bool:
    """Ask glibc to serve large blocks from its heap and keep freed ones (``mallopt``).

    Every published image or cloud is a fresh multi-megabyte buffer. By default glibc maps each one
    with mmap and unmaps it on free, so every message pays first-touch page faults again (measured
    here: a 4.9 MB ``array.array`` costs ~0.6 ms instead of ~0.15 ms; bench/conversions.py reports
    both). Raising M_MMAP_THRESHOLD / M_TRIM_THRESHOLD keeps that memory mapped for reuse. Process
    wide; call once at node start-up. Returns False (and does nothing) where glibc is absent.
    Same effect as the environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, int(min(threshold_bytes, 2**31 - 1)))
        ok &= libc.mallopt(M_TRIM_THRESHOLD, int(min(2 * threshold_bytes, 2**31 - 1)))
        return bool(ok)
    except (OSError, AttributeError):
        return False


def _fill_image(msg: Image, header: Header, arr: np.ndarray, encoding: str) -> Image:
    buf, view = message_buffer(arr.shape, arr.dtype.newbyteorder("="))
    np.copyto(view, arr)
    msg.header = header
    msg.height = int(arr.shape[0])
    msg.width = int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_HOST_BIG_ENDIAN and arr.dtype.itemsize > 1)
    msg.step = int(view.strides[0])
    msg.data = buf
    return msg


def _check_2d(arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty (H, W) array, got shape {arr.shape}")
    return arr


def depth_to_msg(depth: np.ndarray, header: Header, encoding: str = "32FC1") -> Image:
    """Depth (H, W) in metres along the optical axis -> ``sensor_msgs/Image`` (REP 118).

    ``32FC1``: float32 metres, NaN where invalid. ``16UC1``: uint16 millimetres (rounded), 0 where
    invalid, valid depths clipped to [1, 65535] mm so that a valid pixel never reads as invalid.
    Invalid = non-finite or <= 0. A trailing singleton channel (H, W, 1) is accepted.
    """
    d = _check_2d(depth, "depth").astype(np.float32, copy=False)
    valid = np.isfinite(d) & (d > 0)
    if encoding == "32FC1":
        out = np.where(valid, d, np.float32(np.nan)).astype(np.float32, copy=False)
    elif encoding == "16UC1":
        mm = np.rint(np.where(valid, d, 0).astype(np.float64) * 1000.0)
        out = np.where(valid, np.clip(mm, 1, 65535), 0).astype(np.uint16)
    else:
        raise ValueError(f"depth encoding must be '32FC1' or '16UC1', not {encoding!r}")
    return _fill_image(Image(), header, out, encoding)


def depth_from_msg(msg: Any) -> np.ndarray:
    """32FC1 (metres) or 16UC1 (millimetres) depth image -> (H, W) float32 metres, NaN invalid."""
    enc = str(msg.encoding).upper()
    if enc not in ("32FC1", "16UC1"):
        raise ImageConversionError(f"depth encoding must be 32FC1 or 16UC1, got '{msg.encoding}'")
    bpp = 4 if enc == "32FC1" else 2
    rows, h, w = _checked_rows(msg, bpp, DEFAULT_MAX_PIXELS)
    order = ">" if int(msg.is_bigendian) else "<"
    vals = np.ascontiguousarray(rows).view(order + ("f4" if bpp == 4 else "u2")).reshape(h, w)
    if bpp == 4:
        out = vals.astype(np.float32)
        out[~(np.isfinite(out) & (out > 0))] = np.nan
        return out
    out = vals.astype(np.float32) / np.float32(1000.0)
    out[vals == 0] = np.nan
    return out


def mask_to_msg(mask: np.ndarray, header: Header, threshold: float = 0.5) -> Image:
    """Dynamic mask (H, W) bool or numeric -> mono8 Image, 255 = dynamic, 0 = static.

    Numeric masks are dynamic where ``mask > threshold`` (NaN is static); bool masks are used as is.
    """
    m = _check_2d(mask, "mask")
    on = m if m.dtype == np.bool_ else (m > threshold)
    out = on.astype(np.uint8) * np.uint8(255)
    return _fill_image(Image(), header, out, "mono8")


def confidence_to_msg(conf: np.ndarray, header: Header) -> Image:
    """Per-pixel confidence (H, W) -> 32FC1 Image (values unchanged, NaN kept)."""
    c = _check_2d(conf, "confidence").astype(np.float32, copy=False)
    return _fill_image(Image(), header, c, "32FC1")


def rgb_to_image_msg(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """(H, W, 3) uint8 RGB -> ``rgb8`` or ``bgr8`` Image; (H, W) uint8 -> ``mono8``."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {a.dtype}")
    if a.ndim == 2:
        if encoding not in ("mono8", "rgb8"):
            raise ValueError(f"a (H, W) image is written as mono8, not {encoding}")
        return _fill_image(Image(), header, _check_2d(a, "image"), "mono8")
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image must be (H, W, 3), got shape {a.shape}")
    if encoding == "rgb8":
        return _fill_image(Image(), header, a, "rgb8")
    if encoding == "bgr8":
        return _fill_image(Image(), header, a[:, :, ::-1], "bgr8")
    raise ValueError(f"encoding must be 'rgb8' or 'bgr8', not {encoding!r}")


# ----------------------------------------------------------------------------- camera info

_DEFAULT_D_LEN = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


def camera_info_msg(
    K: np.ndarray,
    width: int,
    height: int,
    header: Header,
    D: Optional[Sequence[float]] = None,
    distortion_model: str = "plumb_bob",
) -> CameraInfo:
    """Monocular CameraInfo for an image of ``width`` x ``height`` with intrinsics ``K`` (3, 3).

    R is the identity and P = [K | 0] (an unrectified monocular camera, as camera drivers publish
    it). ``D`` defaults to zeros of the model's length (plumb_bob 5, rational_polynomial 8,
    equidistant 4). Binning 0 and an all-zero ROI mean "full resolution" (REP 104).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"K must be a finite (3, 3) matrix, got shape {K.shape}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"camera size must be positive, got {width}x{height}")
    info = CameraInfo()
    info.header = header
    info.width = int(width)
    info.height = int(height)
    info.distortion_model = distortion_model
    if D is None:
        D = np.zeros(_DEFAULT_D_LEN.get(distortion_model, 0))
    info.d = [float(v) for v in np.asarray(D, dtype=np.float64).reshape(-1)]
    info.k = K.reshape(9)
    info.r = np.eye(3).reshape(9)
    P = np.zeros((3, 4))
    P[:, :3] = K
    info.p = P.reshape(12)
    info.binning_x = 0
    info.binning_y = 0
    info.roi = RegionOfInterest()
    return info


def camera_info_K(info: Any) -> np.ndarray:
    """(3, 3) float64 K of a CameraInfo (rclpy ``k`` or rosbags ``k``)."""
    return np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()


def scale_camera_info(info: CameraInfo, new_width: int, new_height: int) -> CameraInfo:
    """CameraInfo for the image resized to ``new_width`` x ``new_height``, as image_proc's resize.

    image_proc (resize.cpp) multiplies K[0] (fx), K[2] (cx), P[0], P[2], P[3] (Tx) by
    ``sx`` and K[4] (fy), K[5] (cy), P[5], P[6] by ``sy``; skew (K[1], P[1]) and P[7] are left
    unchanged, D, R and binning are copied, the ROI's offsets and size are scaled and truncated to
    integers, and width/height become the new size. With ``sx = new_width / info.width`` this is
    image_proc's explicit-size mode, exact whenever the image has the calibrated size (binning 0/1,
    empty ROI: the usual case).

    Binned or ROI images (REP 104): the image is then ``roi.width / binning_x`` pixels wide, not
    ``info.width``. The scale is taken against that actual image size, and applied like image_proc's
    ``use_scale`` mode (width and height become ``round(info.width * sx)`` etc., binning kept), so
    the returned info still describes the resized image correctly under REP 104's rules.
    """
    bx = max(int(info.binning_x), 1)
    by = max(int(info.binning_y), 1)
    roi = info.roi
    roi_on = int(roi.width) > 0 and int(roi.height) > 0
    src_w = (int(roi.width) if roi_on else int(info.width)) / bx
    src_h = (int(roi.height) if roi_on else int(info.height)) / by
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"camera info has zero size ({info.width}x{info.height})")
    if int(new_width) <= 0 or int(new_height) <= 0:
        raise ValueError(f"new size must be positive, got {new_width}x{new_height}")
    sx = int(new_width) / src_w
    sy = int(new_height) / src_h

    out = copy.deepcopy(info)
    if bx == 1 and by == 1 and not roi_on:
        out.width, out.height = int(new_width), int(new_height)
    else:
        out.width = int(round(int(info.width) * sx))
        out.height = int(round(int(info.height) * sy))
    k = np.array(info.k, dtype=np.float64)
    k[[0, 2]] *= sx
    k[[4, 5]] *= sy
    p = np.array(info.p, dtype=np.float64)
    p[[0, 2, 3]] *= sx
    p[[5, 6]] *= sy
    out.k = k
    out.p = p
    out.roi = RegionOfInterest(
        x_offset=int(int(roi.x_offset) * sx), y_offset=int(int(roi.y_offset) * sy),
        width=int(int(roi.width) * sx), height=int(int(roi.height) * sy),
        do_rectify=bool(roi.do_rectify))
    return out
