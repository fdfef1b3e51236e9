"""Centroids of point sets on the Lorentz model: Law's closed form, the exact Karcher mean, the tangent mean.

All three reduce dimension ``-2``: points ``(..., n, d+1)`` -> centroids ``(..., d+1)``, so ``C`` classes
are handled at once as a ``(C, n, d+1)`` batch.  Weights ``(..., n)`` are optional, non-negative and
need not sum to one (each set is normalised).

* :func:`law_centroid` (Law et al. 2019, paper Eq. 12 with the factor fixed for geoopt's ``k``):
  ``c = sqrt(k) zbar / sqrt(|<zbar, zbar>_L|)``.  It minimises the sum of *squared Lorentzian*
  distances, not geodesic ones, so it is an approximation of the Frechet mean.
* :func:`karcher_mean`: the minimiser of ``sum_i w_i d(x, z_i)^2``, by Newton's method on the manifold
  (Hessian-vector products and conjugate gradients, never a ``d x d`` matrix, nor the ``n x d`` logmaps:
  see :class:`_FrameLogs`), differentiable by implicit differentiation at the optimum with an explicit
  vector-Jacobian product, in ``O(n d)`` memory.  A set of one point is returned as it is.
* :func:`tangent_centroid` (paper Eq. 18): the weighted mean of ``Log_o(z_i)`` mapped back by ``Exp_o``.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from hddgeo.device import on_accelerator

from .lorentz import (
    ambient_grad_to_frame_,
    as_manifold_tensor,
    boost_terms_,
    check_finite,
    check_gradient_reach,
    check_points,
    cosh_theta_minus_one,
    directions_about_,
    expmap_,
    frame_exp_,
    frame_logs_,
    inv_sinhc,
    maybe_any,
    k_tensor,
    logmap0_,
    origin_like,
    plain,
    polar_,
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
    # divide by each set's largest weight first (a constant: the normalised weights do not depend on it), so
    # that weights near the top of the floating-point range cannot overflow the sum to inf
    largest = weights.detach().amax(-1, keepdim=True)
    if bool((largest <= 0).any()):
        raise ValueError("weights of some set are all zero; give every set at least one positive weight")
    weights = weights / largest
    return weights / weights.sum(-1, keepdim=True)


# ----------------------------------------------------------------------------- Law and tangent
def law_(z: torch.Tensor, w: torch.Tensor, k) -> torch.Tensor:
    """Law's centroid ``sqrt(k) zbar / sqrt(q)``, ``q = -<zbar, zbar>_L``, accurate at any radius.

    ``q`` is a difference of numbers of size ``zbar_0^2``; its rounding error is about ``eps zbar_0^2``,
    which far from the origin swamps the value (in float32 a point at radius 23 gives 0 and an infinite
    centroid; in float64 radius 10 leaves ~8 digits).  For sets where that bound is not negligible
    :func:`_law_q_in_frame` evaluates ``q`` without cancellation; ``zbar`` itself is accurate.  The
    derivative of ``q``, ``-2 <zbar, dzbar>_L``, has no cancellation either, so the accurate value is
    spliced in with the closed form's derivative, and the backward stays one outer product.
    """
    # a weighted sum over points is one matrix product: one read of z, and one write in the backward
    zbar = torch.matmul(w.unsqueeze(-2), z).squeeze(-2)
    snorm = torch.linalg.vector_norm(zbar[..., 1:], dim=-1, keepdim=True)
    q = (zbar[..., :1] - snorm) * (zbar[..., :1] + snorm)
    eps = torch.finfo(z.dtype).eps
    lost = 8 * eps * zbar[..., :1] ** 2 > 1e-9 * q.detach().clamp_min(0)
    if maybe_any(lost):
        with torch.no_grad():
            qd = q.detach()
            accurate = k * _law_q_in_frame(z, w, zbar, torch.sqrt(k))
            # The frame of zbar's spatial part is near the centroid when the set is tight in angle.  A set spread
            # in angle with far-out points has its centroid much nearer the origin, and that frame cancels too
            # (one point at radius 32 among points at 3 to 15 gave q = 1 instead of 3.3e18; at radius 20 it was
            # off by 3e-5).  The closed form's q cannot be off by more than a small multiple of eps zbar_0^2, so
            # a frame result further from it than that (and 1e-4) is the wrong one, and the closed form's q,
            # accurate there to 1e-12 (radius 20) or 6e-9 (radius 32), is kept.
            wrong = (accurate - qd).abs() > 1e-4 * qd.abs() + 1024 * eps * zbar[..., :1] ** 2
            accurate = torch.where(lost & ~wrong, accurate, q)
        q = accurate + (q - q.detach())
    c = torch.sqrt(k) * zbar / safe_sqrt(q).clamp_min(torch.finfo(z.dtype).tiny)
    if c.requires_grad and not on_accelerator(c.device):
        # far out the value holds and the gradient does not (gradient_reach): a step taken on noise is refused.  On an
        # accelerator this would be a read per loss; a far centroid there shows as an image gradient of ~1e8.
        check_gradient_reach(c, float(k), "a Law centroid")
    return c


def _law_q_in_frame(z: torch.Tensor, w: torch.Tensor, zbar: torch.Tensor, sk) -> torch.Tensor:
    """``-<zbar, zbar>_L / k`` computed in the frame of a reference point near the set.

    The points are boosted to the frame of ``ref`` (the point whose spatial part is ``zbar``'s), where
    their mean has time part ``1 + sum_i w_i (cosh(theta_i) - 1)`` (accurate distances, nothing cancels)
    and a small spatial part, and the Lorentz norm is invariant.
    """
    ref = zbar.clone()
    ref[..., 0] = 0
    sa, mu = polar_(ref, sk)
    sb, dm, dm2 = directions_about_(z, mu, sk)
    h, par = boost_terms_(sa.unsqueeze(-2), sb, dm2)  # ref's own direction is mu: |mu - m_i|^2 = |dm_i|^2
    wc = w.unsqueeze(-1)
    time = 1 + (wc * h).sum(-2)
    # seen from ref, z_i has spatial part (par_i + sinh(b_i) |dm_i|^2 / 2) mu + sinh(b_i) dm_i
    space = (wc * (par + sb * dm2 / 2)).sum(-2) * mu + torch.matmul((wc * sb).transpose(-1, -2), dm).squeeze(-2)
    snorm = torch.linalg.vector_norm(space, dim=-1, keepdim=True)
    # a mean of unit hyperboloid points has q = sum_ij w_i w_j cosh(theta_ij) >= 1; far out (radius ~40,
    # where float64 coordinates no longer resolve positions) rounding of the directions can break that
    return ((time - snorm) * (time + snorm)).clamp_min(1)


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


def _log_slope(theta: torch.Tensor) -> torch.Tensor:
    """``(1/cosh t - t/sinh t) / t^2``: how the length of ``Log_x(z)`` and its direction respond differently
    to a move of ``z`` (see :meth:`_FrameLogs.vjp`); ``-1/3`` at 0, ``-> 0`` far out."""
    small = theta < 1e-3
    t = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, -1.0 / 3 + 17.0 / 90 * theta * theta, (1 / torch.cosh(t) - inv_sinhc(t)) / (t * t))


class _FrameLogs:
    """``l_i = Log_x(z_i)`` in the frame of ``x`` for every point of each set, never formed.

    With the points as ``sinh(b_i) (mu + dm_i)`` (:func:`directions_about_`) and ``x = sqrt(k) sinh(a) n``,
    ``e = n - mu``, the boosted point is ``(p_i + sinh(b_i) |n - m_i|^2 / 2) n - sinh(b_i) (e - dm_i)``, so
    ``l_i = gamma_i dm_i + a_i n - gamma_i e``: a diagonal scaling of the fixed ``dm`` plus two vectors.
    Products with ``L`` or ``L^T`` are then one read of ``dm`` each, and a new ``x`` needs only
    ``dm e`` (``e_dm``, one product).  The Hessian of ``F/2 = sum_i w_i d(x, z_i)^2 / 2`` is
    ``H v = alpha v + sum_i beta_i (l_i . v) l_i``: eigenvalue 1 along each geodesic, ``theta coth theta``
    across, ``alpha = sum_i w_i theta_i coth theta_i``, ``beta_i = w_i (1 - theta_i coth theta_i) / (k theta_i^2)``;
    all its eigenvalues lie in ``[1, alpha]``.  Vectors are ``(B, D)`` with time slot 0.
    """

    def __init__(self, pts, xs, e_dm, w, sk):
        sb, dm, dm2, mu = pts
        self.dm, self.xs, self.w, self.sk = dm, xs, w, sk
        sa, n = polar_(xs, sk)
        self.sa, self.n, self.e = sa, n, n - mu
        self.en = torch.stack([self.e, n], dim=-2)
        self.mu, self.sb = mu, sb
        dn2 = ((self.e * self.e).sum(-1, keepdim=True).unsqueeze(-2) - 2 * e_dm + dm2).clamp_min(0)  # |n - m_i|^2
        h, par = boost_terms_(sa.unsqueeze(-2), sb, dn2)
        self.theta = _theta_(h).squeeze(-1)  # (B, n)
        self.coef = sk * inv_sinhc(self.theta)
        self.gamma = self.coef * sb.squeeze(-1)
        self.along = self.coef * (par + sb * dn2 / 2).squeeze(-1)
        self.objective = sk * sk * (w * self.theta * self.theta).sum(-1)  # sum_i w_i d_i^2
        self._gamma_row, self._along_row = self.gamma.unsqueeze(-2), self.along.unsqueeze(-2)  # (B, 1, n)
        # On an accelerator the logs are formed once per point (one pass over dm, an n x D buffer): a product with
        # L or L^T is then one batched matmul instead of a dozen small kernels, in each of the ~100 conjugate
        # gradient iterations of a solve.  The CPU keeps the matrix-free form (its numbers stay as they were).
        self.L = None
        if on_accelerator(dm.device):
            self.L = torch.addcmul(self.gamma.unsqueeze(-1) * (dm - self.e.unsqueeze(-2)), self.along.unsqueeze(-1),
                                   n.unsqueeze(-2))
        self.grad = self.apply_t(w)  # minus the Riemannian gradient of F/2
        self.grad_norm = torch.linalg.vector_norm(self.grad, dim=-1)
        c = t_coth_t(self.theta)
        self.alpha = (w * c).sum(-1, keepdim=True)
        small = self.theta < 1e-3
        ts = torch.where(small, 1.0, self.theta)
        self._beta_row = (w * torch.where(small, -1.0 / 3 + self.theta * self.theta / 45, (1 - c) / (ts * ts))).unsqueeze(-2) / (sk * sk)

    def apply(self, v):
        """``(l_i . v)_i`` for vectors ``v`` ``(B, D)`` -> ``(B, n)``, or rows ``(B, j, D)`` -> ``(B, j, n)``."""
        rows = v if v.dim() == 3 else v.unsqueeze(-2)
        if self.L is not None:
            out = _dot_rows(rows, self.L)
            return out if v.dim() == 3 else out.squeeze(-2)
        en_v = _dot_rows(rows, self.en)
        out = torch.addcmul(self._gamma_row * (_dot_rows(rows, self.dm) - en_v[..., :1]), self._along_row, en_v[..., 1:])
        return out if v.dim() == 3 else out.squeeze(-2)

    def apply_t(self, u):
        """``sum_i u_i l_i`` for ``u`` ``(B, n)`` -> ``(B, D)``, or rows ``(B, j, n)`` -> ``(B, j, D)``."""
        rows = u if u.dim() == 3 else u.unsqueeze(-2)
        if self.L is not None:
            out = torch.bmm(rows, self.L)
            return out if u.dim() == 3 else out.squeeze(-2)
        gu = self._gamma_row * rows
        en_coef = torch.stack([-gu.sum(-1), (self._along_row * rows).sum(-1)], dim=-1)  # (B, j, 2) for (e, n)
        out = torch.baddbmm(torch.bmm(en_coef, self.en), gu, self.dm)
        return out if u.dim() == 3 else out.squeeze(-2)

    def hvp(self, v):
        return torch.addcmul(self.apply_t(self._beta_row * self.apply(v.unsqueeze(-2))).squeeze(-2), self.alpha, v)

    def vjp(self, lam, needs_w):
        """Gradients of ``lam . sum_i w_i l_i`` with respect to the points ``(B, n, D)`` and the normalised weights.

        For ``Y = B_x z / sqrt(k) = (cosh t, sinh t u)`` and ``l = sqrt(k) t u``, a move ``dY`` changes
        ``lam . l`` by ``rho . dY_s`` with ``rho = sqrt(k) (t/sinh t) lam + (lam . l) s(t) / sqrt(k) l``,
        ``s = `` :func:`_log_slope`; through ``B_x^T`` and ``z_0 = sqrt(k + |z_s|^2)`` the gradient on
        ``z_s`` is ``(rho + (cosh a - 1)(rho . n) n - sinh a (rho . n) z_s / z_0) / sqrt(k)``, and
        ``z_s / z_0 = tanh(b) (mu + dm)``: again ``dm`` scaled plus four vectors, written in one pass.
        """
        sk, w = self.sk, self.w
        lam_l, n_l = self.apply(torch.stack([lam, self.n], dim=-2)).unbind(-2)  # l_i . lam, l_i . n
        phi = lam_l * _log_slope(self.theta) / sk
        rho_n = self.coef * (lam * self.n).sum(-1, keepdim=True) + phi * n_l
        sb = self.sb.squeeze(-1)
        pull = self.sa * rho_n * sb / torch.sqrt(1 + sb * sb)  # sinh(a) (rho . n) tanh(b)
        ca1 = self.sa * self.sa / (torch.sqrt(1 + self.sa * self.sa) + 1)  # cosh(a) - 1
        ws = w / sk
        grad_z = (ws * (phi * self.gamma - pull)).unsqueeze(-1) * self.dm
        coefs = torch.stack([ws * self.coef, ws * (phi * self.along + ca1 * rho_n), -ws * phi * self.gamma, -ws * pull], dim=-1)
        grad_z.baddbmm_(coefs, torch.stack([lam, self.n, self.e, self.mu], dim=-2))
        return grad_z, (lam_l if needs_w else None)


def _dot_rows(rows, dm):
    """``rows @ dm^T``: ``(B, j, D)`` x ``(B, n, D)`` -> ``(B, j, n)``; BLAS reads ``dm`` several times faster
    in this orientation than as ``dm @ v`` once ``dm`` no longer fits in cache."""
    return torch.bmm(rows, dm.transpose(-1, -2))


def _conjugate_gradient(hvp, b, rtol, max_iter):
    """Batched conjugate gradients for ``H s = b``, ``H`` symmetric positive definite; ``rtol`` per set ``(B, 1)``.

    Sets that have converged keep iterating with step size 0, so the only host synchronisation is the
    stopping test.  On the CPU it is free and made every iteration (the spectrum is clustered and a
    solve often takes 1-5); on an accelerator, where it would stall the queue, there is none: a solve runs
    ``_CG_ITERATIONS_ACCELERATOR`` iterations (CG gains about 3 digits an iteration here, so converged sets
    sit frozen for most of them).
    """
    if on_accelerator(b.device):
        return _conjugate_gradient_fixed(hvp, b, rtol, min(max_iter, _CG_ITERATIONS_ACCELERATOR))
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(-1, keepdim=True)
    target = (rtol * rtol) * rs
    tiny = torch.finfo(b.dtype).tiny
    for it in range(max_iter):
        if bool((rs <= target).all()):
            break
        hp = hvp(p)
        curv = torch.linalg.vecdot(p, hp).unsqueeze(-1)
        # H >= 1, so curv <= 0 is rounding (coordinates far beyond radius 30 no longer resolve points):
        # that set stops; and a set that has converged stops moving, so that it ends where it would alone
        target = torch.where(curv > 0, target, torch.inf)
        alpha = torch.where(rs <= target, 0.0, rs / curv.clamp_min(tiny))
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, hp, value=-1)
        rs_new = torch.linalg.vecdot(r, r).unsqueeze(-1)
        p = torch.addcmul(r, rs_new / rs.clamp_min(tiny), p)
        rs = rs_new
    return x


def _dot(a, b):
    """``a . b`` over the last dimension of ``(B, D)`` vectors as ``(B, 1)``, in one kernel (a batched matmul)."""
    return torch.bmm(a.unsqueeze(-2), b.unsqueeze(-1)).squeeze(-1)


def _conjugate_gradient_fixed(hvp, b, rtol, iterations):
    """:func:`_conjugate_gradient` as an accelerator runs it: ``iterations`` iterations and no read, each in as few
    kernels as it takes (dot products as one batched matmul each, the constants made once): with
    :class:`_FrameLogs`' formed logs, 17 kernels an iteration instead of 32 (``tests/test_karcher_ops.py``)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = _dot(r, r)
    target = (rtol * rtol) * rs
    tiny = torch.finfo(b.dtype).tiny
    inf, zero = torch.full_like(rs, torch.inf), torch.zeros_like(rs)
    for _ in range(iterations):
        hp = hvp(p)
        curv = _dot(p, hp)
        # as in _conjugate_gradient: a set with curv <= 0 (rounding) stops, a converged set stops moving
        target = torch.where(curv > 0, target, inf)
        alpha = torch.where(rs <= target, zero, rs / curv.clamp_min(tiny))
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, hp, value=-1)
        rs_new = _dot(r, r)
        p = torch.addcmul(r, rs_new / rs.clamp_min(tiny), p)
        rs = rs_new
    return x


