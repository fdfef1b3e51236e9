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
import numbers
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
        raise TypeError(
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
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}; convert with .double()")
    # one reduction rather than isfinite's four full-size passes: a sum is finite whenever every term is
    # (it may overflow for huge finite values, and then the exact test decides)
    if x.numel() and not bool(torch.isfinite(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what} contains {bad} NaN/inf value(s); remove or repair them before the geometry")


def check_dtype(dtype) -> None:
    """``dtype`` is ``None`` or a floating-point ``torch.dtype`` (``TypeError`` for another type, ``ValueError`` for
    an integer dtype)."""
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float64 (or None), got {type(dtype).__name__}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type (float64 by default), got {dtype}")


def check_max_norm(max_norm) -> None:
    """``max_norm`` is ``None`` or a positive number (``TypeError`` for another type, ``ValueError`` for a value)."""
    if max_norm is None:
        return
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real):
        raise TypeError(f"max_norm must be a number or None, got {type(max_norm).__name__}")
    if not (max_norm > 0):
        raise ValueError(f"max_norm must be positive or None, got {max_norm}; the reference HDD code clips at 10")


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


def check_broadcast(a: torch.Tensor, b: torch.Tensor, what_a: str, what_b: str) -> None:
    """``ValueError`` naming both shapes when ``a`` and ``b`` do not broadcast against each other."""
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"{what_a} {tuple(a.shape)} and {what_b} {tuple(b.shape)} do not broadcast; give them "
                         f"matching shapes") from None


def check_tangent(x: torch.Tensor, u: torch.Tensor) -> None:
    """``ValueError`` unless ``<x, u>_L = 0`` up to rounding (relative to ``|x| |u|``): a vector off the tangent space
    would be carried off the manifold."""
    xd, ud = x.detach(), u.detach()
    inner = (xd[..., 1:] * ud[..., 1:]).sum(-1) - xd[..., 0] * ud[..., 0]
    scale = torch.linalg.vector_norm(xd, dim=-1) * torch.linalg.vector_norm(ud, dim=-1)
    tol = math.sqrt(torch.finfo(xd.dtype).eps) * 10
    if inner.numel() and not bool((inner.abs() <= tol * scale).all()):
        worst = float((inner.abs() / scale.clamp_min(torch.finfo(xd.dtype).tiny)).max())
        raise ValueError(f"u is not tangent at x (max relative |<x, u>_L| = {worst:.3g}, tolerance {tol:.1g}); "
                         f"project it with M.proju(x, u)")


def as_manifold_tensor(x: torch.Tensor, M) -> geoopt.ManifoldTensor:
    """Wrap ``x`` as a ManifoldTensor on ``M`` without cutting the autograd graph.

    ``geoopt.ManifoldTensor(x, manifold=M)`` builds a new leaf and silently drops ``grad_fn``;
    ``as_subclass`` keeps it.
    """
    out = x.as_subclass(geoopt.ManifoldTensor)
    out.manifold = M
    return out


