"""Similarity (Sim(3)) and rigid (SE(3)) alignment of 3D point sets.

Convention everywhere in this module: a similarity ``(s, R, t)`` maps ``x`` to ``s * R @ x + t``;
``umeyama(src, dst)`` returns the transform with ``dst ~ s R src + t``.

All functions accept torch tensors or numpy arrays and return the same kind they were given
(numpy in -> numpy out). The 3x3 algebra runs in float64 and the results are cast back to the input
dtype (float32 stays float32), so tiny point sets stay accurate on any device.

Written here rather than taken from a library because no well-kept library offers a *batched,
weighted* Umeyama in torch with explicit degeneracy reporting (``evo`` and ``open3d`` are unweighted
and numpy/C++ only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "DegenerateFitError",
    "RobustFit",
    "umeyama",
    "umeyama_checked",
    "robust_umeyama",
    "sim3_to_matrix",
    "matrix_to_sim3",
    "compose_sim3",
    "invert_sim3",
    "apply_sim3",
    "rotation_angle",
]


class DegenerateFitError(ValueError):
    """Raised when a point set cannot determine a transform (too few points, collinear, zero weights)."""


# --------------------------------------------------------------------------------------------------
# numpy / torch plumbing
# --------------------------------------------------------------------------------------------------


def _as_tensor(x: Any, dtype: Optional[torch.dtype] = None, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        t = torch.as_tensor(np.asarray(x))
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    return t


def _out(x: torch.Tensor, as_numpy: bool, dtype: torch.dtype) -> ArrayLike:
    x = x.to(dtype)
    return x.detach().cpu().numpy() if as_numpy else x


def _float_dtype(x: Any) -> torch.dtype:
    if isinstance(x, torch.Tensor):
        return x.dtype if x.is_floating_point() else torch.float32
    a = np.asarray(x)
    return torch.float64 if a.dtype == np.float64 else torch.float32


# --------------------------------------------------------------------------------------------------
# Closed-form weighted Umeyama
# --------------------------------------------------------------------------------------------------


def _umeyama_core(
    src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor, with_scale: bool, eps: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 batched weighted Umeyama.

    Args:
        src, dst: (B, N, 3) float64.
        w: (B, N) float64, non-negative.
    Returns:
        s (B,), R (B,3,3), t (B,3), valid (B,) bool. Invalid entries are the identity.
    """
    B, N, _ = src.shape
    w = w.clamp_min(0.0)
    wsum = w.sum(-1)  # (B,)
    n_pos = (w > 0).sum(-1)
    wn = w / wsum.clamp_min(1e-300)[:, None]
    mu_s = (wn[..., None] * src).sum(1)  # (B,3)
    mu_d = (wn[..., None] * dst).sum(1)
    xs = src - mu_s[:, None]
    xd = dst - mu_d[:, None]
    var_s = (wn * (xs * xs).sum(-1)).sum(-1)  # (B,)
    cov = torch.einsum("bn,bni,bnj->bij", wn, xd, xs)  # (B,3,3) dst x src^T
    U, D, Vh = torch.linalg.svd(cov)
    det = torch.linalg.det(U) * torch.linalg.det(Vh)
    sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))
    S = torch.ones(B, 3, dtype=src.dtype, device=src.device)
    S[:, 2] = sign
    R = U @ torch.diag_embed(S) @ Vh
    if with_scale:
        s = (D * S).sum(-1) / var_s.clamp_min(1e-300)
    else:
        s = torch.ones(B, dtype=src.dtype, device=src.device)
    t = mu_d - s[:, None] * (R @ mu_s[..., None])[..., 0]

    # Degeneracy: fewer than 3 weighted points, no spread, or (near) collinear source points.
    # Collinearity is judged on the source scatter matrix (the rotation about the line is free).
    scat = torch.einsum("bn,bni,bnj->bij", wn, xs, xs)
    ev = torch.linalg.eigvalsh(scat)  # ascending
    spread = ev[:, 2]
    valid = (n_pos >= 3) & (wsum > 0) & (spread > eps) & (ev[:, 1] > eps * spread.clamp_min(eps))
    valid &= torch.isfinite(s) & torch.isfinite(R).all(-1).all(-1) & torch.isfinite(t).all(-1)
    if with_scale:
        valid &= s > 0
    eye = torch.eye(3, dtype=src.dtype, device=src.device).expand(B, 3, 3)
    R = torch.where(valid[:, None, None], R, eye)
    s = torch.where(valid, s, torch.ones_like(s))
    t = torch.where(valid[:, None], t, torch.zeros_like(t))
    return s, R, t, valid


