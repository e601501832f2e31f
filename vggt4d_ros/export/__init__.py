"""Deployment: ONNX export of the 4D model and an onnxruntime backend with the model's forward contract.

No ROS imports. ``onnx`` / ``onnxruntime`` are imported lazily (only when exporting or running).
"""

from .onnx_export import (
    DEFAULT_HEADS,
    HEAD_OUTPUTS,
    ExportError,
    ExportGraph,
    ExportSpec,
    compare_outputs,
    export_onnx,
    read_sidecar,
    sidecar_path,
)
from .ort_backend import OrtBackend, available_providers, make_session

__all__ = [
    "DEFAULT_HEADS",
    "HEAD_OUTPUTS",
    "ExportError",
    "ExportGraph",
    "ExportSpec",
    "OrtBackend",
    "available_providers",
    "compare_outputs",
    "export_onnx",
    "make_session",
    "read_sidecar",
    "sidecar_path",
]