# ----------------------------------------------------------------------------- public API
def lift(v: torch.Tensor, M, *, max_norm: Optional[float] = None,
         dtype: Optional[torch.dtype] = DEFAULT_DTYPE) -> geoopt.ManifoldTensor:
    r"""Lift Euclidean features onto the hyperboloid by the exponential map at the origin.

    A feature ``v`` of shape ``(..., d)`` becomes ``z = expmap0([0, v])`` of shape ``(..., d+1)``, at geodesic
    distance ``|v|`` from the origin ``o = (sqrt(k), 0, ..., 0)``:

    .. math::

        z = \sqrt{k}\,\Bigl(\cosh\frac{|v|}{\sqrt k},\ \sinh\frac{|v|}{\sqrt k}\,\frac{v}{|v|}\Bigr).

    Parameters
    ----------
    v : torch.Tensor
        Features, shape ``(..., d)`` with ``d >= 1``; finite, floating point.
    M : geoopt.Lorentz
        The manifold ``<x, x>_L = -k`` (curvature ``-1/k``).
    max_norm : float or None, optional
        Clip the tangent length ``|v|/sqrt(k)`` at this value first, keeping the direction (the reference HDD code
        clips at 10, and so does :func:`hdd_loss` by default; ``None``, the default here, does not clip).
    dtype : torch.dtype or None, optional
        The dtype the geometry runs in: float64 by default; ``None`` keeps ``v``'s.  In float32 the points are refused
        above ``|v|/sqrt(k)`` of about 44 (their squared coordinates overflow; 354 in float64), and Law's centroid
        loses its gradient well before (:func:`hddgeo.geometry.gradient_reach`).

    Returns
    -------
    geoopt.ManifoldTensor
        Points on ``M``, shape ``(..., d+1)``, that keep ``v``'s autograd graph.

    Raises
    ------
    TypeError
        ``v`` is not a floating-point tensor, ``M`` is not a ``geoopt.Lorentz``, ``max_norm`` is not a number or
        ``dtype`` not a ``torch.dtype``.
    ValueError
        ``v`` holds NaN or inf or has no feature dimension, ``max_norm <= 0``, ``dtype`` is not floating point, or
        the points would overflow ``dtype`` (clip with ``max_norm``).

    See Also
    --------
    radius : the geodesic distance to the origin, ``|v|`` (or the clip) for a lifted feature.
    hdd_loss : lifts both feature sets and compares their centroids.

    References
    ----------
    W. Li, G. Li, K. Maeda, T. Ogawa and M. Haseyama, "Hyperbolic Dataset Distillation", NeurIPS 2025, Sec. 3.2.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> z = hddgeo.lift(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), M, max_norm=2.0)
    >>> tuple(z.shape), z.dtype
    ((2, 3), torch.float64)
    >>> hddgeo.radius(z, M)                # |v| = 5 is clipped at 2; |v| = 0.5 is not
    tensor([2.0000, 0.5000], dtype=torch.float64)
    """
    k = manifold_k(M)
    check_finite(v, "features v")
    if v.dim() < 1 or v.shape[-1] < 1:
        raise ValueError(f"features must have shape (..., d) with d >= 1, got {tuple(v.shape)}")
    check_max_norm(max_norm)
    check_dtype(dtype)
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
    r"""Geodesic distance between points on the Lorentz model, accurate at any radius.

    .. math::

        d(x, y) = \sqrt{k}\,\operatorname{arcosh}\bigl(-\langle x, y\rangle_L / k\bigr),

    evaluated as ``2 sqrt(k) asinh(sqrt((cosh(theta) - 1) / 2))`` from a sum of non-negative terms, which keeps
    every digit of a small distance between two points far from the origin (the ``arcosh`` form loses them all).
    geoopt's ``M.dist(x, y)`` computes the same quantity with the ``arcosh`` form.

    Parameters
    ----------
    x, y : torch.Tensor
        Points on ``M``, shapes ``(..., d+1)`` that broadcast against each other.
    M : geoopt.Lorentz
        The manifold.

    Returns
    -------
    torch.Tensor
        Distances, shape ``broadcast(x, y).shape[:-1]``.

    Raises
    ------
    TypeError
        ``x`` or ``y`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``, or the shapes do not broadcast.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> from hddgeo.geometry import dist
    >>> M = geoopt.Lorentz(k=1.0)
    >>> x = hddgeo.lift(torch.tensor([20.0, 0.0]), M)
    >>> y = hddgeo.lift(torch.tensor([20.0, 1e-6]), M)
    >>> float(dist(x, y, M))                  # 2 asinh(sinh(20) sin(phi / 2)), phi = 5e-8: every digit kept
    5.00467814902...
    """
    x = check_points(x, M, "x")
    y = check_points(y, M, "y")
    check_broadcast(x, y, "x", "y")
    return _dist(x, y, k_tensor(M, x))


def radius(z: torch.Tensor, M) -> torch.Tensor:
    """Geodesic distance of each point to the origin ``o = (sqrt(k), 0, ..., 0)``: its hierarchy level.

    Computed as ``sqrt(k) asinh(|z_s| / sqrt(k))`` from the spatial part, exact near the origin (the textbook
    ``sqrt(k) arcosh(z_0 / sqrt(k))`` loses half the digits there).

    Parameters
    ----------
    z : torch.Tensor
        Points on ``M``, shape ``(..., d+1)``.
    M : geoopt.Lorentz
        The manifold.

    Returns
    -------
    torch.Tensor
        Radii, shape ``z.shape[:-1]``.

    Raises
    ------
    TypeError
        ``z`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``.

    References
    ----------
    W. Li et al., "Hyperbolic Dataset Distillation", NeurIPS 2025, Eq. 15.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=4.0)
    >>> hddgeo.radius(hddgeo.lift(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), M), M)
    tensor([0., 5.], dtype=torch.float64)
    """
    z = check_points(z, M, "points z")
    return _radius(z, k_tensor(M, z))


def hierarchical_weights(z: torch.Tensor, M) -> torch.Tensor:
    r"""HDD's per-sample hierarchical weight of each point (paper Eq. 17 / 36, in geoopt's ``k``).

    .. math::

        w(r) = \frac{r/\sqrt{k}}{\sinh(r/\sqrt{k})}, \qquad r = d(o, z),

    with ``w(0) = 1``, strictly decreasing in ``r``.  The logmap at the origin is
    ``Log_o(z) = w(r) (z - cosh(r/sqrt(k)) o)``, so root-level points weigh more in the tangent mean.

    Parameters
    ----------
    z : torch.Tensor
        Points on ``M``, shape ``(..., d+1)``.
    M : geoopt.Lorentz
        The manifold.

    Returns
    -------
    torch.Tensor
        Weights in ``(0, 1]``, shape ``z.shape[:-1]``.

    Raises
    ------
    TypeError
        ``z`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``.

    References
    ----------
    W. Li et al., "Hyperbolic Dataset Distillation", NeurIPS 2025, Eq. 17 and Appendix C (Eq. 36).

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> z = hddgeo.lift(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]]), M)
    >>> hddgeo.hierarchical_weights(z, M)             # 1, 1/sinh(1), 3/sinh(3)
    tensor([1.0000, 0.8509, 0.2995], dtype=torch.float64)
    """
    z = check_points(z, M, "points z")
    kt = k_tensor(M, z)
    return inv_sinhc(_radius(z, kt) / torch.sqrt(kt))


