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

import geoopt
import torch

from ._karcher_math import _karcher
from ._math import _law, _tangent, cosh_theta_minus_one, safe_sqrt
from .lorentz import (
    as_manifold_tensor,
    check_finite,
    check_points,
    k_tensor,
    plain,
)

CENTROID_METHODS = ("law", "karcher", "tangent")


# ----------------------------------------------------------------------------- input handling
def check_set(z: torch.Tensor, M, weights: Optional[torch.Tensor]):
    """Validate a point set ``(..., n, d+1)`` and its weights; return plain ``z`` and normalised weights."""
    if torch.is_tensor(z) and z.dim() == 1:
        raise ValueError(f"a point set needs shape (..., n, d+1), got {tuple(z.shape)}; add a set dimension with z.unsqueeze(0)")
    z = check_points(z, M, "points z", min_points_dim=2)
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
_REF_HDD = 'W. Li, G. Li, K. Maeda, T. Ogawa and M. Haseyama, "Hyperbolic Dataset Distillation", NeurIPS 2025'


def law_centroid(z: torch.Tensor, M, *, weights: Optional[torch.Tensor] = None) -> geoopt.ManifoldTensor:
    r"""Law et al.'s closed-form centroid of each point set: the Euclidean mean, rescaled onto the hyperboloid.

    .. math::

        c = \sqrt{k}\,\frac{\bar z}{\sqrt{|\langle \bar z, \bar z\rangle_L|}}, \qquad
        \bar z = \sum_i w_i z_i \Big/ \sum_i w_i,

    which lies on ``M`` (``<c, c>_L = -k``) for every ``k`` (the paper's printed ``sqrt(-K)`` factor does not, in
    geoopt's convention).  It minimises the sum of *squared Lorentzian* distances, not geodesic ones, so it
    approximates the Fréchet mean (:func:`karcher_mean`); for a tight cloud the two nearly agree.  ``<zbar,
    zbar>_L`` is evaluated without cancellation, so the value holds at any radius.

    **Gradient reach.**  Its gradient does not hold at any radius: the backward of the closed form cancels terms
    of size ``cosh^2(r/sqrt k)``, a relative error of about ``2 eps cosh^2(r/sqrt k)`` (4e5x at radius 25 in
    float64).  A gradient through a centroid beyond :func:`~hddgeo.geometry.gradient_reach` (13.8 in float64,
    3.7 in float32) is therefore NaN, for that set only, on every device: decided on the device without a host
    read, so that a GPU loop keeps its pace and a loop that checks its gradients stops at once, instead of taking
    a step on noise.  The value and gradients within reach are untouched.  Clip the lift (``max_norm``), take a
    larger ``k``, or use the Karcher mean, which differentiates in frames and is not affected.

    Parameters
    ----------
    z : torch.Tensor
        Point sets on ``M``, shape ``(..., n, d+1)``; dimension ``-2`` is reduced.
    M : geoopt.Lorentz
        The manifold.
    weights : torch.Tensor, optional
        Non-negative weights broadcastable to ``(..., n)``, each set with one positive weight at least; normalised
        per set.  Uniform by default.

    Returns
    -------
    geoopt.ManifoldTensor
        Centroids, shape ``(..., d+1)``, differentiable in ``z`` and ``weights``.

    Raises
    ------
    TypeError
        ``z`` or ``weights`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``, a set is empty, or the weights are negative, all zero or of the
        wrong shape.

    See Also
    --------
    karcher_mean : the exact Fréchet mean.
    centroid : one switch over the three centroids.

    References
    ----------
    M. T. Law, R. Liao, J. Snell and R. S. Zemel, "Lorentzian Distance Learning for Hyperbolic Representations",
    ICML 2019, Eq. 4.  W. Li et al., "Hyperbolic Dataset Distillation", NeurIPS 2025, Eq. 12.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=2.0)
    >>> z = hddgeo.lift(torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]]), M)   # one set of two points
    >>> hddgeo.radius(hddgeo.law_centroid(z, M), M)   # symmetric about the origin: the origin
    tensor([0.], dtype=torch.float64)
    >>> w = torch.tensor([3.0, 1.0])
    >>> hddgeo.radius(hddgeo.law_centroid(z, M, weights=w), M)   # approximates ...
    tensor([0.4446], dtype=torch.float64)
    >>> hddgeo.radius(hddgeo.karcher_mean(z, M, weights=w), M)   # ... the exact mean
    tensor([0.5000], dtype=torch.float64)
    """
    z, w = check_set(z, M, weights)
    return as_manifold_tensor(_law(z, w, k_tensor(M, z)), M)


