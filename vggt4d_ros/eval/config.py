"""The node's parameters for a replay: read from a ``/**: ros__parameters:`` YAML, cameras matched to a bag.

:func:`load_params` flattens the YAML into dotted names (``model.config``, ``cam0.image_topic``) over the
defaults of :mod:`vggt4d_ros.ros.params`; :func:`resolve_cameras` picks the camera topics (from the config,
``--cameras``, or discovered in the bag); :func:`write_params_file` writes the effective parameters back
for ``vggt4d-node --ros-args --params-file``, so the offline and the ROS run use one parameter set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import yaml

from vggt4d_ros.ros.params import CAMERA_PARAMS, NODE_PARAMS, validate

__all__ = ["ConfigError", "CameraTopics", "load_params", "resolve_cameras", "write_params_file", "check_model"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
INFO = "sensor_msgs/msg/CameraInfo"


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is one line."""


@dataclass
class CameraTopics:
    """Cameras of a replay: names in rig order and their topics in the bag."""

    names: List[str]
    image: Dict[str, str]  # camera -> image topic as in the bag (".../compressed" for CompressedImage)
    info: Dict[str, str]
    compressed: Dict[str, bool]
    note: str = ""  # how the cameras were chosen, when not from the config
    params: Dict[str, Any] = field(default_factory=dict)  # per-camera parameter overrides to apply


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def load_params(path: Optional[Union[str, Path]]) -> Dict[str, Any]:
    """Node parameters (dotted names) from a params YAML over the node's defaults.

    Every node key of the file (``/**``, ``vggt4d``, ``/ns/vggt4d``) contributes, in file order. Values
    are validated against the node's table (choices, ranges) so a bad file fails here, before any work.
    """
    params: Dict[str, Any] = {p.name: (list(p.default) if isinstance(p.default, (list, tuple)) else p.default)
                              for p in NODE_PARAMS}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {p} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"config {p} must be a mapping of node names to ros__parameters")
        found = False
        for _node, body in doc.items():
            if isinstance(body, dict) and isinstance(body.get("ros__parameters"), dict):
                params.update(_flatten(body["ros__parameters"]))
                found = True
        if not found:
            raise ConfigError(f"config {p} has no '<node>: ros__parameters:' section (expected '/**: ros__parameters:')")
    cams = params.get("cameras")
    if not isinstance(cams, list) or not cams or any(not isinstance(c, str) or not c or "/" in c or "." in c
                                                      for c in cams):
        raise ConfigError(f"cameras must be a list of names without '/' or '.', got {cams!r}")
    table = {p.name: p for p in NODE_PARAMS}
    for name, value in list(params.items()):
        prm = table.get(name)
        if prm is None:
            head, _, tail = name.partition(".")
            prm = next((c for c in CAMERA_PARAMS if c.name == tail), None) if head in cams else None
        if prm is not None:
            # YAML writes 10 for 10.0: give the node the type it declares (rclpy rejects an int for a double)
            if prm.kind == "double" and isinstance(value, int) and not isinstance(value, bool):
                params[name] = value = float(value)
            elif prm.kind == "double_array" and isinstance(value, list):
                params[name] = value = [float(v) for v in value]
            reason = validate(prm, value)
            if reason:
                raise ConfigError(f"invalid parameter: {reason}")
    for c in cams:
        for cp in CAMERA_PARAMS:
            params.setdefault(f"{c}.{cp.name}", list(cp.default) if isinstance(cp.default, list) else cp.default)
    return params


def check_model(params: Mapping[str, Any]) -> Optional[str]:
    """Resolve the model configuration and weights as the node will; returns the checkpoint path (None for
    random weights). Raises ConfigError (one line) for an unknown model or a missing checkpoint."""
    from vggt4d_ros.model.configs import load_model_config
    from vggt4d_ros.perception.pipeline import resolve_checkpoint

    try:
        load_model_config(str(params["model.config"]))
        return resolve_checkpoint(str(params["model.config"]), str(params.get("model.checkpoint") or "") or None)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(" ".join(str(exc).split())) from None


def _sibling_info(image_topic: str) -> str:
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return base.rsplit("/", 1)[0] + "/camera_info"


def _name_from_topic(topic: str, taken: set) -> str:
    parts = [p for p in topic.split("/") if p and p != "compressed"]
    base = parts[-2] if len(parts) >= 2 else (parts[-1] if parts else "cam")
    base = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in base) or "cam"
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _discover(types: Mapping[str, str]) -> List[str]:
    """Image / CompressedImage topics with a sibling camera_info, raw preferred, sorted by name."""
    found: Dict[str, str] = {}
    for topic in sorted(types):
        if types[topic] not in (IMAGE, COMPRESSED):
            continue
        info = _sibling_info(topic)
        if types.get(info) != INFO:
            continue
        if info in found and types[found[info]] == IMAGE:
            continue
        found[info] = topic
    return sorted(found.values())


