"""Lorentz-model primitives in geoopt's convention, as small pure functions.

geoopt's ``Lorentz(k)`` is the upper sheet ``<x, x>_L = -k`` with ``<x, y>_L = -x_0 y_0 + x_s . y_s``,
sectional curvature ``K = -1/k``, origin ``o = (sqrt(k), 0, ..., 0)`` and
``d(x, y) = sqrt(k) * arcosh(-<x, y>_L / k)``.  Throughout, ``theta = d / sqrt(k)`` is the distance in
units of the curvature radius.

Every public function validates its input and raises ``ValueError`` with a message that says what to
fix; the underscored helpers assume valid plain tensors and are what hot loops call.  Distances are
computed from the Minkowski chord ``<x - y, x - y>_L = 4 k sinh(theta / 2)^2`` rather than from
``arcosh(-<x, y>_L / k)``: the latter cancels catastrophically for nearby points (arcosh has an
infinite slope at 1) and loses every digit of a small distance between two points far from the origin.
"""
from __future__ import annotations

import math
from typing import Optional

import geoopt
import torch

from hddgeo.device import on_accelerator

DEFAULT_DTYPE = torch.float64


# ----------------------------------------------------------------------------- validation helpers
def manifold_k(M) -> float:
    """The positive ``k`` of a ``geoopt.Lorentz`` manifold as a Python float (checked)."""
    if not isinstance(M, geoopt.Lorentz):
        raise ValueError(
            f"expected a geoopt.Lorentz manifold, got {type(M).__name__}; build one with geoopt.Lorentz(k=1.0)"
        )
    k = float(M.k.detach())
    if not math.isfinite(k) or k <= 0:
        raise ValueError(f"the Lorentz manifold needs k > 0 (curvature K = -1/k), got k={k}; pass e.g. geoopt.Lorentz(k=1.0)")
    return k


def k_tensor(M, like: torch.Tensor) -> torch.Tensor:
    """``M.k`` cast to the dtype/device of ``like``; keeps autograd to a learnable ``k``.

    A constant ``k`` is filled in on the device rather than copied there: a copy from host memory waits for
    the device's queue, a fill does not (the value is the same: ``M.k``'s, rounded to ``like``'s dtype)."""
    if (like.device != M.k.device or on_accelerator(like.device)) and not M.k.requires_grad:
        return torch.full((), float(M.k.detach()), dtype=like.dtype, device=like.device)
    return M.k.to(dtype=like.dtype, device=like.device)


def plain(x: torch.Tensor) -> torch.Tensor:
    """Strip the ManifoldTensor subclass so internal arithmetic runs on plain tensors."""
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


def maybe_any(mask: torch.Tensor) -> bool:
    """Whether ``mask`` may hold a True, for code that takes a cheaper path when it holds none.

    Exact on the CPU; on an accelerator always True without looking, because reading the answer back is
    a host synchronisation that stalls the queue, while the ``torch.where`` it would have saved costs
    less there.  The values are the same either way (the masked branch agrees where it is not taken)."""
    return True if on_accelerator(mask.device) else bool(mask.any())


