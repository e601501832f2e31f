"""Named model configurations: ``config/models/<name>.yaml`` holding :func:`build_model` arguments.

Search order for a name: the repository layout (``<repo>/config/models``, next to the package), then the
ROS share directory of an installed package (``<prefix>/share/vggt4d_ros/config/models`` for every prefix in
``AMENT_PREFIX_PATH``; read from the environment, no ROS import). A path to a ``.yaml`` file works too.

Keys: ``architecture`` (``"vggt"`` default, or ``"4d-vggt"``: see :func:`~.vggt4d.build_model`) and the
builder's settings; ``preprocess`` (optional mapping, not a model setting) is the preprocessing the weights
expect, e.g. ``{resize: pil}`` for 4D-VGGT v1.0's ``load_fn.py``; it is attached to the model as
``model.preprocessing``, where :class:`~vggt4d_ros.inference.Predictor` reads it; ``inference`` (optional
mapping, not a model setting) holds the inference defaults measured for the weights, e.g. ``{dynamic_mask:
page4d}`` (the mask source the Predictor's "auto" picks), attached as ``model.inference_defaults``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from torch import nn

from .vggt4d import build_model

PACKAGE = "vggt4d_ros"


def config_dirs() -> List[Path]:
    """Directories searched for ``<name>.yaml``, in order."""
    dirs = [Path(__file__).resolve().parents[2] / "config" / "models"]
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        dirs.append(Path(prefix) / "share" / PACKAGE / "config" / "models")
    return dirs


def available_configs() -> List[str]:
    """Names of all configurations found."""
    names = set()
    for d in config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_config(name_or_path: Union[str, os.PathLike]) -> Path:
    """Resolve a configuration name or a YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"model configuration file {p} not found")
        return p
    for d in config_dirs():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no model configuration {str(name_or_path)!r}; available: {available_configs()} (searched {[str(d) for d in config_dirs()]})"
    )


def load_model_config(name_or_path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a configuration into a dict of :func:`build_model` keyword arguments (plus ``name``)."""
    path = find_config(name_or_path)
    with open(path, "r", encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a model configuration must be a mapping")
    cfg.setdefault("name", path.stem)
    return cfg


def build_model_from_config(
    name_or_path: Union[str, os.PathLike, Dict[str, Any]], overrides: Optional[Dict[str, Any]] = None
) -> nn.Module:
    """Build the model of a named configuration (or a config dict), with optional overrides."""
    cfg = dict(name_or_path) if isinstance(name_or_path, dict) else load_model_config(name_or_path)
    cfg.update(overrides or {})
    preprocessing = dict(cfg.pop("preprocess", None) or {})
    inference = dict(cfg.pop("inference", None) or {})
    model = build_model(**cfg)
    model.preprocessing = preprocessing
    model.inference_defaults = inference
    return model