def tangent_centroid(z: torch.Tensor, M, *, weights: Optional[torch.Tensor] = None) -> geoopt.ManifoldTensor:
    r"""HDD's tangent-space centroid (paper Eq. 18): the weighted mean of the logmaps at the origin, mapped back.

    .. math::

        c = \operatorname{Exp}_o\Bigl(\sum_i w_i \operatorname{Log}_o(z_i)\Bigr), \qquad \sum_i w_i = 1.

    ``Log_o(z_i) = w(r_i) u_i`` already carries the hierarchical weight of Eq. 17
    (:func:`hierarchical_weights`); the explicit ``weights`` come on top of it.  Eq. 18 prints a plain sum; the
    normalised sum is taken here so that the estimate does not grow with the number of points.

    Parameters
    ----------
    z : torch.Tensor
        Point sets on ``M``, shape ``(..., n, d+1)``; dimension ``-2`` is reduced.
    M : geoopt.Lorentz
        The manifold.
    weights : torch.Tensor, optional
        Non-negative weights broadcastable to ``(..., n)``; normalised per set.  Uniform by default.

    Returns
    -------
    geoopt.ManifoldTensor
        Centroids, shape ``(..., d+1)``, differentiable in ``z`` and ``weights``.

    Raises
    ------
    TypeError
        ``z`` or ``weights`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``, a set is empty, or the weights are invalid.

    References
    ----------
    W. Li et al., "Hyperbolic Dataset Distillation", NeurIPS 2025, Eq. 18 and Appendix C.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> v = torch.tensor([[[0.2, 0.0], [0.4, 0.0]]])  # one set: two points on a ray from the origin
    >>> hddgeo.radius(hddgeo.tangent_centroid(hddgeo.lift(v, M), M), M)   # the mean of the radii
    tensor([0.3000], dtype=torch.float64)
    """
    z, w = check_set(z, M, weights)
    return as_manifold_tensor(_tangent(z, w, k_tensor(M, z)), M)


# ----------------------------------------------------------------------------- Karcher mean
@dataclass
class KarcherInfo:
    """Convergence report of :func:`karcher_mean` (``return_info=True``).

    Parameters
    ----------
    iterations : int
        Newton steps taken (the largest over the sets; 0 for sets of one point).
    grad_norm : torch.Tensor
        ``|sum_i w_i Log_x(z_i)|`` at the returned mean of each set (normalised weights, distance units); shape
        the batch shape of the means.
    converged : torch.Tensor
        ``grad_norm <= tol`` for each set (bool).
    tol : float
        The tolerance used (the default, ``1e-10 sqrt(k)`` in float64, when none was given).

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> z = hddgeo.lift(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-0.5, 0.2]]]), M)
    >>> c, info = hddgeo.karcher_mean(z, M, return_info=True)
    >>> bool(info.converged.all()), info.grad_norm.shape, info.tol
    (True, torch.Size([1]), 1e-10)
    """

    iterations: int
    grad_norm: torch.Tensor
    converged: torch.Tensor
    tol: float


def default_tol(dtype: torch.dtype, k: float) -> float:
    """Stopping threshold on ``|sum_i w_i Log_x(z_i)|``, in distance units (scales with ``sqrt(k)``)."""
    return (1e-10 if dtype == torch.float64 else 1e-4) * math.sqrt(k)


