"""From camera frames of any size to the model grid, and back, with the exact pixel mapping.

Pixel convention: pixel centres are at integer coordinates (pixel ``(row i, col j)`` is ``(u=j, v=i)``),
the OpenCV / ROS CameraInfo convention. The resize is done with ``torch.nn.functional.interpolate``
(``align_corners=False``, antialiased when shrinking), whose sampling convention is the half-pixel one:
a resize by ``s`` maps the continuous "corner" coordinate ``c = u + 0.5`` to ``s * c``. Crop and pad then
shift by whole pixels. So, per axis::

    u_model = scale * u_input + offset,   offset = 0.5 * scale - 0.5 + shift

where ``scale = resized / input`` (exactly the ratio torch uses) and ``shift`` is ``+pad`` or ``-crop``.
Intrinsics follow with ``K_model = A @ K_input``, ``A = [[sx, 0, ox], [0, sy, oy], [0, 0, 1]]``.

Sizes (VGGT's ``load_and_preprocess_images`` is the precedent):

* ``crop``: width = ``target_width``; the image is resized to the aspect-preserving height rounded to the
  nearest multiple of 14 (so ``sy`` differs from ``sx`` by under 14/2 pixels over the height; the map keeps
  both exactly); if that height exceeds ``max_height`` (default ``target_width``) it is centre-cropped.
* ``pad``: the longer side = ``target_width``, the shorter side rounded to a multiple of 14, then centred
  padding (value ``pad_value``, white by default) to a ``target_width`` square. Nothing is cropped.

Frames of one window must share one model grid; :func:`preprocess_frames` takes the grid from the first
frame (or ``model_hw``) and fits every other frame to it (its own scale and offset).

Resampling (``resize``), both with the sizes and pixel maps above:

* ``"torch"`` (default): bicubic ``interpolate`` in float on the frames' device (antialiased when shrinking).
* ``"pil"``: the pixel values of 4D-VGGT v1.0's ``four_d_vggt/utils/load_fn.py`` (and VGGT's): PIL's bicubic
  resize of the uint8 image (an RGBA frame composited over white first), the result kept in uint8, then
  ``/ 255``; on the CPU. Checked against ``load_fn.py``'s outputs for 4:3, 16:9 and portrait images in
  ``test/test_preprocess.py``. (``load_fn.py`` pads frames of different sizes to the largest; here every
  frame is fitted to the first frame's grid, as above; one camera's frames share a size, so they agree.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PATCH",
    "PixelMap",
    "compute_pixel_map",
    "preprocess_frames",
    "frames_to_tensor",
    "model_to_input",
    "model_to_input_channels",
]

PATCH = 14
RESIZERS = ("torch", "pil")

FrameLike = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class PixelMap:
    """Affine map between one input image and the model grid: ``model = scale * input + offset`` per axis.

    Attributes:
        input_hw: (H, W) of the input image.
        model_hw: (H, W) of the model grid (multiples of 14).
        resized_hw: (H, W) of the image after resizing, before crop/pad.
        shift_xy: whole-pixel shift applied after the resize (+pad, -crop) in x and y.
        mode: "crop" or "pad".
    """

    input_hw: Tuple[int, int]
    model_hw: Tuple[int, int]
    resized_hw: Tuple[int, int]
    shift_xy: Tuple[int, int]
    mode: str

    @property
    def scale_xy(self) -> Tuple[float, float]:
        """Per-axis scale (model pixels per input pixel)."""
        return (self.resized_hw[1] / self.input_hw[1], self.resized_hw[0] / self.input_hw[0])

    @property
    def offset_xy(self) -> Tuple[float, float]:
        """Per-axis offset in model pixels (pixel centres at integers)."""
        sx, sy = self.scale_xy
        return (0.5 * sx - 0.5 + self.shift_xy[0], 0.5 * sy - 0.5 + self.shift_xy[1])

    def affine(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """(3, 3) matrix ``A`` with ``[u_m, v_m, 1] = A [u_in, v_in, 1]``."""
        sx, sy = self.scale_xy
        ox, oy = self.offset_xy
        return torch.tensor([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]], dtype=dtype, device=device)

    def input_to_model(self, uv: torch.Tensor) -> torch.Tensor:
        """Map (..., 2) input pixel coordinates to model-grid coordinates."""
        sx, sy = self.scale_xy
        ox, oy = self.offset_xy
        s = uv.new_tensor([sx, sy])
        o = uv.new_tensor([ox, oy])
        return uv * s + o

    def model_to_input(self, uv: torch.Tensor) -> torch.Tensor:
        """Map (..., 2) model-grid pixel coordinates to input pixel coordinates."""
        sx, sy = self.scale_xy
        ox, oy = self.offset_xy
        s = uv.new_tensor([sx, sy])
        o = uv.new_tensor([ox, oy])
        return (uv - o) / s

    def intrinsics_to_model(self, K: torch.Tensor) -> torch.Tensor:
        """(..., 3, 3) intrinsics in input pixels -> model-grid pixels (``A @ K``, written per row so that
        infinite focal lengths stay infinite instead of turning into NaN)."""
        sx, sy = self.scale_xy
        ox, oy = self.offset_xy
        r0 = K[..., 0, :] * sx + K[..., 2, :] * ox
        r1 = K[..., 1, :] * sy + K[..., 2, :] * oy
        return torch.stack((r0, r1, K[..., 2, :]), dim=-2)

    def intrinsics_to_input(self, K: torch.Tensor) -> torch.Tensor:
        """(..., 3, 3) intrinsics in model-grid pixels -> input pixels (``A^-1 @ K``)."""
        sx, sy = self.scale_xy
        ox, oy = self.offset_xy
        r0 = (K[..., 0, :] - K[..., 2, :] * ox) / sx
        r1 = (K[..., 1, :] - K[..., 2, :] * oy) / sy
        return torch.stack((r0, r1, K[..., 2, :]), dim=-2)

    def content_box(self) -> Tuple[int, int, int, int]:
        """Model-grid pixels holding image content (not padding): ``(x0, y0, x1, y1)`` inclusive."""
        Hm, Wm = self.model_hw
        Hr, Wr = self.resized_hw
        dx, dy = self.shift_xy
        return (max(dx, 0), max(dy, 0), min(dx + Wr, Wm) - 1, min(dy + Hr, Hm) - 1)


def _round14(x: float) -> int:
    """Nearest multiple of 14 (at least 14), rounding as VGGT does (Python's round)."""
    return max(PATCH, round(x / PATCH) * PATCH)


def compute_pixel_map(
    input_hw: Tuple[int, int],
    target_width: int = 518,
    mode: str = "crop",
    model_hw: Optional[Tuple[int, int]] = None,
    max_height: Optional[int] = None,
) -> PixelMap:
    """Sizes and offsets that bring an ``input_hw`` image onto the model grid.

    Args:
        input_hw: (H, W) of the input image.
        target_width: model width (``crop``) or side of the square grid (``pad``); a multiple of 14.
        mode: "crop" or "pad" (see the module docstring).
        model_hw: force this model grid (e.g. the grid of a window's first frame). ``crop`` then scales the
            width to fit and crops (or, if too short, pads) the height; ``pad`` fits the whole image inside.
        max_height: crop mode only: cap on the model height (default ``target_width``).
    Returns:
        The :class:`PixelMap`.
    """
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    H, W = int(input_hw[0]), int(input_hw[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"bad input size {input_hw}")
    if model_hw is None:
        if target_width % PATCH:
            raise ValueError(f"target_width must be a multiple of {PATCH}, got {target_width}")
        if mode == "crop":
            cap = max_height if max_height is not None else target_width
            cap = max(PATCH, (cap // PATCH) * PATCH)
            model_hw = (min(_round14(H * target_width / W), cap), target_width)
        else:
            model_hw = (target_width, target_width)
    Hm, Wm = int(model_hw[0]), int(model_hw[1])
    if Hm % PATCH or Wm % PATCH:
        raise ValueError(f"model grid must be multiples of {PATCH}, got {model_hw}")
    if mode == "crop":
        Wr, Hr = Wm, _round14(H * Wm / W)
    elif W * Hm >= H * Wm:  # pad, relatively wider than the grid: fit the width
        Wr, Hr = Wm, min(Hm, _round14(H * Wm / W))
    else:  # pad, relatively taller: fit the height
        Hr, Wr = Hm, min(Wm, _round14(W * Hm / H))
    # Centred crop (negative shift) or pad (positive shift), whole pixels.
    dx = (Wm - Wr) // 2 if Wm >= Wr else -((Wr - Wm) // 2)
    dy = (Hm - Hr) // 2 if Hm >= Hr else -((Hr - Hm) // 2)
    return PixelMap(input_hw=(H, W), model_hw=(Hm, Wm), resized_hw=(Hr, Wr), shift_xy=(dx, dy), mode=mode)


def frames_to_tensor(frame: FrameLike) -> torch.Tensor:
    """One uint8 (H, W, 3) RGB or (H, W) grey frame (numpy or torch) -> float (3, H, W) in [0, 1]."""
    t = torch.as_tensor(np.ascontiguousarray(frame)) if isinstance(frame, np.ndarray) else frame
    if t.dim() == 2:
        t = t[..., None].expand(-1, -1, 3)
    if t.dim() != 3 or t.shape[-1] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) frame, got {tuple(t.shape)}")
    t = t[..., :3].permute(2, 0, 1)
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    return t.float().clamp(0.0, 1.0)


def _apply_map(img: torch.Tensor, pm: PixelMap, pad_value: float) -> torch.Tensor:
    """Resize (N, 3, H, W) float images per ``pm`` and crop/pad them onto the model grid."""
    Hr, Wr = pm.resized_hw
    if (Hr, Wr) != tuple(img.shape[-2:]):
        shrink = Hr < img.shape[-2] or Wr < img.shape[-1]
        img = F.interpolate(img, size=(Hr, Wr), mode="bicubic", align_corners=False, antialias=shrink)
        img = img.clamp_(0.0, 1.0)
    return _place(img, pm, pad_value)


def _pil_resized(frame: FrameLike, pm: PixelMap) -> torch.Tensor:
    """``resize="pil"``: one uint8 frame -> (3, Hr, Wr) float, as ``load_fn.py`` computes it."""
    from PIL import Image

    arr = frame.cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if arr.dtype != np.uint8:
        raise ValueError(f"resize='pil' needs uint8 frames, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) frame, got {arr.shape}")
    img = Image.fromarray(np.ascontiguousarray(arr))
    if img.mode == "RGBA":
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    img = img.convert("RGB").resize((pm.resized_hw[1], pm.resized_hw[0]), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0


def _place(img: torch.Tensor, pm: PixelMap, pad_value: float) -> torch.Tensor:
    """Crop/pad resized (N, 3, Hr, Wr) images onto the model grid."""
    Hr, Wr = pm.resized_hw
    Hm, Wm = pm.model_hw
    dx, dy = pm.shift_xy
    # Crop (negative shift) first, then pad (positive shift).
    x0, y0 = max(-dx, 0), max(-dy, 0)
    img = img[..., y0 : y0 + min(Hr - y0, Hm), x0 : x0 + min(Wr - x0, Wm)]
    px, py = max(dx, 0), max(dy, 0)
    h, w = img.shape[-2:]
    if (h, w) != (Hm, Wm):
        img = F.pad(img, (px, Wm - w - px, py, Hm - h - py), mode="constant", value=pad_value)
    return img


def preprocess_frames(
    frames: Union[Sequence[FrameLike], np.ndarray, torch.Tensor],
    target_width: int = 518,
    mode: str = "crop",
    model_hw: Optional[Tuple[int, int]] = None,
    max_height: Optional[int] = None,
    pad_value: float = 1.0,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    resize: str = "torch",
) -> Tuple[torch.Tensor, List[PixelMap]]:
    """Bring S uint8 RGB frames (any sizes) onto one model grid.

    Args:
        frames: sequence of (H, W, 3) uint8 arrays/tensors, or an (S, H, W, 3) array.
        target_width, mode, max_height: see :func:`compute_pixel_map`.
        model_hw: the model grid; default: the grid of the first frame.
        pad_value: value of padded pixels in [0, 1] (1.0 = white, as VGGT).
        device: where the resize runs (upload uint8, resize there).
        dtype: dtype of the returned images.
        resize: ``"torch"`` or ``"pil"`` (4D-VGGT's / VGGT's ``load_fn`` pixel values; see the module docstring).
    Returns:
        images: (S, 3, Hm, Wm) in [0, 1].
        maps: one :class:`PixelMap` per frame.
    """
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 4:
        frames = list(frames)
    if len(frames) == 0:
        raise ValueError("no frames")
    if resize not in RESIZERS:
        raise ValueError(f"resize must be one of {RESIZERS}, got {resize!r}")
    maps: List[PixelMap] = []
    for f in frames:
        hw = (int(f.shape[0]), int(f.shape[1]))
        pm = compute_pixel_map(hw, target_width, mode, model_hw=model_hw, max_height=max_height)
        model_hw = pm.model_hw
        maps.append(pm)
    out = torch.empty((len(frames), 3) + tuple(model_hw), dtype=torch.float32, device=device)
    # Frames sharing one input size are resized in one call.
    groups: dict = {}
    for i, f in enumerate(frames):
        groups.setdefault((tuple(f.shape), maps[i]), []).append(i)
    for (_, pm), idx in groups.items():
        if resize == "pil":
            batch = torch.stack([_pil_resized(frames[i], pm) for i in idx]).to(device)
            out[idx] = _place(batch, pm, pad_value)
            continue
        batch = torch.stack([_to_device_float(frames[i], device) for i in idx])
        out[idx] = _apply_map(batch, pm, pad_value)
    return out.to(dtype), maps


def _to_device_float(frame: FrameLike, device) -> torch.Tensor:
    """Upload a frame as uint8 (cheap) and convert on the target device."""
    t = torch.as_tensor(np.ascontiguousarray(frame)) if isinstance(frame, np.ndarray) else frame
    return frames_to_tensor(t.to(device))


def model_to_input(
    values: torch.Tensor, pm: PixelMap, mode: str = "bilinear", fill: float = float("nan")
) -> torch.Tensor:
    """Resample model-grid maps onto the input image.

    Each input pixel centre is mapped onto the model grid (``u_m = s * u + o``) and sampled there.
    Samples are clamped to the model pixels holding image content (no blending with padding); input
    pixels that fall outside the model image (cropped away) get ``fill``.

    Args:
        values: (..., Hm, Wm) maps on the model grid (depth, confidence, masks); for channels-last
            (..., Hm, Wm, C) maps use :func:`model_to_input_channels`.
        pm: the frame's :class:`PixelMap`.
        mode: "bilinear" or "nearest".
        fill: value for input pixels without model data.
    Returns:
        (..., H_in, W_in) maps (float32 unless ``values`` is float64).
    """
    Hm, Wm = pm.model_hw
    if tuple(values.shape[-2:]) != (Hm, Wm):
        raise ValueError(f"expected (..., {Hm}, {Wm}), got {tuple(values.shape)}")
    lead = values.shape[:-2]
    dt = values.dtype if values.dtype == torch.float64 else torch.float32
    v = values.to(dt).reshape((1, -1, Hm, Wm))
    H, W = pm.input_hw
    sx, sy = pm.scale_xy
    ox, oy = pm.offset_xy
    u = torch.arange(W, dtype=dt, device=values.device) * sx + ox  # (W,)
    w = torch.arange(H, dtype=dt, device=values.device) * sy + oy  # (H,)
    valid = ((w >= -0.5) & (w <= Hm - 0.5))[:, None] & ((u >= -0.5) & (u <= Wm - 0.5))[None, :]
    x0, y0, x1, y1 = pm.content_box()
    u = u.clamp(x0, x1)
    w = w.clamp(y0, y1)
    # grid_sample, align_corners=False: normalised = (2 * p + 1) / size - 1
    gx = (2.0 * u + 1.0) / Wm - 1.0
    gy = (2.0 * w + 1.0) / Hm - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]  # (1, H, W, 2)
    out = F.grid_sample(v, grid, mode=mode, padding_mode="border", align_corners=False)[0]
    out = torch.where(valid, out, torch.full_like(out, fill))
    return out.reshape(lead + (H, W))


def model_to_input_channels(values: torch.Tensor, pm: PixelMap, mode: str = "bilinear") -> torch.Tensor:
    """Like :func:`model_to_input` for channels-last (..., Hm, Wm, C) maps; returns (..., H_in, W_in, C)."""
    moved = values.movedim(-1, -3)
    return model_to_input(moved, pm, mode=mode).movedim(-3, -1)
