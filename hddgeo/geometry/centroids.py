"""Centroids of point sets on the Lorentz model: Law's closed form, the exact Karcher mean, the tangent mean.

All three reduce dimension ``-2``: points ``(..., n, d+1)`` -> centroids ``(..., d+1)``, so ``C`` classes
are handled at once as a ``(C, n, d+1)`` batch.  Weights ``(..., n)`` are optional, non-negative and
need not sum to one (each set is normalised).

* :func:`law_centroid` (Law et al. 2019, paper Eq. 12 with the factor fixed for geoopt's ``k``):
  ``c = sqrt(k) zbar / sqrt(|<zbar, zbar>_L|)``.  It minimises the sum of *squared Lorentzian*
  distances, not geodesic ones, so it is an approximation of the Frechet mean.
* :func:`karcher_mean`: the minimiser of ``sum_i w_i d(x, z_i)^2``, by Newton's method on the manifold
  (Hessian-vector products and conjugate gradients, never a ``d x d`` matrix), differentiable by
  implicit differentiation at the optimum in ``O(n d)`` memory.
* :func:`tangent_centroid` (paper Eq. 18): the weighted mean of ``Log_o(z_i)`` mapped back by ``Exp_o``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from .lorentz import (
    ambient_grad_to_frame_,
    as_manifold_tensor,
    check_finite,
    check_points,
    cosh_theta_minus_one,
    expmap_,
    frame_boost_,
    frame_exp_,
    frame_logs_,
    frame_unboost_,
    inner,
    k_tensor,
    logmap0_,
    origin_like,
    polar_,
    plain,
    safe_sqrt,
    t_coth_t,
    with_time_,
)

CENTROID_METHODS = ("law", "karcher", "tangent")


# ----------------------------------------------------------------------------- input handling
def check_set(z: torch.Tensor, M, weights: Optional[torch.Tensor]):
    """Validate a point set ``(..., n, d+1)`` and its weights; return plain ``z`` and normalised weights."""
    z = check_points(z, M, "points z", min_points_dim=2)
    if z.dim() < 2:
        raise ValueError(f"a point set needs shape (..., n, d+1), got {tuple(z.shape)}; add a set dimension with z.unsqueeze(0)")
    if z.shape[-2] == 0:
        raise ValueError("empty point set (n = 0): a centroid needs at least one point per set")
    return z, normalised_weights(weights, z)


def normalised_weights(weights: Optional[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """Weights broadcast to ``z.shape[:-1]`` and normalised to sum to one over each set."""
    set_shape = z.shape[:-1]
    if weights is None:
        n = z.shape[-2]
        return torch.full(set_shape, 1.0 / n, dtype=z.dtype, device=z.device)
    check_finite(weights, "weights")
    weights = plain(weights).to(dtype=z.dtype, device=z.device)
    try:
        weights = weights.expand(set_shape) if weights.shape != set_shape else weights
    except RuntimeError:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not match the point set {tuple(set_shape)} (one weight per point)"
        ) from None
    if bool((weights < 0).any()):
        raise ValueError("weights must be non-negative (found a negative weight)")
    total = weights.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("weights of some set are all zero; give every set at least one positive weight")
    return weights / total


# ----------------------------------------------------------------------------- Law and tangent
def law_(z: torch.Tensor, w: torch.Tensor, k) -> torch.Tensor:
    """Law's centroid ``sqrt(k) zbar / sqrt(-<zbar, zbar>_L)``, accurate at any radius.

    ``-<zbar, zbar>_L`` is a difference of numbers of size ``zbar_0^2``; its rounding error is about
    ``eps zbar_0^2``, which far from the origin swamps the value (in float32 a point at radius 23
    gives 0 and an infinite centroid; in float64 radius 10 leaves ~8 digits).  Sets where that bound
    is not negligible are handled by :func:`_law_in_frame` instead.
    """
    zbar = (w.unsqueeze(-1) * z).sum(-2)
    q = -inner(zbar, zbar, keepdim=True)
    lost = 8 * torch.finfo(z.dtype).eps * zbar[..., :1] ** 2 > 1e-9 * q.clamp_min(0)
    c = torch.sqrt(k) * zbar / safe_sqrt(q).clamp_min(torch.finfo(z.dtype).tiny)
    if bool(lost.any()):
        c = torch.where(lost, _law_in_frame(z, w, k), c)
    return c


def _law_in_frame(z: torch.Tensor, w: torch.Tensor, k) -> torch.Tensor:
    """Law's centroid computed in the frame of a reference point near the set.

    The centroid commutes with isometries, so the points are boosted to the frame of ``ref`` (the
    point whose spatial part is the weighted mean of theirs, held constant), averaged there, where
    nothing cancels, and the result is boosted back.
    """
    sk = torch.sqrt(k)
    zs = z[..., 1:]
    ref = (w.unsqueeze(-1) * zs).sum(-2).detach().unsqueeze(-2)  # (..., 1, d)
    boosted, h = frame_boost_(ref, zs, sk)
    time = 1 + (w.unsqueeze(-1) * h).sum(-2)  # (..., 1): time part of the boosted mean
    space = (w.unsqueeze(-1) * boosted).sum(-2)  # (..., d)
    snorm = space.norm(dim=-1, keepdim=True)
    scale = torch.sqrt((time - snorm) * (time + snorm)).clamp_min(torch.finfo(z.dtype).tiny)
    return with_time_(frame_unboost_(ref.squeeze(-2), time / scale, space / scale, sk), k)


def tangent_(z: torch.Tensor, w: torch.Tensor, k) -> torch.Tensor:
    mean_log = (w.unsqueeze(-1) * logmap0_(z, k)).sum(-2)
    return expmap_(origin_like(mean_log, k), mean_log, k)


def law_centroid(z: torch.Tensor, M, weights: Optional[torch.Tensor] = None):
    """Law et al.'s closed-form centroid, on the manifold (``<c, c>_L = -k``)."""
    z, w = check_set(z, M, weights)
    return as_manifold_tensor(law_(z, w, k_tensor(M, z)), M)


