"""onnxruntime backend with the forward contract of :class:`vggt4d_ros.model.VGGT4D`.

``OrtBackend(path)`` is an ``nn.Module`` without parameters, so ``Predictor(model=OrtBackend(path))`` works
unchanged: the Predictor's ``.eval().to(device, dtype)`` is a no-op, it finds no ``aggregator`` /
``camera_head`` attribute to tune, and calls ``backend(images, query_points, num_views=..., reference_index=...,
layout=...)``. The backend returns a dict of float32 torch tensors on the device of ``images`` with the keys
the graph was exported with (``pose_enc``, ``depth``, ``depth_conf``, ``dynamic_mask_logits``, ...).

What the graph baked in (read from the sidecar ``<file>.json`` written by
:func:`~vggt4d_ros.export.export_onnx`, else from the graph's input shape) is checked on every call: image
size, number of frames (unless exported with dynamic frames), ``num_views`` (spatiotemporal layout), reference
frame and layout. A mismatch raises ``ValueError`` naming the export options to use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

import json

__all__ = ["OrtBackend", "DEFAULT_PROVIDERS", "available_providers", "make_session"]

_LOG = logging.getLogger(__name__)

#: Name of the exported graph's image input.
INPUT_NAME = "images"


def sidecar_path(onnx_path: Union[str, os.PathLike]) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (what the graph expects, written by the exporter)."""
    return Path(str(onnx_path) + ".json")