def umeyama_checked(
    src: ArrayLike,
    dst: ArrayLike,
    weights: Optional[ArrayLike] = None,
    with_scale: bool = True,
    eps: float = 1e-10,
) -> Tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]:
    """Batched weighted Umeyama that never raises: degenerate problems get the identity and a flag.

    Args:
        src, dst: (..., N, 3) corresponding points.
        weights: (..., N) non-negative weights, or None for uniform.
        with_scale: fit Sim(3) (True) or SE(3) with s = 1 (False).
        eps: relative threshold for the collinearity / zero-spread test.
    Returns:
        s (...,), R (..., 3, 3), t (..., 3), valid (...,) bool, with ``dst ~ s R src + t``.
    """
    as_numpy = not isinstance(src, torch.Tensor)
    out_dtype = _float_dtype(src)
    S = _as_tensor(src, torch.float64)
    D = _as_tensor(dst, torch.float64, S.device)
    if S.shape != D.shape or S.shape[-1] != 3 or S.dim() < 2:
        raise ValueError(f"src and dst must both be (..., N, 3); got {tuple(S.shape)} and {tuple(D.shape)}")
    batch = S.shape[:-2]
    N = S.shape[-2]
    if weights is None:
        W = torch.ones(batch + (N,), dtype=torch.float64, device=S.device)
    else:
        W = _as_tensor(weights, torch.float64, S.device).expand(batch + (N,))
    W = torch.nan_to_num(W, nan=0.0)
    # Non-finite points carry no weight.
    finite = torch.isfinite(S).all(-1) & torch.isfinite(D).all(-1)
    W = torch.where(finite, W, torch.zeros_like(W))
    S = torch.where(finite[..., None], S, torch.zeros_like(S))
    D = torch.where(finite[..., None], D, torch.zeros_like(D))
    s, R, t, valid = _umeyama_core(
        S.reshape(-1, N, 3), D.reshape(-1, N, 3), W.reshape(-1, N), with_scale, eps
    )
    s = s.reshape(batch)
    R = R.reshape(batch + (3, 3))
    t = t.reshape(batch + (3,))
    valid = valid.reshape(batch)
    v_out = valid.cpu().numpy() if as_numpy else valid
    return _out(s, as_numpy, out_dtype), _out(R, as_numpy, out_dtype), _out(t, as_numpy, out_dtype), v_out


def umeyama(
    src: ArrayLike,
    dst: ArrayLike,
    weights: Optional[ArrayLike] = None,
    with_scale: bool = True,
    eps: float = 1e-10,
) -> Tuple[ArrayLike, ArrayLike, ArrayLike]:
    """Weighted least-squares Sim(3) / SE(3) fit (Umeyama 1991), batched.

    Args:
        src, dst: (..., N, 3) corresponding points (torch or numpy; numpy in -> numpy out).
        weights: (..., N) non-negative weights or None.
        with_scale: Sim(3) when True, SE(3) (s = 1) when False.
    Returns:
        s (...,), R (..., 3, 3), t (..., 3) with ``dst ~ s R src + t``.
    Raises:
        DegenerateFitError: when any problem in the batch has fewer than 3 weighted points, zero
        total weight, or collinear source points. Use :func:`umeyama_checked` for an identity + flag.
    """
    s, R, t, valid = umeyama_checked(src, dst, weights, with_scale, eps)
    ok = bool(np.all(valid)) if isinstance(valid, np.ndarray) else bool(valid.all())
    if not ok:
        raise DegenerateFitError(
            "degenerate alignment: need >= 3 points with positive weight that are not collinear"
        )
    return s, R, t


# --------------------------------------------------------------------------------------------------
# Robust fit
# --------------------------------------------------------------------------------------------------


@dataclass
class RobustFit:
    """Result of :func:`robust_umeyama` (arrays of the input kind; ``inliers``/``residuals`` are (N,))."""

    s: ArrayLike
    R: ArrayLike
    t: ArrayLike
    inliers: ArrayLike  # (N,) bool
    residuals: ArrayLike  # (N,) distance |dst - (s R src + t)| in dst units
    num_inliers: int
    inlier_ratio: float  # weighted fraction of the (positive-weight) points that are inliers
    rms_inlier: float  # weighted RMS residual over inliers (dst units)
    median_residual: float
    threshold: float  # inlier distance threshold used (dst units)
    valid: bool
    iterations: int


