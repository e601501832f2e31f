"""Attention layouts: grouped implementation vs a dense masked computation, window isolation, reference frame."""

from __future__ import annotations

import pytest
import torch

from vggt4d_ros.model import build_model
from vggt4d_ros.model.aggregator import expand_special_tokens, frame_groups

SMALL = dict(img_size=56, embed_dim=32, depth=4, num_heads=2, patch_embed="conv", enable_track=False,
             enable_point=False, camera_head=dict(trunk_depth=1, num_heads=2),
             dpt=dict(features=8, out_channels=[8, 8, 8, 8]), keep_layers=None)


def _model(**kw):
    torch.manual_seed(0)
    m = build_model(**{**SMALL, **kw}).eval()
    with torch.no_grad():  # make every part matter
        for name, p in m.named_parameters():
            p.add_((0.5 if name.endswith("gamma") else 0.05) * torch.randn_like(p))
    return m


def allowed(layout: str, block: int, s: int, v: int, w: int) -> torch.Tensor:
    """(S, S) bool: may frame i attend to frame j in global block ``block`` (the documented semantics)."""
    f = torch.arange(s)
    t, view = f // v, f % v
    if layout == "global":
        return torch.ones(s, s, dtype=torch.bool)
    if block % 2 == 0:  # cross-view: same time step
        return t[:, None] == t[None, :]
    n_t = s // v
    chunk = (n_t - 1 - t) // w  # chunks aligned to the newest time step
    return (view[:, None] == view[None, :]) & (chunk[:, None] == chunk[None, :])


def dense_aggregator(agg, images, num_views, layout, window):
    """Plain computation: every global block over ALL tokens with a dense -inf mask."""
    b, s = images.shape[:2]
    grid = (images.shape[-2] // 14, images.shape[-1] // 14)
    pt = agg.embed_frames(images.flatten(0, 1))
    tok = torch.cat((expand_special_tokens(agg.camera_token, b, s), expand_special_tokens(agg.register_token, b, s), pt), 1)
    p, c = tok.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    pos = torch.stack((ys, xs), -1).reshape(-1, 2) + 1
    pos = torch.cat((torch.zeros(agg.patch_start_idx, 2, dtype=torch.long), pos)).expand(b * s, -1, -1)
    outs = []
    for i in range(agg.depth):
        tok = agg.frame_blocks[i](tok, pos=pos)
        fr = tok
        ok = allowed(layout, i, s, num_views, window).repeat_interleave(p, 0).repeat_interleave(p, 1)
        bias = torch.zeros(ok.shape).masked_fill(~ok, float("-inf"))
        tok = agg.global_blocks[i](tok.reshape(b, s * p, c), pos=pos.reshape(b, s * p, 2), attn_bias=bias)
        tok = tok.reshape(b * s, p, c)
        outs.append(torch.cat((fr.view(b, s, p, c), tok.view(b, s, p, c)), -1))
    return outs


@pytest.mark.parametrize("layout,views,frames,window", [
    ("global", 1, 3, 5), ("spatiotemporal", 2, 6, 2), ("spatiotemporal", 1, 5, 2), ("spatiotemporal", 3, 3, 5),
])
def test_layout_equals_dense_masked_attention(layout, views, frames, window):
    m = _model(layout=layout, temporal_window=window)
    imgs = torch.rand(1, frames, 3, 28, 42)
    with torch.no_grad():
        grouped, _, _ = m.aggregator(imgs, num_views=views)
        dense = dense_aggregator(m.aggregator, imgs, views, layout, window)
    for a, b in zip(grouped, dense):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_frame_groups_partition_frames():
    for s, v, w in [(12, 3, 3), (10, 2, 2), (7, 1, 3), (4, 4, 5)]:
        for blk in (0, 1):
            rows = [r for g in frame_groups("spatiotemporal", blk, s, v, w) for r in g.tolist()]
            assert sorted(f for r in rows for f in r) == list(range(s))
            for r in rows:  # rows are exactly the connected sets of the documented relation
                ok = allowed("spatiotemporal", blk, s, v, w)
                assert ok[r][:, r].all() and ok[r].sum() == len(r) ** 2


def test_frame_outside_temporal_window_has_no_influence():
    # V=1, T=6, window 3: chunks {3,4,5} (newest) and {0,1,2}; cross-view blocks are per frame for V=1.
    m = _model(layout="spatiotemporal", temporal_window=3)
    imgs = torch.rand(1, 6, 3, 28, 42)
    pert = imgs.clone()
    pert[:, 0] = torch.rand_like(pert[:, 0])
    with torch.no_grad():
        a, b = m(imgs), m(pert)
        la, _, _ = m.aggregator(imgs)
        lb, _, _ = m.aggregator(pert)
        g = m(imgs, layout="global")
        gp = m(pert, layout="global")
    assert torch.equal(la[1][:, 3:], lb[1][:, 3:])  # the first cross-time layer, outside the window
    assert (la[1][:, 1:3] - lb[1][:, 1:3]).abs().max() > 1e-3  # inside the window it does influence
    torch.testing.assert_close(a["depth"][:, 3:], b["depth"][:, 3:], rtol=0, atol=0)
    assert (a["depth"][:, 1:3] - b["depth"][:, 1:3]).abs().max() > 1e-6
    # global layout: frame 0 reaches every frame
    assert (g["depth"][:, 5] - gp["depth"][:, 5]).abs().max() > 1e-6


def test_reference_index_moves_the_world_frame():
    m = _model()
    imgs = torch.rand(1, 3, 3, 28, 42)
    perm = torch.tensor([2, 0, 1])  # frame 0 of imgs now sits at index 1
    with torch.no_grad():
        a = m(imgs, reference_index=0)
        b = m(imgs[:, perm], reference_index=1)
        c = m(imgs, reference_index=2)
    torch.testing.assert_close(b["pose_enc"][:, torch.argsort(perm)], a["pose_enc"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b["depth"][:, torch.argsort(perm)], a["depth"], rtol=1e-5, atol=1e-5)
    assert (c["pose_enc"] - a["pose_enc"]).abs().max() > 1e-4  # another world frame, other poses


def test_spatiotemporal_requires_whole_time_steps():
    m = _model(layout="spatiotemporal")
    with pytest.raises(ValueError):
        m(torch.rand(1, 5, 3, 28, 28), num_views=2)


@pytest.mark.parametrize("layout", ["global", "spatiotemporal"])
def test_batch_equals_separate_windows(layout):
    m = _model(layout=layout, temporal_window=2, page4d=dict(enabled=True, mask_block=0, bias_blocks=(1, 3), strength=3.0))
    imgs = torch.rand(2, 4, 3, 28, 42)
    with torch.no_grad():
        both = m(imgs, num_views=2, reference_index=1)
        one = [m(imgs[i], num_views=2, reference_index=1) for i in range(2)]
    for k in ("pose_enc", "depth", "page_mask"):
        torch.testing.assert_close(both[k], torch.cat([o[k] for o in one]), rtol=1e-5, atol=1e-5)
