"""Loading checkpoints without executing pickled code.

Supported files:
- ``.safetensors`` (any layout below),
- ``.pt`` / ``.pth`` / ``.bin`` read with ``torch.load(weights_only=True)`` only: a pickle that references
  anything beyond tensors and plain containers is refused (:class:`CheckpointError`), never executed.
  Accepted contents: a plain state_dict (VGGT-1B's ``model.pt``) or a dict wrapping it under ``"model"``
  (PAGE-4D) or ``"state_dict"``.

Key mapping: ``module.`` (DistributedDataParallel) and ``_orig_mod.`` (torch.compile) prefixes are stripped.
Layouts recognised (reported as ``layout``): ``"vggt"`` (VGGT-1B / its commercial variant / PAGE-4D without
its mask head), ``"page4d"`` (``aggregator.spatial_mask_head.*`` present: build with ``page4d.enabled``),
``"vggt4d"`` (``mask_head.*`` present: build with ``enable_mask``).

All problems (missing path, unreadable / truncated / corrupt file, refused pickle, missing / unexpected keys,
shape mismatches) raise ONE :class:`CheckpointError` whose message lists everything.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Union

import torch
from torch import nn

PREFIXES_TO_STRIP = ("module.", "_orig_mod.")
WRAPPER_KEYS = ("model", "state_dict")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the model."""


@dataclass
class CheckpointReport:
    """What :func:`load_checkpoint` did."""

    path: str
    layout: str
    num_tensors: int
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _read(path: Path) -> Mapping[str, object]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{path}: refused: the pickle holds objects other than tensors and plain containers "
                f"(loaded with weights_only=True, nothing was executed): {exc}"
            ) from exc
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    raise CheckpointError(f"{path}: unsupported checkpoint type {suffix!r} (use .safetensors, .pt or .pth)")


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` with wrapper and prefixes removed."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    obj = _read(p)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a dict of tensors, got {type(obj).__name__}")
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    out: Dict[str, torch.Tensor] = {}
    bad = []
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            bad.append(str(k))
            continue
        name = str(k)
        changed = True
        while changed:
            changed = False
            for pre in PREFIXES_TO_STRIP:
                if name.startswith(pre):
                    name, changed = name[len(pre):], True
        out[name] = v
    if bad and not out:
        raise CheckpointError(f"{p}: no tensors found (keys: {bad[:10]})")
    return out


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"page4d"``, ``"vggt4d"`` or ``"vggt"`` (see module docstring)."""
    if any(k.startswith("aggregator.spatial_mask_head.") for k in state_dict):
        return "page4d"
    if any(k.startswith("mask_head.") for k in state_dict):
        return "vggt4d"
    return "vggt"


def _short(keys: List[str], n: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_checkpoint(model: nn.Module, path: Union[str, os.PathLike], strict: bool = True) -> CheckpointReport:
    """Load ``path`` into ``model``.

    Args:
        model: a :class:`~vggt4d_ros.model.VGGT4D` (any ``nn.Module`` works).
        path: ``.safetensors`` / ``.pt`` / ``.pth`` file.
        strict: raise :class:`CheckpointError` on any missing / unexpected / mis-shaped key (else load the
            matching tensors and report the rest).
    Returns:
        :class:`CheckpointReport`.
    """
    sd = read_state_dict(path)
    layout = detect_layout(sd)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape
    ]
    report = CheckpointReport(str(path), layout, len(sd), missing, unexpected, mismatched)
    if strict and not report.ok:
        hint = ""
        if layout == "page4d" and not any(k.startswith("aggregator.spatial_mask_head.") for k in own):
            hint = " Hint: this is a PAGE-4D checkpoint with its mask predictor: build with page4d.enabled=true."
        elif layout == "vggt4d" and not any(k.startswith("mask_head.") for k in own):
            hint = " Hint: the checkpoint has a dense mask head: build with enable_mask=true."
        parts = [f"{path}: checkpoint (layout {layout!r}, {len(sd)} tensors) does not fit the model."]
        if missing:
            parts.append(f"missing {len(missing)}: {_short(missing)}.")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_short(unexpected)}.")
        if mismatched:
            parts.append(f"shape mismatch {len(mismatched)}: {_short(mismatched)}.")
        raise CheckpointError(" ".join(parts) + hint)
    bad = {m.split(" ")[0] for m in mismatched}
    usable = {k: v for k, v in sd.items() if k in own and k not in bad}
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(usable, strict=False, assign=on_meta)
    for mod in model.modules():
        refresh = getattr(mod, "refresh_fixed_grid", None)
        if callable(refresh):
            refresh()
    return report