_CG_ITERATIONS_ACCELERATOR = 20
# Newton steps taken on an accelerator before the one convergence test that reads the device (a step of a set
# that has converged changes nothing); from Law's centroid the mean converges in 2-4 steps
_NEWTON_STEPS_ACCELERATOR = 4
_LINE_SEARCH = (1.0, 0.25)  # fractions of the Newton step tried at once; the damped gradient step is the fallback


def _points_about(z, x0s, sk):
    x0 = torch.cat([torch.zeros_like(x0s[..., :1]), x0s], dim=-1)
    _, mu = polar_(x0, sk)
    sb, dm, dm2 = directions_about_(z, mu, sk)
    return sb, dm, dm2, mu


def _karcher_newton(z, w, sk, tol, max_iter, x0s):
    """Riemannian Newton with a batched line search on sets ``(B, n, D)``, started at spatial parts ``x0s``.

    Every candidate step of every set is evaluated at once (one product with ``dm`` for all), the best
    acceptable one is kept per set, and the host looks at the tensors once per Newton step (on an
    accelerator once, after ``_NEWTON_STEPS_ACCELERATOR`` steps, then once per step where that was not enough).
    Returns the :class:`_FrameLogs` at the final point, the iteration count and ``(dm, mu)``.
    """
    pts = _points_about(z, x0s, sk)
    dm, mu = pts[1], pts[3]
    xs = torch.cat([torch.zeros_like(x0s[..., :1]), x0s], dim=-1)
    e_dm = torch.zeros_like(dm[..., :1])  # x0 lies along mu
    slack = 64 * torch.finfo(z.dtype).eps
    stalled = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    # made on the device, not copied from the host (a copy from pageable memory waits for the queue)
    tries = torch.cat([torch.full((1,), t, dtype=z.dtype, device=z.device) for t in _LINE_SEARCH]).view(1, -1, 1)
    first_test = _NEWTON_STEPS_ACCELERATOR if on_accelerator(z.device) else 0
    iterations = 0
    for iterations in range(max_iter + 1):
        logs = _FrameLogs(pts, xs, e_dm, w, sk)
        active = (logs.grad_norm > tol) & ~stalled
        if iterations == max_iter or (iterations >= first_test and not bool(active.any())):
            break
        # inexact Newton: a loose CG tolerance far from the optimum, a tight one near it
        rtol = (0.1 * logs.grad_norm.clamp(max=0.1).sqrt()).clamp_min(1e-14).unsqueeze(-1)
        step = _conjugate_gradient(logs.hvp, logs.grad, rtol=rtol, max_iter=200)
        steps = torch.cat([tries * step.unsqueeze(-2), (logs.grad / logs.alpha).unsqueeze(-2)], dim=-2)  # (B, K, D)
        cand = frame_exp_(xs.unsqueeze(-2), steps, sk)
        ca, cn = polar_(cand, sk)
        ce = cn - mu.unsqueeze(-2)
        c_dm = _dot_rows(ce, dm)  # (B, K, n)
        f = _candidate_objective(pts, ca, ce, c_dm, w, sk)
        ok = (f <= (logs.objective * (1 + slack)).unsqueeze(-1)) & active.unsqueeze(-1)
        pick = ok.to(torch.int8).argmax(-1)  # the first acceptable candidate: the longest step
        moved = ok.any(-1)
        rows = torch.arange(z.shape[0], device=z.device)
        xs = torch.where(moved.unsqueeze(-1), cand[rows, pick], xs)
        e_dm = torch.where(moved.view(-1, 1, 1), c_dm[rows, pick].unsqueeze(-1), e_dm)
        stalled = stalled | (active & ~moved)  # no descent left at working precision
    return logs, iterations


