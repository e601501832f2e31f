"""Run the 4D model on one window and turn its outputs into typed per-frame results at input size.

``Predictor`` owns the model on its device and precision, preprocesses frames (:mod:`.preprocess`),
runs the model under ``torch.inference_mode``, decodes VGGT's pose encoding, re-expresses the window in
the reference frame's camera, maps depth / confidence / masks / tracks back onto the input images with
the exact pixel map, computes world points from depth + pose (default; the VGGT paper reports this is more
accurate than the point head) and a dynamic mask (the model's mask head, else PAGE-4D's mask, else the
training-free geometric-consistency estimate of :mod:`.dynamic_mask`).
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.points import rebase_poses, se3_to_4x4
from ..geometry.pose_encoding import pose_encoding_to_extri_intri
from .dynamic_mask import geometric_dynamic_mask
from .preprocess import (RESIZERS, PixelMap, compute_pixel_map, model_to_input, model_to_input_channels,
                         preprocess_frames)
from .types import FramePrediction, WindowPrediction

__all__ = ["Predictor", "PRECISIONS"]

_LOG = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

Reference = Union[Tuple[str], Tuple[str, int], int]


def _dtype_works(dtype: torch.dtype, device: torch.device) -> bool:
    """True if a linear layer, a conv and a layer norm run in ``dtype`` on ``device``."""
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return False
    try:
        x = torch.randn(2, 3, 16, 16, device=device, dtype=dtype)
        w = torch.randn(8, 3, 2, 2, device=device, dtype=dtype)
        y = F.conv2d(x, w, stride=2).flatten(2).transpose(1, 2)
        y = F.layer_norm(y, (8,))
        y = F.scaled_dot_product_attention(y[:, None], y[:, None], y[:, None])
        y = F.interpolate(y.reshape(2, 8, 8, 8), scale_factor=2.0, mode="bilinear", align_corners=True)
        return bool(torch.isfinite(y.float()).all())
    except (RuntimeError, NotImplementedError):
        return False


def _to_float32_inputs(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: cast floating tensors (also inside lists/tuples) to float32."""

    def cast(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.float()
        if isinstance(v, (list, tuple)):
            return type(v)(cast(x) for x in v)
        return v

    return cast(args), {k: cast(v) for k, v in kwargs.items()}


class Predictor:
    """Window -> :class:`WindowPrediction`.

    Predicted intrinsics put the principal point at the exact centre of the model grid ("center" in
    :func:`vggt4d_ros.geometry.intrinsics_from_fov`), mapped to input pixels with the frame's pixel map.

    Args:
        model: a :class:`vggt4d_ros.model.VGGT4D` (or anything with its forward contract).
        device: torch device for the model and the post-processing.
        precision: "fp32", "bf16" or "fp16". Low precision casts the weights (not autocast over fp32
            weights); where the device cannot run it, falls back to fp32 with a warning.
        target_width: model-grid width (multiple of 14); see :mod:`.preprocess`.
        mode: "crop" or "pad" preprocessing.
        keep_only_used_layers: keep only the aggregator layers the heads read (about 6x less activation
            memory at VGGT-1B size); False keeps all 24.
        compute_points: "depth" (depth + camera unprojection, default) or "head" (the point head).
        fp32_modules: names of sub-modules kept in fp32 under low precision (their inputs are cast to
            fp32); default the camera head (cheap: it sees only the camera tokens; pose precision matters).
        layout: attention layout passed to the model ("global" / "spatiotemporal"); None = the model's.
        dynamic_mask: "auto" (the model configuration's ``inference: {dynamic_mask: ...}`` when it names one,
            else the mask head, else PAGE-4D, else geometric), "head", "page4d", "geometric", or "none".
        geometric_mask_kw: keyword arguments of :func:`.dynamic_mask.geometric_dynamic_mask`, plus
            ``stride`` (compute on every ``stride``-th model pixel, default 2) and ``conf_quantile``
            (ignore pixels below this depth-confidence quantile, default 0.1).
        resample: "bilinear" or "nearest": how model-grid maps are brought back to input size.
        pad_value: value of padded pixels (pad mode).
        image_resize: ``"torch"`` or ``"pil"`` (4D-VGGT's / VGGT's ``load_fn`` pixel values, on the CPU); see
            :mod:`.preprocess`. None (default): the model's ``preprocessing["resize"]`` (set by its model
            configuration's ``preprocess:``, e.g. ``config/models/4d-vggt.yaml``), else ``"torch"``.
        skip_unused_heads: run only the heads whose outputs this predictor uses (default): no point head
            with ``compute_points="depth"``, no mask head unless ``dynamic_mask`` is "auto" or "head", no
            track head without query points. The model's ``keep_layers`` then follows the heads that can run.
            False runs every head of the model (the reference formulation; extra raw outputs only).
        compile: wrap the model in ``torch.compile`` (fixed window shapes recompile nothing; a new window
            shape, grid or number of query points recompiles once). If compilation or the compiled call
            fails, a warning is logged and the predictor continues in eager mode. The first window on each
            model grid runs eagerly (see :meth:`_run_model`). Side effect on the model: its RoPE tables are
            sized to the current grid (``aggregator.fix_grid``, as for ONNX export), so the same model object
            used elsewhere on a larger grid (eagerly, or by another compiling Predictor) needs ``fix_grid``
            again or ``rope.max_position = None``.
        compile_options: keyword arguments of ``torch.compile`` (e.g. ``{"mode": "reduce-overhead"}`` for CUDA
            graphs, ``{"dynamic": False}``, ``{"backend": ...}``).

    On a CUDA device the input frames are copied into one pinned (page-locked) host buffer and uploaded with a
    single non-blocking copy; on the CPU nothing changes.
    """

    MIN_FOV = 1e-3  # radians; decoded fields of view are clamped to [MIN_FOV, MAX_FOV]
    MAX_FOV = 3.1

    def __init__(
        self,
        model: nn.Module,
        device: Union[str, torch.device] = "cpu",
        precision: str = "fp32",
        target_width: int = 518,
        mode: str = "crop",
        keep_only_used_layers: bool = True,
        compute_points: str = "depth",
        fp32_modules: Sequence[str] = ("camera_head",),
        layout: Optional[str] = None,
        dynamic_mask: str = "auto",
        geometric_mask_kw: Optional[Dict[str, Any]] = None,
        resample: str = "bilinear",
        pad_value: float = 1.0,
        skip_unused_heads: bool = True,
        compile: bool = False,
        compile_options: Optional[Dict[str, Any]] = None,
        image_resize: Optional[str] = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if compute_points not in ("depth", "head"):
            raise ValueError(f"compute_points must be 'depth' or 'head', got {compute_points!r}")
        if dynamic_mask not in ("auto", "head", "page4d", "geometric", "none"):
            raise ValueError(f"unknown dynamic_mask source {dynamic_mask!r}")
        if mode not in ("crop", "pad"):
            raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
        self.device = torch.device(device)
        dtype = PRECISIONS[precision]
        if not _dtype_works(dtype, self.device):
            _LOG.warning("precision %s is not supported on %s; using fp32", precision, self.device)
            precision, dtype = "fp32", torch.float32
        self.precision = precision
        self.dtype = dtype
        self.target_width = int(target_width)
        self.mode = mode
        self.compute_points = compute_points
        self.layout = layout
        if dynamic_mask == "auto":  # the source measured best for the weights (model config ``inference:``)
            pref = (getattr(model, "inference_defaults", None) or {}).get("dynamic_mask", "auto")
            if pref not in ("auto", "head", "page4d", "geometric", "none"):
                raise ValueError(f"unknown dynamic_mask source {pref!r} in the model's inference defaults")
            page_on = bool((getattr(getattr(model, "aggregator", None), "page4d_cfg", None) or {}).get("enabled"))
            if (pref == "page4d" and page_on) or (pref == "head" and getattr(model, "mask_head", None) is not None) \
                    or pref in ("geometric", "none"):
                dynamic_mask = pref  # else the usual order (the model lacks the preferred source)
        self.dynamic_mask = dynamic_mask
        self.geometric_mask_kw = dict(geometric_mask_kw or {})
        self.resample = resample
        self.pad_value = float(pad_value)
        if image_resize is None:
            image_resize = (getattr(model, "preprocessing", None) or {}).get("resize", "torch")
        if image_resize not in RESIZERS:
            raise ValueError(f"image_resize must be one of {RESIZERS}, got {image_resize!r}")
        self.image_resize = image_resize

        model = model.eval().to(device=self.device, dtype=dtype)
        self._hooks = []
        if dtype != torch.float32:
            for name in fp32_modules:
                sub = getattr(model, name, None)
                if sub is None:
                    continue
                sub.float()
                self._hooks.append(sub.register_forward_pre_hook(_to_float32_inputs, with_kwargs=True))
        self.skip_unused_heads = bool(skip_unused_heads)
        self._accepts_heads = _accepts_keyword(model, "heads")
        agg = getattr(model, "aggregator", None)
        if agg is not None and hasattr(agg, "keep_layers"):
            if keep_only_used_layers and hasattr(model, "required_layers"):
                heads = self._heads_used(True)
                agg.keep_layers = tuple(model.required_layers() if heads is None else model.required_layers(heads))
            elif not keep_only_used_layers:
                agg.keep_layers = None
        self.model = model
        self._embed_cache: Dict[Any, torch.Tensor] = {}
        self.embed_cache_misses = 0  # frames embedded by the last predict() with frame_keys
        self._pre_cache: Dict[Any, torch.Tensor] = {}
        self.preprocess_cache_misses = 0  # frames resized by the last predict() with frame_keys
        self.compile_options = dict(compile_options or {})
        self._compiled: Optional[nn.Module] = None
        self._warm_grids: set = set()  # model grids already run eagerly (compile mode)
        self._fixed_grid: Optional[Tuple[int, int]] = None  # grid the aggregator's RoPE tables are sized for
        self.compile_error: Optional[str] = None  # why compilation was abandoned (None: not tried or working)
        if compile:
            try:
                self._compiled = torch.compile(model, **self.compile_options)
            except Exception as exc:  # noqa: BLE001 - any failure means eager mode
                self._compile_failed(exc)
        self._staging: Optional[torch.Tensor] = None  # pinned host buffer for CUDA uploads
        self._staging_done: Optional[Any] = None  # CUDA event: the last upload from the buffer finished

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, name_or_path: str, checkpoint: Optional[str] = None, **kw: Any) -> "Predictor":
        """Build the model from a named config (e.g. "tiny", "vggt-1b") or a YAML path, load ``checkpoint``
        (if given; random weights otherwise) and wrap it."""
        from ..model import load_checkpoint
        from ..model.configs import build_model_from_config

        model = build_model_from_config(name_or_path)
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
        return cls(model, **kw)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def reference_frame(reference: Reference, num_times: int, num_views: int) -> int:
        """Window index of the reference frame: ("first",), ("newest", view), ("index", s) or an int."""
        S = num_times * num_views
        if isinstance(reference, int):
            idx = reference
        elif reference[0] == "first":
            idx = 0
        elif reference[0] == "newest":
            v = int(reference[1]) if len(reference) > 1 else 0
            if not 0 <= v < num_views:
                raise ValueError(f"view {v} outside 0..{num_views - 1}")
            idx = (num_times - 1) * num_views + v
        elif reference[0] == "index":
            idx = int(reference[1])
        else:
            raise ValueError(f"unknown reference {reference!r}")
        if not 0 <= idx < S:
            raise ValueError(f"reference frame {idx} outside 0..{S - 1}")
        return idx

    @property
    def compiled(self) -> bool:
        """True while the model runs through ``torch.compile``."""
        return self._compiled is not None

    def _compile_failed(self, exc: BaseException) -> None:
        self._compiled = None
        self.compile_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        _LOG.warning("torch.compile failed (%s); running the model in eager mode", self.compile_error)

    def _heads_used(self, with_tracks: bool) -> Optional[Tuple[str, ...]]:
        """Head names to run (None: all, the model's default), as a sorted tuple."""
        if not self.skip_unused_heads or not self._accepts_heads:
            return None
        heads = {"camera", "depth"}
        if self.compute_points == "head":
            heads.add("point")
        if self.dynamic_mask in ("auto", "head"):
            heads.add("mask")
        if with_tracks:
            heads.add("track")
        return tuple(sorted(heads))

    def heads_for(self, with_tracks: bool = True) -> Optional[FrozenSet[str]]:
        """The heads a predict() call runs (None: every head the model has)."""
        h = self._heads_used(with_tracks)
        return None if h is None else frozenset(h)

    def _run_model(self, *args: Any, **kw: Any) -> Dict[str, Any]:
        """The model's forward, through torch.compile when enabled (eager again if that fails).

        The first window on a new model grid runs eagerly: it sizes the RoPE tables for the grid
        (``aggregator.fix_grid``: no data-dependent ``max()``, which would break the graph in every attention
        layer; the tables' values do not depend on their length) and fills the model's lazy per-grid caches,
        whose contents the compiled graph's guards check (compiling on empty caches recompiles on the next call).
        """
        if self._compiled is not None:
            grid = tuple(args[0].shape[-2:])
            agg = getattr(self.model, "aggregator", None)
            if grid != self._fixed_grid and agg is not None and hasattr(agg, "fix_grid"):
                agg.fix_grid(*grid)  # re-sized on every grid change (a smaller table would not fit a larger grid)
                self._fixed_grid = grid
            if grid not in self._warm_grids:
                self._warm_grids.add(grid)
                return self.model(*args, **kw)
            try:
                return self._compiled(*args, **kw)
            except Exception as exc:  # noqa: BLE001 - compiler errors have many types; eager re-raises real ones
                self._compile_failed(exc)
        return self.model(*args, **kw)

    def _upload(self, frames: Sequence[Any]) -> Sequence[Any]:
        """CUDA: uint8 numpy frames -> device tensors through one pinned buffer and a non-blocking copy.

        Anything else (CPU device, torch tensors, other dtypes) is returned unchanged for
        :func:`.preprocess.preprocess_frames`, which uploads it itself.
        """
        if (self.device.type != "cuda" or self.image_resize == "pil"
                or not all(isinstance(f, np.ndarray) and f.dtype == np.uint8 for f in frames)):
            return frames
        total = sum(int(f.size) for f in frames)
        if self._staging_done is not None:
            self._staging_done.synchronize()  # the previous window's copy has left the buffer
        if self._staging is None or self._staging.numel() < total:
            self._staging = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        host = pack_frames(frames, self._staging)
        flat = self._staging[:total].to(self.device, non_blocking=True)
        if self._staging_done is None:
            self._staging_done = torch.cuda.Event()
        self._staging_done.record()
        return unpack_like(flat, host)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _known_intrinsics(self, intrinsics: Any, S: int) -> Optional[torch.Tensor]:
        if intrinsics is None:
            return None
        K = torch.as_tensor(np.asarray(intrinsics, dtype=np.float64) if not isinstance(intrinsics, torch.Tensor)
                            else intrinsics, dtype=torch.float64)
        if K.shape == (3, 3):
            K = K.expand(S, 3, 3)
        if K.shape != (S, 3, 3):
            raise ValueError(f"intrinsics must be (3, 3) or ({S}, 3, 3), got {tuple(K.shape)}")
        return K.to(self.device)

    # ------------------------------------------------------------------ main entry
    @torch.inference_mode()
    def predict(
        self,
        frames: Sequence[Any],
        num_views: int = 1,
        intrinsics: Any = None,
        query_points: Any = None,
        reference: Reference = ("first",),
        time_index: Optional[Sequence[int]] = None,
        frame_keys: Optional[Sequence[Any]] = None,
        dense_frames: Optional[Sequence[int]] = None,
    ) -> WindowPrediction:
        """Predict one window.

        Args:
            frames: ``S = T * V`` uint8 RGB frames (H, W, 3), time-major (``s = t * V + v``); sizes may differ.
            num_views: V.
            intrinsics: optional known intrinsics in input pixels, (3, 3) for all or (S, 3, 3); when given they
                are reported and used for depth -> points and the geometric mask.
            query_points: optional (N, 2) pixels (x, y) in the reference frame's input image to track.
            reference: ("first",) (frame 0), ("newest", v) (view v at the newest time step), ("index", s).
            time_index: optional (T,) labels of the time steps (reported per frame); default 0..T-1.
            frame_keys: optional hashable key per frame (e.g. ``(camera, stamp_ns)``). The per-frame patch
                embedding (DINOv2, independent of the other frames) is then cached under these keys and reused
                by the next window for the frames it shares with this one; the cache keeps only the keys of the
                latest window. The preprocessed (resized, normalised) model input and the pixel map of a frame
                are cached the same way (also bounded to the latest window's keys).
            dense_frames: frame indices (``0..S-1``) that need dense outputs (depth, confidence, world points,
                dynamic mask); the dense heads and the post-processing then run on those frames only, and the
                other frames' :class:`FramePrediction` carry None there (poses, intrinsics and tracks are
                always computed for every frame). None = every frame. Falls back to every frame when the
                dynamic mask is the training-free geometric one (it compares each frame's depth with every
                other frame's) or when the model's forward takes no ``dense_frames`` (e.g. an ONNX backend);
                :attr:`WindowPrediction.dense_frames` tells what was computed.
        Returns:
            :class:`WindowPrediction`.
        """
        t0 = time.perf_counter()
        S = len(frames)
        if S == 0 or num_views < 1 or S % num_views:
            raise ValueError(f"{S} frames do not form a window of {num_views} views")
        T = S // num_views
        ref = self.reference_frame(reference, T, num_views)
        dense = self._dense_subset(dense_frames, S)
        images, maps = self._preprocess(frames, None if frame_keys is None else list(frame_keys))
        Hm, Wm = maps[0].model_hw
        K_known = self._known_intrinsics(intrinsics, S)
        q_model = None
        if query_points is not None:
            q = torch.as_tensor(np.asarray(query_points, dtype=np.float64)).reshape(-1, 2).to(self.device)
            q_model = maps[ref].input_to_model(q).to(self.dtype)[None]  # (1, N, 2)
        self._sync()
        t1 = time.perf_counter()

        extra: Dict[str, Any] = {}
        if frame_keys is not None and hasattr(self.model, "aggregator"):
            extra["patch_tokens"] = self._patch_tokens(images, list(frame_keys))
        heads = self._heads_used(q_model is not None)
        if heads is not None:
            extra["heads"] = heads
        if dense is not None:
            extra["dense_frames"] = list(dense)
        out = self._run_model(images[None], q_model, num_views=num_views, reference_index=ref, layout=self.layout,
                              **extra)
        self._sync()
        t2 = time.perf_counter()

        raw = self._raw(out, images)
        pred = self._postprocess(raw, maps, num_views, T, ref, K_known, time_index, dense)
        self._sync()
        t3 = time.perf_counter()
        pred.timing_ms = {
            "preprocess": 1e3 * (t1 - t0),
            "model": 1e3 * (t2 - t1),
            "postprocess": 1e3 * (t3 - t2),
            "total": 1e3 * (t3 - t0),
        }
        return pred

    def _planned_mask_source(self) -> str:
        """The dynamic-mask source ``_dynamic`` will use, known before the model runs."""
        src = self.dynamic_mask
        if src != "auto":
            return src
        heads = self._heads_used(False)
        if getattr(self.model, "mask_head", None) is not None and (heads is None or "mask" in heads):
            return "head"
        page = getattr(getattr(self.model, "aggregator", None), "page4d_cfg", None) or {}
        if page.get("enabled", False):
            return "page4d"
        return "geometric"

    def _dense_subset(self, dense_frames: Optional[Sequence[int]], S: int) -> Optional[Tuple[int, ...]]:
        """Sorted unique frame indices for the dense heads, or None for every frame (also the fallbacks)."""
        if dense_frames is None:
            return None
        idx = sorted({int(i) for i in dense_frames})
        if not idx or idx[0] < 0 or idx[-1] >= S:
            raise ValueError(f"dense_frames must be non-empty indices in 0..{S - 1}, got {list(dense_frames)}")
        if len(idx) == S:
            return None
        if not _accepts_keyword(self.model, "dense_frames"):
            return None  # e.g. an exported graph: it always computes every frame
        if self._planned_mask_source() == "geometric":
            return None  # the geometric mask checks each frame's depth against every other frame's
        return tuple(idx)

    def _preprocess(self, frames: Sequence[Any], keys: Optional[List[Any]]) -> Tuple[torch.Tensor, List[PixelMap]]:
        """(S, 3, Hm, Wm) model input and the pixel maps; with ``keys`` only uncached frames are resized.

        A backend with a fixed input grid (ONNX) states it as ``model_hw``; every camera is fitted to it.
        The cache key is (frame key, pixel map, pad value, dtype); it keeps only the keys of this call.
        """
        model_hw = getattr(self.model, "model_hw", None)
        if keys is None:
            self._pre_cache = {}
            return preprocess_frames(self._upload(frames), self.target_width, self.mode, pad_value=self.pad_value,
                                     model_hw=model_hw, device=self.device, dtype=self.dtype,
                                     resize=self.image_resize)
        if len(keys) != len(frames):
            raise ValueError(f"{len(keys)} frame_keys for {len(frames)} frames")
        maps: List[PixelMap] = []
        for f in frames:  # the same maps as preprocess_frames: the grid of the first frame (or model_hw)
            pm = compute_pixel_map((int(f.shape[0]), int(f.shape[1])), self.target_width, self.mode, model_hw=model_hw)
            model_hw = pm.model_hw
            maps.append(pm)
        full = [(k, pm, self.pad_value, self.dtype) for k, pm in zip(keys, maps)]
        missing = [i for i, k in enumerate(full) if k not in self._pre_cache]
        if missing:
            imgs, got = preprocess_frames(self._upload([frames[i] for i in missing]), self.target_width, self.mode,
                                          pad_value=self.pad_value, model_hw=model_hw, device=self.device,
                                          dtype=self.dtype, resize=self.image_resize)
            for j, i in enumerate(missing):
                if got[j] != maps[i]:
                    raise RuntimeError(f"pixel map of frame {i} changed: {got[j]} != {maps[i]}")
                self._pre_cache[full[i]] = imgs[j]
        self._pre_cache = {k: self._pre_cache[k] for k in full}
        self.preprocess_cache_misses = len(missing)
        return torch.stack([self._pre_cache[k] for k in full]), maps

    def _patch_tokens(self, images: torch.Tensor, keys: List[Any]) -> torch.Tensor:
        """(1, S, P, C) patch tokens, embedding only frames whose key is not cached (same grid)."""
        if len(keys) != images.shape[0]:
            raise ValueError(f"{len(keys)} frame_keys for {images.shape[0]} frames")
        grid = tuple(images.shape[-2:])
        full = [(k, grid) for k in keys]
        missing = [i for i, k in enumerate(full) if k not in self._embed_cache]
        if missing:
            emb = self.model.aggregator.embed_frames(images[missing])
            for j, i in enumerate(missing):
                self._embed_cache[full[i]] = emb[j]
        self._embed_cache = {k: self._embed_cache[k] for k in full}
        self.embed_cache_misses = len(missing)
        return torch.stack([self._embed_cache[k] for k in full])[None]

    # ------------------------------------------------------------------ post-processing
    @staticmethod
    def _raw(out: Dict[str, Any], images: torch.Tensor) -> Dict[str, torch.Tensor]:
        raw: Dict[str, torch.Tensor] = {"images": images}
        for k in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf",
                  "dynamic_mask_logits", "page_mask"):
            v = out.get(k)
            if isinstance(v, torch.Tensor):
                v = v[0].float()
                if k == "depth":
                    v = v[..., 0]
                raw[k] = v
        return raw

    def _dynamic(self, raw: Dict[str, torch.Tensor], depth_m: torch.Tensor, cfw: torch.Tensor, K_m: torch.Tensor,
                 tidx: torch.Tensor, dense: Optional[Tuple[int, ...]] = None) -> Tuple[Optional[torch.Tensor], str]:
        """(n, Hm, Wm) dynamic probability on the model grid for the dense frames (all S when ``dense`` is None)
        and its source."""
        src = self.dynamic_mask
        if src == "auto":
            src = "head" if "dynamic_mask_logits" in raw else ("page4d" if "page_mask" in raw else "geometric")
        if src == "none":
            return None, "none"
        if src == "head":
            if "dynamic_mask_logits" not in raw:
                raise RuntimeError("dynamic_mask='head' but the model has no mask head")
            return torch.sigmoid(raw["dynamic_mask_logits"]), "head"
        if src == "page4d":
            if "page_mask" not in raw:
                raise RuntimeError("dynamic_mask='page4d' but the model has no PAGE-4D mask")
            page = raw["page_mask"]
            if dense is not None:
                page = page.index_select(0, torch.as_tensor(dense, device=page.device))
            pm = F.interpolate(page[:, None], size=depth_m.shape[-2:], mode="bilinear",
                               align_corners=False)[:, 0]
            return pm.clamp(0.0, 1.0), "page4d"
        if dense is not None:
            raise RuntimeError("the geometric dynamic mask needs every frame's depth (dense_frames must be None)")
        kw = dict(self.geometric_mask_kw)
        stride = int(kw.pop("stride", 2))
        q = kw.pop("conf_quantile", 0.1)
        d = depth_m[:, ::stride, ::stride]
        K = K_m.clone()
        K[:, :2] /= stride  # pixel u' of the strided grid is pixel stride * u' of the model grid
        if q and "depth_conf" in raw:
            conf = raw["depth_conf"][:, ::stride, ::stride]
            thr = torch.quantile(conf.reshape(conf.shape[0], -1).float(), float(q), dim=1)
            kw.setdefault("valid", conf >= thr[:, None, None])
        score = geometric_dynamic_mask(d, cfw, K, tidx, **kw).float()
        if stride > 1:
            score = _upsample_strided(score, stride, depth_m.shape[-2:])
        return score, "geometric"

    def _postprocess(
        self,
        raw: Dict[str, torch.Tensor],
        maps: List[PixelMap],
        V: int,
        T: int,
        ref: int,
        K_known: Optional[torch.Tensor],
        time_labels: Optional[Sequence[int]],
        dense: Optional[Tuple[int, ...]] = None,
    ) -> WindowPrediction:
        """Decode poses, bring the dense maps of the frames ``dense`` (None: all; the raw dense tensors hold
        exactly those frames, in that order) to input size, and build the per-frame results."""
        S = len(maps)
        dense_idx = list(range(S)) if dense is None else list(dense)
        pos = {s: j for j, s in enumerate(dense_idx)}  # frame index -> row of the raw dense tensors
        Hm, Wm = maps[0].model_hw
        if "pose_enc" not in raw or "depth" not in raw:
            raise RuntimeError("the model must have a camera head and a depth head")
        enc = raw["pose_enc"].double().clone()
        enc[..., 7:9] = enc[..., 7:9].clamp(self.MIN_FOV, self.MAX_FOV)  # a degenerate FoV gives infinite focals
        extr, K_pred = pose_encoding_to_extri_intri(enc, (Hm, Wm), principal_point="center")
        cfw_model = se3_to_4x4(extr)  # the model's own world frame
        cfw, _ = rebase_poses(cfw_model, ref)
        ref_from_model_world = cfw_model[ref]
        if K_known is not None:
            K_m = torch.stack([maps[s].intrinsics_to_model(K_known[s]) for s in range(S)])
        else:
            K_m = K_pred
        K_in = K_known if K_known is not None else torch.stack([maps[s].intrinsics_to_input(K_m[s]) for s in range(S)])
        depth_m = raw["depth"]
        tidx = torch.arange(T, device=depth_m.device).repeat_interleave(V)
        if depth_m.shape[0] != len(dense_idx):
            raise RuntimeError(f"the model returned {depth_m.shape[0]} depth maps for {len(dense_idx)} dense frames")
        mask_m, mask_src = self._dynamic(raw, depth_m, cfw.to(depth_m.device), K_m.to(depth_m.device), tidx, dense)
        if mask_m is not None:
            raw["dynamic_mask"] = mask_m
        pts_m = None
        if self.compute_points == "head":
            if "world_points" not in raw:
                raise RuntimeError("compute_points='head' but the model has no point head")
            pts_m = _apply(ref_from_model_world, raw["world_points"])  # float32 on the device

        labels = list(time_labels) if time_labels is not None else list(range(T))
        cfw_np = cfw.cpu().numpy()
        K_in_np = K_in.cpu().numpy()
        dev = depth_m.device
        has_conf = "depth_conf" in raw
        none = dict(depth=None, depth_conf=None, points_world=None, points_conf=None, dynamic_mask=None)
        per_frame: List[Dict[str, Any]] = [dict(none) for _ in range(S)]
        groups: Dict[PixelMap, List[int]] = {}
        for s, pm in enumerate(maps):
            groups.setdefault(pm, []).append(s)
        if "track" in raw:
            for pm, idx in groups.items():  # tracks of every frame
                sel = torch.as_tensor(idx, device=raw["track"].device)
                tracks = pm.model_to_input(raw["track"].index_select(0, sel).cpu().double()).float().numpy()
                vis = raw["vis"].index_select(0, sel).cpu().numpy() if "vis" in raw else None
                tconf = raw["conf"].index_select(0, sel).cpu().numpy() if "conf" in raw else None
                for j, s in enumerate(idx):
                    per_frame[s].update(tracks=tracks[j], track_vis=None if vis is None else vis[j],
                                        track_conf=None if tconf is None else tconf[j])
        dense_groups: Dict[PixelMap, List[int]] = {}
        for s in dense_idx:
            dense_groups.setdefault(maps[s], []).append(s)
        for pm, idx in dense_groups.items():  # frames sharing one pixel map are resampled in one call
            sel = torch.as_tensor([pos[s] for s in idx], device=dev)  # rows of the dense tensors
            fsel = torch.as_tensor(idx, device=cfw.device)  # frame indices
            chans = [depth_m.index_select(0, sel)]
            if has_conf:
                chans.append(raw["depth_conf"].index_select(0, sel))
            if mask_m is not None:
                chans.append(mask_m.index_select(0, sel).float())
            res = model_to_input(torch.stack(chans, dim=1), pm, self.resample)  # (n, C, H, W)
            depth = res[:, 0].masked_fill_(~(res[:, 0] > 0), float("nan"))  # in place: res is ours
            dconf = res[:, 1] if has_conf else torch.ones_like(depth)
            mask = res[:, -1].clamp(0.0, 1.0) if mask_m is not None else None
            if pts_m is None:
                pts = depth_to_world(depth, cfw.index_select(0, fsel), K_in.index_select(0, fsel.to(K_in.device)))
                pconf = None  # the depth confidence
            else:
                pts = model_to_input_channels(pts_m.index_select(0, sel), pm, self.resample)
                pconf = model_to_input(raw["world_points_conf"].index_select(0, sel), pm, self.resample).cpu().numpy()
            depth_np, dconf_np, pts_np = depth.cpu().numpy(), dconf.cpu().numpy(), pts.cpu().numpy()
            mask_np = None if mask is None else mask.cpu().numpy()
            for j, s in enumerate(idx):
                per_frame[s].update(
                    depth=depth_np[j], depth_conf=dconf_np[j], points_world=pts_np[j],
                    points_conf=dconf_np[j] if pconf is None else pconf[j],
                    dynamic_mask=None if mask_np is None else mask_np[j])
        for d in per_frame:
            for k in ("tracks", "track_vis", "track_conf"):
                d.setdefault(k, None)
        frames: List[FramePrediction] = []
        for s in range(S):
            frames.append(FramePrediction(
                index=s,
                time_index=int(labels[s // V]),
                view_index=s % V,
                image_hw=maps[s].input_hw,
                cam_from_world=cfw_np[s],
                intrinsics=K_in_np[s],
                intrinsics_known=K_known is not None,
                pixel_map=maps[s],
                **per_frame[s],
            ))
        return WindowPrediction(
            frames=frames,
            num_views=V,
            num_times=T,
            reference_index=ref,
            model_hw=(Hm, Wm),
            cam_from_world=cfw,
            model_intrinsics=K_m,
            raw=raw,
            dynamic_mask_source=mask_src,
            dense_frames=tuple(dense_idx),
        )


def depth_to_world(depth: torch.Tensor, cam_from_world: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """World points of z-depth maps, float32 maps with float64 per-frame geometry.

    ``p_w = z * (a_x(u) R[0] + a_y(v) R[1] + R[2]) + C`` with ``a_x = (u - cx) / fx``, ``a_y = (v - cy) / fy``
    (zero skew, pixel centres at integers), ``R`` the camera-from-world rotation (its rows are the camera axes
    in the world) and ``C = -R^T t`` the camera centre. Same result as
    :func:`vggt4d_ros.geometry.depth_to_world_points`, written separably here because that one applies a
    3x3 matrix per pixel (a batched matmul of H*W tiny products: about 10x slower on the CPU) and its float64
    use would put float64 maps on the device.

    Args:
        depth: (n, H, W) float32 depth (NaN stays NaN).
        cam_from_world: (n, 4, 4) (any float dtype; the per-frame terms are formed in float64).
        K: (n, 3, 3) intrinsics in the depth maps' pixels.
    Returns:
        (n, H, W, 3) float32 world points on ``depth``'s device.
    """
    n, H, W = depth.shape
    dev = depth.device
    T = cam_from_world.to(torch.float64)
    K = K.to(torch.float64)
    R, t = T[:, :3, :3], T[:, :3, 3]
    C = -(R.transpose(1, 2) @ t[:, :, None])[:, :, 0]  # (n, 3)
    u = torch.arange(W, dtype=torch.float64, device=K.device)
    v = torch.arange(H, dtype=torch.float64, device=K.device)
    ax = (u[None] - K[:, 0, 2, None]) / K[:, 0, 0, None]  # (n, W)
    ay = (v[None] - K[:, 1, 2, None]) / K[:, 1, 1, None]  # (n, H)
    f32 = dict(device=dev, dtype=torch.float32)
    ax, ay, R, C = ax.to(**f32), ay.to(**f32), R.to(**f32), C.to(**f32)
    ray = ax[:, None, :, None] * R[:, None, None, 0] + (ay[:, :, None, None] * R[:, None, None, 1] + R[:, None, None, 2])
    return torch.addcmul(C[:, None, None, :], depth[..., None].to(torch.float32), ray)


def _accepts_keyword(model: nn.Module, name: str) -> bool:
    """True if ``model``'s forward takes keyword ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())


def pack_frames(frames: Sequence[np.ndarray], buffer: torch.Tensor) -> List[Tuple[int, Tuple[int, ...]]]:
    """Copy uint8 arrays back to back into the flat uint8 ``buffer`` (e.g. pinned host memory).

    Returns ``(offset, shape)`` per frame, for :func:`unpack_like`. ``buffer`` must hold the total size.
    """
    layout = []
    flat = buffer.numpy()
    off = 0
    for f in frames:
        n = int(f.size)
        flat[off : off + n].reshape(f.shape)[...] = f  # one memcpy per frame (handles non-contiguous input)
        layout.append((off, tuple(f.shape)))
        off += n
    return layout


def unpack_like(flat: torch.Tensor, layout: Sequence[Tuple[int, Tuple[int, ...]]]) -> List[torch.Tensor]:
    """Views of the flat tensor ``flat`` (same packing as :func:`pack_frames`), one per frame."""
    out = []
    for off, shape in layout:
        n = int(np.prod(shape))
        out.append(flat[off : off + n].view(shape))
    return out


def _apply(T: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply one (4, 4) transform to (..., 3) points (in the points' dtype)."""
    return pts @ T[:3, :3].T.to(pts.dtype) + T[:3, 3].to(pts.dtype)


def _upsample_strided(x: torch.Tensor, stride: int, size: Tuple[int, int]) -> torch.Tensor:
    """(S, h, w) values sampled at model pixels ``stride * i`` -> (S, H, W) on the full grid (bilinear, exact
    alignment: model pixel u sits at strided coordinate u / stride; clamped at the far border)."""
    H, W = size
    h, w = x.shape[-2:]
    u = torch.arange(W, device=x.device, dtype=torch.float32) / stride
    v = torch.arange(H, device=x.device, dtype=torch.float32) / stride
    gx = (2.0 * u.clamp(max=w - 1) + 1.0) / w - 1.0
    gy = (2.0 * v.clamp(max=h - 1) + 1.0) / h - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)
    grid = grid[None].expand(x.shape[0], H, W, 2)
    return F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]
