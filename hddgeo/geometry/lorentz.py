"""Lorentz-model primitives in geoopt's convention, as small pure functions.

geoopt's ``Lorentz(k)`` is the upper sheet ``<x, x>_L = -k`` with ``<x, y>_L = -x_0 y_0 + x_s . y_s``,
sectional curvature ``K = -1/k``, origin ``o = (sqrt(k), 0, ..., 0)`` and
``d(x, y) = sqrt(k) * arcosh(-<x, y>_L / k)``.  Throughout, ``theta = d / sqrt(k)`` is the distance in
units of the curvature radius.

Every public function validates its input (``TypeError`` for an argument of the wrong type or an unknown
keyword, ``ValueError`` with a message that says what to fix for a bad value) and calls a kernel of
:mod:`hddgeo.geometry._math`, which trusts its input and is what hot loops call.
"""
from __future__ import annotations

import math
from typing import Optional

import geoopt
import torch

from hddgeo.device import on_accelerator

from ._math import _dist, _expmap, _lift, _logmap, _logmap0, _radius, inv_sinhc

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
    z = _lift(v, kt, max_norm)
    check_reach(z, k, "lifting the features")
    return as_manifold_tensor(z, M)


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
    return _dist(x, y, k_tensor(M, x))


def radius(z: torch.Tensor, M) -> torch.Tensor:
    """Geodesic distance of each point to the origin ``(sqrt(k), 0, ..., 0)``; shape ``z.shape[:-1]``."""
    z = check_points(z, M, "points z")
    return _radius(z, k_tensor(M, z))


def hierarchical_weights(z: torch.Tensor, M) -> torch.Tensor:
    """Paper Eq. 17 / 36 in geoopt's ``k``: ``w(r) = (r/sqrt(k)) / sinh(r/sqrt(k))`` for each point.

    ``w(0) = 1`` and ``w`` decreases strictly with the radius: the logmap at the origin is
    ``Log_o(z) = w(r) (z - cosh(r/sqrt(k)) o)``, so root-level points weigh more in the tangent mean.
    """
    z = check_points(z, M, "points z")
    kt = k_tensor(M, z)
    return inv_sinhc(_radius(z, kt) / torch.sqrt(kt))


def logmap0(z: torch.Tensor, M) -> torch.Tensor:
    """``Log_o(z)`` as an ambient vector with zero time coordinate."""
    z = check_points(z, M, "points z")
    return _logmap0(z, k_tensor(M, z))


def logmap(x: torch.Tensor, y: torch.Tensor, M) -> torch.Tensor:
    """``Log_x(y)`` in ambient coordinates (a tangent vector at ``x``)."""
    x = check_points(x, M, "x")
    y = check_points(y, M, "y")
    return _logmap(x, y, k_tensor(M, x))


def expmap(x: torch.Tensor, u: torch.Tensor, M) -> geoopt.ManifoldTensor:
    """``Exp_x(u)`` for a tangent vector ``u`` at ``x`` (ambient coordinates)."""
    x = check_points(x, M, "x")
    check_finite(u, "tangent vector u")
    kt = k_tensor(M, x)
    return as_manifold_tensor(_expmap(x, plain(u).to(x.dtype), kt), M)