def tangent_centroid(z: torch.Tensor, M, weights: Optional[torch.Tensor] = None):
    """Paper Eq. 18: ``Exp_o(sum_i w_i Log_o(z_i))`` with normalised weights.

    ``Log_o(z_i) = w(r_i) u_i`` already carries the hierarchical weight of Eq. 17; the explicit
    ``weights`` are on top of it.  Eq. 18 prints a plain sum; we take the normalised sum so that the
    estimate does not grow with the number of points.
    """
    z, w = check_set(z, M, weights)
    return as_manifold_tensor(tangent_(z, w, k_tensor(M, z)), M)


# ----------------------------------------------------------------------------- Karcher mean
@dataclass
class KarcherInfo:
    """Convergence report of :func:`karcher_mean` (tensors have the batch shape of the centroids)."""

    iterations: int
    grad_norm: torch.Tensor
    converged: torch.Tensor
    tol: float


def default_tol(dtype: torch.dtype, k: float) -> float:
    """Stopping threshold on ``|sum_i w_i Log_x(z_i)|``, in distance units (scales with ``sqrt(k)``)."""
    return (1e-10 if dtype == torch.float64 else 1e-4) * math.sqrt(k)


class _Hessian:
    """Riemannian gradient and Hessian of ``F(x)/2 = sum_i w_i d(x, z_i)^2 / 2`` in the frame of ``x``.

    For one point, the Hessian of ``d^2/2`` at distance ``d = sqrt(k) theta`` has eigenvalue 1 along the
    geodesic and ``theta coth(theta)`` across it, so with ``l_i = Log_x(z_i)`` (frame coordinates):
    ``H v = alpha v + sum_i beta_i (l_i . v) l_i``, ``alpha = sum_i w_i theta_i coth(theta_i)``,
    ``beta_i = w_i (1 - theta_i coth theta_i) / (k theta_i^2)``.  All eigenvalues lie in ``[1, alpha]``
    and the matrix is never formed.
    """

    def __init__(self, xs, zs, w, sk, zpolar=None):
        self.logs, theta = frame_logs_(xs.unsqueeze(-2), zs, sk, zpolar)  # (B, n, d), (B, n)
        self.grad = (w.unsqueeze(-1) * self.logs).sum(-2)  # minus the Riemannian gradient of F/2
        self.grad_norm = self.grad.norm(dim=-1)
        c = t_coth_t(theta)
        self.alpha = (w * c).sum(-1, keepdim=True)  # (B, 1)
        small = theta < 1e-3
        ts = torch.where(small, torch.ones_like(theta), theta)
        ratio = torch.where(small, -1.0 / 3 + theta * theta / 45, (1 - c) / (ts * ts))
        self.beta = (w * ratio).unsqueeze(-1) / (sk * sk)  # (B, n, 1)
        self.objective = sk * sk * (w * theta * theta).sum(-1)  # sum_i w_i d_i^2

    def __call__(self, v):
        s = torch.bmm(self.logs, v.unsqueeze(-1))  # (B, n, 1)
        return self.alpha * v + torch.bmm(self.logs.transpose(1, 2), self.beta * s).squeeze(-1)


