"""Warm-start a 4D-VGGT-architecture model from a VGGT-layout one of the same width and depth.

:func:`transplant_to_fourd` maps a :class:`~vggt4d_ros.model.vggt4d.VGGT4D` state_dict onto
:class:`~vggt4d_ros.model.fourd_vggt.FourDVGGT`'s key names: ``aggregator.*`` -> ``cross_view_global_fusion.*``
(PAGE-4D's ``spatial_mask_head`` included), ``camera_head.*`` -> ``spatial_head.*``, ``depth_head.*`` /
``point_head.*`` -> ``dense_head.{depth,point}_head.*``, ``mask_head.*`` and ``track_head.*`` unchanged; then the
cross-time branch is initialised from the global branch (the release's own initialisation, time bias 0) and the
dense fusion gates stay 0, so at the start the dense heads read the global branch alone, as they did.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

__all__ = ["vggt_to_fourd_key", "transplant_to_fourd"]

_PREFIXES = (
    ("aggregator.", "cross_view_global_fusion."),
    ("camera_head.", "spatial_head."),
    ("depth_head.", "dense_head.depth_head."),
    ("point_head.", "dense_head.point_head."),
    ("mask_head.", "mask_head."),
    ("track_head.", "track_head."),
)


def vggt_to_fourd_key(key: str) -> str:
    """The FourDVGGT name of a VGGT4D state_dict key (unchanged when no prefix applies)."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def transplant_to_fourd(fourd: nn.Module, vggt_state: Dict[str, torch.Tensor]) -> Tuple[List[str], List[str]]:
    """Load ``vggt_state`` (a VGGT4D state_dict) into ``fourd`` (a FourDVGGT) and initialise its cross-time branch.

    Returns ``(filled_by_initialisation, unused)``: the FourDVGGT keys not in the source (cross-time branch,
    fusion) and the source keys with no FourDVGGT counterpart. Raises ``ValueError`` on a shape mismatch
    (a different width / depth / head size).
    """
    mapped = {vggt_to_fourd_key(k): v for k, v in vggt_state.items()}
    own = fourd.state_dict()
    bad = [k for k, v in mapped.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"shapes differ for {len(bad)} tensors, e.g. {bad[0]}: "
                         f"{tuple(mapped[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
    unused = sorted(k for k in vggt_state if vggt_to_fourd_key(k) not in own)
    fourd.load_state_dict({k: v for k, v in mapped.items() if k in own}, strict=False)
    fourd.initialize_cross_time_from_global()
    filled = sorted(k for k in own if k not in mapped)
    return filled, unused