def _candidate_objective(pts, sa, ce, c_dm, w, sk):
    """``sum_i w_i d(x_j, z_i)^2`` for candidates ``x_j`` with ``sinh`` radii ``sa`` ``(B, K, 1)``, ``e_j = n_j - mu``
    ``(B, K, D)`` and ``e_j . dm_i`` ``(B, K, n)``."""
    sb, _, dm2, _ = pts
    dn2 = ((ce * ce).sum(-1, keepdim=True) - 2 * c_dm + dm2.transpose(-1, -2)).clamp_min(0)  # (B, K, n)
    h, _ = boost_terms_(sa, sb.transpose(-1, -2), dn2)
    theta = _theta_(h)
    return sk * sk * (w.unsqueeze(-2) * theta * theta).sum(-1)


def _theta_(h):
    """``theta`` from ``h = cosh(theta) - 1 >= 0`` (no gradient needed: the Newton loop runs without autograd)."""
    return 2 * torch.asinh(torch.sqrt(h / 2))


class _KarcherImplicit(torch.autograd.Function):
    """Forward: Newton solve.  Backward: implicit function theorem at ``G = sum_i w_i Log_x(z_i) = 0``.

    With ``H = -dG/dx`` (the Hessian of ``F/2``), a variation of the inputs moves the mean by
    ``dx = H^{-1} dG``.  For an upstream ambient gradient, ``gamma`` is its Riemannian form in the frame
    of ``x``; the input gradients are those of ``lambda . G(x*; z, w)`` with ``x*`` held fixed and
    ``lambda = H^{-1} gamma``: one CG solve and an explicit vector-Jacobian product of the logmaps
    (:meth:`_FrameLogs.vjp`), ``O(n d)`` memory and one write of the gradient.
    """

    @staticmethod
    def forward(ctx, z, w_raw, k, tol, max_iter, info_box):
        sk = torch.sqrt(k)
        w = w_raw / w_raw.sum(-1, keepdim=True)
        x0s = law_(z, w, k)[..., 1:]
        logs, iterations = _karcher_newton(z, w, sk, tol, max_iter, x0s)
        info_box.append((iterations, logs.grad_norm))
        ctx.logs = logs
        ctx.save_for_backward(w_raw)
        return with_time_(logs.xs[..., 1:], k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x):
        (w_raw,) = ctx.saved_tensors
        logs = ctx.logs
        gamma = ambient_grad_to_frame_(logs.xs[..., 1:], grad_x, logs.sk)
        gamma = torch.cat([torch.zeros_like(gamma[..., :1]), gamma], dim=-1)
        # CG gains ~3 digits per iteration here: 1e-11 leaves the gradient 1e-11-accurate in one step fewer than 1e-13
        rtol = torch.full_like(gamma[..., :1], 1e-11 if grad_x.dtype == torch.float64 else 1e-6)
        lam = _conjugate_gradient(logs.hvp, gamma, rtol=rtol, max_iter=500)
        need_z, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gz, lam_l = logs.vjp(lam, need_w)
        gw = None
        if need_w:  # lam . G = sum_i (w_i / sum w) lam . l_i
            gw = (lam_l - (logs.w * lam_l).sum(-1, keepdim=True)) / w_raw.sum(-1, keepdim=True)
        return (gz if need_z else None), gw, None, None, None, None


