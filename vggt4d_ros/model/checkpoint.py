"""Loading checkpoints without executing pickled code.

Supported files:
- ``.safetensors`` (any layout below),
- ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` read with ``torch.load(weights_only=True)`` only: a pickle that
  references anything beyond tensors and plain containers is refused (:class:`CheckpointError`), never executed.
  Accepted contents: a plain state_dict (VGGT-1B's ``model.pt``), a dict wrapping it under ``"model"`` (PAGE-4D's
  trainer format ``{"model": state_dict, "prev_epoch", "steps", "optimizer", ...}``; the 4D-VGGT v1.0 release
  format, below) or under ``"state_dict"``.

4D-VGGT v1.0 release format: a ``torch.save``d dict of metadata keys (``architecture``,
``architecture_schema_version``, ``release``, ...), ``model_config`` (the constructor's arguments as plain JSON)
and ``model`` (the state_dict). When the file has ``architecture`` or ``model_config``:
- a model exposing ``release_metadata`` / ``release_model_config`` (this project's 4D-VGGT model) must agree:
  ``architecture`` and ``architecture_schema_version`` equal, ``model_config`` equal key by key (every differing,
  missing or extra key is named with the file's and the model's value), as the release's own strict loader
  requires;
- any other model (a :class:`~vggt4d_ros.model.VGGT4D` given a 4D-VGGT file) is refused with the
  ``model.config`` to use (:data:`RELEASE_CONFIGS`).
A file of that model without the metadata (a bare state_dict) loads with keys and shapes checked and a note.

PAGE-4D's two released checkpoints (``checkpoint_nomask.pt``: PAGE-4D runs it with the mask path off, no
attention bias; ``checkpoint_mask.pt``: mask-enabled inference, bias strength 64) hold the same keys and the
same kind of trainer metadata (the trainer stores no ``mask_hold_*`` setting), so their contents do not tell
them apart. Their released file names do: :func:`page4d_variant`. A recognised file whose variant disagrees with
the model's ``page4d.strength`` (0 = no bias) is refused; a PAGE-4D trainer file with another name loads, and
the choice the model's setting makes is logged and kept in :attr:`CheckpointReport.notes`.

Key mapping: ``module.`` (DistributedDataParallel) and ``_orig_mod.`` (torch.compile) prefixes are stripped.
Layouts recognised (reported as ``layout``): ``"vggt"`` (VGGT-1B / its commercial variant), ``"page4d"``
(``aggregator.spatial_mask_head.*`` present: build with ``page4d.enabled``), ``"vggt4d"`` (``mask_head.*``
present: build with ``enable_mask``), ``"4d-vggt"`` (the release's ``cross_view_global_fusion.*`` keys).

All problems (missing path, unreadable / truncated / corrupt file, refused pickle, a differing architecture or
``model_config``, a wrong PAGE-4D pairing, missing / unexpected keys, shape mismatches) raise ONE
:class:`CheckpointError` whose message names the file and everything that differs.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

PREFIXES_TO_STRIP = ("module.", "_orig_mod.")
WRAPPER_KEYS = ("model", "state_dict")
#: top-level keys that mark the 4D-VGGT release format
RELEASE_KEYS = ("architecture", "model_config")
#: release ``architecture`` value -> this project's ``model.config`` that builds it
RELEASE_CONFIGS = {"4d-vggt-geometry-v1": "4d-vggt"}
#: top-level keys PAGE-4D's trainer writes next to ``"model"`` (training/trainer_gra.py, save_checkpoint)
PAGE4D_TRAINER_KEYS = ("prev_epoch", "steps", "time_elapsed", "optimizer", "scaler")
#: PAGE-4D's bias strength for checkpoint_mask.pt (SpatialMaskHead_IMP.scale 64 x mask_alpha 1 at step 0)
PAGE4D_MASK_STRENGTH = 64.0

log = logging.getLogger(__name__)


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
    #: top-level non-tensor entries of the file (trainer / release metadata; the state_dict itself left out)
    metadata: Dict[str, Any] = field(default_factory=dict)
    #: ``"page4d-nomask"`` / ``"page4d-mask"`` when recognised from the file name (see module docstring)
    variant: Optional[str] = None
    #: choices made while loading (also logged)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(
                f"{path}: not a readable safetensors file, truncated or corrupt ({type(exc).__name__}: {exc})"
            ) from exc
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{path}: refused: the pickle holds objects other than tensors and plain containers "
                f"(loaded with weights_only=True, nothing was executed): {_unpickler_reason(exc)}"
            ) from exc
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({type(exc).__name__}: {exc})"
            ) from exc
    raise CheckpointError(f"{path}: unsupported checkpoint type {suffix!r} (use .safetensors, .pt or .pth)")


def _unpickler_reason(exc: BaseException) -> str:
    """The restricted unpickler's own reason (e.g. ``Unsupported global: GLOBAL io.open ...``), without torch's
    advice to retry with ``weights_only=False``, which would run the file's code."""
    text = " ".join(str(exc).split())
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
        text = text.split(" Please use ", 1)[0].split(" Check the documentation", 1)[0]
    return text[:300]


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for pre in PREFIXES_TO_STRIP:
            if name.startswith(pre):
                name, changed = name[len(pre):], True
    return name