def read_sidecar(onnx_path: Union[str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """The sidecar of ``onnx_path`` or None when there is none."""
    p = sidecar_path(onnx_path)
    if not p.is_file():
        return None
    with open(p, "r", encoding="utf-8") as f:
        return json.load(f)

#: Tried in this order, filtered to what the installed onnxruntime offers. Note that onnxruntime gives each
#: node to the FIRST provider that supports it: listed after CUDA, TensorRT gets nothing; put
#: "TensorrtExecutionProvider" first to build TensorRT engines (slow first run).
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider")

_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def available_providers(wanted: Sequence[Union[str, tuple]] = DEFAULT_PROVIDERS) -> List[Union[str, tuple]]:
    """``wanted`` (names or ``(name, options)`` pairs) filtered to the providers onnxruntime has, in order."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in wanted if (p[0] if isinstance(p, tuple) else p) in have]


def make_session(path: Union[str, os.PathLike], providers: Sequence[Union[str, tuple]] = DEFAULT_PROVIDERS,
                 intra_op_threads: int = 0):
    """An ``onnxruntime.InferenceSession`` on the available subset of ``providers``.

    Raises:
        FileNotFoundError: no file at ``path``.
        RuntimeError: none of ``providers`` is available.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} not found (export one with vggt4d-export)")
    use = available_providers(providers)
    if not use:
        raise RuntimeError(f"none of the providers {list(providers)} is available in onnxruntime "
                           f"{ort.__version__} (available: {ort.get_available_providers()})")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only (fp16 graphs on CPU log a warning per unfoldable node)
    if intra_op_threads:
        opts.intra_op_num_threads = int(intra_op_threads)
    return ort.InferenceSession(str(path), sess_options=opts, providers=use)


class OrtBackend(nn.Module):
    """Run an exported window graph with onnxruntime.

    Args:
        path: ``.onnx`` file from ``vggt4d-export`` (its sidecar ``<path>.json`` next to it is read if there).
        providers: onnxruntime providers (names or ``(name, options)``), filtered to the available ones.
        intra_op_threads: onnxruntime CPU threads (0 = its default).

    Attributes:
        session, providers (in use), info (sidecar dict or inferred), output_names, height, width, model_hw,
        num_frames (None when dynamic), num_views, reference_index, layout.
    """

    def __init__(self, path: Union[str, os.PathLike], providers: Sequence[Union[str, tuple]] = DEFAULT_PROVIDERS,
                 intra_op_threads: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = make_session(self.path, providers, intra_op_threads)
        self.providers = list(self.session.get_providers())
        inp = self.session.get_inputs()
        if len(inp) != 1:
            raise ValueError(f"{self.path}: expected one input ({INPUT_NAME}), found {[i.name for i in inp]}")
        self.input_name = inp[0].name
        if inp[0].type not in _NP_DTYPES:
            raise ValueError(f"{self.path}: unsupported input type {inp[0].type}")
        self.input_dtype = _NP_DTYPES[inp[0].type]
        shape = list(inp[0].shape)
        if len(shape) != 5:
            raise ValueError(f"{self.path}: input must be (1, S, 3, H, W), got {shape}")
        self.output_names = [o.name for o in self.session.get_outputs()]
        info = read_sidecar(self.path)
        if info is None:
            _LOG.warning("%s has no sidecar JSON: assuming reference frame 0 and no layout constraint", self.path)
            s = shape[1] if isinstance(shape[1], int) else None
            info = {"height": shape[3], "width": shape[4], "num_frames": s, "dynamic_frames": s is None,
                    "num_views": None, "reference_index": 0, "layout": None, "outputs": self.output_names}
        self.info = info
        self.height, self.width = int(info["height"]), int(info["width"])
        self.num_frames = None if info.get("dynamic_frames") else info.get("num_frames")
        self.num_views = info.get("num_views")
        self.reference_index = int(info.get("reference_index", 0))
        self.layout = info.get("layout")

    @property
    def model_hw(self) -> tuple:
        """``(height, width)`` of the model grid the graph takes (pass to ``preprocess_frames(model_hw=...)``)."""
        return (self.height, self.width)

    def extra_repr(self) -> str:
        return (f"path={str(self.path)!r}, providers={self.providers}, size={self.height}x{self.width}, "
                f"frames={self.num_frames or 'dynamic'}, views={self.num_views}, layout={self.layout}, "
                f"reference={self.reference_index}")

    # ------------------------------------------------------------------ checks
    def check_window(self, num_frames: int, height: int, width: int, num_views: int = 1, reference_index: int = 0,
                     layout: Optional[str] = None) -> None:
        """Raise ``ValueError`` if a window does not fit the exported graph."""
        if (height, width) != (self.height, self.width):
            raise ValueError(f"images are {height}x{width} but {self.path.name} was exported for "
                             f"{self.height}x{self.width} (re-export with --height {height} --width {width}, or set "
                             f"the Predictor's target_width so the model grid is {self.height}x{self.width})")
        if self.num_frames is not None and num_frames != self.num_frames:
            raise ValueError(f"window has {num_frames} frames but {self.path.name} was exported for "
                             f"{self.num_frames} (V={self.num_views} x T={self.info.get('num_steps')}); "
                             "re-export for this window or with --dynamic-frames (global layout)")
        if self.layout == "spatiotemporal" and self.num_views is not None and num_views != self.num_views:
            raise ValueError(f"num_views={num_views} but {self.path.name} (spatiotemporal layout) was exported for "
                             f"{self.num_views} views")
        if reference_index != self.reference_index:
            raise ValueError(f"reference_index={reference_index} but {self.path.name} was exported with reference "
                             f"frame {self.reference_index} (re-export with --reference)")
        if layout is not None and self.layout is not None and layout != self.layout:
            raise ValueError(f"layout {layout!r} requested but {self.path.name} was exported with {self.layout!r}")

    # ------------------------------------------------------------------ forward
    def run_numpy(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """One window ``(1, S, 3, H, W)`` -> the raw graph outputs (numpy)."""
        outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(images, self.input_dtype)})
        return dict(zip(self.output_names, outs))

    def forward(
        self,
        images: torch.Tensor,
        query_points: Optional[torch.Tensor] = None,
        *,
        num_views: int = 1,
        reference_index: int = 0,
        layout: Optional[str] = None,
        patch_tokens: Optional[torch.Tensor] = None,
    ) -> Dict[str, Any]:
        """Same contract as ``VGGT4D.forward`` (without tracks).

        Args:
            images: ``(S, 3, H, W)`` or ``(B, S, 3, H, W)`` in [0, 1] (any float dtype / device).
            query_points: ignored (the track head is not exported); a debug message is logged.
            num_views / reference_index / layout: checked against the export (see :meth:`check_window`).
            patch_tokens: not supported (raises): the graph embeds the frames itself.
        Returns:
            dict of float32 tensors on ``images.device``: the exported outputs (``pose_enc`` (B,S,9),
            ``depth`` (B,S,H,W,1), ``depth_conf`` (B,S,H,W), ``dynamic_mask_logits`` (B,S,H,W), ...), plus
            ``pose_enc_list`` ``[pose_enc]`` and ``images``.
        """
        if patch_tokens is not None:
            raise ValueError("OrtBackend cannot take cached patch_tokens (call predict() without frame_keys)")
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (S, 3, H, W) or (B, S, 3, H, W), got {tuple(images.shape)}")
        b, s, _, h, w = images.shape
        self.check_window(s, h, w, num_views, reference_index, layout)
        if query_points is not None:
            _LOG.debug("OrtBackend: query_points ignored (no track head in the ONNX graph)")
        host = images.detach().to("cpu", torch.float32).numpy()
        per_item = [self.run_numpy(host[i : i + 1]) for i in range(b)]
        out: Dict[str, Any] = {}
        for name in self.output_names:
            arr = np.concatenate([p[name] for p in per_item], axis=0) if b > 1 else per_item[0][name]
            out[name] = torch.from_numpy(np.asarray(arr, dtype=np.float32)).to(images.device)
        if "pose_enc" in out:
            out["pose_enc_list"] = [out["pose_enc"]]
        out["images"] = images
        return out
