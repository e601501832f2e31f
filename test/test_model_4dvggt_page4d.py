"""The combination: 4D-VGGT v1.0 + PAGE-4D's mask predictor and pose bias + dense mask and track heads
(``config/models/4d-vggt-page4d.yaml``), and its PAGE-4D-style partial fine-tune (``trainable: page4d_middle``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vggt4d_ros.model import build_model, load_checkpoint
from vggt4d_ros.model.configs import build_model_from_config, load_model_config
from vggt4d_ros.training import LossConfig, OptimConfig, Trainer, WindowConfig, WindowSampler, apply_trainable
from vggt4d_ros.training.trainer import matches

DATA = Path(__file__).parent / "data" / "model"
CKPT = DATA / "4dvggt_small.pt"
TRACK = {"features": 16, "hidden_size": 32, "corr_levels": 3, "corr_radius": 2, "out_channels": [8, 16, 16, 16],
         "tracker_depth": 1, "num_heads": 4, "num_virtual_tracks": 8}


def combination(strength: float = 64.0, **kw):
    """The fixture's small release configuration plus the combination's extensions."""
    cfg = {k: v for k, v in load_model_config("4d-vggt-small").items() if k not in ("name", "preprocess")}
    cfg.update(page4d={"enabled": True, "mask_block": 1, "bias_blocks": [2, 3], "strength": strength},
               enable_mask=True, enable_track=True, track=TRACK, **kw)
    return build_model(**cfg)


@pytest.fixture(scope="module")
def fixture_io():
    with safe_open(str(DATA / "4dvggt_small_io.safetensors"), "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
    return t["input.images_u8"].float() / 255, t


def test_the_full_size_config_builds_the_combination():
    with torch.device("meta"):
        model = build_model_from_config("4d-vggt-page4d")
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 1_902_595_058
    assert model.enabled_heads() == {"camera", "depth", "point", "mask", "track"}
    assert model.aggregator.page4d_cfg["mask_block"] == 9 and model.aggregator.page4d_cfg["bias_blocks"] == (10, 19)
    assert model.aggregator.page4d_cfg["strength"] == 64.0
    assert any(k.startswith("cross_view_global_fusion.spatial_mask_head.head0.") for k in sd)
    assert any(k.startswith("mask_head.") for k in sd) and any(k.startswith("track_head.tracker.") for k in sd)
    with torch.device("meta"):
        plain = build_model_from_config("4d-vggt")
    plain_sd = plain.state_dict()
    assert set(plain_sd) < set(sd)  # every release key is there, with its shape
    assert all(v.shape == sd[k].shape for k, v in plain_sd.items())
    assert model.release_model_config == plain.release_model_config
    assert set(model.project_extensions) == {"page4d", "enable_mask", "mask_dpt", "enable_track", "track"}


def test_bias_off_is_the_release_and_on_changes_the_pose(fixture_io):
    images, t = fixture_io
    queries = torch.tensor([[10.0, 12.0], [40.0, 30.0]])
    off = combination(strength=0.0).eval()
    report = load_checkpoint(off, CKPT, strict=False)  # the release's weights; the new parts stay random
    assert not report.unexpected and all(k.startswith(("mask_head.", "track_head.", "cross_view_global_fusion.spatial"))
                                         for k in report.missing)
    on = combination(strength=64.0).eval()
    on.load_state_dict(off.state_dict())
    with torch.no_grad():
        a = off(images, queries)
        b = on(images, queries)
    for k in ("pose_enc", "depth", "world_points", "depth_conf"):
        torch.testing.assert_close(a[k], t[f"output.{k}"], rtol=1e-3, atol=1e-5)
    assert a["page_mask"].shape == (1, 6, 3, 4) and a["dynamic_mask_logits"].shape == (1, 6, 42, 56)
    assert a["track"].shape == (1, 6, 2, 2)
    torch.testing.assert_close(b["page_mask"], a["page_mask"])  # the mask comes before the biased blocks
    assert (b["pose_enc"] - a["pose_enc"]).abs().max() > 1e-3  # the bias moves the pose
    assert not torch.allclose(b["pose_enc"], t["output.pose_enc"], rtol=1e-3, atol=1e-5)


def test_page4d_middle_trains_exactly_the_middle_blocks_and_the_mask_predictor():
    torch.manual_seed(0)
    model = combination()
    selected = model.trainable_patterns("page4d_middle")
    assert selected == ["cross_view_global_fusion.frame_blocks.2-3", "cross_view_global_fusion.global_blocks.2-3",
                        "cross_view_global_fusion.spatial_mask_head"]
    counts = apply_trainable(model, "page4d_middle")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in model.named_parameters() if matches(n, selected)}
    assert 0 < counts["trainable"] < counts["frozen"]
    cfg = WindowConfig(num_views=2, num_steps=2, sizes=[(56, 84)], strides=[1], duration_s=0.6, cache_sequences=1,
                       windows_per_sequence=2, num_queries=4, texture_px=64, moving_objects=(2, 2))
    batch = WindowSampler(cfg, batch_size=1, seed=3).batch(0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tr = Trainer(model, LossConfig(camera=5.0, depth=1.0, point=1.0, mask=1.0, page_mask=1.0, track=0.0),
                 OptimConfig(lr=1e-3, warmup_steps=0, weight_decay=0.0), total_steps=4)
    logs = tr.train_step(batch)
    assert logs["grad_norm"] > 0
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert moved <= names  # nothing frozen moved
    assert any(n.startswith("cross_view_global_fusion.spatial_mask_head.") for n in moved)
    for blocks in ("frame_blocks", "global_blocks"):
        for i in (2, 3):
            assert any(n.startswith(f"cross_view_global_fusion.{blocks}.{i}.") for n in moved), (blocks, i)
    assert len(moved) >= 0.9 * len(names)
    with pytest.raises(ValueError):
        apply_trainable(model, ["no_such_module"])
