"""Hyperbolic geometry on geoopt's Lorentz model; a leaf package that knows nothing of images."""
from .centroids import (
    CENTROID_METHODS,
    KarcherInfo,
    centroid,
    frechet_objective,
    karcher_mean,
    law_centroid,
    tangent_centroid,
)
from ._math import gradient_reach
from .lorentz import dist, expmap, hierarchical_weights, lift, logmap, logmap0, radius
from .poincare import from_poincare, to_poincare

__all__ = [
    "CENTROID_METHODS", "KarcherInfo", "centroid", "frechet_objective", "karcher_mean", "law_centroid",
    "tangent_centroid", "dist", "expmap", "hierarchical_weights", "lift", "logmap", "logmap0", "radius",
    "from_poincare", "to_poincare", "gradient_reach",
]