def _conjugate_gradient(hvp, b, rtol, max_iter):
    """Batched conjugate gradients for ``H s = b`` with ``H`` symmetric positive definite."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(-1, keepdim=True)
    target = (rtol * rtol) * rs
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(max_iter):
        if bool((rs <= target).all()):
            break
        hp = hvp(p)
        alpha = rs / (p * hp).sum(-1, keepdim=True).clamp_min(tiny)
        x = x + alpha * p
        r = r - alpha * hp
        rs_new = (r * r).sum(-1, keepdim=True)
        p = r + (rs_new / rs.clamp_min(tiny)) * p
        rs = rs_new
    return x


def _frechet_value(xs, zs, w, sk, zpolar=None):
    theta = 2 * torch.asinh(safe_sqrt(cosh_theta_minus_one(xs.unsqueeze(-2), zs, sk, zpolar) / 2))
    return sk * sk * (w * theta * theta).sum(-1)


def _karcher_newton(zs, w, sk, tol, max_iter, x0s):
    """Riemannian Newton with backtracking on spatial parts ``(B, n, d)``, started at ``x0s``; no autograd."""
    xs = x0s
    zpolar = polar_(zs, sk)  # radii and directions of the points, reused by every evaluation
    slack = 64 * torch.finfo(zs.dtype).eps
    iterations = 0
    for iterations in range(max_iter + 1):
        hess = _Hessian(xs, zs, w, sk, zpolar)
        gnorm = hess.grad_norm
        active = gnorm > tol
        if iterations == max_iter or not bool(active.any()):
            break
        # inexact Newton: a loose CG tolerance far from the optimum, a tight one near it
        rtol = max(1e-14, 0.1 * min(0.1, float(gnorm.max())) ** 0.5)
        step = _conjugate_gradient(hess, hess.grad, rtol=rtol, max_iter=200)
        f0 = hess.objective
        t = torch.ones_like(f0)
        accepted = ~active
        new = xs
        for _ in range(40):
            cand = frame_exp_(xs, t.unsqueeze(-1) * step, sk)
            ok = (_frechet_value(cand, zs, w, sk, zpolar) <= f0 + slack * f0) & ~accepted
            new = torch.where(ok.unsqueeze(-1), cand, new)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t / 2)
        if not bool((accepted & active).any()):  # no descent left at working precision
            break
        xs = new
    return xs, iterations, gnorm


class _KarcherImplicit(torch.autograd.Function):
    """Forward: Newton solve.  Backward: implicit function theorem at ``G = sum_i w_i Log_x(z_i) = 0``.

    With ``H = -dG/dx`` (the Hessian of ``F/2``), a variation of the inputs moves the mean by
    ``dx = H^{-1} dG``.  For an upstream ambient gradient, ``gamma`` is its Riemannian form in the frame
    of ``x``; the input gradients are those of ``lambda . G(x*; z, w)`` with ``x*`` held fixed and
    ``lambda = H^{-1} gamma``: one CG solve and one pass of logmaps, ``O(n d)`` memory.
    """

    @staticmethod
    def forward(ctx, z, w_raw, k, tol, max_iter, info_box):
        sk = torch.sqrt(k)
        w = w_raw / w_raw.sum(-1, keepdim=True)
        x0s = law_(z, w, k)[..., 1:]
        xs, iterations, gnorm = _karcher_newton(z[..., 1:], w, sk, tol, max_iter, x0s)
        info_box.append((iterations, gnorm))
        ctx.save_for_backward(z, w_raw, xs, k)
        return with_time_(xs, k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x):
        z, w_raw, xs, k = ctx.saved_tensors
        sk = torch.sqrt(k)
        w = w_raw / w_raw.sum(-1, keepdim=True)
        gamma = ambient_grad_to_frame_(xs, grad_x, sk)
        hess = _Hessian(xs, z[..., 1:], w, sk)
        lam = _conjugate_gradient(hess, gamma, rtol=1e-13 if z.dtype == torch.float64 else 1e-6, max_iter=500)
        need_z, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.enable_grad():
            zz = z.detach().requires_grad_(need_z)
            ww = w_raw.detach().requires_grad_(need_w)
            logs, _ = frame_logs_(xs.unsqueeze(-2), zz[..., 1:], sk)
            g = ((ww / ww.sum(-1, keepdim=True)).unsqueeze(-1) * logs).sum(-2)
            inputs = [t for t, need in ((zz, need_z), (ww, need_w)) if need]
            grads = list(torch.autograd.grad((lam * g).sum(), inputs)) if inputs else []
        gz = grads.pop(0) if need_z else None
        gw = grads.pop(0) if need_w else None
        return gz, gw, None, None, None, None


def _karcher_unrolled(z, w, k, tol, max_iter):
    """Differentiable damped fixed point ``x <- Exp_x(G / alpha)``, ``alpha = sum_i w_i theta_i coth theta_i``.

    The undamped step (``alpha = 1``) overshoots in negative curvature once points are spread out;
    ``1/alpha`` is one over an upper bound of the Hessian, so every step contracts.  Autograd records
    every iteration (memory grows with the count): a reference for tests, not the default.
    """
    sk = torch.sqrt(k)
    zs = z[..., 1:]
    xs = law_(z, w, k)[..., 1:]
    iterations = 0
    for iterations in range(max_iter + 1):
        hess = _Hessian(xs, zs, w, sk)
        gnorm = hess.grad_norm
        if iterations == max_iter or not bool((gnorm > tol).any()):
            break
        xs = frame_exp_(xs, hess.grad / hess.alpha, sk)
    return with_time_(xs, k), iterations, gnorm


def karcher_(z, w_raw, k: float, tol: float, max_iter: int, backward: str = "implicit"):
    """Karcher mean of plain, validated sets ``(..., n, D)`` with raw weights ``(..., n)``.

    Returns ``(x, iterations, grad_norm)`` with ``x`` of shape ``(..., D)``; the unchecked core of
    :func:`karcher_mean`, also called by the losses.
    """
    batch_shape, (n, dim) = z.shape[:-2], z.shape[-2:]
    zf = z.reshape(-1, n, dim)
    wf = w_raw.reshape(-1, n)
    kt = torch.tensor(k, dtype=z.dtype, device=z.device)
    if backward == "implicit":
        box = []
        x = _KarcherImplicit.apply(zf, wf, kt, tol, max_iter, box)
        iterations, gnorm = box[0]
    else:
        x, iterations, gnorm = _karcher_unrolled(zf, wf / wf.sum(-1, keepdim=True), kt, tol, max_iter)
    return x.reshape(*batch_shape, dim), iterations, gnorm.reshape(batch_shape)


def karcher_mean(
    z: torch.Tensor,
    M,
    weights: Optional[torch.Tensor] = None,
    tol: Optional[float] = None,
    max_iter: Optional[int] = None,
    return_info: bool = False,
    backward: str = "implicit",
):
    """The exact weighted Frechet (Karcher) mean ``argmin_x sum_i w_i d(x, z_i)^2`` of each set.

    ``z``: ``(..., n, d+1)`` points on ``M``; returns ``(..., d+1)``.  Starts from the Law centroid and
    takes Riemannian Newton steps (matrix-free CG) with backtracking until the Riemannian gradient norm
    ``|sum_i w_i Log_x(z_i)|`` (normalised weights; distance units) is at most ``tol`` (default
    ``1e-10 sqrt(k)`` in float64, ``1e-4 sqrt(k)`` in float32) or ``max_iter`` (default 50) steps.

    Differentiable w.r.t. ``z`` and ``weights``: ``backward="implicit"`` (default) differentiates the
    optimality condition, matrix-free, ``O(n d)`` memory; ``backward="unroll"`` instead differentiates
    through a damped fixed-point iteration (slow, memory grows with iterations; for checking).
    ``k`` is treated as a constant by the implicit backward.

    With ``return_info=True`` returns ``(mean, KarcherInfo)`` holding the iteration count and the final
    gradient norm of each set.
    """
    z, w = check_set(z, M, weights)
    k_val = float(M.k.detach())
    tol = default_tol(z.dtype, k_val) if tol is None else float(tol)
    max_iter = 50 if max_iter is None else int(max_iter)
    if tol < 0 or max_iter < 0:
        raise ValueError(f"tol and max_iter must be non-negative, got tol={tol}, max_iter={max_iter}")
    if backward not in ("implicit", "unroll"):
        raise ValueError(f"backward must be 'implicit' or 'unroll', got {backward!r}")
    # keep the user's weight tensor in the graph so that gradients reach it
    w_raw = w if weights is None else plain(weights).to(dtype=z.dtype, device=z.device).expand(z.shape[:-1])
    x, iterations, gnorm = karcher_(z, w_raw, k_val, tol, max_iter, backward)
    x = as_manifold_tensor(x, M)
    if not return_info:
        return x
    gnorm = gnorm.detach()
    return x, KarcherInfo(iterations=iterations, grad_norm=gnorm, converged=gnorm <= tol, tol=tol)


def frechet_objective(x: torch.Tensor, z: torch.Tensor, M, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum_i w_i d(x, z_i)^2`` with normalised weights, for centroids ``x`` ``(..., d+1)`` of sets ``z``."""
    z, w = check_set(z, M, weights)
    x = check_points(x, M, "centroid x")
    kt = k_tensor(M, z)
    return _frechet_value(x[..., 1:], z[..., 1:], w, torch.sqrt(kt))


