"""The Lorentz model's kernels: small pure functions on plain tensors that trust their input.

The public functions of :mod:`hddgeo.geometry` validate their arguments and call these (as geoopt's
``manifolds/lorentz/math.py`` holds the math under its manifold class); hot loops, the losses and the plots call
them directly.  Conventions as in :mod:`hddgeo.geometry.lorentz`: ``<x, x>_L = -k``, ``theta = d / sqrt(k)``.
``k`` is a tensor or a number, ``sk`` its square root.

Distances are computed from the Minkowski chord ``<x - y, x - y>_L = 4 k sinh(theta / 2)^2`` rather than from
``arcosh(-<x, y>_L / k)``: the latter cancels catastrophically for nearby points (arcosh has an infinite slope at
1) and loses every digit of a small distance between two points far from the origin.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from hddgeo.device import on_accelerator


def maybe_any(mask: torch.Tensor) -> bool:
    """Whether ``mask`` may hold a True, for code that takes a cheaper path when it holds none.

    Exact on the CPU; on an accelerator always True without looking, because reading the answer back is
    a host synchronisation that stalls the queue, while the ``torch.where`` it would have saved costs
    less there.  The values are the same either way (the masked branch agrees where it is not taken)."""
    return True if on_accelerator(mask.device) else bool(mask.any())


# ----------------------------------------------------------------------------- scalar functions
def sinhc(theta: torch.Tensor) -> torch.Tensor:
    """``sinh(t)/t`` with the removable singularity at 0 (and a finite gradient there)."""
    small = theta.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, 1 + theta * theta / 6, torch.sinh(safe) / safe)


def inv_sinhc(theta: torch.Tensor) -> torch.Tensor:
    """``t/sinh(t)``: the hierarchical weight of paper Eq. 17 / 36, and the logmap factor."""
    small = theta.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, 1 - theta * theta / 6, safe / torch.sinh(safe))


def t_coth_t(theta: torch.Tensor) -> torch.Tensor:
    """``t*coth(t)``: eigenvalue of the Hessian of ``d^2/2`` orthogonal to the geodesic (curvature -1)."""
    small = theta.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, 1 + theta * theta / 3, safe / torch.tanh(safe))


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt of a clamped non-negative quantity with zero (not NaN) gradient at 0."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


# ----------------------------------------------------------------------------- core maps (unchecked)
def inner(x: torch.Tensor, y: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Minkowski inner product ``-x_0 y_0 + x_s . y_s`` over the last dimension."""
    prod = x * y
    out = prod[..., 1:].sum(-1, keepdim=keepdim) - prod[..., :1].sum(-1, keepdim=keepdim)
    return out


def _polar(xs: torch.Tensor, sk):
    """Split spatial parts ``x_s = sqrt(k) sinh(a) n`` into ``sinh(a)`` ``(..., 1)`` and the unit ``n``.

    A point on the hyperboloid is fixed by its spatial part; ``sinh(a)`` and ``n`` are exact to
    rounding at any radius, unlike differences of the huge time and space coordinates.
    """
    r = torch.linalg.vector_norm(xs, dim=-1, keepdim=True)  # its gradient at 0 is 0, as for safe_sqrt
    pos = r > 0
    n = torch.where(pos, xs / torch.where(pos, r, 1.0), 0.0)
    return r / sk, n


def cosh_theta_minus_one(xs: torch.Tensor, ys: torch.Tensor, sk, ypolar=None) -> torch.Tensor:
    """``cosh(theta) - 1`` between points given by spatial parts, as a sum of non-negative terms.

    With ``x = sqrt(k) (cosh a, sinh a n)`` and ``y = sqrt(k) (cosh b, sinh b m)``:
    ``cosh(theta) - 1 = 2 sinh((a - b)/2)^2 + sinh(a) sinh(b) |n - m|^2 / 2``.  The textbook
    ``-<x, y>_L / k - 1`` cancels terms of size ``cosh(a) cosh(b)``: at radius 10 it keeps about 8 of
    16 digits, at radius 20 none.  ``ypolar`` is ``_polar(ys, sk)`` when the caller already has it.
    """
    sa, n = _polar(xs, sk)
    sb, m = _polar(ys, sk) if ypolar is None else ypolar
    dn = n - m
    h, _ = _boost_terms(sa, sb, (dn * dn).sum(-1, keepdim=True))
    # |x_s| is not differentiable at the origin although h is: there use the smooth form (exact at 0)
    at_origin = (sa == 0) | (sb == 0)
    if maybe_any(at_origin):
        h = torch.where(at_origin, _h_smooth(xs / sk, ys / sk), h)
    return h.squeeze(-1)


