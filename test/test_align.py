"""Umeyama Sim(3)/SE(3) fits against known ground truth."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from vggt4d_ros.geometry.align import (
    DegenerateFitError,
    apply_sim3,
    compose_sim3,
    invert_sim3,
    matrix_to_sim3,
    robust_umeyama,
    rotation_angle,
    sim3_to_matrix,
    umeyama,
    umeyama_checked,
)


def _random_sim3(rng):
    s = float(rng.uniform(0.3, 3.0))
    R = Rotation.random(random_state=rng).as_matrix()
    t = rng.normal(size=3) * 2.0
    return s, R, t


def test_exact_recovery_numpy():
    rng = np.random.default_rng(0)
    s, R, t = _random_sim3(rng)
    src = rng.normal(size=(50, 3))
    dst = s * src @ R.T + t
    s2, R2, t2 = umeyama(src, dst)
    assert isinstance(R2, np.ndarray)
    assert abs(s2 - s) < 1e-9
    assert np.abs(R2 - R).max() < 1e-9
    assert np.abs(t2 - t).max() < 1e-9


def test_batched_torch_float32_and_se3():
    rng = np.random.default_rng(1)
    B = 5
    gts = [_random_sim3(rng) for _ in range(B)]
    src = rng.normal(size=(B, 40, 3))
    dst = np.stack([g[0] * src[b] @ g[1].T + g[2] for b, g in enumerate(gts)])
    s2, R2, t2 = umeyama(torch.tensor(src, dtype=torch.float32), torch.tensor(dst, dtype=torch.float32))
    assert s2.dtype == torch.float32 and R2.shape == (B, 3, 3) and t2.shape == (B, 3)
    for b, (s, R, t) in enumerate(gts):
        assert abs(float(s2[b]) - s) < 1e-4
        assert np.abs(R2[b].numpy() - R).max() < 1e-4
        assert np.abs(t2[b].numpy() - t).max() < 1e-4
    # SE(3): a rigid transform is recovered with s == 1.
    _, R, t = gts[0]
    s3, R3, t3 = umeyama(src[0], src[0] @ R.T + t, with_scale=False)
    assert s3 == 1.0 and np.abs(R3 - R).max() < 1e-9 and np.abs(t3 - t).max() < 1e-9


def test_weights_ignore_zero_weighted_points():
    rng = np.random.default_rng(2)
    s, R, t = _random_sim3(rng)
    src = rng.normal(size=(30, 3))
    dst = s * src @ R.T + t
    dst[:10] += rng.normal(size=(10, 3)) * 5.0  # corrupted but zero weight
    w = np.ones(30)
    w[:10] = 0.0
    s2, R2, t2 = umeyama(src, dst, w)
    assert abs(s2 - s) < 1e-9 and np.abs(R2 - R).max() < 1e-9


def test_noise_within_tolerance():
    rng = np.random.default_rng(3)
    s, R, t = _random_sim3(rng)
    src = rng.normal(size=(500, 3)) * 3.0
    dst = s * src @ R.T + t + rng.normal(size=(500, 3)) * 0.01
    s2, R2, t2 = umeyama(src, dst)
    assert abs(s2 / s - 1) < 2e-3
    assert np.degrees(rotation_angle(R2 @ R.T)) < 0.1
    assert np.linalg.norm(t2 - t) < 0.01


def test_degenerate_cases():
    # Too few points.
    with pytest.raises(DegenerateFitError):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    # Collinear.
    line = np.linspace(0, 1, 10)[:, None] * np.array([1.0, 2.0, 3.0])
    with pytest.raises(DegenerateFitError):
        umeyama(line, line * 2.0)
    # Zero weights.
    rng = np.random.default_rng(4)
    p = rng.normal(size=(10, 3))
    with pytest.raises(DegenerateFitError):
        umeyama(p, p, np.zeros(10))
    # Checked variant: identity + flag, per batch element.
    src = np.stack([p, np.repeat(p[:1], 10, axis=0)])
    s, R, t, valid = umeyama_checked(src, src * 2.0)
    assert valid.tolist() == [True, False]
    assert np.allclose(R[1], np.eye(3)) and s[1] == 1.0 and np.allclose(t[1], 0)
    assert abs(s[0] - 2.0) < 1e-9
    # Planar (not collinear) points are fine.
    plane = rng.normal(size=(20, 3))
    plane[:, 2] = 0
    gs, gR, gt = _random_sim3(rng)
    s2, R2, _ = umeyama(plane, gs * plane @ gR.T + gt)
    assert np.abs(R2 - gR).max() < 1e-9


@pytest.mark.parametrize("threshold", [None, 0.05])
def test_robust_with_30_percent_outliers(threshold):
    rng = np.random.default_rng(5)
    s, R, t = _random_sim3(rng)
    N = 400
    src = rng.normal(size=(N, 3)) * 2.0
    dst = s * src @ R.T + t + rng.normal(size=(N, 3)) * 0.002
    out = rng.choice(N, size=int(0.3 * N), replace=False)
    dst[out] += rng.normal(size=(len(out), 3)) * 3.0 + 1.0  # "dynamic" points
    _, _, ls_t = umeyama(src, dst)
    assert np.linalg.norm(ls_t - t) > 0.1  # plain least squares is pulled away by the outliers
    fit = robust_umeyama(src, dst, threshold=threshold, seed=1)
    assert fit.valid
    assert abs(fit.s / s - 1) < 1e-3
    assert np.degrees(rotation_angle(fit.R @ R.T)) < 0.05
    assert np.linalg.norm(fit.t - t) < 0.01
    truth = np.ones(N, bool)
    truth[out] = False
    # Nearly every true inlier kept, nearly every outlier rejected.
    assert (fit.inliers & truth).sum() >= 0.97 * truth.sum()
    assert (fit.inliers & ~truth).sum() <= 0.02 * N
    assert fit.rms_inlier < 0.01
    assert fit.residuals.shape == (N,)


def test_robust_irls_mild_outliers_torch():
    rng = np.random.default_rng(6)
    s, R, t = _random_sim3(rng)
    src = rng.normal(size=(300, 3))
    dst = s * src @ R.T + t
    dst[:15] += 0.5
    fit = robust_umeyama(torch.tensor(src), torch.tensor(dst), method="irls", loss="cauchy")
    assert isinstance(fit.R, torch.Tensor)
    assert abs(float(fit.s) / s - 1) < 1e-3
    assert int(fit.inliers[15:].sum()) == 285 and int(fit.inliers[:15].sum()) == 0


def test_robust_too_few_points_invalid():
    fit = robust_umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    assert not fit.valid


def test_sim3_helpers_roundtrip():
    rng = np.random.default_rng(7)
    a = _random_sim3(rng)
    b = _random_sim3(rng)
    p = rng.normal(size=(7, 3))
    ab = compose_sim3(a, b)
    assert np.allclose(apply_sim3(*ab, p), apply_sim3(*a, apply_sim3(*b, p)))
    inv = invert_sim3(*a)
    assert np.allclose(apply_sim3(*inv, apply_sim3(*a, p)), p)
    M = sim3_to_matrix(*a)
    ph = np.c_[p, np.ones(len(p))]
    assert np.allclose((ph @ M.T)[:, :3], apply_sim3(*a, p))
    s, R, t = matrix_to_sim3(M)
    assert abs(s - a[0]) < 1e-12 and np.allclose(R, a[1]) and np.allclose(t, a[2])
    # torch path
    at = tuple(torch.as_tensor(x) for x in a)
    Mt = sim3_to_matrix(*at)
    assert torch.allclose(Mt, torch.as_tensor(M))