def karcher_mean(z: torch.Tensor, M, *, weights: Optional[torch.Tensor] = None, tol: Optional[float] = None,
                 max_iter: Optional[int] = None, warn: bool = True, return_info: bool = False,
                 backward: str = "implicit"):
    r"""The exact weighted Fréchet (Karcher) mean of each point set, differentiable, in ``O(n d)`` memory.

    .. math::

        m = \operatorname*{arg\,min}_{x \in M} \sum_i w_i\, d(x, z_i)^2, \qquad \sum_i w_i = 1.

    Starts from :func:`law_centroid` and takes Riemannian Newton steps (Hessian-vector products and conjugate
    gradients, never a ``d x d`` matrix, in the frame of the iterate) with a line search (the full step, a quarter
    step and a damped gradient step, evaluated together; the longest that does not increase the objective is
    kept) until the Riemannian gradient norm ``|sum_i w_i Log_m(z_i)|`` is at most ``tol`` or ``max_iter`` steps
    were taken.  A plain fixed point ``m <- Exp_m(sum_i w_i Log_m(z_i))`` overshoots in negative curvature on
    spread-out clouds; Newton does not.  A set of one point is returned as it is.

    Parameters
    ----------
    z : torch.Tensor
        Point sets on ``M``, shape ``(..., n, d+1)``; dimension ``-2`` is reduced.  Work in float64.
    M : geoopt.Lorentz
        The manifold.
    weights : torch.Tensor, optional
        Non-negative weights broadcastable to ``(..., n)``; normalised per set.  Uniform by default.
    tol : float, optional
        Stopping threshold on the gradient norm, in distance units: ``1e-10 sqrt(k)`` in float64 and
        ``1e-4 sqrt(k)`` otherwise by default.
    max_iter : int, optional
        Most Newton steps (50 by default; from Law's centroid a tight cloud takes 2-3).
    warn : bool, optional
        Warn (``RuntimeWarning``, once per call) when some set stops short of ``tol`` (after ``max_iter`` steps,
        or where its precision allows no further descent), as POT's solvers do.  ``False`` silences it and skips
        the check, a host read of the gradient norms.
    return_info : bool, optional
        Return a :class:`KarcherInfo` with the iteration count and each set's final gradient norm as well.
    backward : {"implicit", "unroll"}, optional
        ``"implicit"`` (default) differentiates the optimality condition ``sum_i w_i Log_m(z_i) = 0`` by the
        implicit function theorem: one more conjugate-gradient solve and an explicit vector-Jacobian product,
        ``O(n d)`` memory.  ``"unroll"`` differentiates through a damped fixed-point iteration instead (memory grows
        with the iterations; for checking).  ``k`` is a constant to both backwards: a learnable ``M.k`` gets no
        gradient through the Karcher mean (it does through :func:`lift`, :func:`law_centroid` and the distances).

    Returns
    -------
    mean : geoopt.ManifoldTensor
        Means, shape ``(..., d+1)``, differentiable in ``z`` and ``weights``.
    info : KarcherInfo
        Only with ``return_info=True``.

    Raises
    ------
    TypeError
        ``z`` or ``weights`` is not a floating-point tensor, ``M`` is not a ``geoopt.Lorentz``, or an option has
        the wrong type (``tol`` not a number, ``max_iter`` not an integer).
    ValueError
        A point is not finite or not on ``M``, a set is empty, the weights are invalid, ``tol < 0``,
        ``max_iter < 0``, or ``backward`` is neither ``"implicit"`` nor ``"unroll"``.

    Warns
    -----
    RuntimeWarning
        Some set stopped short of ``tol`` (unless ``warn=False``).

    See Also
    --------
    law_centroid : the closed form it starts from.
    frechet_objective : the objective it minimises.
    centroid : one switch over the three centroids.

    References
    ----------
    H. Karcher, "Riemannian center of mass and mollifier smoothing", Comm. Pure Appl. Math. 30 (1977) 509-541.
    M. Fréchet, "Les éléments aléatoires de nature quelconque dans un espace distancié", Ann. Inst. Henri Poincaré
    10 (1948) 215-310.  W. Li et al., "Hyperbolic Dataset Distillation", NeurIPS 2025, Sec. 3.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> z = hddgeo.lift(3.0 + torch.randn(2, 20, 4, generator=g), M)     # two sets of 20 points
    >>> m, info = hddgeo.karcher_mean(z, M, return_info=True)
    >>> tuple(m.shape), bool(info.converged.all())
    ((2, 5), True)
    >>> law = hddgeo.law_centroid(z, M)                                  # its start, and an approximation
    >>> bool((hddgeo.frechet_objective(m, z, M) <= hddgeo.frechet_objective(law, z, M)).all())
    True
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = hddgeo.karcher_mean(z, M, max_iter=0)               # stops at Law's centroid
    >>> [w.category.__name__ for w in caught]
    ['RuntimeWarning']
    >>> _ = hddgeo.karcher_mean(z, M, max_iter=0, warn=False)       # silent
    """
    return _karcher_mean(z, M, weights, tol, max_iter, warn, return_info, backward, stacklevel=3)


