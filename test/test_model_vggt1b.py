"""The 1.26B configuration on the meta device: parameter count, key layout, DINOv2 details."""

from __future__ import annotations

import pytest
import torch

from vggt4d_ros.model import build_model
from vggt4d_ros.model.configs import build_model_from_config
from vggt4d_ros.model.layers import DinoV2

# key -> shape, facts read from the reference VGGT-1B layout
KNOWN = {
    "aggregator.camera_token": (1, 2, 1, 1024),
    "aggregator.register_token": (1, 2, 4, 1024),
    "aggregator.patch_embed.cls_token": (1, 1, 1024),
    "aggregator.patch_embed.pos_embed": (1, 1370, 1024),
    "aggregator.patch_embed.register_tokens": (1, 4, 1024),
    "aggregator.patch_embed.mask_token": (1, 1024),
    "aggregator.patch_embed.patch_embed.proj.weight": (1024, 3, 14, 14),
    "aggregator.patch_embed.blocks.23.mlp.fc2.weight": (1024, 4096),
    "aggregator.patch_embed.blocks.0.ls1.gamma": (1024,),
    "aggregator.patch_embed.norm.weight": (1024,),
    "aggregator.frame_blocks.0.attn.qkv.weight": (3072, 1024),
    "aggregator.frame_blocks.0.attn.q_norm.weight": (64,),
    "aggregator.frame_blocks.23.ls2.gamma": (1024,),
    "aggregator.global_blocks.23.attn.k_norm.bias": (64,),
    "aggregator.global_blocks.11.mlp.fc1.weight": (4096, 1024),
    "camera_head.trunk.3.attn.qkv.weight": (6144, 2048),
    "camera_head.empty_pose_tokens": (1, 1, 9),
    "camera_head.poseLN_modulation.1.weight": (6144, 2048),
    "camera_head.pose_branch.fc2.weight": (9, 1024),
    "depth_head.projects.3.weight": (1024, 2048, 1, 1),
    "depth_head.scratch.output_conv2.2.weight": (2, 32, 1, 1),
    "point_head.scratch.output_conv2.2.weight": (4, 32, 1, 1),
    "track_head.feature_extractor.scratch.output_conv1.weight": (128, 128, 3, 3),
}


def test_vggt1b_on_meta():
    with torch.device("meta"):
        m = build_model()
    sd = m.state_dict()
    assert sum(p.numel() for p in m.parameters()) == 1_256_537_516
    assert len(sd) == 1797
    for k, shape in KNOWN.items():
        assert tuple(sd[k].shape) == shape, k
    assert sum(k.startswith("aggregator.patch_embed.") for k in sd) == 4 + 2 + 24 * 14 + 2  # tokens, proj, 24 blocks of 14 tensors, norm
    assert not any(k.startswith(("mask_head.", "aggregator.spatial_mask_head.")) for k in sd)
    assert m.aggregator.keep_layers == (4, 11, 17, 23)


def test_named_configs_add_only_their_prefixes():
    with torch.device("meta"):
        base = set(build_model_from_config("vggt-1b").state_dict())
        page = set(build_model_from_config("page4d").state_dict())
        st = set(build_model_from_config("vggt4d-spatiotemporal").state_dict())
    # PAGE-4D: VGGT-1B without the track head, plus the mask predictor
    assert all(k.startswith("track_head.") for k in base - page) and any(k.startswith("track_head.") for k in base)
    assert page - base and all(k.startswith("aggregator.spatial_mask_head.head0.") for k in page - base)
    assert base < st and all(k.startswith("mask_head.") for k in st - base)


def test_dinov2_fixed_grid_matches_dynamic_interpolation():
    torch.manual_seed(0)
    d = DinoV2(img_size=56, patch_size=14, embed_dim=32, depth=1, num_heads=2).eval()
    x = torch.randn(2, 3, 42, 70)
    with torch.no_grad():
        dyn = d(x)
        d.fix_grid(42, 70)
        fixed = d(x)
    torch.testing.assert_close(dyn, fixed, rtol=0, atol=0)
    assert d._fixed_pos.shape == (1, 1 + 3 * 5, 32)
    assert dyn.shape == (2, 15, 32)



def test_aggregator_fix_grid_keeps_outputs():
    torch.manual_seed(0)
    m = build_model(img_size=56, embed_dim=384, depth=1, num_heads=6, patch_embed="dinov2_vits14_reg",
                    enable_camera=False, enable_depth=False, enable_point=False, enable_track=False, keep_layers=None)
    agg = m.aggregator.eval()
    imgs = torch.rand(1, 2, 3, 42, 70)
    with torch.no_grad():
        a, _, _ = agg(imgs)
        agg.fix_grid(42, 70)
        b, _, _ = agg(imgs)
    assert agg.rope.max_position == 6 and agg.patch_embed._fixed_grid == (3, 5)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    with pytest.raises(ValueError):
        agg(torch.rand(1, 2, 3, 40, 70))
