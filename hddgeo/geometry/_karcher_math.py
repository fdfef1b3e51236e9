"""The exact Karcher mean's solver: Riemannian Newton in the frame of the iterate, conjugate gradients, and the
implicit backward (see :func:`hddgeo.geometry.karcher_mean` for what it computes, :class:`_FrameLogs` for how).

Private: the kernels trust their input (plain tensors, validated points, raw non-negative weights).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from hddgeo.device import on_accelerator

from ._math import (
    _ambient_grad_to_frame,
    _boost_terms,
    _directions_about,
    _frame_exp,
    _frame_logs,
    _law,
    _polar,
    _with_time,
    inv_sinhc,
    t_coth_t,
)


def _log_slope(theta: torch.Tensor) -> torch.Tensor:
    """``(1/cosh t - t/sinh t) / t^2``: how the length of ``Log_x(z)`` and its direction respond differently
    to a move of ``z`` (see :meth:`_FrameLogs.vjp`); ``-1/3`` at 0, ``-> 0`` far out."""
    small = theta < 1e-3
    t = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, -1.0 / 3 + 17.0 / 90 * theta * theta, (1 / torch.cosh(t) - inv_sinhc(t)) / (t * t))


class _FrameLogs:
    """``l_i = Log_x(z_i)`` in the frame of ``x`` for every point of each set, never formed.

    With the points as ``sinh(b_i) (mu + dm_i)`` (:func:`_directions_about`) and ``x = sqrt(k) sinh(a) n``,
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
        sa, n = _polar(xs, sk)
        self.sa, self.n, self.e = sa, n, n - mu
        self.en = torch.stack([self.e, n], dim=-2)
        self.mu, self.sb = mu, sb
        dn2 = ((self.e * self.e).sum(-1, keepdim=True).unsqueeze(-2) - 2 * e_dm + dm2).clamp_min(0)  # |n - m_i|^2
        h, par = _boost_terms(sa.unsqueeze(-2), sb, dn2)
        self.theta = _theta(h).squeeze(-1)  # (B, n)
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
    :class:`_FrameLogs`' formed logs, 17 kernels an iteration instead of 32 (``tests/geometry/test_karcher_ops.py``)."""
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
    _, mu = _polar(x0, sk)
    sb, dm, dm2 = _directions_about(z, mu, sk)
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
        cand = _frame_exp(xs.unsqueeze(-2), steps, sk)
        ca, cn = _polar(cand, sk)
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
    h, _ = _boost_terms(sa, sb.transpose(-1, -2), dn2)
    theta = _theta(h)
    return sk * sk * (w.unsqueeze(-2) * theta * theta).sum(-1)


def _theta(h):
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
        x0s = _law(z, w, k)[..., 1:]
        logs, iterations = _karcher_newton(z, w, sk, tol, max_iter, x0s)
        info_box.append((iterations, logs.grad_norm))
        ctx.logs = logs
        ctx.save_for_backward(w_raw)
        return _with_time(logs.xs[..., 1:], k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x):
        (w_raw,) = ctx.saved_tensors
        logs = ctx.logs
        gamma = _ambient_grad_to_frame(logs.xs[..., 1:], grad_x, logs.sk)
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
    the logmaps explicitly (:func:`_frame_logs`), independently of :class:`_FrameLogs`.
    """
    sk = torch.sqrt(k)
    zs = z[..., 1:]
    xs = _law(z, w, k)[..., 1:]
    iterations = 0
    for iterations in range(max_iter + 1):
        logs, theta = _frame_logs(xs.unsqueeze(-2), zs, sk)
        grad = (w.unsqueeze(-1) * logs).sum(-2)
        gnorm = grad.norm(dim=-1)
        if iterations == max_iter or not bool((gnorm > tol).any()):
            break
        xs = _frame_exp(xs, grad / (w * t_coth_t(theta)).sum(-1, keepdim=True), sk)
    return _with_time(xs, k), iterations, gnorm


def _karcher(z, w_raw, k: float, tol: float, max_iter: int, backward: str = "implicit"):
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