def _weighted_quantile(x: torch.Tensor, w: torch.Tensor, q: float) -> torch.Tensor:
    """Weighted quantile along the last dim. x, w: (K, N) -> (K,)."""
    order = torch.argsort(x, dim=-1)
    xs = torch.gather(x, -1, order)
    ws = torch.gather(w, -1, order)
    cw = torch.cumsum(ws, -1)
    target = q * cw[..., -1:]
    idx = torch.searchsorted(cw.contiguous(), target.contiguous()).clamp_max(x.shape[-1] - 1)
    return torch.gather(xs, -1, idx)[..., 0]


def _robust_weights(r: torch.Tensor, c: float, loss: str) -> torch.Tensor:
    if loss == "huber":
        return torch.where(r <= c, torch.ones_like(r), c / r.clamp_min(1e-300))
    if loss == "cauchy":
        return 1.0 / (1.0 + (r / c) ** 2)
    raise ValueError(f"unknown loss {loss!r} (huber or cauchy)")


def robust_umeyama(
    src: ArrayLike,
    dst: ArrayLike,
    weights: Optional[ArrayLike] = None,
    with_scale: bool = True,
    method: str = "ransac",
    loss: str = "cauchy",
    threshold: Optional[float] = None,
    ransac_iters: int = 256,
    irls_iters: int = 10,
    max_score_points: int = 4096,
    min_inliers: int = 3,
    seed: int = 0,
) -> RobustFit:
    """Outlier-robust Sim(3) / SE(3) fit for point sets with dynamic points or bad matches.

    ``method="ransac"``: deterministic (seeded) sampling of minimal 3-point sets, solved as one
    batched Umeyama; hypotheses are scored by the number of weighted points within ``threshold``
    (MSAC-style truncated cost) or, when ``threshold`` is None, by the weighted median residual
    (LMedS, no threshold needed, tolerates < 50% outliers). The winner is refined by IRLS.
    ``method="irls"``: IRLS only, starting from the weighted least-squares fit (fine for mild
    outliers, biased with many).

    Args:
        src, dst: (N, 3) corresponding points (torch or numpy).
        weights: (N,) prior weights (confidence), 0 to exclude a point.
        with_scale: Sim(3) or SE(3).
        loss: IRLS weight function, "huber" or "cauchy".
        threshold: inlier distance in dst units; None -> 2.5 robust sigmas (from the median residual).
        ransac_iters: number of minimal-set hypotheses.
        irls_iters: refinement iterations.
        max_score_points: hypotheses are scored on at most this many points (fixed subsample).
        min_inliers: below this the fit is reported invalid.
        seed: RNG seed for sampling (results are deterministic).
    Returns:
        RobustFit with the transform, inlier mask, residuals and statistics.
    """
    as_numpy = not isinstance(src, torch.Tensor)
    out_dtype = _float_dtype(src)
    S = _as_tensor(src, torch.float64)
    D = _as_tensor(dst, torch.float64, S.device)
    if S.dim() != 2 or S.shape[-1] != 3 or S.shape != D.shape:
        raise ValueError(f"robust_umeyama expects (N,3) src and dst; got {tuple(S.shape)}, {tuple(D.shape)}")
    N = S.shape[0]
    dev = S.device
    W0 = torch.ones(N, dtype=torch.float64, device=dev) if weights is None else _as_tensor(weights, torch.float64, dev).reshape(N)
    finite = torch.isfinite(S).all(-1) & torch.isfinite(D).all(-1) & torch.isfinite(W0)
    W0 = torch.where(finite, W0.clamp_min(0.0), torch.zeros_like(W0))
    S = torch.where(finite[:, None], S, torch.zeros_like(S))
    D = torch.where(finite[:, None], D, torch.zeros_like(D))
    active = W0 > 0
    n_active = int(active.sum())

    def fit(w: torch.Tensor):
        s, R, t, ok = _umeyama_core(S[None], D[None], w[None], with_scale, 1e-10)
        return s[0], R[0], t[0], bool(ok[0])

    def resid(s, R, t):
        return torch.linalg.norm(D - (s * (S @ R.T) + t), dim=-1)

    def result(s, R, t, valid, thr, iters) -> RobustFit:
        r = resid(s, R, t)
        inl = (r <= thr) & active
        wi = W0 * inl
        n_in = int(inl.sum())
        ratio = float(wi.sum() / W0.sum().clamp_min(1e-300)) if n_active else 0.0
        rms = float(torch.sqrt((wi * r**2).sum() / wi.sum().clamp_min(1e-300))) if n_in else float("inf")
        med = float(_weighted_quantile(r[None], W0[None], 0.5)[0]) if n_active else float("inf")
        valid = valid and n_in >= min_inliers
        return RobustFit(
            s=_out(s, as_numpy, out_dtype),
            R=_out(R, as_numpy, out_dtype),
            t=_out(t, as_numpy, out_dtype),
            inliers=inl.cpu().numpy() if as_numpy else inl,
            residuals=_out(r, as_numpy, out_dtype),
            num_inliers=n_in,
            inlier_ratio=ratio,
            rms_inlier=rms,
            median_residual=med,
            threshold=float(thr),
            valid=bool(valid),
            iterations=iters,
        )

    eye = torch.eye(3, dtype=torch.float64, device=dev)
    one = torch.ones((), dtype=torch.float64, device=dev)
    zero3 = torch.zeros(3, dtype=torch.float64, device=dev)
    if n_active < 3:
        return result(one, eye, zero3, False, float(threshold or 0.0), 0)

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if method == "ransac":
        idx_active = torch.nonzero(active).flatten().cpu()
        p = (W0[active] / W0[active].sum()).cpu()
        K = int(ransac_iters)
        # Sample K triplets (without replacement inside a triplet) proportionally to weight.
        trip = torch.multinomial(p.expand(K, -1), 3, replacement=False, generator=gen)  # (K,3)
        trip = idx_active[trip].to(dev)
        hs, hR, ht, hok = _umeyama_core(S[trip], D[trip], torch.ones(K, 3, dtype=torch.float64, device=dev), with_scale, 1e-10)
        # Score on a fixed subsample.
        if n_active > max_score_points:
            sel = idx_active[torch.randperm(n_active, generator=gen)[:max_score_points]].to(dev)
        else:
            sel = idx_active.to(dev)
        Ss, Ds, Ws = S[sel], D[sel], W0[sel]
        pred = hs[:, None, None] * torch.einsum("kij,nj->kni", hR, Ss) + ht[:, None, :]
        r = torch.linalg.norm(Ds[None] - pred, dim=-1)  # (K, n)
        if threshold is not None:
            cost = (Ws[None] * torch.clamp(r, max=threshold) ** 2).sum(-1)  # MSAC
        else:
            cost = _weighted_quantile(r, Ws[None].expand_as(r), 0.5)  # LMedS
        cost = torch.where(hok, cost, torch.full_like(cost, float("inf")))
        if not torch.isfinite(cost).any():
            return result(one, eye, zero3, False, float(threshold or 0.0), 0)
        best = int(torch.argmin(cost))
        s, R, t = hs[best], hR[best], ht[best]
        if threshold is None:
            med = float(cost[best])
            n_p = 3
            sigma = 1.4826 * (1.0 + 5.0 / max(n_active - n_p, 1)) * med
            thr = 2.5 * max(sigma, 1e-12)
        else:
            thr = float(threshold)
        # Least-squares on the consensus set before IRLS.
        inl = (resid(s, R, t) <= thr) & active
        s2, R2, t2, ok2 = fit(W0 * inl)
        if ok2:
            s, R, t = s2, R2, t2
    elif method == "irls":
        s, R, t, ok = fit(W0)
        if not ok:
            return result(one, eye, zero3, False, float(threshold or 0.0), 0)
        thr = float(threshold) if threshold is not None else None
    else:
        raise ValueError(f"unknown method {method!r} (ransac or irls)")

    it = 0
    for it in range(1, irls_iters + 1):
        r = resid(s, R, t)
        if threshold is None:
            med = float(_weighted_quantile(r[None], W0[None], 0.5)[0])
            c = max(1.4826 * med, 1e-12)
            thr = 2.5 * c
        else:
            c = float(threshold) / 2.5
        w = W0 * _robust_weights(r, c, loss)
        s2, R2, t2, ok2 = fit(w)
        if not ok2:
            break
        delta = float((s2 - s).abs() + (R2 - R).abs().max() + (t2 - t).abs().max())
        s, R, t = s2, R2, t2
        if delta < 1e-12:
            break
    return result(s, R, t, True, float(thr), it)


