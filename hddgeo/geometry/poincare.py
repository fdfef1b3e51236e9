"""Maps between the Lorentz model ``<x,x>_L = -k`` and the Poincare ball of radius ``sqrt(k)``.

The ball of radius ``sqrt(k)`` is geoopt's ``PoincareBall(c=1/k)``: distances there equal Lorentz
distances.  geoopt's own ``lorentz_to_poincare`` maps to the *unit* ball whatever ``k`` is and only
accepts 2-D input; these maps take any batch shape.
"""
from __future__ import annotations

import math

import geoopt
import torch

from .lorentz import as_manifold_tensor, check_finite, check_points, k_tensor, manifold_k, plain


def to_poincare(z: torch.Tensor, M) -> torch.Tensor:
    r"""Map points of the Lorentz model to the Poincaré ball of radius ``sqrt(k)``, for any batch shape.

    .. math::

        p = \frac{\sqrt{k}\, z_s}{\sqrt{k} + z_0},

    so a point at distance ``r`` from the origin lands at Euclidean radius ``sqrt(k) tanh(r / (2 sqrt(k)))``.  The
    ball is geoopt's ``PoincareBall(c=1/k)``: its distances equal the Lorentz ones.  (geoopt's own
    ``lorentz_to_poincare`` maps to the *unit* ball whatever ``k`` is, and only takes 2-D input.)

    Parameters
    ----------
    z : torch.Tensor
        Points on ``M``, shape ``(..., d+1)``.
    M : geoopt.Lorentz
        The manifold.

    Returns
    -------
    torch.Tensor
        Points of the ball, shape ``(..., d)``, of norm below ``sqrt(k)`` while the radius is within the dtype's
        resolution of the boundary: ``|p| = sqrt(k) tanh(r / (2 sqrt(k)))`` rounds to ``sqrt(k)`` from
        ``r / sqrt(k)`` of about 38 in float64 and 17.5 in float32, and such a point does not map back
        (:func:`from_poincare` refuses the boundary).

    Raises
    ------
    TypeError
        ``z`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``.

    See Also
    --------
    from_poincare : its inverse.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=4.0)
    >>> z = hddgeo.lift(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), M)
    >>> hddgeo.to_poincare(z, M)                       # r = 2 lands at 2 tanh(1/2)
    tensor([[0.0000, 0.0000],
            [0.9242, 0.0000]], dtype=torch.float64)
    """
    z = check_points(z, M, "points z")
    sk = torch.sqrt(k_tensor(M, z))
    return sk * z[..., 1:] / (sk + z[..., :1])


def from_poincare(p: torch.Tensor, M) -> geoopt.ManifoldTensor:
    r"""Map points of the Poincaré ball of radius ``sqrt(k)`` back onto the Lorentz model: :func:`to_poincare`'s inverse.

    .. math::

        z = \Bigl(\sqrt{k}\,\frac{k + |p|^2}{k - |p|^2},\ \frac{2 k\, p}{k - |p|^2}\Bigr).

    Parameters
    ----------
    p : torch.Tensor
        Points strictly inside the ball of radius ``sqrt(k)`` (geoopt's ``PoincareBall(c=1/k)``), shape ``(..., d)``.
    M : geoopt.Lorentz
        The manifold.

    Returns
    -------
    geoopt.ManifoldTensor
        Points on ``M``, shape ``(..., d+1)``.

    Raises
    ------
    TypeError
        ``p`` is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        ``p`` holds NaN or inf, has no coordinate dimension, or a point lies on or outside the ball.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> z = hddgeo.lift(torch.tensor([[0.5, -1.0]]), M)
    >>> bool(torch.allclose(hddgeo.from_poincare(hddgeo.to_poincare(z, M), M), z))
    True
    """
    k = manifold_k(M)
    check_finite(p, "Poincare points p")
    p = plain(p)
    if p.dim() < 1 or p.shape[-1] < 1:
        raise ValueError(f"Poincare points must have shape (..., d), got {tuple(p.shape)}")
    sq = (p * p).sum(-1, keepdim=True)
    if p.numel() and bool((sq >= k).any()):
        raise ValueError(
            f"Poincare points must satisfy |p| < sqrt(k) = {math.sqrt(k):.4g} (largest |p| = {float(sq.max().sqrt()):.6g}); "
            "rescale them into the ball"
        )
    kt = k_tensor(M, p)
    denom = kt - sq
    time = torch.sqrt(kt) * (kt + sq) / denom
    space = 2 * kt * p / denom
    return as_manifold_tensor(torch.cat([time, space], dim=-1), M)
