"""Accuracy of the embedded tiny weights (issue 16 part 2): what the tests held before was only that keys exist.

1. A small CPU replay of a held-out synthetic bag (seed 7 as the demo, 252x140 so the model sees its own grid,
   2.4 s) through ``vggt4d-replay`` with the demo's node parameters; its report is gated against the report's
   OWN baselines: the issue's targets (ATE <= 0.1x and rotation RPE <= 0.5x constant pose, AbsRel <= 0.5x constant
   depth, mask IoU >= 0.5, track EPE <= 0.25x static points) and "better than the trivial baseline" (by 5 %).
   A gate the shipped weights do not meet is a strict xfail that names today's figure: when new weights meet
   it, the XPASS fails and the gate must become a plain assert.
2. The shipped weights against their recorded metrics (``tiny-metrics.json``: the weights' sha256 and a small
   held-out evaluation recomputed here), so weights, metrics file and evaluation code cannot drift apart.
3. The mask head and the keypoints through the :class:`Predictor` (the model's own noisy depth and poses, not
   ground truth): the Predictor's mask (what the node publishes with ``mask.source: model``) is exactly the mask
   the training evaluation measures (PAGE-4D's for tiny), whether it separates moving from static pixels, and
   geometric keypoints follow static points. The replay of part 1 publishes ``mask.source: auto``, the flow
   estimate for these weights (test/test_motion_mask.py).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from vggt4d_ros.data.bagwriter import write_synth_bag
from vggt4d_ros.data.synth import SynthConfig, SynthSequence
from vggt4d_ros.eval.metrics import FrameGeometry
from vggt4d_ros.perception.pipeline import EMBEDDED_DIR

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = EMBEDDED_DIR / "tiny.safetensors"
METRICS = EMBEDDED_DIR / "tiny-metrics.json"
REPLAY = dict(seed=7, num_cameras=2, width=252, height=140, rate_hz=10.0, duration_s=2.4, num_moving_objects=3,
              texture_px=128, num_tracks=256)

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no embedded tiny weights")

#: gates the shipped weights do not meet yet: gate name -> the figure on record (strict xfail)
NOT_MET = {
    "mask_target": "mask IoU 0.43 (target 0.5; mask.source flow at 252x140, where the demo at 518x294 gives 0.56)",
    "predictor_mask_baseline": "PAGE-4D mask IoU 0.002 vs the all-dynamic mask's 0.074 (p(moving) 0.31 vs 0.26)",
}

#: "better than the baseline" means by more than this margin (a figure within 5 % of a trivial baseline is not a
#: perception result, and it would flip between machines)
MARGIN = 0.95


def gate(name: str, ok: bool, figure: str) -> None:
    """Assert a gate, or (for a gate in NOT_MET) xfail while it is not met and fail once it is."""
    if name in NOT_MET:
        if ok:
            pytest.fail(f"gate {name} is met now ({figure}): make it a plain assert (remove it from NOT_MET)")
        pytest.xfail(f"not met with the shipped weights: {NOT_MET[name]} (now: {figure})")
    assert ok, f"{name}: {figure}"


def run_replay(d: Path, checkpoint: str = "") -> dict:
    """The gates' replay in directory ``d`` (the embedded weights, or ``checkpoint``); returns metrics.json."""
    from vggt4d_ros.tools.replay import main

    if not (d / "bag").exists():
        write_synth_bag(SynthSequence(SynthConfig(**REPLAY)), d / "bag")
    params = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())["/**"]["ros__parameters"]
    params["model"].update(checkpoint=checkpoint, device="cpu", target_width=252)
    params["publish"].update(camera_clouds=False, keypoint_markers=False)
    (d / "cfg.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    assert main([str(d / "bag"), "--config", str(d / "cfg.yaml"), "--out", str(d / "out"), "--quiet",
                 "--overwrite"]) == 0
    return json.loads((d / "out" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    return run_replay(tmp_path_factory.mktemp("accuracy"))


def test_replay_trajectory_gates(replay):
    tr = replay["trajectory"]
    assert tr["available"]
    ate, base = tr["sim3"]["ate_rmse"], tr["baseline_constant_pose"]["ate_rmse"]
    rot, rot0 = tr["sim3"]["rpe_rot_deg_rmse"], tr["baseline_constant_pose"]["rpe_rot_deg_rmse"]
    gate("ate_baseline", ate < MARGIN * base, f"{ate:.3f} vs {base:.3f} m")
    gate("ate_target", ate <= 0.1 * base, f"{ate / base:.2f}x")
    gate("rpe_rot_baseline", rot < MARGIN * rot0, f"{rot / rot0:.2f}x")
    gate("rpe_rot_target", rot <= 0.5 * rot0, f"{rot / rot0:.2f}x")


def test_replay_depth_gates(replay):
    de = replay["depth"]
    rel, base = de["per_frame"]["abs_rel"], de["baseline_constant_depth"]["per_frame"]["abs_rel"]
    gate("abs_rel_baseline", rel < MARGIN * base, f"{rel:.3f} vs {base:.3f}")
    gate("abs_rel_target", rel <= 0.5 * base, f"{rel / base:.2f}x")


def test_replay_mask_gates(replay):
    dm = replay["dynamic_mask"]
    iou, all_dyn = dm["iou_dynamic"], dm["baseline_all_dynamic"]["iou_dynamic"]
    assert 0.0 < all_dyn < 0.5  # the bag has moving objects, but not everywhere
    gate("mask_baseline", iou > all_dyn and dm["accuracy"] > 0.5, f"IoU {iou:.3f} vs all-dynamic {all_dyn:.3f}, "
                                                                    f"accuracy {dm['accuracy']:.3f}")
    gate("mask_target", iou >= 0.5, f"{iou:.3f}")


def test_replay_track_gates(replay):
    tk = replay["tracks"]
    assert tk["keypoints_matched_by_geometry"] >= 0.8 * tk["keypoints_matched"] > 0  # static ones: all evaluated
    epe, base = tk["epe_median"], tk["baseline_static_points"]["epe_median"]
    gate("track_baseline", epe < MARGIN * base, f"{epe:.1f} vs {base:.1f} px")
    gate("track_target", epe <= 0.25 * base, f"{epe / base:.2f}x")


# ------------------------------------------------------------------------------------ recorded metrics


def test_shipped_weights_match_their_recorded_metrics():
    """tiny-metrics.json names the weights it was measured on (sha256) and a small held-out evaluation that is
    recomputed here with the current code: same weights, same data, same evaluation -> the same figures."""
    from vggt4d_ros.model import load_checkpoint
    from vggt4d_ros.model.configs import build_model_from_config
    from vggt4d_ros.training.evaluate import HELDOUT, evaluate_model
    from vggt4d_ros.training.data import WindowConfig

    rec = json.loads(METRICS.read_text())
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == rec["weights_sha256"], \
        "tiny.safetensors changed without tiny-metrics.json"
    reg = rec["regression"]
    torch.set_num_threads(2)
    model = build_model_from_config(rec.get("model_config", "tiny"))
    load_checkpoint(model, str(WEIGHTS))
    cfg = HELDOUT if reg["family"] == "heldout" else WindowConfig()
    got = evaluate_model(model, cfg, seeds=reg["seeds"], windows_per_seed=reg["windows_per_seed"],
                         stride=reg["stride"])
    for k, v in reg["metrics"].items():
        assert got[k] == pytest.approx(v, rel=1e-3, abs=1e-3), k
    # and the recorded full evaluation beats its baselines where the model card says it does
    full = rec["heldout"]
    assert full["model/abs_rel_frame"] < full["mean_depth/abs_rel_frame"]
    assert full["model/ate_m"] < full["constant_pose/ate_m"]


# ------------------------------------------------------------------------------------ through the Predictor


@pytest.fixture(scope="module")
def window():
    """A held-out legacy window (seed 5): 2 cameras x 4 steps at stride 2, with its ground truth, predicted."""
    from vggt4d_ros.inference.predictor import Predictor

    seq = SynthSequence(SynthConfig(seed=5, num_cameras=2, width=252, height=140, duration_s=1.0, texture_px=128,
                                    num_moving_objects=4, num_tracks=64))
    frames = [seq.frame(2 * t) for t in range(4)]
    cams = [f[c] for f in frames for c in seq.camera_names]
    torch.set_num_threads(2)
    pred = Predictor.from_config("tiny", checkpoint=str(WEIGHTS), target_width=252)
    return SimpleNamespace(seq=seq, cams=cams, predictor=pred,
                           out=pred.predict([c.rgb for c in cams], num_views=2, time_index=[0, 2, 4, 6]))


def test_published_mask_is_the_mask_the_training_evaluation_measures(window):
    """The node publishes ``FramePrediction.dynamic_mask``; the training evaluation's ``model/mask_iou`` measures
    the mask of the model's forward the config selects (for tiny: PAGE-4D's predictor, upsampled bilinearly;
    the dense head's ``sigmoid(dynamic_mask_logits)`` otherwise). Same numbers, pixel for pixel (252x140 input =
    the model grid: no resampling in between). The v1 pipeline published the dense head, the worse of the two."""
    out = window.out
    assert out.dynamic_mask_source == "page4d"
    images = torch.stack([torch.from_numpy(c.rgb).permute(2, 0, 1).float() / 255.0 for c in window.cams])
    with torch.no_grad():
        raw = window.predictor.model(images[None], num_views=2, reference_index=0)
    want = torch.nn.functional.interpolate(raw["page_mask"][0][:, None], size=(140, 252), mode="bilinear",
                                           align_corners=False)[:, 0].numpy()
    got = np.stack([f.dynamic_mask for f in out.frames])
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5


def test_published_mask_separates_moving_pixels(window):
    gt = np.stack([c.dynamic_mask for c in window.cams])
    prob = np.stack([f.dynamic_mask for f in window.out.frames])
    assert 0.01 < gt.mean() < 0.5
    m = prob > 0.5
    iou = (m & gt).sum() / (m | gt).sum()
    figure = f"IoU {iou:.3f} vs all-dynamic {gt.mean():.3f}, p(moving) {prob[gt].mean():.2f} vs {prob[~gt].mean():.2f}"
    gate("predictor_mask_baseline", iou > gt.mean() and prob[gt].mean() > prob[~gt].mean() + 0.1, figure)


def test_geometric_keypoints_follow_static_points_with_predicted_depth(window):
    """KeypointTracker ("correct") places static keypoints with the model's own depth at the query and its
    predicted poses; against ground truth (the static surface point under each query) they must beat
    keypoints that stay where they were queried."""
    from vggt4d_ros.perception.keypoints import KeypointTracker

    win = SimpleNamespace(num_views=2, num_steps=4, step_ids=[0, 2, 4, 6],
                          frames=[{"rgb": c.rgb, "stamp_ns": c.stamp_ns, "camera": c.name} for c in window.cams])
    kt = KeypointTracker(max_count=64, geometry_check="correct")
    q = kt.queries(win, ("first",))
    assert q is not None and len(q) >= 24
    kps = kt.update(window.out, win, ("first",), [0, 1, 2, 3])
    geo = [FrameGeometry(c.depth, c.T_world_cam, c.K, c.dynamic_mask) for c in window.cams]
    X = geo[0].unproject(q)
    static = np.isfinite(X).all(-1)
    errs, base = [], []
    for s in (2, 4, 6):  # camera 0 at the later steps (the queries are camera 0's at step 0)
        uv_gt, vis = geo[s].project(X)
        ks = kps[s]
        pos = {int(i): p for i, p in zip(ks.ids, ks.uv)}
        for n, i in enumerate(kt._query_ids):
            if static[n] and vis[n] and int(i) in pos:
                errs.append(np.linalg.norm(pos[int(i)] - uv_gt[n]))
                base.append(np.linalg.norm(q[n] - uv_gt[n]))
    assert len(errs) > 20
    e, b = float(np.median(errs)), float(np.median(base))
    gate("predictor_track_baseline", e < MARGIN * b, f"{e:.1f} vs {b:.1f} px")