# --------------------------------------------------------------------------------------------------
# Sim(3) helpers
# --------------------------------------------------------------------------------------------------


def sim3_to_matrix(s: ArrayLike, R: ArrayLike, t: ArrayLike) -> ArrayLike:
    """(s (...,), R (...,3,3), t (...,3)) -> (...,4,4) matrix [[s R, t], [0, 1]]."""
    as_numpy = not isinstance(R, torch.Tensor)
    dt = _float_dtype(R)
    Rt = _as_tensor(R, dt)
    st = _as_tensor(s, dt, Rt.device)
    tt = _as_tensor(t, dt, Rt.device)
    batch = Rt.shape[:-2]
    M = torch.zeros(batch + (4, 4), dtype=dt, device=Rt.device)
    M[..., :3, :3] = st[..., None, None] * Rt
    M[..., :3, 3] = tt
    M[..., 3, 3] = 1.0
    return M.cpu().numpy() if as_numpy else M


def matrix_to_sim3(M: ArrayLike) -> Tuple[ArrayLike, ArrayLike, ArrayLike]:
    """(...,4,4) similarity matrix -> (s, R, t); s = cbrt(det(A)) of the 3x3 block A."""
    as_numpy = not isinstance(M, torch.Tensor)
    dt = _float_dtype(M)
    Mt = _as_tensor(M, torch.float64)
    A = Mt[..., :3, :3]
    s = torch.linalg.det(A).clamp_min(1e-300) ** (1.0 / 3.0)
    R = A / s[..., None, None]
    t = Mt[..., :3, 3]
    return _out(s, as_numpy, dt), _out(R, as_numpy, dt), _out(t, as_numpy, dt)