def read_checkpoint(path: Union[str, os.PathLike]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a checkpoint file: ``(state_dict, metadata)``.

    ``state_dict`` is flat ``{key: tensor}`` with the wrapper and prefixes removed; ``metadata`` holds the
    file's other top-level entries (empty for a plain state_dict or a safetensors file).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    obj = _read(p)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a dict of tensors, got {type(obj).__name__}")
    meta: Dict[str, Any] = {}
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            meta = {str(k): v for k, v in obj.items() if k != key}
            obj = obj[key]
            break
    else:
        if any(k in obj for k in RELEASE_KEYS):
            raise CheckpointError(f"{p}: release metadata ({', '.join(k for k in RELEASE_KEYS if k in obj)}) but no "
                                  f"'model' state_dict: the file is malformed or truncated")
    out: Dict[str, torch.Tensor] = {}
    bad = []
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            bad.append(str(k))
            continue
        out[_strip(str(k))] = v
    if not out:
        raise CheckpointError(f"{p}: no tensors found (keys: {bad[:10]})")
    return out, meta


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` with wrapper and prefixes removed."""
    return read_checkpoint(path)[0]


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"4d-vggt"``, ``"page4d"``, ``"vggt4d"`` or ``"vggt"`` (see module docstring)."""
    if any(k.startswith("cross_view_global_fusion.") for k in state_dict):
        return "4d-vggt"
    if any(k.startswith("aggregator.spatial_mask_head.") for k in state_dict):
        return "page4d"
    if any(k.startswith("mask_head.") for k in state_dict):
        return "vggt4d"
    return "vggt"


def page4d_variant(path: Union[str, os.PathLike]) -> Optional[str]:
    """The PAGE-4D checkpoint a file name names: ``"page4d-nomask"`` (a ``nomask`` word in the stem, as in the
    released ``checkpoint_nomask.pt``), ``"page4d-mask"`` (a ``mask`` word: ``checkpoint_mask.pt``) or None.
    Words are separated by ``_ - .`` or spaces."""
    words = [w for w in re.split(r"[_\-. ]+", Path(path).stem.lower()) if w]
    if "nomask" in words:
        return "page4d-nomask"
    if "mask" in words:
        return "page4d-mask"
    return None


def _plain(value: Any) -> Any:
    """JSON-like normal form for comparing configs (tuples as lists, mapping keys as strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def config_differences(file_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> List[str]:
    """``"key: file X vs model Y"`` for every top-level key whose values differ (absent = ``<absent>``)."""
    a, b = _plain(file_cfg), _plain(model_cfg)
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if va != vb or (type(va) is not type(vb) and bool in (type(va), type(vb))):  # True == 1 in Python
            out.append(f"{k}: file {_fmt(va) if k in a else '<absent>'} vs model {_fmt(vb) if k in b else '<absent>'}")
    return out


def _check_release(path: Path, meta: Mapping[str, Any], model: nn.Module, layout: str) -> List[str]:
    """Release-format checks (module docstring); raises :class:`CheckpointError`, returns notes."""
    has_release_meta = any(k in meta for k in RELEASE_KEYS)
    model_cfg = getattr(model, "release_model_config", None)
    model_meta = getattr(model, "release_metadata", None)
    if not has_release_meta:
        if model_cfg is not None and layout == "4d-vggt":
            return [f"{path.name}: no architecture / model_config in the file: only its keys and shapes were "
                    f"checked against the model (the release's files carry both)"]
        return []
    arch = meta.get("architecture")
    if model_cfg is None:
        name = RELEASE_CONFIGS.get(str(arch)) if arch is not None else None
        use = f"set model.config: {name} (config/models/{name}.yaml)" if name else \
            f"this project builds the releases {sorted(RELEASE_CONFIGS)} (model.config {sorted(RELEASE_CONFIGS.values())})"
        own = (getattr(model, "config", {}) or {}).get("name")
        which = f" (model.config {_fmt(own)})" if own else ""
        raise CheckpointError(
            f"{path}: a 4D-VGGT release checkpoint (architecture {_fmt(arch)}, release {_fmt(meta.get('release'))}) "
            f"cannot load into this {type(model).__name__}{which}: {use}.")
    problems = []
    want = dict(model_meta or {})
    for key in ("architecture", "architecture_schema_version"):
        if key in want and meta.get(key, "<absent>") != want[key]:
            got = _fmt(meta[key]) if key in meta else "<absent>"
            problems.append(f"{key}: file {got} vs model {_fmt(want[key])}")
    if "model_config" not in meta:
        problems.append("model_config: absent from the file (the release's loader requires it)")
    elif not isinstance(meta["model_config"], Mapping):
        problems.append(f"model_config: file holds a {type(meta['model_config']).__name__}, not a mapping")
    else:
        diffs = config_differences(meta["model_config"], model_cfg)
        problems += [f"model_config.{d}" for d in diffs]
    if problems:
        raise CheckpointError(
            f"{path}: the checkpoint does not match the model ({len(problems)} difference"
            f"{'s' if len(problems) != 1 else ''}): " + "; ".join(problems) + ".")
    return []


def _check_page4d(path: Path, meta: Mapping[str, Any], model: nn.Module, layout: str) -> Tuple[Optional[str], List[str]]:
    """PAGE-4D variant vs the model's bias (module docstring); raises :class:`CheckpointError`, returns
    ``(variant, notes)``."""
    cfg = getattr(getattr(model, "aggregator", None), "page4d_cfg", None) or {}
    if layout != "page4d" or not cfg.get("enabled"):
        return None, []
    variant = page4d_variant(path)
    trainer_file = any(k in meta for k in PAGE4D_TRAINER_KEYS)
    if variant is None and not trainer_file:
        return None, []  # this project's own weights (e.g. tiny.safetensors): nothing to choose
    strength = float(cfg.get("strength", 0.0))
    name = (getattr(model, "config", {}) or {}).get("name")
    if variant == "page4d-nomask" and strength != 0:
        raise CheckpointError(
            f"{path}: PAGE-4D's checkpoint_nomask.pt is run by PAGE-4D's evaluation scripts and Quick Start with "
            f"the mask path off (no attention bias), but this model (model.config {_fmt(name)}) has "
            f"page4d.strength {strength:g}: use model.config page4d (page4d.strength: 0).")
    if variant == "page4d-mask" and strength == 0:
        raise CheckpointError(
            f"{path}: PAGE-4D's checkpoint_mask.pt is the mask-enabled variant (PAGE-4D's inference biases the "
            f"camera/register attention with strength {PAGE4D_MASK_STRENGTH:g} = mask scale 64 x alpha 1), but this "
            f"model (model.config {_fmt(name)}) has page4d.strength 0 (no bias): use model.config page4d-mask "
            f"(page4d.strength: {PAGE4D_MASK_STRENGTH:g}).")
    notes = []
    if variant == "page4d-mask" and strength != PAGE4D_MASK_STRENGTH:
        notes.append(f"{path.name}: PAGE-4D's checkpoint_mask.pt with page4d.strength {strength:g} "
                     f"(PAGE-4D runs it with {PAGE4D_MASK_STRENGTH:g})")
    if variant is None:
        runs = "checkpoint_nomask.pt (no bias)" if strength == 0 else (
            f"checkpoint_mask.pt (bias strength {strength:g})")
        notes.append(
            f"{path.name}: a PAGE-4D trainer checkpoint whose name does not say which released variant it is "
            f"(checkpoint_nomask.pt and checkpoint_mask.pt hold the same keys); page4d.strength {strength:g} runs it "
            f"as PAGE-4D runs {runs}; model.config page4d is the no-mask variant, page4d-mask the mask-enabled one")
    return variant, notes


def _short(keys: List[str], n: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_checkpoint(model: nn.Module, path: Union[str, os.PathLike], strict: bool = True) -> CheckpointReport:
    """Load ``path`` into ``model``.

    Args:
        model: a :class:`~vggt4d_ros.model.VGGT4D` or this project's 4D-VGGT model (any ``nn.Module`` works).
        path: ``.safetensors`` / ``.pt`` / ``.pth`` file.
        strict: raise :class:`CheckpointError` on any missing / unexpected / mis-shaped key (else load the
            matching tensors and report the rest). The release-format and PAGE-4D variant checks always apply.
    Returns:
        :class:`CheckpointReport`.
    """
    p = Path(path)
    sd, meta = read_checkpoint(p)
    layout = detect_layout(sd)
    notes = _check_release(p, meta, model, layout)
    variant, page_notes = _check_page4d(p, meta, model, layout)
    notes += page_notes
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape
    ]
    plain_meta = {k: v for k, v in meta.items() if k not in ("optimizer", "scaler")}
    report = CheckpointReport(str(path), layout, len(sd), missing, unexpected, mismatched, plain_meta, variant, notes)
    if strict and not report.ok:
        hint = ""
        if layout == "page4d" and not any(k.startswith("aggregator.spatial_mask_head.") for k in own):
            hint = " Hint: this is a PAGE-4D checkpoint with its mask predictor: build with page4d.enabled=true."
        elif layout == "vggt4d" and not any(k.startswith("mask_head.") for k in own):
            hint = " Hint: the checkpoint has a dense mask head: build with enable_mask=true."
        elif layout == "4d-vggt" and getattr(model, "release_model_config", None) is None:
            hint = f" Hint: these are 4D-VGGT release weights: set model.config: {RELEASE_CONFIGS['4d-vggt-geometry-v1']}."
        elif any(k.startswith("track_head.") for k in missing) and not any(k.startswith("track_head.") for k in sd):
            hint = " Hint: the checkpoint has no track head: build with enable_track=false."
        parts = [f"{path}: checkpoint (layout {layout!r}, {len(sd)} tensors) does not fit the model."]
        if missing:
            parts.append(f"missing {len(missing)}: {_short(missing)}.")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_short(unexpected)}.")
        if mismatched:
            parts.append(f"shape mismatch {len(mismatched)}: {_short(mismatched)}.")
        raise CheckpointError(" ".join(parts) + hint)
    for note in notes:
        log.warning("%s", note)
    bad = {m.split(" ")[0] for m in mismatched}
    usable = {k: v for k, v in sd.items() if k in own and k not in bad}
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(usable, strict=False, assign=on_meta)
    for mod in model.modules():
        refresh = getattr(mod, "refresh_fixed_grid", None)
        if callable(refresh):
            refresh()
    return report
