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
def law_centroid(z: torch.Tensor, M, weights: Optional[torch.Tensor] = None):
    """Law et al.'s closed-form centroid, on the manifold (``<c, c>_L = -k``)."""
    z, w = check_set(z, M, weights)
    return as_manifold_tensor(_law(z, w, k_tensor(M, z)), M)


def tangent_centroid(z: torch.Tensor, M, weights: Optional[torch.Tensor] = None):
    """Paper Eq. 18: ``Exp_o(sum_i w_i Log_o(z_i))`` with normalised weights.

    ``Log_o(z_i) = w(r_i) u_i`` already carries the hierarchical weight of Eq. 17; the explicit
    ``weights`` are on top of it.  Eq. 18 prints a plain sum; we take the normalised sum so that the
    estimate does not grow with the number of points.
    """
    z, w = check_set(z, M, weights)
    return as_manifold_tensor(_tangent(z, w, k_tensor(M, z)), M)


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
    x, iterations, gnorm = _karcher(z, w_raw, k_val, tol, max_iter, backward)
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


def _centroid(z, w, k: torch.Tensor, method: str, k_val: Optional[float] = None, **karcher_kwargs):
    """Dispatcher on plain tensors (``w`` normalised, ``k`` a tensor); used by the losses.  The Karcher
    options are checked as :func:`karcher_mean` checks them; ``k_val`` is ``k`` as a Python number when
    the caller has it (reading it from a GPU tensor is a host synchronisation)."""
    if method == "law":
        return _law(z, w, k)
    if method == "tangent":
        return _tangent(z, w, k)
    if method == "karcher":
        k_val = float(k.detach()) if k_val is None else float(k_val)
        tol, max_iter, backward = karcher_options(z.dtype, k_val, **karcher_kwargs)
        return _karcher(z, w, k_val, tol, max_iter, backward)[0]
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
