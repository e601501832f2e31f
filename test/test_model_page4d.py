"""PAGE-4D: the bias reaches only camera/register queries; the mask predictor's layout and outputs."""

from __future__ import annotations

import torch

from vggt4d_ros.model import build_model
from vggt4d_ros.model.layers import Attention
from vggt4d_ros.model.page4d import PageMaskPredictor, page_key_bias

PAGE = dict(enabled=True, mask_block=0, bias_blocks=(1, 2), strength=8.0)


def _model(**page):
    torch.manual_seed(0)
    m = build_model(img_size=56, embed_dim=32, depth=4, num_heads=2, patch_embed="conv", enable_track=False,
                    enable_point=False, camera_head=dict(trunk_depth=1, num_heads=2),
                    dpt=dict(features=8, out_channels=[8, 8, 8, 8]), keep_layers=None, page4d={**PAGE, **page}).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_((0.5 if name.endswith("gamma") else 0.05) * torch.randn_like(p))
    return m


def test_query_bias_equals_dense_row_bias():
    torch.manual_seed(1)
    att = Attention(32, 2, qk_norm=True).eval()
    x = torch.randn(2, 12, 32)
    idx = torch.tensor([0, 1, 6, 7])
    kb = torch.randn(2, 12)
    dense = torch.zeros(2, 1, 12, 12)
    dense[:, :, idx] = kb[:, None, None, :]
    with torch.no_grad():
        torch.testing.assert_close(att(x, query_bias=(idx, kb)), att(x, attn_bias=dense), rtol=1e-5, atol=1e-6)


def test_bias_changes_only_camera_and_register_rows():
    on, off = _model(), _model(strength=0.0)
    imgs = torch.rand(1, 3, 3, 28, 42)
    with torch.no_grad():
        la, _, aux = on.aggregator(imgs)
        lb, _, _ = off.aggregator(imgs)
    c = on.aggregator.embed_dim
    psi = on.aggregator.patch_start_idx
    torch.testing.assert_close(la[0], lb[0], rtol=0, atol=0)  # before the biased range
    first = 1  # bias_blocks[0]: its global output
    glob_a, glob_b = la[first][..., c:], lb[first][..., c:]
    torch.testing.assert_close(glob_a[:, :, psi:], glob_b[:, :, psi:], rtol=1e-6, atol=1e-6)  # patch queries
    assert (glob_a[:, :, :psi] - glob_b[:, :, :psi]).abs().max() > 1e-4  # camera/register queries
    assert aux["page_static"].shape == (1, 3, 2, 3)


def test_page_mask_output_and_off_by_default():
    m = _model()
    with torch.no_grad():
        out = m(torch.rand(3, 3, 28, 42))
    pm = out["page_mask"]
    assert pm.shape == (1, 3, 2, 3) and (pm > 0).all() and (pm < 1).all()
    plain = build_model(img_size=56, embed_dim=32, depth=4, num_heads=2, patch_embed="conv")
    assert plain.aggregator.page4d_cfg["enabled"] is False and plain.aggregator.page4d_cfg["strength"] == 0.0
    assert not any(k.startswith("aggregator.spatial_mask_head") for k in plain.state_dict())


def test_predictor_keys_and_bias_values():
    pred = PageMaskPredictor(32)
    shapes = {k: tuple(v.shape) for k, v in pred.state_dict().items()}
    assert shapes == {"head0.0.weight": (32, 1, 3, 3), "head0.0.bias": (32,), "head0.2.weight": (256, 32, 1, 1),
                      "head0.2.bias": (256,), "head0.4.weight": (1, 256, 1, 1), "head0.4.bias": (1,)}
    s = torch.tensor([[[[0.25, 0.75]]]])
    b = page_key_bias(s, 5, 64.0)
    torch.testing.assert_close(b, torch.tensor([[[0, 0, 0, 0, 0, -16.0, 16.0]]]))
    bl = page_key_bias(s, 1, 2.0, mode="log")
    torch.testing.assert_close(bl[0, 0, 1:], 2.0 * torch.log(torch.tensor([0.25, 0.75]) + 1e-6))
