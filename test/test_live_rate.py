"""Tracking at camera rates faster than the model (issue 15): a synthetic bag played through DDS at a fixed
rate (not lock-step) into the real node, the trajectory scored against ground truth.

The model is slower than the input at these rates (windows are skipped: asserted), yet every processed window
chains to the previous one (the window keeps the last processed window's newest steps), so tracking holds
and the Sim(3) ATE stays close to the lock-step figure of the same bag (the offline replay, which processes
every window).
"""
from __future__ import annotations

import json

import pytest
import yaml

from vggt4d_ros.data.bagwriter import write_synth_bag
from vggt4d_ros.data.synth import SynthConfig, SynthSequence
from vggt4d_ros.perception.pipeline import EMBEDDED_DIR, RANDOM_INIT
from vggt4d_ros.tools.replay import main

SYNTH = dict(seed=3, num_cameras=2, width=160, height=96, rate_hz=10.0, texture_px=128, num_tracks=64,
             duration_s=4.0)
CHECKPOINT = "" if (EMBEDDED_DIR / "tiny.safetensors").is_file() else RANDOM_INIT


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    d = tmp_path_factory.mktemp("live_rate")
    write_synth_bag(SynthSequence(SynthConfig(**SYNTH)), d / "bag")
    params = {"model": {"config": "tiny", "checkpoint": CHECKPOINT, "device": "cpu", "target_width": 112},
              "cameras": ["cam0", "cam1"], "window": {"num_steps": 4, "stride": 1, "reset_on_time_jump_s": 0.0},
              "keypoints": {"max_count": 0}, "map": {"enable": False}}
    (d / "cfg.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    rc = main([str(d / "bag"), "--config", str(d / "cfg.yaml"), "--out", str(d / "lockstep"), "--quiet"])
    assert rc == 0
    return d


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("rate", [2.0, 3.0])  # 20 and 30 Hz camera rates: faster than the tiny model here
def test_live_replay_faster_than_the_model_keeps_tracking(bag, rate):
    out = bag / f"rate{rate:g}"
    rc = main([str(bag / "bag"), "--config", str(bag / "cfg.yaml"), "--out", str(out), "--quiet", "--through-ros",
               "--rate", str(rate), "--lock-step-timeout", "30"])
    assert rc == 0, (out / "node.log").read_text()[-2000:]
    lock, live = _metrics(bag / "lockstep"), _metrics(out)
    rt = live["runtime"]
    assert rt["windows_skipped"] > 0, rt  # the model was slower than the cameras (else nothing is tested)
    assert rt["windows"] >= 2 and rt["steps_out"] >= 5, rt
    ate_lock = lock["trajectory"]["sim3"]["ate_rmse"]
    ate_live = live["trajectory"]["sim3"]["ate_rmse"]
    baseline = live["trajectory"]["baseline_constant_pose"]["ate_rmse"]
    # Far better than standing still (before the fix: LOST from the second window on, odometry frozen at the
    # first window's pose, i.e. the constant-pose baseline) ...
    figures = dict(ate_live=ate_live, ate_lock=ate_lock, baseline=baseline, windows=rt["windows"],
                   steps_in=rt["steps_in"], steps_out=rt["steps_out"])
    assert ate_live < 0.6 * baseline, figures
    # ... and near lock-step: the bound grows with the steps between two processed windows (the frames of a
    # window lie that far apart): 4x the lock-step figure when the node processes every 2nd-4th step (a quiet
    # machine), more on a loaded one (measured here at load 13 on 2 cores: 1 window in 10 steps, 5-7x).
    gap = rt["steps_in"] / max(1, rt["windows"])
    assert ate_live <= ate_lock * max(4.0, gap), dict(figures, gap=gap)
    # LOST only when geometry says so: no more lost windows than in lock-step on the same bag.
    lost_live, n_live = _lost(out)
    lost_lock, n_lock = _lost(bag / "lockstep")
    assert lost_live / n_live <= lost_lock / n_lock + 0.2, (lost_live, n_live, lost_lock, n_lock)


def _lost(out):
    """(windows reported LOST, windows) from the run's recorded statuses."""
    from vggt4d_ros.bag.io import read_messages

    windows = {}
    for _t, _mt, _log, m in read_messages(out / "outputs.mcap", ["/vggt4d/status"], decode=True):
        if m.num_time_steps > 0:
            windows[int(m.window_index)] = int(m.tracking_state)
    return sum(1 for s in windows.values() if s == 2), max(1, len(windows))


@pytest.mark.parametrize("slowdown", [3, 6, 12])
def test_model_slower_than_the_cameras_emulated_offline(bag, slowdown):
    """The same situation deterministically: ``vggt4d-replay --slowdown K`` processes only every K-th window
    (what a model K times slower than the stride gets live). Tracking holds through every processed window,
    and the Sim(3) ATE stays near lock-step."""
    out = bag / f"slowdown{slowdown}"
    rc = main([str(bag / "bag"), "--config", str(bag / "cfg.yaml"), "--out", str(out), "--quiet",
               "--slowdown", str(slowdown)])
    assert rc == 0
    lock, slow = _metrics(bag / "lockstep"), _metrics(out)
    rt = slow["runtime"]
    assert rt["windows_skipped"] >= (slowdown - 1) * (rt["windows"] - 1), rt
    assert slow["run"]["slowdown"] == slowdown
    assert set(rt["tracking_states"]) == {"OK"}, rt["tracking_states"]  # chained, never LOST
    ate_lock = lock["trajectory"]["sim3"]["ate_rmse"]
    ate_slow = slow["trajectory"]["sim3"]["ate_rmse"]
    baseline = slow["trajectory"]["baseline_constant_pose"]["ate_rmse"]
    figures = dict(ate_slow=ate_slow, ate_lock=ate_lock, baseline=baseline, **rt["tracking_states"])
    # Measured on this bag with pose.refine pnp (the default for these weights): 0.028 m at K=3, 0.031 m at K=6,
    # 0.060 m at K=12, lock-step 0.031 m. With the camera head's poses it was 0.103 / 0.203 m at K=3 / 6 against
    # 0.081 m (the head predicts one step's motion whatever the frames' spacing); at K=12 before the PnP bridge
    # the newest frame kept the head's pose and windows were LOST.
    assert ate_slow < 0.6 * baseline and ate_slow <= 2.5 * ate_lock, figures
