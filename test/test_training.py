"""vggt4d_ros.training: loss behaviour, overfitting, freezing, resume, checkpoints, data and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vggt4d_ros.geometry import pose_encoding_to_extri_intri
from vggt4d_ros.model import load_checkpoint
from vggt4d_ros.model.configs import build_model_from_config
from vggt4d_ros.training import LossConfig, OptimConfig, Trainer, WindowConfig, WindowSampler, apply_trainable
from vggt4d_ros.training.data import EVAL_SEEDS, TRAIN_SEED_BASE
from vggt4d_ros.training.evaluate import (
    ate, camera_centres, depth_errors, evaluate_model, iou, trajectory_length)
from vggt4d_ros.training.losses import multitask_loss
from vggt4d_ros.training.trainer import STATE, WEIGHTS, lr_factor, matches

torch.set_num_threads(2)

SMALL = WindowConfig(num_views=2, num_steps=2, sizes=[(56, 84)], strides=[1], duration_s=0.6, cache_sequences=2,
                     windows_per_sequence=4, num_queries=8, texture_px=64, moving_objects=(2, 2))


@pytest.fixture(scope="module")
def batch():
    return WindowSampler(SMALL, batch_size=1, seed=5).batch(0)


def perfect_outputs(b, conf=1.0):
    """Model-like outputs equal to the ground truth."""
    B, S, H, W = b["depth"].shape
    c = torch.full((B, S, H, W), conf)
    gt_m = b["dynamic_mask"]
    return {
        "pose_enc": b["pose_enc"].clone(), "pose_enc_list": [b["pose_enc"].clone()] * 2,
        "depth": b["depth"][..., None].clone(), "depth_conf": c.clone(),
        "world_points": b["world_points"].clone(), "world_points_conf": c.clone(),
        "dynamic_mask_logits": (gt_m * 2 - 1) * 30.0,
        "track": b["tracks"].clone(), "vis": b["track_vis"].clamp(1e-6, 1 - 1e-6),
    }


ALL_ON = LossConfig(camera=1.0, depth=1.0, point=1.0, mask=1.0, track=1.0)


def test_window_ground_truth_is_consistent(batch):
    b = {k: v[0] for k, v in batch.items()}
    S, H, W = b["depth"].shape
    assert b["images"].shape == (S, 3, H, W) and 0 <= b["images"].min() and b["images"].max() <= 1
    # VGGT normalisation: mean distance of valid points to the reference camera is 1
    d = b["world_points"][b["valid"]].norm(dim=-1).mean()
    assert abs(float(d) - 1.0) < 1e-4
    # frame 0 is the world: identity extrinsics
    assert torch.allclose(b["extrinsics"][0], torch.eye(4)[:3], atol=1e-5)
    # decoding the GT pose encoding and moving world points into each camera gives back the depth
    extr, K = pose_encoding_to_extri_intri(b["pose_enc"].double(), (H, W))
    pc = torch.einsum("sij,shwj->shwi", extr[..., :3], b["world_points"].double()) + extr[:, None, None, :, 3]
    assert torch.allclose(pc[..., 2].float(), b["depth"], atol=1e-4)
    assert torch.allclose(K[:, 0, 0].float(), b["intrinsics"][:, 0, 0], rtol=1e-5)
    # depth in metres = normalised depth x scale
    assert torch.allclose(b["depth"] * b["scale"], b["depth_metric"], rtol=1e-5)
    # tracks: queries are the frame-0 positions and visible there
    vq = b["track_valid"]
    assert vq.any() and torch.equal(b["query_points"][vq], b["tracks"][0][vq])
    assert bool((b["track_vis"][0][vq] == 1).all())


def test_sampler_is_deterministic_and_disjoint_from_eval_seeds():
    a, c = WindowSampler(SMALL, 1, seed=3), WindowSampler(SMALL, 1, seed=3)
    b1, b2 = a.batch(7), c.batch(7)
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    assert not torch.equal(a.batch(8)["images"], b1["images"])
    assert min(a.sequence_seed(i) for i in range(100)) >= TRAIN_SEED_BASE > max(EVAL_SEEDS)


def test_loss_is_minimal_for_perfect_predictions_and_grows_with_error(batch):
    out = perfect_outputs(batch)
    t0 = multitask_loss(out, batch, ALL_ON)
    for k in ("camera", "depth_l1", "depth_grad", "point_l1", "point_grad", "track_pos"):
        assert float(t0[k]) < 1e-6, k
    assert float(t0["mask"]) < 1e-6 and float(t0["track_vis"]) < 1e-4
    # with perfect values the aleatoric term is -alpha*log(c); c = 1 gives 0
    assert abs(float(t0["depth"])) < 1e-6 and abs(float(t0["point"])) < 1e-6

    def perturbed(eps):
        o = perfect_outputs(batch)
        g = torch.Generator().manual_seed(0)
        o["pose_enc_list"] = [p + eps * torch.randn(p.shape, generator=g) for p in o["pose_enc_list"]]
        o["depth"] = o["depth"] * (1 + eps)
        o["world_points"] = o["world_points"] + eps * torch.randn(o["world_points"].shape, generator=g)
        o["dynamic_mask_logits"] = o["dynamic_mask_logits"] * (1 - min(eps, 1.0)) - eps * 3 * (batch["dynamic_mask"] * 2 - 1)
        o["track"] = o["track"] + 10 * eps
        o["vis"] = (o["vis"] * (1 - eps) + 0.5 * eps).clamp(1e-6, 1 - 1e-6)
        return multitask_loss(o, batch, ALL_ON)

    t1, t2 = perturbed(0.05), perturbed(0.2)
    for k in ("camera", "depth", "point", "mask", "track", "loss"):
        assert float(t0[k]) < float(t1[k]) < float(t2[k]), k
    # switching a term off removes it from the total
    off = multitask_loss(perturbed(0.2) and perfect_outputs(batch), batch, LossConfig(camera=0, depth=1, point=0, mask=0))
    assert "camera" not in off and float(off["loss"]) == pytest.approx(float(off["depth"]))


def test_confidence_trades_error_against_log_term(batch):
    out = perfect_outputs(batch, conf=2.0)
    out["depth"] = out["depth"] + 0.1
    cfg = LossConfig(camera=0, depth=1, point=0, mask=0, gradient=0.0, reg=0.0, conf_alpha=0.2)
    t = multitask_loss(out, batch, cfg)
    # c*|e| - alpha*log(c) with e = 0.1, c = 2
    assert float(t["depth"]) == pytest.approx(2 * 0.1 - 0.2 * np.log(2.0), rel=1e-4)


def _tiny():
    torch.manual_seed(0)
    return build_model_from_config("tiny")


def test_overfit_one_batch(batch):
    model = _tiny()
    cfg = LossConfig(camera=5.0, depth=1.0, point=1.0, mask=1.0)
    tr = Trainer(model, cfg, OptimConfig(lr=1e-3, warmup_steps=0, grad_clip=1.0), total_steps=1000)
    with torch.no_grad():
        before = float(tr.forward_loss(batch)["loss"])
    for _ in range(8):
        tr.train_step(batch)
    with torch.no_grad():
        after = float(tr.forward_loss(batch)["loss"])
    assert after < 0.75 * before, (before, after)


def test_freezing_keeps_frozen_parameters_bit_identical(batch):
    model = _tiny()
    counts = apply_trainable(model, ["camera_head", "aggregator.frame_blocks.2-3"])
    assert counts["trainable"] > 0 and counts["frozen"] > counts["trainable"]
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tr = Trainer(model, ALL_ON, OptimConfig(lr=1e-3, warmup_steps=0), total_steps=10)
    tr.train_step(batch)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for name, p in model.named_parameters():
        sel = matches(name, ["camera_head", "aggregator.frame_blocks.2-3"])
        assert p.requires_grad == sel
        if not sel:
            assert name not in changed, name
    assert any(k.startswith("camera_head.") for k in changed)
    assert any(k.startswith("aggregator.frame_blocks.3.") for k in changed)
    assert not any(k.startswith("aggregator.frame_blocks.1.") for k in changed)
    with pytest.raises(ValueError):
        apply_trainable(model, ["no_such_module"])


def test_resume_continues_identically(tmp_path, batch):
    b2 = WindowSampler(SMALL, 1, seed=5).batch(1)
    cfg, opt = LossConfig(), OptimConfig(lr=1e-3, warmup_steps=2)
    a = Trainer(_tiny(), cfg, opt, total_steps=10)
    a.train_step(batch)
    a.save(tmp_path / "ck")
    a.train_step(b2)
    a.train_step(batch)
    state = torch.load(str(tmp_path / "ck" / STATE), weights_only=True)
    assert state["step"] == 1
    c = Trainer(build_model_from_config("tiny"), cfg, opt, total_steps=10)
    assert c.resume(tmp_path / "ck") == 1
    assert c.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor(1, 2, 10, opt.min_lr_ratio))
    c.train_step(b2)
    c.train_step(batch)
    assert c.step == a.step == 3
    sa, sc = a.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)


def test_checkpoint_is_safetensors_loadable_by_load_checkpoint(tmp_path):
    tr = Trainer(_tiny(), LossConfig(), OptimConfig(), total_steps=1)
    tr.save(tmp_path)
    assert (tmp_path / WEIGHTS).read_bytes()[8:9] == b"{"  # safetensors header
    fresh = build_model_from_config("tiny")
    rep = load_checkpoint(fresh, tmp_path / WEIGHTS)
    assert rep.ok and rep.layout in ("page4d", "vggt4d")
    sd = tr.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in fresh.state_dict().items())


def test_lr_schedule():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_depth_metrics_hand_values():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (3, 6, 8))
    assert depth_errors(2.5 * gt, gt) == pytest.approx((0.0, 1.0))
    scaled = gt * np.array([1.0, 2.0, 0.5])[:, None, None]  # a different scale per frame
    assert depth_errors(scaled, gt, per_frame=True) == pytest.approx((0.0, 1.0))
    assert depth_errors(scaled, gt, per_frame=False)[0] > 0.1
    g = np.ones((1, 1, 4))
    assert depth_errors(np.array([[[1.0, 1.0, 1.0, 2.0]]]), g) == pytest.approx((0.25, 0.75))


def test_ate_and_trajectory_hand_values():
    gt = np.array([[0, 0, 0], [0.3, 0, 0], [0, 0, 1], [0.3, 0, 1], [0, 0.2, 2], [0.3, 0.2, 2]], float)
    assert trajectory_length(gt, 2) == pytest.approx(1.0 + np.hypot(0.2, 1.0))
    from scipy.spatial.transform import Rotation

    R = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    pred = 0.4 * gt @ R.T + np.array([1.0, 2.0, 3.0])
    assert ate(pred, gt)[0] == pytest.approx(0.0, abs=1e-9)
    rmse0 = ate(np.zeros_like(gt), gt)[0]
    assert rmse0 == pytest.approx(np.sqrt(((gt - gt.mean(0)) ** 2).sum(-1).mean()))
    E = np.concatenate([np.broadcast_to(np.eye(3), (6, 3, 3)), -gt[:, :, None]], -1)  # R = I, t = -c
    assert np.allclose(camera_centres(E), gt)


def test_iou_hand_values():
    a = np.zeros((2, 4), bool)
    b = np.zeros((2, 4), bool)
    a[0, :3] = True
    b[0, 1:] = True
    assert iou(a, b) == pytest.approx(2 / 4)
    assert iou(np.zeros_like(b), b) == 0.0


def test_evaluate_model_reports_model_and_baselines():
    cfg = WindowConfig(num_views=2, num_steps=2, sizes=[(56, 84)], texture_px=64, duration_s=0.6, moving_objects=(3, 3))
    res = evaluate_model(_tiny(), cfg, seeds=[0], windows_per_seed=1, stride=1)
    for k in ("model/abs_rel_frame", "mean_depth/abs_rel_frame", "model/ate_pct", "constant_pose/ate_pct",
              "model/mask_iou", "all_static/mask_iou", "model/delta125_window"):
        assert np.isfinite(res[k]), k
    assert res["all_static/mask_iou"] == 0.0
    assert res["all_dynamic/mask_iou"] == pytest.approx(res["dynamic_fraction"])


def test_cli_trains_and_resumes(tmp_path):
    from vggt4d_ros.tools.train import main

    cfg = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "config" / "train" / "tiny.yaml"))
    cfg["data"].update(num_steps=2, sizes=[[56, 84]], strides=[1], duration_s=0.6, cache_sequences=1,
                       texture_px=64, num_queries=8)
    cfg["checkpoint_every"] = 1
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["--config", str(p), "--out", str(out), "--steps", "1", "--no-progress"]) == 0
    assert main(["--config", str(p), "--out", str(out), "--steps", "2", "--no-progress",
                 "--resume", str(out / "last")]) == 0
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(np.isfinite(x["loss"]) for x in lines)
    assert torch.load(str(out / "last" / STATE), weights_only=True)["step"] == 2
    assert main(["--config", str(p), "--out", str(out), "--trainable", "nothing_matches"]) == 2


def test_mask_loss_is_calibrated_and_soft_iou_targets_iou():
    """With positive weight 1 the best constant logit is the log-odds of the dynamic fraction (sigmoid > 0.5
    then means p > 0.5); a positive weight w moves it by log(w): with the v1 recipe's w = 8 a pixel that moves
    one time in five is published as moving (sigmoid > 0.5 means p > 1/9). The soft-IoU term is 1 - IoU for
    hard masks."""
    from vggt4d_ros.training.losses import mask_loss, soft_iou_loss

    gt = torch.zeros(1, 1, 10, 10)
    gt[..., :2, :] = 1.0  # 20 % dynamic
    grid = torch.linspace(-6, 6, 1201)

    def best(pw):
        return float(grid[torch.stack([mask_loss(torch.full_like(gt, float(g)), gt, pw) for g in grid]).argmin()])

    assert best(1.0) == pytest.approx(np.log(0.2 / 0.8), abs=0.02) and best(1.0) < 0
    assert best(8.0) == pytest.approx(np.log(0.2 / 0.8) + np.log(8.0), abs=0.02) and best(8.0) > 0
    hard = (gt * 2 - 1) * 50.0
    assert float(soft_iou_loss(hard, gt, eps=0.0)) == pytest.approx(0.0, abs=1e-6)
    half = hard.clone()
    half[..., 2:4, :] = 50.0  # 20 more pixels marked moving: IoU 20 / 40
    assert float(soft_iou_loss(half, gt, eps=0.0)) == pytest.approx(0.5, abs=1e-6)


def test_transplant_to_4dvggt_reproduces_the_global_layout():
    """A VGGT-layout tiny transplanted onto the 4D-VGGT architecture (config/models/tiny-4d.yaml's layout at
    test size) computes what the tiny computes with global attention: the cross-time branch starts as a copy
    and the fusion gates at zero."""
    from vggt4d_ros.model.configs import build_model_from_config
    from vggt4d_ros.training.transplant import transplant_to_fourd

    root = Path(__file__).resolve().parents[1] / "config" / "models"
    small = dict(img_size=56, embed_dim=32)  # depth 4 and every head as configured
    c1 = dict(yaml.safe_load((root / "tiny.yaml").read_text()), **small)
    c4 = dict(yaml.safe_load((root / "tiny-4d.yaml").read_text()), **small)
    torch.manual_seed(0)
    m1 = build_model_from_config(c1).eval()
    m4 = build_model_from_config(c4).eval()
    with pytest.raises(ValueError, match="shapes differ"):
        transplant_to_fourd(build_model_from_config(dict(c4, embed_dim=16)), m1.state_dict())
    filled, unused = transplant_to_fourd(m4, m1.state_dict())
    assert unused == [] and filled and all(k.startswith(("cross_time", "spatiotemporal")) for k in filled)
    torch.manual_seed(1)
    x = torch.rand(1, 4, 3, 42, 56)
    q = torch.tensor([[10.0, 12.0], [30.0, 20.0]])
    with torch.no_grad():
        a = m1(x, q, num_views=2, layout="global")
        b = m4(x, q, num_views=2)
    for k in ("pose_enc", "depth", "dynamic_mask_logits", "page_mask", "track"):
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_cli_transplants_a_vggt_layout_init_onto_tiny_4d(tmp_path, capsys):
    """config/train/tiny-4d.yaml starts from the embedded tiny (VGGT layout): vggt4d-train transplants it
    (lr 0 here, so the saved weights are the transplant's: the tiny's tensors under the 4D-VGGT names, the
    cross-time branch a copy of the global branch, the fusion gates 0)."""
    from safetensors.torch import load_file

    from vggt4d_ros.perception.pipeline import EMBEDDED_DIR
    from vggt4d_ros.tools.train import main

    tiny = EMBEDDED_DIR / "tiny.safetensors"
    if not tiny.is_file():
        pytest.skip("no embedded tiny weights")
    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load(open(root / "config" / "train" / "tiny-4d.yaml"))
    assert cfg["model"] == "tiny-4d" and Path(cfg["init"]).name == "tiny.safetensors"
    cfg["init"] = str(tiny)
    cfg["data"].update(num_steps=2, sizes=[[56, 84]], strides=[1], duration_s=0.6, cache_sequences=1,
                       texture_px=64, num_queries=8)
    cfg["optim"].update(lr=0.0, warmup_steps=0)
    cfg.update(batch_size=1, checkpoint_every=1)
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(p), "--out", str(tmp_path / "run"), "--steps", "1", "--no-progress"]) == 0
    assert "transplanted onto tiny-4d" in capsys.readouterr().err
    src = load_file(str(tiny))
    got = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    key = "aggregator.frame_blocks.0.attn.qkv.weight"
    assert torch.equal(got["cross_view_global_fusion." + key[len("aggregator."):]], src[key])
    cross = [k for k in got if k.startswith("cross_time")]
    assert cross and any(torch.equal(got[k], src[key]) for k in cross if k.endswith("attn.qkv.weight"))
    gates = [k for k in got if "alpha" in k]
    assert gates and all(float(got[k].abs().max()) == 0.0 for k in gates)
