"""Named configurations and the tiny model end to end."""

from __future__ import annotations

import pytest
import torch
import yaml

from vggt4d_ros.model.configs import available_configs, build_model_from_config, find_config, load_model_config


def test_named_configs_exist_and_parse():
    names = set(available_configs())
    assert {"vggt-1b", "page4d", "vggt4d-spatiotemporal", "tiny"} <= names
    cfg = load_model_config("page4d")
    assert cfg["page4d"]["enabled"] and cfg["page4d"]["bias_blocks"] == [10, 19] and cfg["name"] == "page4d"
    assert load_model_config("vggt4d-spatiotemporal")["layout"] == "spatiotemporal"
    with pytest.raises(FileNotFoundError, match="available"):
        find_config("no-such-model")


def test_config_from_path_and_ament_share(tmp_path, monkeypatch):
    share = tmp_path / "share" / "vggt4d_ros" / "config" / "models"
    share.mkdir(parents=True)
    (share / "mine.yaml").write_text(yaml.safe_dump({"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_embed": "conv"}))
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert load_model_config("mine")["depth"] == 2
    assert load_model_config(share / "mine.yaml")["embed_dim"] == 32


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model_from_config("tiny").eval()


def test_tiny_is_a_few_million_parameters(tiny):
    n = sum(p.numel() for p in tiny.parameters())
    assert 1_000_000 < n < 10_000_000
    assert tiny.aggregator.layout == "spatiotemporal" and tiny.mask_head is not None


def test_tiny_window_outputs(tiny):
    v, t, h, w = 2, 4, 140, 252
    imgs = torch.rand(v * t, 3, h, w)
    q = torch.tensor([[20.0, 30.0], [200.0, 100.0]])
    with torch.no_grad():
        out = tiny(imgs, q, num_views=v, reference_index=6)
    s = v * t
    assert out["pose_enc"].shape == (1, s, 9) and len(out["pose_enc_list"]) == 4
    assert out["depth"].shape == (1, s, h, w, 1) and out["depth_conf"].shape == (1, s, h, w)
    assert out["world_points"].shape == (1, s, h, w, 3)
    assert out["dynamic_mask_logits"].shape == (1, s, h, w)
    assert out["page_mask"].shape == (1, s, h // 14, w // 14)
    assert out["track"].shape == (1, s, 2, 2) and out["vis"].shape == (1, s, 2)
    assert (out["depth"] > 0).all() and (out["depth_conf"] >= 1).all()
    # the tracker is queried in the reference frame: there the track starts at the query points
    torch.testing.assert_close(out["track"][0, 6], q, rtol=0, atol=1e-3)
