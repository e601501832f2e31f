"""An immutable, validated snapshot of the node's parameters (no ROS).

:meth:`Config.from_params` fills every parameter the table declares (:mod:`vggt4d_ros.frontend.params`) with
its default, coerces and validates the given values (type, choices, range), applies the cross-parameter
rules and refuses unknown names with the closest valid one. The snapshot is a read-only mapping of dotted
names (``cfg["window.num_steps"]``) with typed views for the front end. A live parameter change makes a new
snapshot (:meth:`Config.with_values`), swapped in by reference: nobody writes into a snapshot.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Dict, Iterator, Optional, Tuple

from .params import ParamError, check_params

__all__ = ["Config", "ParamError"]


class Config(Mapping):
    """Every node parameter (dotted names, cameras resolved), validated; read-only."""

    __slots__ = ("_values", "warnings")

    def __init__(self, values: Mapping[str, Any], warnings: Tuple[str, ...] = ()) -> None:
        self._values = MappingProxyType(dict(values))
        self.warnings = tuple(warnings)

    @classmethod
    def from_params(cls, given: Optional[Mapping[str, Any]] = None, allow_unknown: bool = False) -> "Config":
        """Snapshot of ``given`` over the table's defaults. Raises :class:`ParamError` (one line)."""
        values, warnings = check_params(dict(given or {}), allow_unknown=allow_unknown)
        return cls(values, tuple(warnings))

    def with_values(self, changes: Mapping[str, Any]) -> "Config":
        """A new snapshot with ``changes`` applied (validated like :meth:`from_params`)."""
        merged = dict(self._values)
        merged.update(changes)
        return Config.from_params(merged)

    # Mapping
    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self._values)

    # typed views
    @property
    def cameras(self) -> Tuple[str, ...]:
        return tuple(self._values["cameras"])

    def cam(self, camera: str, name: str) -> Any:
        return self._values[f"{camera}.{name}"]

    def image_topic(self, camera: str) -> str:
        return str(self.cam(camera, "image_topic")) or f"/{camera}/image_raw"

    def info_topic(self, camera: str) -> str:
        return str(self.cam(camera, "camera_info_topic")) or f"/{camera}/camera_info"

    @property
    def min_cameras(self) -> int:
        return int(self._values["sync.min_cameras"]) or len(self.cameras)