def centroid_(z, w, k: torch.Tensor, method: str, **karcher_kwargs):
    """Unchecked dispatcher on plain tensors (``w`` normalised, ``k`` a tensor); used by the losses."""
    if method == "law":
        return law_(z, w, k)
    if method == "tangent":
        return tangent_(z, w, k)
    if method == "karcher":
        k_val = float(k.detach())
        tol, max_iter = karcher_kwargs.get("tol"), karcher_kwargs.get("max_iter")
        tol = default_tol(z.dtype, k_val) if tol is None else float(tol)
        max_iter = 50 if max_iter is None else int(max_iter)
        return karcher_(z, w, k_val, tol, max_iter)[0]
    raise ValueError(f"unknown centroid method {method!r}; choose one of {', '.join(CENTROID_METHODS)}")


def centroid(z: torch.Tensor, M, method: str = "law", weights: Optional[torch.Tensor] = None, **kwargs):
    """Centroid of each set by ``method``: ``"law"`` | ``"karcher"`` | ``"tangent"`` (reduces dim -2)."""
    if method == "law":
        return law_centroid(z, M, weights)
    if method == "karcher":
        return karcher_mean(z, M, weights, **kwargs)
    if method == "tangent":
        return tangent_centroid(z, M, weights)
    raise ValueError(f"unknown centroid method {method!r}; choose one of {', '.join(CENTROID_METHODS)}")
