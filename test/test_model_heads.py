"""Tests of the prediction heads: shapes, activations, chunking, layer selection, tracker correlation,
and the VGGT-1B state_dict layout."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vggt4d_ros.model.heads import BaseTrackerPredictor, CameraHead, DPTHead, TrackHead
from vggt4d_ros.model.heads.head_act import activate_head, activate_pose
from vggt4d_ros.model.heads.track_modules.blocks import CorrBlock, window_offsets
from vggt4d_ros.model.heads.utils import create_uv_grid, flow_embed, sincos_grid_embed_at

DIM = 64
PATCH = 14
N_SPECIAL = 5
TINY_DPT = dict(features=32, out_channels=[8, 16, 32, 32], intermediate_layer_idx=[0, 2, 3, 5])
TINY_TRACK = dict(
    features=32,
    out_channels=[8, 16, 32, 32],
    intermediate_layer_idx=[0, 2, 3, 5],
    corr_levels=3,
    corr_radius=2,
    hidden_size=32,
    tracker_depth=2,
    num_heads=4,
    num_virtual_tracks=8,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_tokens(B, S, H, W, n_layers=6, dim=DIM, keep=None):
    """Per-layer token list (B, S, 5 + patches, dim); layers not in ``keep`` are None."""
    P = N_SPECIAL + (H // PATCH) * (W // PATCH)
    return [
        torch.randn(B, S, P, dim) if keep is None or i in keep else None for i in range(n_layers)
    ]


def raw_output(head, *args):
    """Run ``head`` and capture the raw output of its last convolution."""
    captured = {}
    h = head.scratch.output_conv2.register_forward_hook(lambda m, i, o: captured.setdefault("raw", o))
    try:
        with torch.no_grad():
            out = head(*args, frames_chunk_size=None)
    finally:
        h.remove()
    return out, captured["raw"]


# ----------------------------------------------------------------------------------------------------
# DPT head
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("B,S,H,W", [(1, 1, 28, 42), (2, 3, 42, 28), (1, 4, 56, 70)])
def test_dpt_output_shapes(B, S, H, W):
    toks = make_tokens(B, S, H, W)
    imgs = torch.rand(B, S, 3, H, W)
    depth, dconf = DPTHead(DIM, output_dim=2, activation="exp", **TINY_DPT)(toks, imgs, N_SPECIAL)
    assert depth.shape == (B, S, H, W, 1) and dconf.shape == (B, S, H, W)
    pts, pconf = DPTHead(DIM, output_dim=4, activation="inv_log", **TINY_DPT)(toks, imgs, N_SPECIAL)
    assert pts.shape == (B, S, H, W, 3) and pconf.shape == (B, S, H, W)
    mask, none = DPTHead(DIM, output_dim=1, activation="linear", conf_activation=None, **TINY_DPT)(
        toks, imgs, N_SPECIAL
    )
    assert mask.shape == (B, S, H, W, 1) and none is None
    feats = DPTHead(DIM, feature_only=True, **TINY_DPT)(toks, imgs, N_SPECIAL)
    assert feats.shape == (B, S, 32, H, W)
    half = DPTHead(DIM, feature_only=True, down_ratio=2, pos_embed=False, **TINY_DPT)(toks, imgs, N_SPECIAL)
    assert half.shape == (B, S, 32, H // 2, W // 2)
    for t in (depth, dconf, pts, pconf, mask, feats, half):
        assert torch.isfinite(t).all()


def test_dpt_activations_follow_their_formulas():
    B, S, H, W = 1, 2, 28, 42
    toks, imgs = make_tokens(B, S, H, W), torch.rand(B, S, 3, H, W)

    (depth, conf), raw = raw_output(DPTHead(DIM, output_dim=2, activation="exp", **TINY_DPT), toks, imgs, N_SPECIAL)
    raw = raw.reshape(B, S, 2, H, W).double()
    torch.testing.assert_close(depth[..., 0].double(), raw[:, :, 0].exp(), rtol=1e-6, atol=0)
    torch.testing.assert_close(conf.double(), 1 + raw[:, :, 1].exp(), rtol=1e-6, atol=0)
    assert (depth > 0).all() and (conf > 1).all()

    (pts, conf), raw = raw_output(DPTHead(DIM, output_dim=4, activation="inv_log", **TINY_DPT), toks, imgs, N_SPECIAL)
    raw = raw.reshape(B, S, 4, H, W).permute(0, 1, 3, 4, 2).double().numpy()
    expect = np.sign(raw[..., :3]) * np.expm1(np.abs(raw[..., :3]))
    np.testing.assert_allclose(pts.double().numpy(), expect, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(conf.double().numpy(), 1 + np.exp(raw[..., 3]), rtol=1e-6)

    head = DPTHead(DIM, output_dim=1, activation="linear", conf_activation=None, **TINY_DPT)
    (logits, none), raw = raw_output(head, toks, imgs, N_SPECIAL)
    assert none is None
    assert torch.equal(logits[..., 0], raw.reshape(B, S, H, W))


def test_activate_head_and_pose_formulas():
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.7, 3.0]]).reshape(1, 5, 1, 1)
    pred, conf = activate_head(x, activation="inv_log", conf_activation="expp1")
    v = np.array([-2.0, -0.5, 0.0, 0.7])
    np.testing.assert_allclose(pred.reshape(-1).numpy(), np.sign(v) * (np.exp(np.abs(v)) - 1), rtol=1e-6)
    assert conf.item() == pytest.approx(1 + math.exp(3.0), rel=1e-6)
    pred, conf = activate_head(x, activation="norm_exp", conf_activation="sigmoid")
    n = np.linalg.norm(v)
    np.testing.assert_allclose(pred.reshape(-1).numpy(), v / n * np.expm1(n), rtol=1e-6)
    assert conf.item() == pytest.approx(1 / (1 + math.exp(-3.0)), rel=1e-6)
    with pytest.raises(ValueError):
        activate_head(x, activation="bogus")

    enc = torch.tensor([[1.0, -2.0, 3.0, 0.1, -0.2, 0.3, -0.9, -0.5, 1.5]])
    out = activate_pose(enc, trans_act="linear", quat_act="linear", fl_act="relu")
    assert torch.equal(out[..., :7], enc[..., :7])
    assert torch.equal(out[..., 7:], torch.tensor([[0.0, 1.5]]))
    out = activate_pose(enc, trans_act="inv_log", quat_act="linear", fl_act="exp")
    torch.testing.assert_close(out[..., :3], torch.sign(enc[..., :3]) * torch.expm1(enc[..., :3].abs()))
    torch.testing.assert_close(out[..., 7:], enc[..., 7:].exp())


def test_dpt_chunked_equals_unchunked():
    B, S, H, W = 2, 5, 28, 42
    toks, imgs = make_tokens(B, S, H, W), torch.rand(B, S, 3, H, W)
    head = DPTHead(DIM, output_dim=4, activation="inv_log", **TINY_DPT).eval()
    with torch.no_grad():
        full = head(toks, imgs, N_SPECIAL, frames_chunk_size=None)
        for chunk in (1, 2, 3):
            part = head(toks, imgs, N_SPECIAL, frames_chunk_size=chunk)
            assert torch.equal(part[0], full[0]) and torch.equal(part[1], full[1])
    fhead = DPTHead(DIM, feature_only=True, **TINY_DPT).eval()
    with torch.no_grad():
        assert torch.equal(fhead(toks, imgs, N_SPECIAL, frames_chunk_size=2), fhead(toks, imgs, N_SPECIAL, None))


def test_dpt_reads_only_its_layers_and_leaves_inputs_untouched():
    B, S, H, W = 1, 2, 28, 42
    full = make_tokens(B, S, H, W)
    sparse = [t if i in TINY_DPT["intermediate_layer_idx"] else None for i, t in enumerate(full)]
    copies = [t.clone() for t in full]
    head = DPTHead(DIM, output_dim=2, activation="exp", **TINY_DPT).eval()
    imgs = torch.rand(B, S, 3, H, W)
    with torch.no_grad():
        a = head(full, imgs, N_SPECIAL)
        b = head(sparse, imgs, N_SPECIAL)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert all(torch.equal(t, c) for t, c in zip(full, copies))
    # Special tokens (before patch_start_idx) are not read either.
    changed = [t.clone() if t is not None else None for t in sparse]
    for t in changed:
        if t is not None:
            t[:, :, :N_SPECIAL] = 1e3
    with torch.no_grad():
        c = head(changed, imgs, N_SPECIAL)
    assert torch.equal(a[0], c[0])
    with pytest.raises(ValueError):
        head([t if i != 3 else None for i, t in enumerate(full)], imgs, N_SPECIAL)


def test_uv_grid_geometry():
    H, W = 4, 6
    uv = create_uv_grid(W, H, aspect_ratio=W / H, dtype=torch.float64)
    assert uv.shape == (H, W, 2)
    # Cell-centre grid: extending the end cells by half a cell reaches the unit circle at the corners.
    x_edge = uv[0, -1, 0] * W / (W - 1)
    y_edge = uv[-1, 0, 1] * H / (H - 1)
    assert float(x_edge**2 + y_edge**2) == pytest.approx(1.0)
    assert float(x_edge / y_edge) == pytest.approx(W / H)
    assert torch.allclose(uv[:, :, 0].diff(dim=1), uv[0, 1, 0] - uv[0, 0, 0])  # uniform in x along rows
    assert torch.equal(uv[:, 0, 0], uv[0, 0, 0].expand(H))  # x constant down a column


def test_dpt_bf16_runs():
    B, S, H, W = 1, 2, 28, 28
    toks = [t.bfloat16() for t in make_tokens(B, S, H, W)]
    head = DPTHead(DIM, output_dim=2, activation="exp", **TINY_DPT).bfloat16().eval()
    with torch.no_grad():
        depth, conf = head(toks, torch.rand(B, S, 3, H, W), N_SPECIAL)
    assert depth.dtype == torch.bfloat16 and torch.isfinite(depth.float()).all()


# ----------------------------------------------------------------------------------------------------
# Camera head
# ----------------------------------------------------------------------------------------------------
def _camera_head():
    head = CameraHead(dim_in=DIM, trunk_depth=2, num_heads=4).eval()
    with torch.no_grad():  # non-zero empty pose so the first iteration is not trivially conditioned
        head.empty_pose_tokens.normal_()
    return head


@pytest.mark.parametrize("B,S", [(1, 1), (2, 4)])
def test_camera_head_iterations(B, S):
    head = _camera_head()
    toks = make_tokens(B, S, 28, 42)
    with torch.no_grad():
        out4 = head(toks, num_iterations=4)
        out2 = head(toks, num_iterations=2)
    assert len(out4) == 4 and len(out2) == 2
    assert all(o.shape == (B, S, 9) for o in out4)
    # Deterministic refinement: a shorter run is a prefix of a longer one.
    assert torch.equal(out2[0], out4[0]) and torch.equal(out2[1], out4[1])
    # Each iteration refines (changes) the estimate; the field of view goes through ReLU.
    for a, b in zip(out4[:-1], out4[1:]):
        assert not torch.allclose(a, b)
    assert all((o[..., 7:] >= 0).all() for o in out4)


def test_camera_head_reads_last_layer_camera_token_only():
    head = _camera_head()
    B, S = 2, 3
    toks = make_tokens(B, S, 28, 42)
    with torch.no_grad():
        ref = head(toks)[-1]
        only_last = [None] * (len(toks) - 1) + [toks[-1]]
        assert torch.equal(head(only_last)[-1], ref)
        other = [t.clone() for t in toks]
        other[-1][:, :, 1:] = torch.randn_like(other[-1][:, :, 1:])
        assert torch.equal(head(other)[-1], ref)
        other[-1][:, 1, 0] = torch.randn_like(other[-1][:, 1, 0])  # (a constant shift would be normalised away)
        changed = head(other)[-1]
    assert not torch.allclose(changed[:, 1], ref[:, 1])
    # Frames are coupled by the trunk's attention across the sequence.
    assert not torch.allclose(changed[:, 0], ref[:, 0])


# ----------------------------------------------------------------------------------------------------
# Tracker
# ----------------------------------------------------------------------------------------------------
def _shifted_maps(C, H, W, shifts, pad=8):
    """Frames of one random feature map translated by whole pixels: frame s content moves by shifts[s]."""
    big = torch.randn(1, C, H + 2 * pad, W + 2 * pad)
    frames = [big[..., pad - dy : pad - dy + H, pad - dx : pad - dx + W] for dx, dy in shifts]
    return torch.stack(frames, dim=1)  # (1, S, C, H, W)


def test_corr_block_peaks_at_true_translation():
    C, H, W, r = 32, 24, 36, 3
    shifts = [(0, 0), (2, -1), (-3, 3), (1, 2)]
    fmaps = _shifted_maps(C, H, W, shifts)
    S = len(shifts)
    q = torch.tensor([[10.0, 8.0], [20.0, 12.0], [15.0, 15.0], [25.0, 10.0]])[None]  # (1, N, 2) away from borders
    N = q.shape[1]
    targets = fmaps[0, 0][:, q[0, :, 1].long(), q[0, :, 0].long()].T  # (N, C) exact features of frame 0
    targets = targets[None, None].expand(1, S, N, C)
    coords = q[:, None].expand(1, S, N, 2)
    corr = CorrBlock(fmaps, num_levels=2, radius=r).corr_sample(targets, coords)
    K = (2 * r + 1) ** 2
    assert corr.shape == (1, S, N, 2 * K) and torch.isfinite(corr).all()
    best = window_offsets(r)[corr[0, :, :, :K].argmax(-1)]  # (S, N, 2) offsets (dx, dy)
    truth = torch.tensor(shifts, dtype=torch.float32)[:, None].expand(S, N, 2)
    assert torch.equal(best, truth)
    # At the peak the correlation is |f|^2 / sqrt(C).
    peak = corr[0, :, :, :K].max(-1).values
    torch.testing.assert_close(peak, (targets[0] ** 2).sum(-1) / math.sqrt(C), rtol=1e-5, atol=1e-5)


def test_corr_block_matches_dense_correlation_on_both_paths():
    B, S, C, H, W, r, L = 1, 2, 8, 64, 40, 2, 3  # level 0 uses sampled features, levels 1-2 the dense map
    fmaps = torch.randn(B, S, C, H, W)
    targets = torch.randn(B, S, 5, C)
    coords = torch.tensor([[0.3, 0.0], [10.7, 20.2], [39.0, 63.0], [-1.5, 5.0], [38.2, 62.9]])[None, None]
    coords = coords.expand(B, S, 5, 2) + torch.arange(S).float()[None, :, None, None]
    got = CorrBlock(fmaps, num_levels=L, radius=r).corr_sample(targets, coords)

    K = (2 * r + 1) ** 2
    ar = torch.arange(-r, r + 1, dtype=torch.float32)
    expect = []
    fm = fmaps.reshape(B * S, C, H, W)
    for lvl in range(L):
        if lvl:
            fm = F.avg_pool2d(fm, 2, 2)
        h, w = fm.shape[-2:]
        dense = torch.einsum("snc,schw->snhw", targets.reshape(S, 5, C), fm) / math.sqrt(C)
        c = coords.reshape(S, 5, 2) / 2**lvl
        gx = (c[..., 0, None, None] + ar[:, None]).expand(S, 5, 2 * r + 1, 2 * r + 1)  # x varies along a
        gy = (c[..., 1, None, None] + ar[None, :]).expand(S, 5, 2 * r + 1, 2 * r + 1)
        grid = torch.stack([gx * 2 / (w - 1) - 1, gy * 2 / (h - 1) - 1], dim=-1).reshape(S * 5, 2 * r + 1, 2 * r + 1, 2)
        samp = F.grid_sample(dense.reshape(S * 5, 1, h, w), grid, align_corners=True, padding_mode="zeros")
        expect.append(samp.reshape(B, S, 5, K))
    torch.testing.assert_close(got, torch.cat(expect, -1), rtol=1e-5, atol=1e-5)


def test_tracker_embeddings_match_their_definitions():
    # Grid embedding sampled at points == full grid sampled with border padding.
    D, h, w = 24, 7, 9
    ys, xs = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
    k = torch.arange(D // 4).double()
    om = 1.0 / 10000 ** (k / (D // 4))
    grid = torch.cat(
        [torch.sin(xs[..., None] * om), torch.cos(xs[..., None] * om), torch.sin(ys[..., None] * om), torch.cos(ys[..., None] * om)],
        dim=-1,
    ).permute(2, 0, 1)[None].float()
    pts = torch.tensor([[0.0, 0.0], [3.25, 2.5], [8.0, 6.0], [-2.0, 3.7], [10.5, 7.9], [4.999, 0.001]])
    norm = torch.stack([pts[:, 0] * 2 / (w - 1) - 1, pts[:, 1] * 2 / (h - 1) - 1], -1)
    ref = F.grid_sample(grid, norm[None, :, None], align_corners=True, padding_mode="border")[0, :, :, 0].T
    torch.testing.assert_close(sincos_grid_embed_at(pts, D, h, w), ref, rtol=1e-5, atol=1e-6)

    # Flow embedding: interleaved sin/cos at frequencies 2j * 1000 / C.
    xy = torch.tensor([[[0.5, -1.25]]])
    C = 8
    emb = flow_embed(xy, C)[0, 0]
    f = torch.arange(0, C, 2).float() * (1000.0 / C)
    expect = torch.stack([torch.sin(0.5 * f), torch.cos(0.5 * f)], -1).flatten().tolist()
    expect += torch.stack([torch.sin(-1.25 * f), torch.cos(-1.25 * f)], -1).flatten().tolist()
    torch.testing.assert_close(emb, torch.tensor(expect))


def test_tracker_on_translated_features():
    C, H, W = 32, 24, 36
    shifts = [(0, 0), (1, 0), (2, 1), (3, -1)]
    fmaps = _shifted_maps(C, H, W, shifts)
    tracker = BaseTrackerPredictor(
        stride=2, corr_levels=3, corr_radius=3, latent_dim=C, hidden_size=32, depth=2, num_heads=4, num_virtual_tracks=4
    ).eval()
    q = torch.tensor([[[20.0, 16.0], [40.5, 30.0], [60.0, 10.0]]])  # image pixels (stride 2)
    with torch.no_grad():
        preds, vis, conf = tracker(q, fmaps, iters=3)
        preds_f, vis_f, feats, qfeat, conf_f = tracker(q, fmaps, iters=3, return_feat=True)
    assert len(preds) == 3 and all(p.shape == (1, 4, 3, 2) for p in preds)
    assert vis.shape == conf.shape == (1, 4, 3)
    assert all(torch.isfinite(p).all() for p in preds)
    assert ((vis >= 0) & (vis <= 1)).all() and ((conf >= 0) & (conf <= 1)).all()
    assert all(torch.equal(p[:, 0], q) for p in preds)  # query frame stays at the queries
    assert feats.shape == (1, 4, 3, C) and qfeat.shape == (1, 3, C)
    assert torch.equal(preds_f[-1], preds[-1]) and torch.equal(vis_f, vis)


@pytest.mark.parametrize("B,S,H,W", [(1, 1, 56, 84), (2, 3, 84, 56)])
def test_track_head_shapes(B, S, H, W):
    head = TrackHead(DIM, patch_size=PATCH, iters=3, **TINY_TRACK).eval()
    toks = make_tokens(B, S, H, W, keep=TINY_TRACK["intermediate_layer_idx"])
    q = torch.rand(B, 6, 2) * torch.tensor([W - 1.0, H - 1.0])
    with torch.no_grad():
        preds, vis, conf = head(toks, torch.rand(B, S, 3, H, W), N_SPECIAL, q)
        preds2, _, _ = head(toks, torch.rand(B, S, 3, H, W), N_SPECIAL, q, iters=1)
    assert len(preds) == 3 and len(preds2) == 1
    assert preds[-1].shape == (B, S, 6, 2) and vis.shape == (B, S, 6) and conf.shape == (B, S, 6)
    torch.testing.assert_close(preds[-1][:, 0], q)
    assert torch.isfinite(preds[-1]).all() and ((vis >= 0) & (vis <= 1)).all()
    assert head.feature_extractor(toks, torch.rand(B, S, 3, H, W), N_SPECIAL).shape == (B, S, 32, H // 2, W // 2)


# ----------------------------------------------------------------------------------------------------
# VGGT-1B state_dict layout (key names and shapes read from the reference implementation)
# ----------------------------------------------------------------------------------------------------
def _expand(table):
    """``{template: shape}`` with ``{i}`` / ``{j}`` ranges given as ``(template, shape, n)`` entries."""
    out = {}
    for entry in table:
        template, shape, n = entry if len(entry) == 3 else (*entry, 1)
        for i in range(n):
            out[template.format(i=i)] = tuple(shape)
    return out


VGGT_CAMERA_HEAD = _expand(
    [
        ("trunk.{i}.norm1.weight", (2048,), 4),
        ("trunk.{i}.norm1.bias", (2048,), 4),
        ("trunk.{i}.attn.qkv.weight", (6144, 2048), 4),
        ("trunk.{i}.attn.qkv.bias", (6144,), 4),
        ("trunk.{i}.attn.proj.weight", (2048, 2048), 4),
        ("trunk.{i}.attn.proj.bias", (2048,), 4),
        ("trunk.{i}.ls1.gamma", (2048,), 4),
        ("trunk.{i}.norm2.weight", (2048,), 4),
        ("trunk.{i}.norm2.bias", (2048,), 4),
        ("trunk.{i}.mlp.fc1.weight", (8192, 2048), 4),
        ("trunk.{i}.mlp.fc1.bias", (8192,), 4),
        ("trunk.{i}.mlp.fc2.weight", (2048, 8192), 4),
        ("trunk.{i}.mlp.fc2.bias", (2048,), 4),
        ("trunk.{i}.ls2.gamma", (2048,), 4),
        ("token_norm.weight", (2048,)),
        ("token_norm.bias", (2048,)),
        ("trunk_norm.weight", (2048,)),
        ("trunk_norm.bias", (2048,)),
        ("empty_pose_tokens", (1, 1, 9)),
        ("embed_pose.weight", (2048, 9)),
        ("embed_pose.bias", (2048,)),
        ("poseLN_modulation.1.weight", (6144, 2048)),
        ("poseLN_modulation.1.bias", (6144,)),
        ("pose_branch.fc1.weight", (1024, 2048)),
        ("pose_branch.fc1.bias", (1024,)),
        ("pose_branch.fc2.weight", (9, 1024)),
        ("pose_branch.fc2.bias", (9,)),
    ]
)


def _vggt_dpt(features, output_dim=None):
    """DPT keys for dim_in 2048, out_channels (256, 512, 1024, 1024); output_dim None = feature_only."""
    f = features
    table = [
        ("norm.weight", (2048,)),
        ("norm.bias", (2048,)),
        ("projects.0.weight", (256, 2048, 1, 1)),
        ("projects.0.bias", (256,)),
        ("projects.1.weight", (512, 2048, 1, 1)),
        ("projects.1.bias", (512,)),
        ("projects.2.weight", (1024, 2048, 1, 1)),
        ("projects.2.bias", (1024,)),
        ("projects.3.weight", (1024, 2048, 1, 1)),
        ("projects.3.bias", (1024,)),
        ("resize_layers.0.weight", (256, 256, 4, 4)),
        ("resize_layers.0.bias", (256,)),
        ("resize_layers.1.weight", (512, 512, 2, 2)),
        ("resize_layers.1.bias", (512,)),
        ("resize_layers.3.weight", (1024, 1024, 3, 3)),
        ("resize_layers.3.bias", (1024,)),
        ("scratch.layer1_rn.weight", (f, 256, 3, 3)),
        ("scratch.layer2_rn.weight", (f, 512, 3, 3)),
        ("scratch.layer3_rn.weight", (f, 1024, 3, 3)),
        ("scratch.layer4_rn.weight", (f, 1024, 3, 3)),
    ]
    for r in (1, 2, 3, 4):
        table += [(f"scratch.refinenet{r}.out_conv.weight", (f, f, 1, 1)), (f"scratch.refinenet{r}.out_conv.bias", (f,))]
        for unit in ((1, 2) if r < 4 else (2,)):
            for conv in (1, 2):
                table += [
                    (f"scratch.refinenet{r}.resConfUnit{unit}.conv{conv}.weight", (f, f, 3, 3)),
                    (f"scratch.refinenet{r}.resConfUnit{unit}.conv{conv}.bias", (f,)),
                ]
    if output_dim is None:
        table += [("scratch.output_conv1.weight", (f, f, 3, 3)), ("scratch.output_conv1.bias", (f,))]
    else:
        table += [
            ("scratch.output_conv1.weight", (f // 2, f, 3, 3)),
            ("scratch.output_conv1.bias", (f // 2,)),
            ("scratch.output_conv2.0.weight", (32, f // 2, 3, 3)),
            ("scratch.output_conv2.0.bias", (32,)),
            ("scratch.output_conv2.2.weight", (output_dim, 32, 1, 1)),
            ("scratch.output_conv2.2.bias", (output_dim,)),
        ]
    return _expand(table)


def _mha_block(prefix, attn, n, context_norm=False):
    rows = [
        (prefix + ".{i}.norm1.weight", (384,), n),
        (prefix + ".{i}.norm1.bias", (384,), n),
        (prefix + ".{i}.norm2.weight", (384,), n),
        (prefix + ".{i}.norm2.bias", (384,), n),
        (prefix + ".{i}." + attn + ".in_proj_weight", (1152, 384), n),
        (prefix + ".{i}." + attn + ".in_proj_bias", (1152,), n),
        (prefix + ".{i}." + attn + ".out_proj.weight", (384, 384), n),
        (prefix + ".{i}." + attn + ".out_proj.bias", (384,), n),
        (prefix + ".{i}.mlp.fc1.weight", (1536, 384), n),
        (prefix + ".{i}.mlp.fc1.bias", (1536,), n),
        (prefix + ".{i}.mlp.fc2.weight", (384, 1536), n),
        (prefix + ".{i}.mlp.fc2.bias", (384,), n),
    ]
    if context_norm:
        rows += [(prefix + ".{i}.norm_context.weight", (384,), n), (prefix + ".{i}.norm_context.bias", (384,), n)]
    return rows


VGGT_TRACKER = _expand(
    [
        ("corr_mlp.fc1.weight", (384, 567)),
        ("corr_mlp.fc1.bias", (384,)),
        ("corr_mlp.fc2.weight", (128, 384)),
        ("corr_mlp.fc2.bias", (128,)),
        ("query_ref_token", (1, 2, 388)),
        ("updateformer.input_norm.weight", (388,)),
        ("updateformer.input_norm.bias", (388,)),
        ("updateformer.input_transform.weight", (384, 388)),
        ("updateformer.input_transform.bias", (384,)),
        ("updateformer.output_norm.weight", (384,)),
        ("updateformer.output_norm.bias", (384,)),
        ("updateformer.flow_head.weight", (130, 384)),
        ("updateformer.flow_head.bias", (130,)),
        ("updateformer.virual_tracks", (1, 64, 1, 384)),
        *_mha_block("updateformer.time_blocks", "attn", 6),
        *_mha_block("updateformer.space_virtual_blocks", "attn", 6),
        *_mha_block("updateformer.space_point2virtual_blocks", "cross_attn", 6, context_norm=True),
        *_mha_block("updateformer.space_virtual2point_blocks", "cross_attn", 6, context_norm=True),
        ("fmap_norm.weight", (128,)),
        ("fmap_norm.bias", (128,)),
        ("ffeat_norm.weight", (128,)),
        ("ffeat_norm.bias", (128,)),
        ("ffeat_updater.0.weight", (128, 128)),
        ("ffeat_updater.0.bias", (128,)),
        ("vis_predictor.0.weight", (1, 128)),
        ("vis_predictor.0.bias", (1,)),
        ("conf_predictor.0.weight", (1, 128)),
        ("conf_predictor.0.bias", (1,)),
    ]
)


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_vggt1b_state_dict_layout():
    with torch.device("meta"):
        camera = CameraHead()
        depth = DPTHead(dim_in=2048, output_dim=2, activation="exp", conf_activation="expp1")
        point = DPTHead(dim_in=2048, output_dim=4, activation="inv_log", conf_activation="expp1")
        track = TrackHead(dim_in=2048, patch_size=14, features=128)
    assert _shapes(camera) == VGGT_CAMERA_HEAD
    assert _shapes(depth) == _vggt_dpt(256, output_dim=2)
    assert _shapes(point) == _vggt_dpt(256, output_dim=4)
    expect_track = {f"feature_extractor.{k}": v for k, v in _vggt_dpt(128).items()}
    expect_track.update({f"tracker.{k}": v for k, v in VGGT_TRACKER.items()})
    assert _shapes(track) == expect_track
    # No buffers hide in the state dicts: every entry is a parameter.
    for m in (camera, depth, point, track):
        assert len(m.state_dict()) == len(list(m.parameters()))


def test_mask_head_keeps_dpt_keys():
    with torch.device("meta"):
        mask = DPTHead(dim_in=2048, output_dim=1, activation="linear", conf_activation=None)
    assert _shapes(mask) == _vggt_dpt(256, output_dim=1)