def check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.is_tensor(x):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {x.dtype}; convert with .double()")
    # one reduction rather than isfinite's four full-size passes: a sum is finite whenever every term is
    # (it may overflow for huge finite values, and then the exact test decides)
    if x.numel() and not bool(torch.isfinite(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what} contains {bad} NaN/inf value(s); remove or repair them before the geometry")


def check_points(z: torch.Tensor, M, what: str = "points", min_points_dim: int = 1) -> torch.Tensor:
    """Validate points on ``M``: finite, at least ``min_points_dim`` dims, last dim >= 2, on the upper sheet.

    The on-manifold tolerance is relative to ``k + z_0^2`` because ``<z, z>_L`` is a difference of two
    numbers of size ``z_0^2``: in float32 a point at radius 10 carries an absolute error near 1.
    """
    k = manifold_k(M)
    if not torch.is_tensor(z) or not z.is_floating_point():
        check_finite(z, what)
    if z.dim() < min_points_dim or z.shape[-1] < 2:
        raise ValueError(
            f"{what} must have shape (..., d+1) with d >= 1 (got {tuple(z.shape)}); lift features of shape (..., d) with hddgeo.lift"
        )
    z = plain(z)
    zd = z.detach()
    # one pass over the points: the squared spatial norms are non-finite whenever a coordinate is
    space2 = torch.linalg.vector_norm(zd[..., 1:], dim=-1) ** 2
    time = zd[..., 0]
    if z.numel() and not bool(torch.isfinite(space2.sum() + time.sum())):
        check_finite(z, what)
    check_reach(zd, k, what)
    tol = math.sqrt(torch.finfo(z.dtype).eps) * 10
    err = (space2 - time * time + k).abs() / (k + time * time)
    if z.numel() and (not bool((err <= tol).all()) or bool((time <= 0).any())):
        if bool((err <= tol).all()):  # on the hyperboloid, but some on its other sheet
            raise ValueError(
                f"{what}: {int((time <= 0).sum())} point(s) lie on the lower sheet of the hyperboloid (time coordinate "
                f"z_0 < 0, smallest {float(time.min()):.3g}), not on the Lorentz manifold, which is its upper sheet "
                f"z_0 >= sqrt(k): "
                f"negate those points or lift features with hddgeo.lift(v, M)"
            )
        raise ValueError(
            f"{what} are not on the Lorentz manifold with k={k:g} (max relative |<z,z>_L + k| = {float(err.max()):.3g}, "
            f"tolerance {tol:.1g}); map Euclidean features with hddgeo.lift(v, M) or project with M.projx(z)"
        )
    return z


def as_manifold_tensor(x: torch.Tensor, M) -> geoopt.ManifoldTensor:
    """Wrap ``x`` as a ManifoldTensor on ``M`` without cutting the autograd graph.

    ``geoopt.ManifoldTensor(x, manifold=M)`` builds a new leaf and silently drops ``grad_fn``;
    ``as_subclass`` keeps it.
    """
    out = x.as_subclass(geoopt.ManifoldTensor)
    out.manifold = M
    return out


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


def polar_(xs: torch.Tensor, sk):
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
    16 digits, at radius 20 none.  ``ypolar`` is ``polar_(ys, sk)`` when the caller already has it.
    """
    sa, n = polar_(xs, sk)
    sb, m = polar_(ys, sk) if ypolar is None else ypolar
    dn = n - m
    h, _ = boost_terms_(sa, sb, (dn * dn).sum(-1, keepdim=True))
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


def dist_(x: torch.Tensor, y: torch.Tensor, k) -> torch.Tensor:
    return theta_between(x, y, k) * (k ** 0.5 if not torch.is_tensor(k) else torch.sqrt(k))


def origin_like(x: torch.Tensor, k) -> torch.Tensor:
    o = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
    o[0] = 1.0
    return o * (math.sqrt(k) if not torch.is_tensor(k) else torch.sqrt(k))


def logmap0_(z: torch.Tensor, k) -> torch.Tensor:
    """``Log_o(z)`` with ``z_s = sqrt(k) sinh(theta) u``: ``(0, theta/sinh(theta) z_s)``, exact at any radius."""
    sk = torch.sqrt(k) if torch.is_tensor(k) else math.sqrt(k)
    zs = z[..., 1:]
    theta = torch.asinh(safe_sqrt((zs * zs).sum(-1, keepdim=True)) / sk)
    return torch.cat([torch.zeros_like(z[..., :1]), inv_sinhc(theta) * zs], dim=-1)


def boost_terms_(sa: torch.Tensor, sb: torch.Tensor, dn2: torch.Tensor):
    """``cosh(theta) - 1`` between ``x = sqrt(k)(cosh a, sinh a n)`` and ``z = sqrt(k)(cosh b, sinh b m)``,
    and ``p = sinh(b - a) - cosh(a) sinh(b) |n - m|^2 / 2``, the coordinate along ``n`` of ``z`` seen from ``x``
    (less ``sinh(b) n.m``), from ``sinh a``, ``sinh b`` and ``dn2 = |n - m|^2``; sums of terms that do not cancel.
    """
    a, b = torch.asinh(sa), torch.asinh(sb)
    half = torch.sinh((b - a) / 2)
    h = 2 * half * half + sa * sb * dn2 / 2
    par = torch.sinh(b - a) - torch.sqrt(1 + sa * sa) * sb * dn2 / 2
    return h, par


def directions_about_(z: torch.Tensor, mu: torch.Tensor, sk):
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
def frame_boost_(xs: torch.Tensor, zs: torch.Tensor, sk, zpolar=None):
    """Points ``z`` seen from ``x``: spatial part of ``B_x z / sqrt(k)`` and ``cosh(theta) - 1``.

    ``B_x`` is the boost that carries ``x`` to the origin; ``xs`` ``(..., d)`` broadcasts against ``zs``
    ``(..., n, d)`` when given as ``(..., 1, d)``.  For ``z = sqrt(k)(cosh b, sinh b m)`` and
    ``x = sqrt(k)(cosh a, sinh a n)`` the boosted spatial part is ``sinh(b) m + (p - sinh(b) n.m) n`` with
    ``p = sinh(b - a) - cosh(a) sinh(b) |n - m|^2 / 2``; the time part is ``cosh(theta)``.
    ``zpolar`` is ``polar_(zs, sk)`` when the caller already has it (iterations reuse it).
    """
    sa, n = polar_(xs, sk)
    sb, m = polar_(zs, sk) if zpolar is None else zpolar
    dn = n - m
    dn2 = (dn * dn).sum(-1, keepdim=True)
    h, par = boost_terms_(sa, sb, dn2)
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


def frame_unboost_(xs: torch.Tensor, time: torch.Tensor, space: torch.Tensor, sk) -> torch.Tensor:
    """Spatial part of ``B_x^{-1} (time, space) * sqrt(k)`` for a point given in the frame of ``x``."""
    sa, n = polar_(xs, sk)
    spar = (space * n).sum(-1, keepdim=True)
    return sk * (space + ((torch.sqrt(1 + sa * sa) - 1) * spar + sa * time) * n)


def frame_logs_(xs: torch.Tensor, zs: torch.Tensor, sk, zpolar=None):
    """Frame coordinates of ``Log_x(z)`` (the logmap at the origin of ``B_x z``) and ``theta``."""
    boosted, h = frame_boost_(xs, zs, sk, zpolar)
    theta = 2 * torch.asinh(safe_sqrt(h / 2))
    return (sk * inv_sinhc(theta)) * boosted, theta.squeeze(-1)


def frame_to_ambient_(xs: torch.Tensor, v: torch.Tensor, sk) -> torch.Tensor:
    """Push frame coordinates ``v`` at ``x`` to an ambient tangent vector: ``B_x^{-1} (0, v)``."""
    sa, n = polar_(xs, sk)
    vpar = (v * n).sum(-1, keepdim=True)
    return torch.cat([sa * vpar, v + (torch.sqrt(1 + sa * sa) - 1) * vpar * n], dim=-1)


def ambient_grad_to_frame_(xs: torch.Tensor, g: torch.Tensor, sk) -> torch.Tensor:
    """Frame coordinates of the Riemannian gradient for an ambient Euclidean gradient ``g`` at ``x``.

    Adjoint of :func:`frame_to_ambient_`: ``g . (B^{-1}(0, v)) = gamma . v`` for every frame vector ``v``.
    """
    sa, n = polar_(xs, sk)
    gs = g[..., 1:]
    gpar = (gs * n).sum(-1, keepdim=True)
    return gs + (g[..., :1] * sa + (torch.sqrt(1 + sa * sa) - 1) * gpar) * n


def frame_exp_(xs: torch.Tensor, v: torch.Tensor, sk) -> torch.Tensor:
    """Spatial part of ``Exp_x(v)`` for frame coordinates ``v``: ``B_x^{-1} Exp_o(v)``."""
    sa, n = polar_(xs, sk)
    sig = safe_sqrt((v * v).sum(-1, keepdim=True)) / sk
    vpar = (v * n).sum(-1, keepdim=True)
    # Exp_o(v) = sqrt(k)(cosh sig, sinh(sig)/sig v/sqrt(k)); boost back by +a along n
    shc = sinhc(sig) / sk
    new_par = sa * torch.cosh(sig) + torch.sqrt(1 + sa * sa) * shc * vpar
    return sk * (new_par * n + shc * (v - vpar * n))


def with_time_(xs: torch.Tensor, k) -> torch.Tensor:
    """The point with spatial part ``xs``: ``(sqrt(k + |xs|^2), xs)``."""
    return torch.cat([torch.sqrt(k + (xs * xs).sum(-1, keepdim=True)), xs], dim=-1)


def logmap_(x: torch.Tensor, y: torch.Tensor, k) -> torch.Tensor:
    """``Log_x(y)`` as an ambient tangent vector at ``x``, computed in the frame of ``x``."""
    sk = torch.sqrt(k) if torch.is_tensor(k) else math.sqrt(k)
    v, _ = frame_logs_(x[..., 1:], y[..., 1:], sk)
    return frame_to_ambient_(x[..., 1:], v, sk)


def expmap_(x: torch.Tensor, u: torch.Tensor, k) -> torch.Tensor:
    """``Exp_x(u) = cosh(theta) x + sinh(theta)/theta u`` with ``theta = |u|_L / sqrt(k)``."""
    theta = safe_sqrt(inner(u, u, keepdim=True).clamp_min(0) / k)
    return torch.cosh(theta) * x + sinhc(theta) * u


def radius_(z: torch.Tensor, k) -> torch.Tensor:
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


def lift_(v: torch.Tensor, k, max_norm: Optional[float] = None) -> torch.Tensor:
    """``expmap0([0, v])`` with optional clipping of ``|v|/sqrt(k)`` at ``max_norm`` (plain tensor)."""
    if not torch.is_tensor(k):
        k = torch.full((), float(k), dtype=v.dtype, device=v.device)
    return _Lift.apply(v, k.to(dtype=v.dtype), max_norm)


# ----------------------------------------------------------------------------- public API
def lift(v: torch.Tensor, M, max_norm: Optional[float] = None, dtype: Optional[torch.dtype] = DEFAULT_DTYPE) -> geoopt.ManifoldTensor:
    """Lift Euclidean features ``(..., d)`` onto the hyperboloid ``M``: ``expmap0([0, v])``, shape ``(..., d+1)``.

    ``max_norm`` clips the tangent length ``|v|/sqrt(k)`` (the reference HDD code clips at 10; ``None``
    disables clipping).  Geometry runs in ``dtype`` (float64 by default; ``None`` keeps ``v``'s dtype):
    in float32 ``expmap0`` overflows above ``|v|/sqrt(k)`` of about 88 and distances lose all precision
    well before that.  The result is a ``geoopt.ManifoldTensor`` that keeps ``v``'s autograd graph.
    """
    k = manifold_k(M)
    check_finite(v, "features v")
    if v.dim() < 1 or v.shape[-1] < 1:
        raise ValueError(f"features must have shape (..., d) with d >= 1, got {tuple(v.shape)}")
    if max_norm is not None and not (max_norm > 0):
        raise ValueError(f"max_norm must be positive or None, got {max_norm}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type (float64 by default), got {dtype}")
    v = plain(v)
    if dtype is not None:
        v = v.to(dtype)
    kt = k_tensor(M, v)
    z = lift_(v, kt, max_norm)
    check_reach(z, k, "lifting the features")
    return as_manifold_tensor(z, M)


# The largest relative error tolerated in a gradient taken through Lorentz coordinates (see gradient_reach).
GRADIENT_TOLERANCE = 1e-4


def gradient_reach(dtype: torch.dtype, tolerance: float = GRADIENT_TOLERANCE) -> float:
    """The largest ``r / sqrt(k)`` of a Law centroid through whose closed form a gradient keeps a relative error
    below ``tolerance``: about 13.8 in float64, 3.7 in float32.

    The closed form ``sqrt(k) zbar / sqrt(q)`` divides coordinates of size ``cosh(r / sqrt k)`` by the root of
    their Lorentz norm; its value is accurate far out (:func:`~hddgeo.geometry.centroids.law_` evaluates ``q``
    without cancellation), but its backward reaches a gradient of order 1 by cancelling terms of size ``cosh^2``,
    leaving a relative error of about ``2 eps cosh^2(r / sqrt k)``.  Measured on HDD's loss (k 1, float64, one
    synthetic point, whose Law centroid is the point, against 64 real ones, against a cancellation-free formula):
    6e-10 at radius 8, 8e-8 at 10, 3e-6 at 12, 1e-3 at 15, 8 % at 18, 11x at 20 and 4e5x at 25, where
    Fashion-MNIST's unclipped ConvNet features lie.  Sets spread in angle have their Law centroid near the origin
    and keep accurate gradients however far out their points are; the Karcher mean and the tangent centroid
    differentiate in frames near the points and are not affected."""
    return math.acosh(math.sqrt(tolerance / (2 * torch.finfo(dtype).eps)))


def check_gradient_reach(c: torch.Tensor, k: float, what: str) -> None:
    """``ValueError`` if a centroid ``c`` that a gradient flows through lies beyond :func:`gradient_reach`."""
    if not c.numel():
        return
    far = float(c[..., 0].detach().max()) / math.sqrt(k)
    reach = gradient_reach(c.dtype)
    if far > math.cosh(reach):
        r = math.acosh(far)
        raise ValueError(
            f"{what} lies at radius/sqrt(k) {r:.1f}, beyond {reach:.1f}, where a gradient through its {c.dtype} closed "
            f"form loses its accuracy (relative error about 2 eps cosh^2 = {2 * torch.finfo(c.dtype).eps * far * far:.1g});"
            f" clip the lift (max_norm; the reference clips at 10), take a larger k so that |v|/sqrt(k) stays below "
            f"{reach:.1f}, or use the Karcher mean")


def check_reach(z: torch.Tensor, k: float, what: str) -> None:
    """``ValueError`` if some point lies beyond the reach of its dtype.

    Every formula here squares the time coordinate ``sqrt(k) cosh(r/sqrt k)`` somewhere (inner products,
    the on-manifold check), so a point is usable only while that square is finite: ``r/sqrt(k)`` up to
    about 354 in float64 and 44 in float32.  Beyond it ``inf - inf`` turns into NaN and distances into 0
    without a word, hence the check.  |spatial part| <= time coordinate, so the time coordinates decide.
    """
    time = z[..., 0].detach()
    if z.numel() and not bool(torch.isfinite(time * time).all()):
        reach = math.log(2 * math.sqrt(torch.finfo(z.dtype).max / k))
        advice = ("a max_norm (the reference clips |v|/sqrt(k) at 10) or smaller features: float64 is already "
                  "the widest type" if z.dtype == torch.float64 else "dtype=torch.float64, a max_norm, or smaller features")
        raise ValueError(f"{what} gave points beyond {z.dtype}'s reach (radius/sqrt(k) above about {reach:.0f}, where "
                         f"their squared coordinates overflow); use {advice}")


def dist(x: torch.Tensor, y: torch.Tensor, M) -> torch.Tensor:
    """Geodesic distance between broadcastable point sets on ``M``."""
    x = check_points(x, M, "x")
    y = check_points(y, M, "y")
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} do not broadcast; give them matching shapes") from None
    return dist_(x, y, k_tensor(M, x))


def radius(z: torch.Tensor, M) -> torch.Tensor:
    """Geodesic distance of each point to the origin ``(sqrt(k), 0, ..., 0)``; shape ``z.shape[:-1]``."""
    z = check_points(z, M, "points z")
    return radius_(z, k_tensor(M, z))


def hierarchical_weights(z: torch.Tensor, M) -> torch.Tensor:
    """Paper Eq. 17 / 36 in geoopt's ``k``: ``w(r) = (r/sqrt(k)) / sinh(r/sqrt(k))`` for each point.

    ``w(0) = 1`` and ``w`` decreases strictly with the radius: the logmap at the origin is
    ``Log_o(z) = w(r) (z - cosh(r/sqrt(k)) o)``, so root-level points weigh more in the tangent mean.
    """
    z = check_points(z, M, "points z")
    kt = k_tensor(M, z)
    return inv_sinhc(radius_(z, kt) / torch.sqrt(kt))


def logmap0(z: torch.Tensor, M) -> torch.Tensor:
    """``Log_o(z)`` as an ambient vector with zero time coordinate."""
    z = check_points(z, M, "points z")
    return logmap0_(z, k_tensor(M, z))


def logmap(x: torch.Tensor, y: torch.Tensor, M) -> torch.Tensor:
    """``Log_x(y)`` in ambient coordinates (a tangent vector at ``x``)."""
    x = check_points(x, M, "x")
    y = check_points(y, M, "y")
    return logmap_(x, y, k_tensor(M, x))


def expmap(x: torch.Tensor, u: torch.Tensor, M) -> geoopt.ManifoldTensor:
    """``Exp_x(u)`` for a tangent vector ``u`` at ``x`` (ambient coordinates)."""
    x = check_points(x, M, "x")
    check_finite(u, "tangent vector u")
    kt = k_tensor(M, x)
    return as_manifold_tensor(expmap_(x, plain(u).to(x.dtype), kt), M)