def resolve_cameras(params: Dict[str, Any], topics: Mapping[str, object],
                    cameras_arg: Optional[Sequence[str]] = None) -> CameraTopics:
    """Cameras to replay and their bag topics.

    Order of preference: ``cameras_arg`` (items ``name=/image/topic``, ``/image/topic`` or a camera name of
    the config), the config's cameras when all their topics are in the bag, else every Image or
    CompressedImage topic of the bag with a sibling ``camera_info`` (sorted by name; ``note`` says so).
    ``params`` is updated in place (``cameras`` and per-camera topics) so the node gets the same cameras.
    """
    types = {t: getattr(s, "msgtype", s) for t, s in topics.items()}

    def config_topic(c: str) -> str:
        t = str(params.get(f"{c}.image_topic") or f"/{c}/image_raw")
        return t + "/compressed" if params.get(f"{c}.compressed") else t

    def config_info(c: str) -> str:
        return str(params.get(f"{c}.camera_info_topic") or f"/{c}/camera_info")

    note = ""
    chosen: List[tuple] = []  # (name, image topic, info topic)
    if cameras_arg:
        taken: set = set()
        for item in cameras_arg:
            item = item.strip()
            if not item:
                continue
            if "=" in item:
                name, topic = item.split("=", 1)
                taken.add(name)
                chosen.append((name, topic, _sibling_info(topic)))
            elif item.startswith("/"):
                chosen.append((_name_from_topic(item, taken), item, _sibling_info(item)))
            else:
                if item not in params.get("cameras", []):
                    raise ConfigError(f"--cameras: {item!r} is neither a topic nor a camera of the config "
                                      f"({', '.join(params.get('cameras', []))})")
                taken.add(item)
                chosen.append((item, config_topic(item), config_info(item)))
        note = "cameras from --cameras"
    else:
        cfg = [(c, config_topic(c), config_info(c)) for c in params["cameras"]]
        missing = [t for _c, ti, tc in cfg for t in (ti, tc) if t not in types]
        if not missing:
            chosen = cfg
        else:
            found = _discover(types)
            if not found:
                raise ConfigError(f"the config's camera topics are not in the bag ({', '.join(missing)}) and the bag "
                                  f"has no Image/CompressedImage topic with a sibling camera_info")
            taken = set()
            chosen = [(_name_from_topic(t, taken), t, _sibling_info(t)) for t in found]
            note = (f"the config's topics {', '.join(missing)} are not in the bag; using every image topic with a "
                    f"camera_info: {', '.join(t for _n, t, _i in chosen)}")
    names = [n for n, _t, _i in chosen]
    if len(set(names)) != len(names) or any(not n or "/" in n or "." in n for n in names):
        raise ConfigError(f"camera names must be distinct, without '/' or '.': {names}")
    for _n, ti, tc in chosen:
        for t, want in ((ti, (IMAGE, COMPRESSED)), (tc, (INFO,))):
            if t not in types:
                raise ConfigError(f"topic {t} is not in the bag")
            if types[t] not in want:
                raise ConfigError(f"topic {t} is {types[t]}, expected {' or '.join(want)}")
    out = CameraTopics(names=names, image={}, info={}, compressed={}, note=note)
    old = {c: {cp.name: params.get(f"{c}.{cp.name}") for cp in CAMERA_PARAMS} for c in params["cameras"]}
    for c in params["cameras"]:
        for cp in CAMERA_PARAMS:
            params.pop(f"{c}.{cp.name}", None)
    params["cameras"] = names
    for n, ti, tc in chosen:
        comp = types[ti] == COMPRESSED
        out.image[n], out.info[n], out.compressed[n] = ti, tc, comp
        keep = old.get(n, {})
        params[f"{n}.image_topic"] = ti[: -len("/compressed")] if comp else ti
        params[f"{n}.camera_info_topic"] = tc
        params[f"{n}.compressed"] = comp
        params[f"{n}.optical_frame"] = str(keep.get("optical_frame") or "")
        params[f"{n}.extrinsics"] = list(keep.get("extrinsics") or [])
    return out


def _nest(flat: Mapping[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *heads, last = name.split(".")
        for h in heads:
            node = node.setdefault(h, {})
        node[last] = value
    return out


def write_params_file(params: Mapping[str, Any], path: Union[str, Path]) -> Path:
    """Write ``params`` as a ``/**: ros__parameters:`` file (empty double arrays are left out: rcl cannot
    type an empty list, and the node's default is empty anyway)."""
    flat = {k: v for k, v in params.items() if not (isinstance(v, list) and not v)}
    p = Path(path)
    p.write_text(yaml.safe_dump({"/**": {"ros__parameters": _nest(flat)}}, sort_keys=False))
    return p
