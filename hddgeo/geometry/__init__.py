"""Hyperbolic geometry on geoopt's Lorentz model; a leaf package that knows nothing of images.

Every function takes tensors, then the manifold ``M`` (a ``geoopt.Lorentz``), then its options as keywords:
``f(tensors..., M, *, options)``.  The maps ``dist``, ``expmap``, ``logmap`` and ``logmap0`` live here only: they
compute what geoopt's methods of the same names compute (``M.dist(x, y)``), with the manifold as an argument
and without cancellation far from the origin; ``import hddgeo`` keeps its namespace for the HDD API.
The kernels behind them are private (``_math``, ``_karcher_math``).
"""
from ._math import gradient_reach
from .centroids import (
    CENTROID_METHODS,
    KarcherInfo,
    centroid,
    frechet_objective,
    karcher_mean,
    law_centroid,
    tangent_centroid,
)
from .lorentz import dist, expmap, hierarchical_weights, lift, logmap, logmap0, radius
from .poincare import from_poincare, to_poincare

__all__ = [
    "CENTROID_METHODS", "KarcherInfo", "centroid", "frechet_objective", "karcher_mean", "law_centroid",
    "tangent_centroid", "dist", "expmap", "hierarchical_weights", "lift", "logmap", "logmap0", "radius",
    "from_poincare", "to_poincare", "gradient_reach",
]
