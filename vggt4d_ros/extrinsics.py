"""Camera extrinsics ``base_frame <- optical frame`` from parameters or a static transform tree (no ROS).

One rule for the node and the offline replay: ``<camera>.extrinsics`` ([x y z qx qy qz qw]) wins; else the
chain of static transforms from the camera's optical frame up to ``base_frame``; else unknown.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["static_chain", "resolve_extrinsics"]

#: child frame -> (parent frame, (4, 4) T_parent_child)
StaticTree = Mapping[str, Tuple[str, np.ndarray]]


def static_chain(tree: StaticTree, child: str, root: str, max_depth: int = 64) -> Optional[np.ndarray]:
    """(4, 4) ``T_root_child`` by walking parents from ``child`` to ``root``; None when not connected."""
    T = np.eye(4)
    cur = child
    for _ in range(max_depth):
        if cur == root:
            return T
        link = tree.get(cur)
        if link is None:
            return None
        parent, T_parent_cur = link
        T = T_parent_cur @ T
        cur = parent
    return None  # a cycle or an absurdly deep tree


def resolve_extrinsics(params: Mapping[str, Any], tree: StaticTree, frames: Mapping[str, str]
                       ) -> Dict[str, np.ndarray]:
    """``{camera: T_base_optical}`` for the cameras whose extrinsics are known.

    Args:
        params: node parameters (``cameras``, ``base_frame``, ``<camera>.extrinsics``).
        tree: static transforms received on /tf_static.
        frames: camera -> optical frame id of its images.
    """
    base = str(params.get("base_frame") or "")
    out: Dict[str, np.ndarray] = {}
    for c in params["cameras"]:
        ext = list(params.get(f"{c}.extrinsics") or [])
        if len(ext) == 7:
            T = np.eye(4)
            T[:3, :3] = Rotation.from_quat(ext[3:]).as_matrix()
            T[:3, 3] = ext[:3]
            out[c] = T
            continue
        frame = frames.get(c, "")
        T = static_chain(tree, frame, base) if base and frame else None
        if T is not None:
            out[c] = T
    return out