def _karcher_unrolled(z, w, k, tol, max_iter):
    """Differentiable damped fixed point ``x <- Exp_x(G / alpha)``, ``alpha = sum_i w_i theta_i coth theta_i``.

    The undamped step (``alpha = 1``) overshoots in negative curvature once points are spread out;
    ``1/alpha`` is one over an upper bound of the Hessian, so every step contracts.  Autograd records
    every iteration (memory grows with the count): a reference for tests, not the default.  It forms
    the logmaps explicitly (:func:`frame_logs_`), independently of :class:`_FrameLogs`.
    """
    sk = torch.sqrt(k)
    zs = z[..., 1:]
    xs = law_(z, w, k)[..., 1:]
    iterations = 0
    for iterations in range(max_iter + 1):
        logs, theta = frame_logs_(xs.unsqueeze(-2), zs, sk)
        grad = (w.unsqueeze(-1) * logs).sum(-2)
        gnorm = grad.norm(dim=-1)
        if iterations == max_iter or not bool((gnorm > tol).any()):
            break
        xs = frame_exp_(xs, grad / (w * t_coth_t(theta)).sum(-1, keepdim=True), sk)
    return with_time_(xs, k), iterations, gnorm


def karcher_(z, w_raw, k: float, tol: float, max_iter: int, backward: str = "implicit"):
    """Karcher mean of plain, validated sets ``(..., n, D)`` with raw weights ``(..., n)``.

    Returns ``(x, iterations, grad_norm)`` with ``x`` of shape ``(..., D)``; the unchecked core of
    :func:`karcher_mean`, also called by the losses.
    """
    batch_shape, (n, dim) = z.shape[:-2], z.shape[-2:]
    if n == 1:
        # the mean of one point is the point; w / sum(w) == 1 exactly, and keeps the weights in the graph
        x = z[..., 0, :] * (w_raw / w_raw.sum(-1, keepdim=True))
        return x, 0, torch.zeros(batch_shape, dtype=z.dtype, device=z.device)
    zf = z.reshape(-1, n, dim)
    wf = w_raw.reshape(-1, n)
    kt = torch.full((), k, dtype=z.dtype, device=z.device)  # a fill, not a copy from the host
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
    takes Riemannian Newton steps (matrix-free CG) with a line search (the full step, a quarter step and
    a damped gradient step, evaluated together; the longest that does not increase the objective is
    kept) until the Riemannian gradient norm
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
    tol, max_iter, backward = karcher_options(z.dtype, k_val, tol=tol, max_iter=max_iter, backward=backward)
    # keep the user's weight tensor in the graph so that gradients reach it
    if weights is None:
        w_raw = w
    else:  # divided by a constant (the result does not depend on it) so that huge weights cannot overflow
        w_raw = plain(weights).to(dtype=z.dtype, device=z.device).expand(z.shape[:-1])
        w_raw = w_raw / w_raw.detach().amax(-1, keepdim=True)
    x, iterations, gnorm = karcher_(z, w_raw, k_val, tol, max_iter, backward)
    x = as_manifold_tensor(x, M)
    gnorm = gnorm.detach()
    if z.dtype in (torch.float16, torch.bfloat16) and not bool((gnorm <= tol).all()):
        warnings.warn(f"karcher_mean in {z.dtype} stopped at a gradient norm of {float(gnorm.max()):.3g} above "
                      f"tol={tol:g} after {max_iter} steps: half precision cannot resolve it; use float64",
                      RuntimeWarning, stacklevel=2)
    if not return_info:
        return x
    return x, KarcherInfo(iterations=iterations, grad_norm=gnorm, converged=gnorm <= tol, tol=tol)