def compose_sim3(a: Tuple, b: Tuple) -> Tuple:
    """a o b for similarities (s, R, t): x -> a(b(x)). Returns (s_a s_b, R_a R_b, s_a R_a t_b + t_a)."""
    sa, Ra, ta = a
    sb, Rb, tb = b
    if isinstance(Ra, torch.Tensor):
        sa = _as_tensor(sa, Ra.dtype, Ra.device)
        return sa * sb, Ra @ Rb, sa[..., None] * (Ra @ tb[..., None])[..., 0] + ta
    sa = np.asarray(sa)
    return sa * sb, Ra @ Rb, sa[..., None] * (Ra @ np.asarray(tb)[..., None])[..., 0] + ta


def invert_sim3(s: ArrayLike, R: ArrayLike, t: ArrayLike) -> Tuple:
    """Inverse similarity: (1/s, R^T, -(1/s) R^T t)."""
    if isinstance(R, torch.Tensor):
        s = _as_tensor(s, R.dtype, R.device)
        Rt = R.transpose(-1, -2)
        return 1.0 / s, Rt, -(1.0 / s)[..., None] * (Rt @ t[..., None])[..., 0]
    s = np.asarray(s)
    Rt = np.swapaxes(R, -1, -2)
    return 1.0 / s, Rt, -(1.0 / s)[..., None] * (Rt @ np.asarray(t)[..., None])[..., 0]


def apply_sim3(s: ArrayLike, R: ArrayLike, t: ArrayLike, points: ArrayLike) -> ArrayLike:
    """Apply x -> s R x + t to points (..., N, 3) (batch dims of s, R, t broadcast over N)."""
    if isinstance(points, torch.Tensor):
        s = _as_tensor(s, points.dtype, points.device)
        return s[..., None, None] * (points @ R.transpose(-1, -2)) + t[..., None, :]
    s = np.asarray(s)
    return s[..., None, None] * (np.asarray(points) @ np.swapaxes(R, -1, -2)) + np.asarray(t)[..., None, :]


def rotation_angle(R: ArrayLike) -> ArrayLike:
    """Rotation angle in radians of (...,3,3) rotation matrices (numerically safe arccos)."""
    if isinstance(R, torch.Tensor):
        tr = R.diagonal(dim1=-2, dim2=-1).sum(-1)
        return torch.arccos(((tr - 1.0) / 2.0).clamp(-1.0, 1.0))
    tr = np.trace(np.asarray(R), axis1=-2, axis2=-1)
    return np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))

