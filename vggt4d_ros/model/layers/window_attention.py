"""Window temporal attention (4D-VGGT v1.0's cross-time local fusion), on :class:`Attention`'s weights.

Each frame's queries attend to the keys/values of an odd window of ``window_size`` frames centred on it
(offsets ``-w//2 .. w//2``). Near the sequence ends the frame indices are clipped to the sequence and the
clipped slots are masked out (logit ``-inf``), so an edge frame sees fewer frames, never a duplicate. A learned
``relative_time_bias`` ``(heads, window_size)`` is added to every logit toward the frames at each offset.
Camera/register tokens obey the same window. No ``S*P x S*P`` matrix is built: the keys/values of each
frame's window are gathered into ``(B*S, heads, w*P, head_dim)``.

Several cameras (``num_views`` V > 1, frames time-major ``s = t*V + v``): the window runs over camera
``v``'s own frames ``(t+o)*V + v`` (this project's extension of the release, which has one sequence);
with V = 1 it is the release's computation.

State-dict keys: :class:`Attention`'s (``qkv``, ``q_norm``, ``k_norm``, ``proj``) plus ``relative_time_bias``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .attention import Attention


def window_frame_indices(
    num_frames: int, num_views: int, window_size: int, device: Optional[torch.device] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Frames each frame's window reads.

    Args:
        num_frames: ``S = T * V``.
        num_views: ``V``.
        window_size: odd ``w >= 1``.
    Returns:
        ``(index, valid)``, both ``(S, w)``: ``index[s, j]`` is the frame at offset ``j - w//2`` time steps from
        frame ``s`` in the same camera, clipped to ``0..T-1``; ``valid`` is False where clipping happened.
    """
    w = window_size
    if isinstance(w, bool) or not isinstance(w, int) or w < 1 or w % 2 != 1:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size!r}")
    if num_views < 1 or num_frames < 1 or num_frames % num_views:
        raise ValueError(f"{num_frames} frames are not a whole number of time steps of {num_views} views")
    t_count = num_frames // num_views
    t = torch.arange(t_count, device=device)[:, None] + (torch.arange(w, device=device) - w // 2)  # (T, w)
    valid = (t >= 0) & (t < t_count)
    t = t.clamp(0, t_count - 1)
    views = torch.arange(num_views, device=device)[None, :, None]
    index = t[:, None, :] * num_views + views  # (T, V, w)
    return index.reshape(num_frames, w), valid[:, None, :].expand(t_count, num_views, w).reshape(num_frames, w)


class WindowAttention(Attention):
    """:class:`Attention` whose keys are the tokens of a temporal window of frames (module docstring).

    Args: :class:`Attention`'s, plus ``window_size`` (odd). ``mask_edges`` (True, the release) masks the
    clipped window slots; False would let edge frames attend to repeated frames (kept for the tests that prove
    the masking matters).
    """

    def __init__(self, dim: int, window_size: int = 5, **kw) -> None:
        super().__init__(dim, **kw)
        window_frame_indices(1, 1, window_size)
        self.window_size = window_size
        self.mask_edges = True
        self.relative_time_bias = torch.nn.Parameter(torch.zeros(self.num_heads, window_size))

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None, num_views: int = 1) -> torch.Tensor:
        """Attend within each frame's window.

        Args:
            x: ``(B, S, P, C)`` tokens, frames time-major.
            pos: ``(B*S, P, 2)`` (or ``(B, S, P, 2)``) RoPE positions, or None.
            num_views: ``V``.
        Returns:
            ``(B, S, P, C)``.
        """
        b, s, p, c = x.shape
        h, d, w = self.num_heads, self.head_dim, self.window_size
        qkv = self.qkv(x).reshape(b * s, p, 3, h, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B*S, h, P, d)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            pos = pos.reshape(b * s, p, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
        index, valid = window_frame_indices(s, num_views, w, x.device)

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B*S, h, P, d) -> (B*S, h, w*P, d)
            t = t.reshape(b, s, h, p, d)[:, index]  # (B, S, w, h, P, d)
            return t.permute(0, 1, 3, 2, 4, 5).reshape(b * s, h, w * p, d)

        bias = self.relative_time_bias.to(q.dtype)[None].expand(s, -1, -1)  # (S, h, w)
        if self.mask_edges:
            bias = bias.masked_fill(~valid[:, None, :], float("-inf"))
        bias = bias.repeat_interleave(p, dim=-1)[None, :, :, None, :]  # (1, S, h, 1, w*P)
        bias = bias.expand(b, -1, -1, -1, -1).reshape(b * s, h, 1, w * p)
        out = self._attend(q, windows(k), windows(v), bias)
        out = out.transpose(1, 2).reshape(b, s, p, c)
        return self.proj_drop(self.proj(out))
