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
    """``p = sqrt(k) z_s / (sqrt(k) + z_0)``: a point at distance ``r`` lands at ``sqrt(k) tanh(r / (2 sqrt(k)))``."""
    z = check_points(z, M, "points z")
    sk = torch.sqrt(k_tensor(M, z))
    return sk * z[..., 1:] / (sk + z[..., :1])


def from_poincare(p: torch.Tensor, M) -> geoopt.ManifoldTensor:
    """Inverse of :func:`to_poincare`; ``p`` must lie strictly inside the ball of radius ``sqrt(k)``."""
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
