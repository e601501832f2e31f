"""Export the 4D model to ONNX for one fixed image size, and check the file against torch.

The exported graph takes ``images`` ``(1, S, 3, H, W)`` float in [0, 1] (ImageNet normalisation is inside,
frames time-major ``s = t * V + v``) and returns, by head:

- ``camera``: ``pose_enc`` ``(1, S, 9)`` (translation, quaternion xyzw, field of view h/w),
- ``depth``: ``depth`` ``(1, S, H, W, 1)`` and ``depth_conf`` ``(1, S, H, W)``,
- ``mask``: ``dynamic_mask_logits`` ``(1, S, H, W)`` (only models with a mask head),
- ``points``: ``world_points`` ``(1, S, H, W, 3)`` and ``world_points_conf`` ``(1, S, H, W)``,
- ``page4d``: ``page_mask`` ``(1, S, h, w)`` (PAGE-4D models; patch grid ``h = H/14``).

Export-sensitive parts are frozen before tracing with :meth:`Aggregator.fix_grid`: DINOv2's bicubic
antialiased position-embedding resize becomes a constant, and the RoPE cos/sin tables get a fixed length
(no data-dependent ``max()``). ``S = V * T`` is fixed unless ``dynamic_frames`` (only with the ``global``
layout: the 4D ``spatiotemporal`` layout groups frames by ``V`` and ``T`` with Python-level arithmetic that
cannot follow a symbolic ``S``). The reference frame (which frame gets camera/register token 0) is fixed at
export time too. The track head is never exported (its queries make shapes data-dependent).

A sidecar JSON (``<file>.json``) records what the graph expects; :class:`~vggt4d_ros.export.OrtBackend`
reads it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

# The runtime owns the file contract (input name, sidecar); the exporter follows it (no import cycle).
from .ort_backend import INPUT_NAME, make_session, read_sidecar, sidecar_path

__all__ = [
    "HEAD_OUTPUTS",
    "DEFAULT_HEADS",
    "ExportSpec",
    "ExportError",
    "ExportGraph",
    "export_onnx",
    "sidecar_path",
    "read_sidecar",
    "compare_outputs",
]

#: head name -> (model attribute or None, output names in graph order)
HEAD_OUTPUTS: Dict[str, Tuple[Optional[str], Tuple[str, ...]]] = {
    "camera": ("camera_head", ("pose_enc",)),
    "depth": ("depth_head", ("depth", "depth_conf")),
    "mask": ("mask_head", ("dynamic_mask_logits",)),
    "points": ("point_head", ("world_points", "world_points_conf")),
    "page4d": (None, ("page_mask",)),
}
DEFAULT_HEADS = ("camera", "depth", "mask")
SIDECAR_FORMAT = 1
MIN_OPSET = 17


class ExportError(ValueError):
    """The requested export does not fit the model (size, heads, layout, reference...)."""


@dataclass
class ExportSpec:
    """What to export.

    Attributes:
        height / width: model-grid pixels (multiples of the patch size; e.g. 392 x 518 for VGGT-1B at 4:3).
        num_views / num_steps: ``V`` and ``T`` (``S = V * T`` frames).
        dynamic_frames: make ``S`` a dynamic axis (``global`` layout only).
        heads: head names of :data:`HEAD_OUTPUTS`; a default head the model lacks (``mask``) is dropped,
            an explicitly requested one raises.
        opset: ONNX opset (>= 17).
        fp16: export fp16 weights and activations (input and outputs stay fp16 in the graph).
        layout: attention layout baked into the graph; None = the model's.
        reference: ``"first"`` (frame 0), ``"newest"`` (view 0 at the newest step, ``(T-1)*V``) or a frame index.
        optimize: run the ONNX graph optimizer after translation (constant folding etc.; about a third of the
            export time on the tiny model).
    """

    height: int
    width: int
    num_views: int = 1
    num_steps: int = 1
    dynamic_frames: bool = False
    heads: Sequence[str] = DEFAULT_HEADS
    opset: int = 18
    fp16: bool = False
    layout: Optional[str] = None
    reference: Union[str, int] = "first"
    optimize: bool = True

    @property
    def num_frames(self) -> int:
        return int(self.num_views) * int(self.num_steps)

    def reference_index(self) -> int:
        """Frame index of the reference frame in the window."""
        if self.reference == "first":
            return 0
        if self.reference == "newest":
            return (int(self.num_steps) - 1) * int(self.num_views)
        if isinstance(self.reference, str):
            raise ExportError(f"reference must be 'first', 'newest' or a frame index, got {self.reference!r}")
        idx = int(self.reference)
        if not 0 <= idx < self.num_frames:
            raise ExportError(f"reference frame {idx} outside 0..{self.num_frames - 1}")
        return idx


class ExportGraph(nn.Module):
    """The traced function: ``images`` ``(1, S, 3, H, W)`` -> tuple of the selected outputs.

    Runs the aggregator and the selected heads of ``model`` with the window settings baked in (the DPT heads
    process all frames at once, no Python chunk loop, so ``S`` can stay symbolic). Numerically the same as
    ``model(images, num_views=V, reference_index=ref, layout=layout)``.
    """

    def __init__(self, model: nn.Module, heads: Sequence[str], num_views: int, reference_index: int,
                 layout: Optional[str]) -> None:
        super().__init__()
        self.model = model
        self.heads = tuple(heads)
        self.num_views = int(num_views)
        self.reference_index = int(reference_index)
        self.layout = layout

    @property
    def output_names(self) -> List[str]:
        return [n for h in self.heads for n in HEAD_OUTPUTS[h][1]]

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        m = self.model
        tokens, psi, aux = m.aggregator(images, num_views=self.num_views, reference_index=self.reference_index,
                                        layout=self.layout)
        out: List[torch.Tensor] = []
        for h in self.heads:
            if h == "camera":
                out.append(m.camera_head(tokens)[-1])
            elif h == "depth":
                depth, conf = m.depth_head(tokens, images=images, patch_start_idx=psi, frames_chunk_size=None)
                out += [depth, conf]
            elif h == "points":
                pts, conf = m.point_head(tokens, images=images, patch_start_idx=psi, frames_chunk_size=None)
                out += [pts, conf]
            elif h == "mask":
                logits, _ = m.mask_head(tokens, images=images, patch_start_idx=psi, frames_chunk_size=None)
                out.append(logits[..., 0])
            elif h == "page4d":
                out.append(1.0 - aux["page_static"])
        return tuple(out)


def _resolve_heads(model: nn.Module, heads: Sequence[str]) -> List[str]:
    heads = [h.strip() for h in heads if h and h.strip()]
    unknown = [h for h in heads if h not in HEAD_OUTPUTS]
    if unknown:
        raise ExportError(f"unknown heads {unknown}; known: {sorted(HEAD_OUTPUTS)}")
    explicit = list(heads) != list(DEFAULT_HEADS)
    out = []
    for h in dict.fromkeys(heads):
        attr = HEAD_OUTPUTS[h][0]
        present = getattr(model, attr, None) is not None if attr else bool(model.aggregator.page4d_cfg.get("enabled"))
        if not present:
            if explicit or h != "mask":
                raise ExportError(f"the model has no {h} head (config {model.config.get('name', '?')!r})")
            continue
        out.append(h)
    if not out:
        raise ExportError("no outputs to export")
    return out


def _validate(model: nn.Module, spec: ExportSpec) -> Tuple[List[str], str, int]:
    if not hasattr(model, "aggregator"):
        raise ExportError("export needs a vggt4d_ros VGGT4D model (no .aggregator)")
    if hasattr(model, "cross_time_local_fusion"):  # ExportGraph runs the aggregator and heads, not the 2 branches
        raise ExportError("4D-VGGT (architecture 4d-vggt) models cannot be exported yet: the export graph has no "
                          "cross-time branch or dense fusion")
    p = model.aggregator.patch_size
    for name, v in (("height", spec.height), ("width", spec.width)):
        if int(v) <= 0 or int(v) % p:
            raise ExportError(f"{name} {v} must be a positive multiple of the patch size {p}")
    if int(spec.num_views) < 1 or int(spec.num_steps) < 1:
        raise ExportError(f"views ({spec.num_views}) and steps ({spec.num_steps}) must be >= 1")
    if int(spec.opset) < MIN_OPSET:
        raise ExportError(f"opset {spec.opset} is below the supported minimum {MIN_OPSET}")
    layout = spec.layout or model.aggregator.layout
    if layout not in ("global", "spatiotemporal"):
        raise ExportError(f"unknown layout {layout!r}")
    if spec.dynamic_frames and layout != "global":
        raise ExportError("dynamic frames need the 'global' layout (the spatiotemporal layout groups frames by "
                          "V and T, which are baked in); export one file per (V, T) or pass --layout global")
    ref = spec.reference_index()
    if spec.dynamic_frames and ref != 0:
        raise ExportError("dynamic frames need reference 'first' (frame 0)")
    return _resolve_heads(model, spec.heads), layout, ref


def compare_outputs(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """Per output: ``max_abs`` error, ``max_rel`` (max abs error / max |ref|) and ``max_elem_rel``
    (max of |err| / (|ref| + 1e-6), elementwise)."""
    out: Dict[str, Dict[str, float]] = {}
    for k, a in ref.items():
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(got[k], dtype=np.float64)
        if a.shape != b.shape:
            raise AssertionError(f"{k}: shape {b.shape} != torch {a.shape}")
        err = np.abs(a - b)
        scale = float(np.abs(a).max()) if a.size else 0.0
        out[k] = {
            "max_abs": float(err.max()) if err.size else 0.0,
            "max_rel": float(err.max() / scale) if scale > 0 else float(err.max() if err.size else 0.0),
            "max_elem_rel": float((err / (np.abs(a) + 1e-6)).max()) if err.size else 0.0,
            "finite": bool(np.isfinite(b).all()),
        }
    return out


#: loggers of the exporter stack; at INFO/WARNING they print hundreds of lines per export (one per skipped
#: constant fold, deduplicated initializer, unavailable torchvision op...), none about this model's graph
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet_exporter(enabled: bool = True):
    """Silence the exporter stack's progress output inside the block (loggers to ERROR, its Future- and
    DeprecationWarnings ignored); errors still raise. ``enabled=False`` changes nothing."""
    if not enabled:
        yield
        return
    saved = {name: logging.getLogger(name).level for name in EXPORTER_LOGGERS}
    try:
        for name in EXPORTER_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _export_file(graph: ExportGraph, example: torch.Tensor, path: Path, spec: ExportSpec, external: bool,
                 quiet: bool = True) -> str:
    """Run torch.onnx.export (torch.export based); returns the exporter used."""
    kw: Dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=graph.output_names,
                              opset_version=int(spec.opset), dynamo=True, external_data=external,
                              optimize=bool(spec.optimize), verbose=False if quiet else None)
    if spec.dynamic_frames:
        frames = torch.export.Dim("frames", min=1, max=1024)
        kw["dynamic_shapes"] = {"images": {1: frames}}
    with quiet_exporter(quiet):
        prog = torch.onnx.export(graph, (example,), None, **kw)
        prog.save(str(path), external_data=external)
    return "torch.export"


def export_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    spec: ExportSpec,
    *,
    verify: bool = True,
    seed: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    metadata: Optional[Dict[str, Any]] = None,
    quiet: bool = True,
) -> Dict[str, Any]:
    """Export ``model`` (a :class:`~vggt4d_ros.model.VGGT4D`) to ``path`` and write the sidecar JSON.

    Args:
        model: the model (weights already loaded); it is put in eval mode and its aggregator's grid fixed to
            ``spec.height x spec.width`` (``keep_layers`` is restored afterwards).
        path: output ``.onnx`` file (weights go to ``<path>.data`` when over 1.5 GB).
        spec: :class:`ExportSpec`.
        verify: run ``onnx.checker`` and compare onnxruntime with torch on a random window (uniform [0, 1],
            ``seed``); figures go into the sidecar under ``"parity"``.
        providers: onnxruntime providers for the check.
        metadata: extra entries for the sidecar (config name, checkpoint...).
        quiet: silence the exporter stack's logging and progress lines (:func:`quiet_exporter`).
    Returns:
        the sidecar dict.
    Raises:
        ExportError: bad size / heads / layout / reference for this model.
    """
    heads, layout, ref = _validate(model, spec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if spec.fp16 else torch.float32
    model = model.eval()
    agg = model.aggregator
    old_keep = agg.keep_layers
    graph = ExportGraph(model, heads, spec.num_views, ref, layout)
    need = set()
    for h in heads:
        if h == "camera":
            need.add(agg.depth - 1)
        elif h in ("depth", "points", "mask"):
            need.update(getattr(model, HEAD_OUTPUTS[h][0]).intermediate_layer_idx)
    agg.keep_layers = tuple(sorted(need))
    agg.fix_grid(int(spec.height), int(spec.width))
    S = spec.num_frames
    gen = torch.Generator().manual_seed(seed)
    example = torch.rand(1, S, 3, int(spec.height), int(spec.width), generator=gen)
    n_bytes = sum(p.numel() * (2 if spec.fp16 else 4) for p in model.parameters())
    external = n_bytes > 1_500_000_000
    ref_out: Optional[Dict[str, np.ndarray]] = None
    try:
        if verify:  # eager reference first (fp32; it also fills the model's caches with real tensors)
            ref_out = _torch_outputs(model, graph, example)
        t0 = time.perf_counter()
        if spec.fp16:  # a half copy: casting the caller's model there and back would round its weights
            graph = ExportGraph(copy.deepcopy(model).half(), heads, spec.num_views, ref, layout)
        with torch.no_grad():
            exporter = _export_file(graph.eval(), example.to(dtype), path, spec, external, quiet)
    finally:
        agg.keep_layers = old_keep
        clear_model_caches(model)
    export_s = time.perf_counter() - t0

    import onnx

    info: Dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "onnx_file": path.name,
        "external_data": external,
        "input": {"name": INPUT_NAME, "shape": [1, "S" if spec.dynamic_frames else S, 3, int(spec.height),
                                                 int(spec.width)],
                  "dtype": "float16" if spec.fp16 else "float32", "range": [0.0, 1.0], "order": "time-major"},
        "height": int(spec.height),
        "width": int(spec.width),
        "num_views": int(spec.num_views),
        "num_steps": int(spec.num_steps),
        "num_frames": None if spec.dynamic_frames else S,
        "dynamic_frames": bool(spec.dynamic_frames),
        "layout": layout,
        "reference_index": ref,
        "reference": spec.reference if isinstance(spec.reference, str) else int(spec.reference),
        "heads": heads,
        "outputs": graph.output_names,
        "fp16": bool(spec.fp16),
        "opset": int(spec.opset),
        "exporter": exporter,
        "export_seconds": round(export_s, 2),
        "patch_size": int(agg.patch_size),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
        "model_config": {k: v for k, v in model.config.items() if isinstance(v, (str, int, float, bool, type(None)))},
    }
    info.update(metadata or {})
    if verify:
        onnx.checker.check_model(str(path))
        info["checker"] = "passed"
        info["parity"] = _parity(ref_out, graph.output_names, path, example, spec, providers)
        import onnxruntime as ort

        info["versions"]["onnxruntime"] = ort.__version__
    with open(sidecar_path(path), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return info


def clear_model_caches(model: nn.Module) -> None:
    """Empty the lazily filled position / RoPE / UV-embedding caches of ``model``.

    Tracing (torch.export) runs the model on fake tensors; a cache miss during tracing stores such a tensor,
    which would poison later eager calls. The caches refill on the next eager call.
    """
    from ..model.heads import utils as head_utils

    head_utils._UV_EMBED_CACHE.clear()
    for m in model.modules():
        for obj in (m, getattr(m, "position_getter", None)):
            cache = getattr(obj, "_cache", None)
            if isinstance(cache, dict):
                cache.clear()


def _torch_outputs(model: nn.Module, graph: ExportGraph, example: torch.Tensor) -> Dict[str, np.ndarray]:
    """The model's own forward (fp32, eval) on ``example``: the reference of the parity check."""
    with torch.no_grad():
        out = model(example, None, num_views=graph.num_views, reference_index=graph.reference_index,
                    layout=graph.layout)
    return {n: out[n].float().numpy() for n in graph.output_names}


def _parity(ref: Dict[str, np.ndarray], names: Sequence[str], path: Path, example: torch.Tensor, spec: ExportSpec,
            providers: Sequence[str]) -> Dict[str, Any]:
    """onnxruntime vs the torch reference outputs ``ref`` on ``example``."""
    sess = make_session(path, providers)
    feed = {INPUT_NAME: example.numpy().astype(np.float16 if spec.fp16 else np.float32)}
    t0 = time.perf_counter()
    got = sess.run(list(names), feed)
    ort_ms = 1e3 * (time.perf_counter() - t0)
    res: Dict[str, Any] = {
        "input": f"uniform [0,1] seed, shape {list(example.shape)}",
        "providers": list(sess.get_providers()),
        "ort_first_run_ms": round(ort_ms, 1),
        "outputs": compare_outputs(ref, dict(zip(names, got))),
    }
    res["max_abs"] = max(v["max_abs"] for v in res["outputs"].values())
    res["max_rel"] = max(v["max_rel"] for v in res["outputs"].values())
    return res