def _karcher_mean(z, M, weights, tol, max_iter, warn, return_info, backward, stacklevel):
    """:func:`karcher_mean`'s body; ``stacklevel`` makes its warning point at the caller's line, also through
    :func:`centroid`."""
    z, w = check_set(z, M, weights)
    k_val = float(M.k.detach())
    tol, max_iter, backward = karcher_options(z.dtype, k_val, tol=tol, max_iter=max_iter, backward=backward)
    if not isinstance(warn, bool) or not isinstance(return_info, bool):
        raise TypeError(f"warn and return_info must be True or False, got {warn!r} and {return_info!r}")
    # keep the user's weight tensor in the graph so that gradients reach it
    if weights is None:
        w_raw = w
    else:  # divided by a constant (the result does not depend on it) so that huge weights cannot overflow
        w_raw = plain(weights).to(dtype=z.dtype, device=z.device).expand(z.shape[:-1])
        w_raw = w_raw / w_raw.detach().amax(-1, keepdim=True)
    x, iterations, gnorm = _karcher(z, w_raw, k_val, tol, max_iter, backward)
    x = as_manifold_tensor(x, M)
    gnorm = gnorm.detach()
    if warn:
        _warn_if_short(gnorm, tol, iterations, max_iter, z.dtype, stacklevel + 1)
    if not return_info:
        return x
    return x, KarcherInfo(iterations=iterations, grad_norm=gnorm, converged=gnorm <= tol, tol=tol)


def _warn_if_short(gnorm: torch.Tensor, tol: float, iterations: int, max_iter: int, dtype: torch.dtype,
                   stacklevel: int) -> None:
    """One ``RuntimeWarning`` naming how many sets stopped above ``tol`` and what to change."""
    short = gnorm > tol
    if not bool(short.any()):
        return
    if iterations >= max_iter:
        why = f"after max_iter={max_iter} Newton steps; raise max_iter or loosen tol"
    else:  # the line search found no descent: the tolerance is below what the coordinates resolve
        why = f"where {dtype} resolves no further descent; loosen tol"
        if dtype != torch.float64:
            why += " or use float64"
    if dtype in (torch.float16, torch.bfloat16):
        why = f"{why} ({dtype} cannot resolve it; use float64)"
    warnings.warn(f"karcher_mean stopped short of tol={tol:g} in {int(short.sum())} of {short.numel()} set(s) "
                  f"(largest gradient norm {float(gnorm.max()):.3g}) {why}; pass warn=False to silence this",
                  RuntimeWarning, stacklevel=stacklevel)


def frechet_objective(x: torch.Tensor, z: torch.Tensor, M, *, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""The Fréchet objective ``sum_i w_i d(x, z_i)^2`` of candidate centroids, for comparing centroids.

    .. math::

        F(x) = \sum_i w_i\, d(x, z_i)^2, \qquad \sum_i w_i = 1,

    whose minimiser is :func:`karcher_mean`.  Distances are computed without cancellation.

    Parameters
    ----------
    x : torch.Tensor
        Candidate centroids on ``M``, shape ``(..., d+1)`` (one per set).
    z : torch.Tensor
        Point sets on ``M``, shape ``(..., n, d+1)``.
    M : geoopt.Lorentz
        The manifold.
    weights : torch.Tensor, optional
        Non-negative weights broadcastable to ``(..., n)``; normalised per set.  Uniform by default.

    Returns
    -------
    torch.Tensor
        ``F(x)`` for each set, shape ``(...)``.

    Raises
    ------
    TypeError
        An argument is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``, a set is empty, or the weights are invalid.

    References
    ----------
    M. Fréchet, Ann. Inst. Henri Poincaré 10 (1948) 215-310; H. Karcher, Comm. Pure Appl. Math. 30 (1977) 509-541.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> z = hddgeo.lift(torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]]), M)
    >>> hddgeo.frechet_objective(hddgeo.karcher_mean(z, M), z, M)   # the origin, at distance 1 from both
    tensor([1.], dtype=torch.float64)
    """
    z, w = check_set(z, M, weights)
    x = check_points(x, M, "centroid x")
    try:
        torch.broadcast_shapes(x.shape[:-1], z.shape[:-2])
        matches = x.shape[-1] == z.shape[-1]
    except RuntimeError:
        matches = False
    if not matches:
        raise ValueError(f"centroid x {tuple(x.shape)} does not match the sets z {tuple(z.shape)}: x holds one point "
                         f"per set, shape {tuple(z.shape[:-2]) + (z.shape[-1],)}")
    kt = k_tensor(M, z)
    theta = 2 * torch.asinh(safe_sqrt(cosh_theta_minus_one(x[..., 1:].unsqueeze(-2), z[..., 1:], torch.sqrt(kt)) / 2))
    return kt * (w * theta * theta).sum(-1)


def karcher_options(dtype, k_val: float, tol=None, max_iter=None, backward="implicit", **unknown):
    """``(tol, max_iter, backward)`` checked and with defaults filled in (one check for :func:`karcher_mean` and the
    losses): ``TypeError`` for an option the Karcher mean does not take or a value of the wrong type,
    ``ValueError`` for a bad value."""
    if unknown:
        raise TypeError(f"unknown Karcher option(s) {', '.join(map(repr, sorted(unknown)))}; "
                        f"valid: tol, max_iter, backward")
    tol = default_tol(dtype, k_val) if tol is None else tol
    max_iter = 50 if max_iter is None else max_iter
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter must be an integer, got {type(max_iter).__name__} {max_iter!r}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a number, got {type(tol).__name__} {tol!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if backward not in ("implicit", "unroll"):
        raise ValueError(f"backward must be 'implicit' or 'unroll', got {backward!r}")
    return float(tol), int(max_iter), backward


def check_method(method, name: str = "method") -> None:
    """``method`` names a centroid (:data:`CENTROID_METHODS`): ``TypeError`` for another type, ``ValueError`` for an
    unknown name; ``name`` is the argument's name in the message."""
    if not isinstance(method, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(CENTROID_METHODS)}; got {type(method).__name__}")
    if method not in CENTROID_METHODS:
        raise ValueError(f"unknown centroid method {method!r}; choose one of {', '.join(CENTROID_METHODS)}")