def logmap0(z: torch.Tensor, M) -> torch.Tensor:
    """The logarithmic map at the origin, ``Log_o(z)``, exact at any radius.

    With ``z_s = sqrt(k) sinh(theta) u``, ``Log_o(z) = (0, (theta / sinh(theta)) z_s)``: a vector of length
    ``d(o, z)`` in the tangent space at the origin (ambient coordinates, time coordinate 0).  The inverse of
    :func:`lift` without a clip.  geoopt's ``M.logmap0(z)`` computes the same vector.

    Parameters
    ----------
    z : torch.Tensor
        Points on ``M``, shape ``(..., d+1)``.
    M : geoopt.Lorentz
        The manifold.

    Returns
    -------
    torch.Tensor
        Tangent vectors at the origin, shape ``(..., d+1)``, first coordinate 0.

    Raises
    ------
    TypeError
        ``z`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> from hddgeo.geometry import logmap0
    >>> M = geoopt.Lorentz(k=1.0)
    >>> logmap0(hddgeo.lift(torch.tensor([0.3, -0.4]), M), M)
    tensor([ 0.0000,  0.3000, -0.4000], dtype=torch.float64)
    """
    z = check_points(z, M, "points z")
    return _logmap0(z, k_tensor(M, z))


def logmap(x: torch.Tensor, y: torch.Tensor, M) -> torch.Tensor:
    """The logarithmic map ``Log_x(y)``: the tangent vector at ``x`` pointing to ``y``, of length ``d(x, y)``.

    Computed in the frame of ``x`` (the boost that carries ``x`` to the origin), so it keeps its digits far from
    the origin.  geoopt's ``M.logmap(x, y)`` computes the same vector.

    Parameters
    ----------
    x, y : torch.Tensor
        Points on ``M``, shapes ``(..., d+1)`` that broadcast against each other.
    M : geoopt.Lorentz
        The manifold.

    Returns
    -------
    torch.Tensor
        Tangent vectors at ``x`` in ambient coordinates, shape ``(..., d+1)``.

    Raises
    ------
    TypeError
        ``x`` or ``y`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``.

    See Also
    --------
    expmap : its inverse.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> from hddgeo.geometry import dist, expmap, logmap
    >>> M = geoopt.Lorentz(k=1.0)
    >>> x, y = hddgeo.lift(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), M)
    >>> u = logmap(x, y, M)
    >>> bool(torch.allclose(expmap(x, u, M), y))
    True
    """
    x = check_points(x, M, "x")
    y = check_points(y, M, "y")
    check_broadcast(x, y, "x", "y")
    return _logmap(x, y, k_tensor(M, x))


def expmap(x: torch.Tensor, u: torch.Tensor, M) -> geoopt.ManifoldTensor:
    r"""The exponential map ``Exp_x(u)``: follow the geodesic from ``x`` along ``u`` for length ``|u|_L``.

    .. math::

        \operatorname{Exp}_x(u) = \cosh\theta\, x + \frac{\sinh\theta}{\theta}\, u, \qquad
        \theta = |u|_L / \sqrt{k}.

    geoopt's ``M.expmap(x, u)`` computes the same point.

    Parameters
    ----------
    x : torch.Tensor
        Points on ``M``, shape ``(..., d+1)``.
    u : torch.Tensor
        Tangent vectors at ``x`` in ambient coordinates (``<x, u>_L = 0``), broadcastable to ``x``.
    M : geoopt.Lorentz
        The manifold.

    Returns
    -------
    geoopt.ManifoldTensor
        Points on ``M``, shape ``(..., d+1)``.

    Raises
    ------
    TypeError
        ``x`` or ``u`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``, ``u`` is not finite or not tangent at ``x`` (geoopt's ``M.expmap``
        projects instead; project ``u`` with ``M.proju(x, u)``), or the shapes do not broadcast.

    See Also
    --------
    logmap : its inverse.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> from hddgeo.geometry import expmap
    >>> M = geoopt.Lorentz(k=1.0)
    >>> o = hddgeo.lift(torch.zeros(2), M)            # the origin (1, 0, 0)
    >>> hddgeo.radius(expmap(o, torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64), M), M)
    tensor(2., dtype=torch.float64)
    """
    x = check_points(x, M, "x")
    check_finite(u, "tangent vector u")
    check_broadcast(x, u, "x", "u")
    u = plain(u).to(x.dtype)
    check_tangent(x, u)
    return as_manifold_tensor(_expmap(x, u, k_tensor(M, x)), M)
