"""Build ``diagnostic_msgs/DiagnosticArray`` from plain Python dicts.

Example::

    diagnostic_array(header, [
        {"name": "vggt4d: inference", "level": "OK", "message": "running",
         "values": {"inference_ms": 123.4, "windows": 17}},
        {"name": "vggt4d: camera front", "level": "WARN", "message": "frames dropped",
         "values": {"rate_hz": 9.8, "dropped": 3}, "hardware_id": "front"},
    ])

Levels are DiagnosticStatus' ``byte`` constants (OK 0, WARN 1, ERROR 2, STALE 3); names ("ok",
"WARN", ...) and ints are accepted. Values are written as strings: floats with up to 6 significant
digits, bools as "true"/"false", everything else through ``str``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Union

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

__all__ = ["LEVELS", "level_byte", "format_value", "diagnostic_status", "diagnostic_array"]

LEVELS = {"OK": 0, "WARN": 1, "ERROR": 2, "STALE": 3}


def level_byte(level: Union[int, str, bytes]) -> bytes:
    """OK/WARN/ERROR/STALE (name, int 0..3 or a 1-byte ``bytes``) -> the 1-byte ``level`` value."""
    if isinstance(level, bytes):
        if len(level) != 1 or level[0] > 3:
            raise ValueError(f"diagnostic level must be one byte 0..3, got {level!r}")
        return level
    if isinstance(level, str):
        key = level.strip().upper()
        if key not in LEVELS:
            raise ValueError(f"diagnostic level must be one of {sorted(LEVELS)}, got {level!r}")
        return bytes([LEVELS[key]])
    value = int(level)
    if not 0 <= value <= 3:
        raise ValueError(f"diagnostic level must be 0..3, got {value}")
    return bytes([value])


def format_value(value: Any) -> str:
    """Value -> KeyValue string (floats '%.6g', bools 'true'/'false')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def diagnostic_status(name: str, level: Union[int, str, bytes] = "OK", message: str = "",
                      values: Optional[Mapping[str, Any]] = None, hardware_id: str = ""
                      ) -> DiagnosticStatus:
    """One DiagnosticStatus; ``values`` keeps its insertion order."""
    return DiagnosticStatus(
        level=level_byte(level), name=str(name), message=str(message), hardware_id=str(hardware_id),
        values=[KeyValue(key=str(k), value=format_value(v)) for k, v in (values or {}).items()])


def diagnostic_array(header_or_stamp: Union[Header, Time, int],
                     statuses: Union[Iterable[Mapping[str, Any]], Mapping[str, Mapping[str, Any]]]
                     ) -> DiagnosticArray:
    """DiagnosticArray from status dicts.

    Args:
        header_or_stamp: a Header, or a stamp (Time or int nanoseconds; frame_id left empty).
        statuses: a list of dicts with keys name, level, message, values, hardware_id (only name is
            required), or a mapping ``name -> dict`` of the other keys.
    """
    if isinstance(header_or_stamp, Header):
        header = header_or_stamp
    elif isinstance(header_or_stamp, Time):
        header = Header(stamp=header_or_stamp)
    else:
        sec, nsec = divmod(int(header_or_stamp), 1_000_000_000)
        header = Header(stamp=Time(sec=sec, nanosec=nsec))
    items = ([dict(v, name=k) for k, v in statuses.items()] if isinstance(statuses, Mapping)
             else [dict(s) for s in statuses])
    out = []
    for s in items:
        unknown = set(s) - {"name", "level", "message", "values", "hardware_id"}
        if unknown or "name" not in s:
            raise ValueError(f"status dict needs 'name' and only name/level/message/values/hardware_id: {s}")
        out.append(diagnostic_status(**s))
    return DiagnosticArray(header=header, status=out)