def _centroid(z, w, k: torch.Tensor, method: str, k_val: Optional[float] = None, **karcher_kwargs):
    """Dispatcher on plain tensors (``w`` normalised, ``k`` a tensor); used by the losses.  The Karcher
    options are checked as :func:`karcher_mean` checks them; ``k_val`` is ``k`` as a Python number when
    the caller has it (reading it from a GPU tensor is a host synchronisation).  No convergence warning: the
    losses read nothing back from the device."""
    if method == "law":
        return _law(z, w, k)
    if method == "tangent":
        return _tangent(z, w, k)
    if method == "karcher":
        k_val = float(k.detach()) if k_val is None else float(k_val)
        tol, max_iter, backward = karcher_options(z.dtype, k_val, **karcher_kwargs)
        return _karcher(z, w, k_val, tol, max_iter, backward)[0]
    raise ValueError(f"unknown centroid method {method!r}; choose one of {', '.join(CENTROID_METHODS)}")


def centroid(z: torch.Tensor, M, *, method: str = "law", weights: Optional[torch.Tensor] = None, **karcher_options):
    """The centroid of each point set by ``method``: one switch over Law's, the Karcher mean and the tangent one.

    Parameters
    ----------
    z : torch.Tensor
        Point sets on ``M``, shape ``(..., n, d+1)``; dimension ``-2`` is reduced.
    M : geoopt.Lorentz
        The manifold.
    method : {"law", "karcher", "tangent"}, optional
        :func:`law_centroid` (default), :func:`karcher_mean` or :func:`tangent_centroid`.
    weights : torch.Tensor, optional
        Non-negative weights broadcastable to ``(..., n)``; normalised per set.  Uniform by default.
    **karcher_options
        ``tol``, ``max_iter``, ``warn``, ``return_info``, ``backward``: passed to :func:`karcher_mean`; only with
        ``method="karcher"``.

    Returns
    -------
    geoopt.ManifoldTensor
        Centroids, shape ``(..., d+1)`` (with ``return_info=True``, ``(mean, KarcherInfo)``).

    Raises
    ------
    TypeError
        As the chosen centroid; also for a Karcher option given to another method, or an unknown keyword.
    ValueError
        As the chosen centroid; also for an unknown ``method`` (the message lists the choices).

    See Also
    --------
    CENTROID_METHODS : the method names.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> z = hddgeo.lift(torch.tensor([[[2.0, 0.0], [0.0, 2.0]]]), M)   # two points: Law = Karcher = midpoint
    >>> {m: round(float(hddgeo.radius(hddgeo.centroid(z, M, method=m), M)), 4) for m in hddgeo.CENTROID_METHODS}
    {'law': 0.8322, 'karcher': 0.8322, 'tangent': 1.4142}
    """
    check_method(method)
    if method == "karcher":
        options = {"tol": None, "max_iter": None, "warn": True, "return_info": False, "backward": "implicit"}
        unknown = sorted(set(karcher_options) - set(options))
        if unknown:
            raise TypeError(f"centroid() got an unexpected keyword argument {unknown[0]!r}; the Karcher mean's options "
                            f"are {', '.join(options)}")
        options.update(karcher_options)
        return _karcher_mean(z, M, weights, stacklevel=3, **options)
    if karcher_options:
        raise TypeError(f"option(s) {', '.join(map(repr, sorted(karcher_options)))} belong to the Karcher mean; "
                        f"the {method} centroid takes only weights")
    return (law_centroid if method == "law" else tangent_centroid)(z, M, weights=weights)