def _sqrt1p_minus_one(s: torch.Tensor) -> torch.Tensor:
    """``sqrt(1 + s) - 1`` without cancellation for small ``s``."""
    return s / (torch.sqrt(1 + s) + 1)


def _h_smooth(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``cosh(theta) - 1 = sqrt(1+|p|^2) sqrt(1+|q|^2) - 1 - p.q`` for ``p = x_s/sqrt(k)``, ``q = y_s/sqrt(k)``.

    Smooth everywhere and exact when either point is the origin; loses digits far from it.
    """
    ep = _sqrt1p_minus_one((p * p).sum(-1, keepdim=True))
    eq = _sqrt1p_minus_one((q * q).sum(-1, keepdim=True))
    return ep * (1 + eq) + eq - (p * q).sum(-1, keepdim=True)


def theta_between(x: torch.Tensor, y: torch.Tensor, k) -> torch.Tensor:
    """Geodesic distance in curvature-radius units, ``theta = 2 asinh(sqrt((cosh(theta) - 1)/2))``."""
    sk = torch.sqrt(k) if torch.is_tensor(k) else math.sqrt(k)
    h = cosh_theta_minus_one(x[..., 1:], y[..., 1:], sk)
    return 2 * torch.asinh(safe_sqrt(h / 2))


def _dist(x: torch.Tensor, y: torch.Tensor, k) -> torch.Tensor:
    return theta_between(x, y, k) * (k ** 0.5 if not torch.is_tensor(k) else torch.sqrt(k))


def origin_like(x: torch.Tensor, k) -> torch.Tensor:
    o = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
    o[0] = 1.0
    return o * (math.sqrt(k) if not torch.is_tensor(k) else torch.sqrt(k))


def _logmap0(z: torch.Tensor, k) -> torch.Tensor:
    """``Log_o(z)`` with ``z_s = sqrt(k) sinh(theta) u``: ``(0, theta/sinh(theta) z_s)``, exact at any radius."""
    sk = torch.sqrt(k) if torch.is_tensor(k) else math.sqrt(k)
    zs = z[..., 1:]
    theta = torch.asinh(safe_sqrt((zs * zs).sum(-1, keepdim=True)) / sk)
    return torch.cat([torch.zeros_like(z[..., :1]), inv_sinhc(theta) * zs], dim=-1)


def _boost_terms(sa: torch.Tensor, sb: torch.Tensor, dn2: torch.Tensor):
    """``cosh(theta) - 1`` between ``x = sqrt(k)(cosh a, sinh a n)`` and ``z = sqrt(k)(cosh b, sinh b m)``,
    and ``p = sinh(b - a) - cosh(a) sinh(b) |n - m|^2 / 2``, the coordinate along ``n`` of ``z`` seen from ``x``
    (less ``sinh(b) n.m``), from ``sinh a``, ``sinh b`` and ``dn2 = |n - m|^2``; sums of terms that do not cancel.
    """
    a, b = torch.asinh(sa), torch.asinh(sb)
    half = torch.sinh((b - a) / 2)
    h = 2 * half * half + sa * sb * dn2 / 2
    par = torch.sinh(b - a) - torch.sqrt(1 + sa * sa) * sb * dn2 / 2
    return h, par


def _directions_about(z: torch.Tensor, mu: torch.Tensor, sk):
    """The points ``z`` ``(..., n, D)`` as ``sinh`` radii and unit directions ``m_i = mu + dm_i``.

    ``mu`` ``(..., D)`` is a unit spatial direction near the set's (time slot 0).  Differences of directions
    then come from ``dm`` (one pass to build) and ``|n - m_i|^2 = |e|^2 - 2 e.dm_i + |dm_i|^2`` with
    ``e = n - mu``, with an error relative to the angular spread of the set, not to 1: a tight cloud far
    from the origin keeps all its digits, as with ``n - m_i`` formed explicitly, without a pass per ``n``.
    Returns ``sinh(b)`` ``(..., n, 1)``, ``dm`` ``(..., n, D)`` with time slot 0, and ``|dm|^2`` ``(..., n, 1)``.
    A point at the origin has ``m = 0`` (only ``sinh(b) m`` enters any formula).
    """
    r = torch.linalg.vector_norm(z[..., 1:], dim=-1, keepdim=True)
    inv = torch.where(r > 0, 1 / torch.where(r > 0, r, torch.ones_like(r)), torch.zeros_like(r))
    dm = torch.addcmul(-mu.unsqueeze(-2), z, inv)
    dm[..., 0] = 0
    return r / sk, dm, torch.linalg.vector_norm(dm, dim=-1, keepdim=True) ** 2


# Tangent vectors at ``x`` are handled in *frame coordinates*: the spatial part of the vector after the
# boost ``B_x`` that carries ``x`` to the origin.  There the Minkowski metric is the Euclidean dot
# product, so norms, CG and Newton steps involve no cancellation; ambient tangent vectors at a point of
# radius ``a`` have components ``cosh(a)`` times larger than their length.
def _frame_boost(xs: torch.Tensor, zs: torch.Tensor, sk, zpolar=None):
    """Points ``z`` seen from ``x``: spatial part of ``B_x z / sqrt(k)`` and ``cosh(theta) - 1``.

    ``B_x`` is the boost that carries ``x`` to the origin; ``xs`` ``(..., d)`` broadcasts against ``zs``
    ``(..., n, d)`` when given as ``(..., 1, d)``.  For ``z = sqrt(k)(cosh b, sinh b m)`` and
    ``x = sqrt(k)(cosh a, sinh a n)`` the boosted spatial part is ``sinh(b) m + (p - sinh(b) n.m) n`` with
    ``p = sinh(b - a) - cosh(a) sinh(b) |n - m|^2 / 2``; the time part is ``cosh(theta)``.
    ``zpolar`` is ``_polar(zs, sk)`` when the caller already has it (iterations reuse it).
    """
    sa, n = _polar(xs, sk)
    sb, m = _polar(zs, sk) if zpolar is None else zpolar
    dn = n - m
    dn2 = (dn * dn).sum(-1, keepdim=True)
    h, par = _boost_terms(sa, sb, dn2)
    # sinh(b) m + (par - sinh(b) n.m) n, regrouped with n.m = 1 - |n - m|^2 / 2 so that nothing of size
    # sinh(b) cancels when z is close to x far from the origin
    boosted = (par + sb * dn2 / 2) * n - sb * dn
    at_origin = sb == 0
    if maybe_any(at_origin):
        # a point exactly at the origin: the smooth forms give the right value *and* gradient there
        p = zs / sk
        h = torch.where(at_origin, _h_smooth(xs / sk, p), h)
        coef = -sa * torch.sqrt(1 + (p * p).sum(-1, keepdim=True)) + (torch.sqrt(1 + sa * sa) - 1) * (n * p).sum(-1, keepdim=True)
        boosted = torch.where(at_origin, p + coef * n, boosted)
    return boosted, h


def _frame_logs(xs: torch.Tensor, zs: torch.Tensor, sk, zpolar=None):
    """Frame coordinates of ``Log_x(z)`` (the logmap at the origin of ``B_x z``) and ``theta``."""
    boosted, h = _frame_boost(xs, zs, sk, zpolar)
    theta = 2 * torch.asinh(safe_sqrt(h / 2))
    return (sk * inv_sinhc(theta)) * boosted, theta.squeeze(-1)


def _frame_to_ambient(xs: torch.Tensor, v: torch.Tensor, sk) -> torch.Tensor:
    """Push frame coordinates ``v`` at ``x`` to an ambient tangent vector: ``B_x^{-1} (0, v)``."""
    sa, n = _polar(xs, sk)
    vpar = (v * n).sum(-1, keepdim=True)
    return torch.cat([sa * vpar, v + (torch.sqrt(1 + sa * sa) - 1) * vpar * n], dim=-1)


def _ambient_grad_to_frame(xs: torch.Tensor, g: torch.Tensor, sk) -> torch.Tensor:
    """Frame coordinates of the Riemannian gradient for an ambient Euclidean gradient ``g`` at ``x``.

    Adjoint of :func:`_frame_to_ambient`: ``g . (B^{-1}(0, v)) = gamma . v`` for every frame vector ``v``.
    """
    sa, n = _polar(xs, sk)
    gs = g[..., 1:]
    gpar = (gs * n).sum(-1, keepdim=True)
    return gs + (g[..., :1] * sa + (torch.sqrt(1 + sa * sa) - 1) * gpar) * n


def _frame_exp(xs: torch.Tensor, v: torch.Tensor, sk) -> torch.Tensor:
    """Spatial part of ``Exp_x(v)`` for frame coordinates ``v``: ``B_x^{-1} Exp_o(v)``."""
    sa, n = _polar(xs, sk)
    sig = safe_sqrt((v * v).sum(-1, keepdim=True)) / sk
    vpar = (v * n).sum(-1, keepdim=True)
    # Exp_o(v) = sqrt(k)(cosh sig, sinh(sig)/sig v/sqrt(k)); boost back by +a along n
    shc = sinhc(sig) / sk
    new_par = sa * torch.cosh(sig) + torch.sqrt(1 + sa * sa) * shc * vpar
    return sk * (new_par * n + shc * (v - vpar * n))


def _with_time(xs: torch.Tensor, k) -> torch.Tensor:
    """The point with spatial part ``xs``: ``(sqrt(k + |xs|^2), xs)``."""
    return torch.cat([torch.sqrt(k + (xs * xs).sum(-1, keepdim=True)), xs], dim=-1)


def _logmap(x: torch.Tensor, y: torch.Tensor, k) -> torch.Tensor:
    """``Log_x(y)`` as an ambient tangent vector at ``x``, computed in the frame of ``x``."""
    sk = torch.sqrt(k) if torch.is_tensor(k) else math.sqrt(k)
    v, _ = _frame_logs(x[..., 1:], y[..., 1:], sk)
    return _frame_to_ambient(x[..., 1:], v, sk)


def _expmap(x: torch.Tensor, u: torch.Tensor, k) -> torch.Tensor:
    """``Exp_x(u) = cosh(theta) x + sinh(theta)/theta u`` with ``theta = |u|_L / sqrt(k)``."""
    theta = safe_sqrt(inner(u, u, keepdim=True).clamp_min(0) / k)
    return torch.cosh(theta) * x + sinhc(theta) * u


def _radius(z: torch.Tensor, k) -> torch.Tensor:
    """Distance to the origin; ``arcosh(z_0/sqrt(k))`` written as ``asinh(|z_s|/sqrt(k))`` (exact near 0)."""
    sk = torch.sqrt(k) if torch.is_tensor(k) else math.sqrt(k)
    return torch.asinh(z[..., 1:].norm(dim=-1) / sk) * sk


def _sinhc_slope(theta: torch.Tensor) -> torch.Tensor:
    """``sinhc'(t) / t = (t cosh t - sinh t) / t^3``, finite at 0."""
    small = theta.abs() < 1e-2
    t = torch.where(small, torch.ones_like(theta), theta)
    t2 = theta * theta
    return torch.where(small, 1 / 3 + t2 / 30 + t2 * t2 / 840, (t * torch.cosh(t) - torch.sinh(t)) / (t * t * t))


class _Lift(torch.autograd.Function):
    """``expmap0([0, v])`` with an explicit vector-Jacobian product.

    Autograd through the elementwise formula writes about seven full-size temporaries in the backward;
    the gradient is ``a gs + c v`` with per-point scalars ``a``, ``c`` (one dot product per point), so it
    costs one pass.  The backward is made of differentiable operations, so double backward still works.
    """

    @staticmethod
    def forward(ctx, v, k, max_norm):
        sk = torch.sqrt(k)
        r = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        theta, clipped = _lift_angle(r, sk, max_norm)
        z = v.new_empty(*v.shape[:-1], v.shape[-1] + 1)
        z[..., :1] = sk * torch.cosh(theta)
        torch.mul(v, _lift_scale(r, theta, clipped, sk), out=z[..., 1:])
        ctx.max_norm = max_norm
        ctx.save_for_backward(v, k)
        return z

    @staticmethod
    def backward(ctx, gz):
        v, k = ctx.saved_tensors
        sk = torch.sqrt(k)
        r = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        theta, clipped = _lift_angle(r, sk, ctx.max_norm)
        g0, gs = gz[..., :1], gz[..., 1:]
        gv_dot = torch.matmul(gs.unsqueeze(-2), v.unsqueeze(-1)).squeeze(-1)  # no full-size temporary
        scale = _lift_scale(r, theta, clipped, sk)
        slope = _sinhc_slope(theta)
        # unclipped z = (sk cosh t, sinhc(t) v), t = |v|/sk; clipped z = sk (cosh m, sinh m v/|v|)
        safe_r2 = torch.where(r > 0, r * r, torch.ones_like(r))
        coef_v = torch.where(clipped, -scale * gv_dot / safe_r2, g0 * scale / sk + gv_dot * slope / k)
        grad_v = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_v = (gs * scale).addcmul_(v, coef_v)
        if ctx.needs_input_grad[1]:
            time = sk * torch.cosh(theta)
            dk = torch.where(
                clipped,
                (g0 * time + scale * gv_dot) / (2 * k),
                g0 * (torch.cosh(theta) - theta * torch.sinh(theta)) / (2 * sk) - gv_dot * theta * theta * slope / (2 * k),
            )
            grad_k = dk.sum().reshape(k.shape)
        return grad_v, grad_k, None


def _lift_angle(r, sk, max_norm):
    theta = r / sk
    if max_norm is None:
        return theta, torch.zeros_like(theta, dtype=torch.bool)
    clipped = theta > max_norm
    return torch.where(clipped, torch.full_like(theta, max_norm), theta), clipped


def _lift_scale(r, theta, clipped, sk):
    """Factor taking ``v`` to the spatial part of its lift: ``sinhc(t)``, or ``sk sinh(m) / |v|`` when clipped."""
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    return torch.where(clipped, sk * torch.sinh(theta) / safe_r, sinhc(theta))


def _lift(v: torch.Tensor, k, max_norm: Optional[float] = None) -> torch.Tensor:
    """``expmap0([0, v])`` with optional clipping of ``|v|/sqrt(k)`` at ``max_norm`` (plain tensor)."""
    if not torch.is_tensor(k):
        k = torch.full((), float(k), dtype=v.dtype, device=v.device)
    return _Lift.apply(v, k.to(dtype=v.dtype), max_norm)


# ----------------------------------------------------------------------------- closed-form centroids
# The largest relative error tolerated in a gradient taken through Lorentz coordinates (see gradient_reach).
GRADIENT_TOLERANCE = 1e-4


def gradient_reach(dtype: torch.dtype, tolerance: float = GRADIENT_TOLERANCE) -> float:
    """The largest ``r / sqrt(k)`` of a Law centroid through whose closed form a gradient stays accurate.

    The closed form ``sqrt(k) zbar / sqrt(q)`` divides coordinates of size ``cosh(r / sqrt k)`` by the root of
    their Lorentz norm; its value is accurate far out (``q`` is evaluated without cancellation), but its backward
    reaches a gradient of order 1 by cancelling terms of size ``cosh^2``, leaving a relative error of about
    ``2 eps cosh^2(r / sqrt k)``.  Measured on HDD's loss (k 1, float64, one synthetic point, whose Law centroid is
    the point, against 64 real ones, against a cancellation-free formula): 6e-10 at radius 8, 8e-8 at 10, 3e-6 at
    12, 1e-3 at 15, 8 % at 18, 11x at 20 and 4e5x at 25, where Fashion-MNIST's unclipped ConvNet features lie.
    Sets spread in angle have their Law centroid near the origin and keep accurate gradients however far out
    their points are; the Karcher mean and the tangent centroid differentiate in frames near the points and are
    not affected.  Beyond the reach, :func:`~hddgeo.law_centroid` makes the gradient NaN (on every device).

    Parameters
    ----------
    dtype : torch.dtype
        The floating-point type of the geometry.
    tolerance : float, optional
        The largest relative error of a gradient tolerated (``1e-4``).

    Returns
    -------
    float
        ``arcosh(sqrt(tolerance / (2 eps)))``: about 13.8 in float64 and 3.7 in float32.

    Examples
    --------
    >>> import torch
    >>> from hddgeo.geometry import gradient_reach
    >>> round(gradient_reach(torch.float64), 1), round(gradient_reach(torch.float32), 1)
    (13.8, 3.7)
    """
    return math.acosh(math.sqrt(tolerance / (2 * torch.finfo(dtype).eps)))


def _law(z: torch.Tensor, w: torch.Tensor, k) -> torch.Tensor:
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
    if c.requires_grad:
        _nan_beyond_gradient_reach(c, k)
    return c


def _nan_beyond_gradient_reach(c: torch.Tensor, k) -> None:
    """Make the gradient through the Law centroids ``c`` that lie beyond :func:`gradient_reach` NaN, on every device.

    Far out the closed form's value holds and its gradient does not (a relative error of ``4e5`` at radius 25): a
    step taken on that noise is refused by poisoning it, per set, so that a loop that checks its gradients (the
    distillation runner does, once per iteration) stops at once, and one that does not is not silently misled.  The
    test runs on the device (no host read, which on a GPU would stall the queue once per loss); within reach the
    gradient passes through unchanged, bit for bit."""
    bound = torch.sqrt(k.detach() if torch.is_tensor(k) else torch.tensor(float(k), dtype=c.dtype)) * math.cosh(
        gradient_reach(c.dtype))
    beyond = c[..., :1].detach() > bound
    c.register_hook(lambda grad: None if grad is None else torch.where(beyond, torch.nan, grad))


def _law_q_in_frame(z: torch.Tensor, w: torch.Tensor, zbar: torch.Tensor, sk) -> torch.Tensor:
    """``-<zbar, zbar>_L / k`` computed in the frame of a reference point near the set.

    The points are boosted to the frame of ``ref`` (the point whose spatial part is ``zbar``'s), where
    their mean has time part ``1 + sum_i w_i (cosh(theta_i) - 1)`` (accurate distances, nothing cancels)
    and a small spatial part, and the Lorentz norm is invariant.
    """
    ref = zbar.clone()
    ref[..., 0] = 0
    sa, mu = _polar(ref, sk)
    sb, dm, dm2 = _directions_about(z, mu, sk)
    h, par = _boost_terms(sa.unsqueeze(-2), sb, dm2)  # ref's own direction is mu: |mu - m_i|^2 = |dm_i|^2
    wc = w.unsqueeze(-1)
    time = 1 + (wc * h).sum(-2)
    # seen from ref, z_i has spatial part (par_i + sinh(b_i) |dm_i|^2 / 2) mu + sinh(b_i) dm_i
    space = (wc * (par + sb * dm2 / 2)).sum(-2) * mu + torch.matmul((wc * sb).transpose(-1, -2), dm).squeeze(-2)
    snorm = torch.linalg.vector_norm(space, dim=-1, keepdim=True)
    # a mean of unit hyperboloid points has q = sum_ij w_i w_j cosh(theta_ij) >= 1; far out (radius ~40,
    # where float64 coordinates no longer resolve positions) rounding of the directions can break that
    return ((time - snorm) * (time + snorm)).clamp_min(1)


def _tangent(z: torch.Tensor, w: torch.Tensor, k) -> torch.Tensor:
    mean_log = (w.unsqueeze(-1) * _logmap0(z, k)).sum(-2)
    return _expmap(origin_like(mean_log, k), mean_log, k)
