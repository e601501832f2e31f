"""Head bookkeeping shared by the models: which heads exist, which aggregator layers they read, running the
dense heads on a subset of frames, the track head from any reference frame, named training selections."""

from __future__ import annotations

from typing import Collection, Dict, FrozenSet, List, Optional, Sequence

import torch

#: head names accepted by ``VGGT4D.forward(heads=...)`` -> model attribute
HEAD_ATTRS: Dict[str, str] = {
    "camera": "camera_head",
    "depth": "depth_head",
    "point": "point_head",
    "mask": "mask_head",
    "track": "track_head",
}


class HeadSet:
    """Head bookkeeping shared by the models (:class:`~.vggt4d.VGGT4D`, :class:`~.fourd_vggt.FourDVGGT`).

    Expects ``aggregator`` (with ``patch_size`` and ``depth``) and the head attributes of :data:`HEAD_ATTRS`
    (None when absent).
    """

    @property
    def patch_size(self) -> int:
        return self.aggregator.patch_size

    def enabled_heads(self) -> FrozenSet[str]:
        """Names (keys of :data:`HEAD_ATTRS`) of the heads this model has."""
        return frozenset(n for n, a in HEAD_ATTRS.items() if getattr(self, a, None) is not None)

    @staticmethod
    def check_heads(heads: Optional[Collection[str]]) -> Optional[FrozenSet[str]]:
        """Validate a ``heads`` selection: None (all) or names of :data:`HEAD_ATTRS`; raises ``ValueError``."""
        if heads is None:
            return None
        if isinstance(heads, str):
            raise ValueError(f"heads must be a collection of names, got the string {heads!r}")
        sel = frozenset(heads)
        unknown = sel - set(HEAD_ATTRS)
        if unknown:
            raise ValueError(f"unknown heads {sorted(unknown)}; known: {sorted(HEAD_ATTRS)}")
        return sel

    def required_layers(self, heads: Optional[Collection[str]] = None) -> List[int]:
        """Aggregator layers the enabled heads read (camera head: the last one).

        Args:
            heads: restrict to these heads (names of :data:`HEAD_ATTRS`); None = every enabled head.
        """
        sel = self.check_heads(heads)
        need = set()
        for name, attr in HEAD_ATTRS.items():
            head = getattr(self, attr, None)
            if head is None or (sel is not None and name not in sel):
                continue
            if name == "camera":
                need.add(self.aggregator.depth - 1)
            else:
                need.update(head.intermediate_layer_idx)
        return sorted(need)

    def trainable_patterns(self, preset: str) -> Optional[List[str]]:
        """Parameter patterns of a named training selection (``train.trainable``), None if ``preset`` is none.

        ``"page4d_middle"``: PAGE-4D's partial fine-tune: the aggregator's (4D-VGGT: the global fusion branch's)
        frame and global blocks in PAGE-4D's bias range ``page4d.bias_blocks`` (10..19 of 24, the middle ten
        block pairs) and its mask predictor (``spatial_mask_head``) when the model has one; the rest is frozen.
        """
        if preset != "page4d_middle":
            return None
        prefix = next(n for n, m in self.named_children() if m is self.aggregator)
        lo, hi = self.aggregator.page4d_cfg["bias_blocks"]
        out = [f"{prefix}.frame_blocks.{lo}-{hi}", f"{prefix}.global_blocks.{lo}-{hi}"]
        if self.aggregator.page4d_cfg["enabled"]:
            out.append(f"{prefix}.spatial_mask_head")
        return out

    @staticmethod
    def _dense_inputs(tokens: List[Optional[torch.Tensor]], images: torch.Tensor,
                      dense_frames: Optional[Sequence[int]]):
        """Token lists ``(B, S, P, C)`` and images ``(B, S, 3, H, W)`` restricted to ``dense_frames`` along S
        (unchanged for None or ``0..S-1`` in order)."""
        if dense_frames is None:
            return tokens, images
        s = images.shape[1]
        idx = [int(i) for i in dense_frames]
        if not idx or any(not 0 <= i < s for i in idx):
            raise ValueError(f"dense_frames must be a non-empty list of indices in 0..{s - 1}, got {idx}")
        if idx == list(range(s)):
            return tokens, images
        sel = torch.as_tensor(idx, device=images.device)
        return [None if t is None else t.index_select(1, sel) for t in tokens], images.index_select(1, sel)

    def _track(self, tokens: List[Optional[torch.Tensor]], images: torch.Tensor, psi: int, queries: torch.Tensor, ref: int) -> Dict[str, torch.Tensor]:
        """Run the track head with frame ``ref`` moved to the front (the tracker queries frame 0)."""
        s = images.shape[1]
        if ref != 0:
            order = torch.tensor([ref] + [i for i in range(s) if i != ref], device=images.device)
            inv = torch.argsort(order)
            tokens = [None if t is None else t.index_select(1, order) for t in tokens]
            images = images.index_select(1, order)
        tracks, vis, conf = self.track_head(tokens, images=images, patch_start_idx=psi, query_points=queries)
        track = tracks[-1]
        if ref != 0:
            track, vis = track.index_select(1, inv), vis.index_select(1, inv)
            conf = None if conf is None else conf.index_select(1, inv)
        return {"track": track, "vis": vis, "conf": conf}
