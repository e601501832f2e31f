"""bench/scale_map_eval.py helpers against known answers (no model run: that is the benchmark's job)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vggt4d_ros.perception.mapping import VoxelMap
from vggt4d_ros.window.chain import metric_scale_from_rig

_PATH = Path(__file__).resolve().parents[1] / "bench" / "scale_map_eval.py"
_spec = importlib.util.spec_from_file_location("scale_map_eval", _PATH)
ev = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ev)


def _pose(t, yaw_deg=0.0):
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


def test_scale_error_and_depth_ratio():
    assert ev.scale_error(1.1, 1.0) == pytest.approx(0.1)
    assert ev.scale_error(0.15, 0.3) == pytest.approx(0.5)
    assert np.isnan(ev.scale_error(1.0, 0.0)) and np.isnan(ev.scale_error(float("nan"), 1.0))
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (20, 30)).astype(np.float32)
    pred = 0.25 * gt
    pred[0, :5] = np.nan  # invalid pixels are ignored
    pred[1, :5] = 1000.0  # a few outliers do not move the median
    assert ev.depth_scale_ratio(pred, gt) == pytest.approx(0.25, rel=1e-6)
    assert ev.scale_error(ev.depth_scale_ratio(pred, gt), 1.0) == pytest.approx(0.75, rel=1e-6)
    assert np.isnan(ev.depth_scale_ratio(np.full((2, 2), np.nan), np.ones((2, 2))))


def test_baseline_ratio_and_rig_scale_agree():
    # A rig of two cameras 0.3 m apart; the model predicts it at 0.1 units -> 3 metres per unit.
    T_a, T_b = _pose([1.0, 2.0, 0.0], 30), _pose([1.0, 2.0, 0.0], 30) @ _pose([0.0, -0.3, 0.0])
    assert ev.baseline_ratio(T_a, T_b, 0.3) == pytest.approx(1.0)
    assert ev.baseline_ratio(T_a, T_b, 0.15) == pytest.approx(2.0)
    rig = np.stack([np.eye(4), _pose([0.0, -0.3, 0.0])])
    pred_rig = np.stack([np.eye(4), _pose([0.0, -0.1, 0.0])])
    cam_from_world = np.linalg.inv(np.stack([_pose([0.2 * t, 0, 0]) @ pred_rig[v] for t in range(3) for v in range(2)]))
    s = metric_scale_from_rig(cam_from_world, 2, rig)
    assert s == pytest.approx(3.0) and ev.scale_error(s, 3.0) == pytest.approx(0.0, abs=1e-12)


def test_point_error_is_zero_for_scaled_truth_and_sees_a_wrong_focal():
    from vggt4d_ros.perception.pipeline import unproject_depth

    K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
    depth = np.full((48, 64), 2.0, np.float32)
    pts = unproject_depth(depth * 0.5, K)  # right shape, other scale
    assert ev.point_error(pts, depth, K) == pytest.approx(0.0, abs=1e-6)
    K_wrong = K.copy()
    K_wrong[0, 0] = K_wrong[1, 1] = 50.0  # twice the field of view: lateral offsets doubled
    err = ev.point_error(unproject_depth(depth, K_wrong), depth, K)
    x = (np.arange(64) - 31.5) / 100.0
    y = (np.arange(48) - 23.5) / 100.0
    expect = np.mean(np.hypot(x[None, :], y[:, None]))  # |p - g| / z = lateral offset / z
    assert err == pytest.approx(expect, rel=1e-5)


def test_id_survival_and_lifetimes():
    sets = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 5, 6], [7]]
    # lag 1: 3 of 4, then 2 of 4, then 0 of 3 -> 5 / 11
    assert ev.id_survival(sets, 1) == pytest.approx(5 / 11)
    # lag 2: {1,2,3,4} -> {1,5,6}: 1 of 4; {1,2,3,5} -> {7}: 0 of 4
    assert ev.id_survival(sets, 2) == pytest.approx(1 / 8)
    assert np.isnan(ev.id_survival([[1]], 1))
    lt = dict(zip([1, 2, 3, 4, 5, 6, 7], ev.track_lifetimes(sets)))
    assert lt == {1: 3, 2: 2, 3: 2, 4: 1, 5: 2, 6: 1, 7: 1}


def test_dynamic_voxel_share_counts_majorities():
    m = VoxelMap(voxel_size=1.0)
    static = np.array([[0.5, 0.5, 0.5]] * 3 + [[1.5, 0.5, 0.5]])
    moving = np.array([[1.5, 0.5, 0.5]] * 2 + [[2.5, 0.5, 0.5]])
    m.insert(np.concatenate([static, moving]), None, 1)
    ks, _ = m.voxel_keys(static)
    kd, _ = m.voxel_keys(moving)
    d = ev.dynamic_voxel_share(m, kd, ks)
    # voxel 0: 3 static; voxel 1: 1 static vs 2 moving; voxel 2: 1 moving -> 2 of 3 voxels mostly moving.
    assert d == {"voxels": 3, "dynamic_voxel_share": pytest.approx(2 / 3), "dynamic_point_share": pytest.approx(3 / 7)}
    assert ev.dynamic_voxel_share(m, np.zeros(0, np.int64), ks)["dynamic_voxel_share"] == 0.0


def test_write_doc_replaces_only_the_table(tmp_path):
    p = tmp_path / "doc.md"
    p.write_text("# Title\n\nprose before\n")
    ev.write_doc(p, "| a |\n|---|")
    ev.write_doc(p, "| b |\n|---|")
    text = p.read_text()
    assert text.startswith("# Title\n\nprose before\n") and "| b |" in text and "| a |" not in text
    assert text.count(ev.TABLE_BEGIN) == 1 and text.count(ev.TABLE_END) == 1