def frechet_objective(x: torch.Tensor, z: torch.Tensor, M, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum_i w_i d(x, z_i)^2`` with normalised weights, for centroids ``x`` ``(..., d+1)`` of sets ``z``."""
    z, w = check_set(z, M, weights)
    x = check_points(x, M, "centroid x")
    kt = k_tensor(M, z)
    theta = 2 * torch.asinh(safe_sqrt(cosh_theta_minus_one(x[..., 1:].unsqueeze(-2), z[..., 1:], torch.sqrt(kt)) / 2))
    return kt * (w * theta * theta).sum(-1)


def karcher_options(dtype, k_val: float, tol=None, max_iter=None, backward="implicit", **unknown):
    """``(tol, max_iter, backward)`` checked and with defaults filled in; ``ValueError`` naming a bad value or
    an option the Karcher mean does not take (one check for :func:`karcher_mean` and the losses)."""
    if unknown:
        raise ValueError(f"unknown Karcher option(s) {', '.join(map(repr, sorted(unknown)))}; "
                         f"valid: tol, max_iter, backward")
    tol = default_tol(dtype, k_val) if tol is None else tol
    max_iter = 50 if max_iter is None else max_iter
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if backward not in ("implicit", "unroll"):
        raise ValueError(f"backward must be 'implicit' or 'unroll', got {backward!r}")
    return float(tol), int(max_iter), backward


def centroid_(z, w, k: torch.Tensor, method: str, k_val: Optional[float] = None, **karcher_kwargs):
    """Dispatcher on plain tensors (``w`` normalised, ``k`` a tensor); used by the losses.  The Karcher
    options are checked as :func:`karcher_mean` checks them; ``k_val`` is ``k`` as a Python number when
    the caller has it (reading it from a GPU tensor is a host synchronisation)."""
    if method == "law":
        return law_(z, w, k)
    if method == "tangent":
        return tangent_(z, w, k)
    if method == "karcher":
        k_val = float(k.detach()) if k_val is None else float(k_val)
        tol, max_iter, backward = karcher_options(z.dtype, k_val, **karcher_kwargs)
        return karcher_(z, w, k_val, tol, max_iter, backward)[0]
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
