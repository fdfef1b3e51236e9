"""hddgeo: hyperbolic dataset distillation on geoopt's Lorentz model.

The public geometry API (conventions in docs/design.md) is re-exported here: ``lift``, ``centroid``, ``law_centroid``,
``karcher_mean``, ``tangent_centroid``, ``radius``, ``hierarchical_weights``, ``to_poincare``,
``from_poincare`` and the matching loss ``hdd_loss``.
"""
from .geometry import (
    CENTROID_METHODS,
    KarcherInfo,
    centroid,
    dist,
    expmap,
    frechet_objective,
    from_poincare,
    hierarchical_weights,
    karcher_mean,
    law_centroid,
    lift,
    logmap,
    logmap0,
    radius,
    tangent_centroid,
    to_poincare,
)
from .losses import euclidean_mean_loss, hdd_loss

__version__ = "0.1.0"
__all__ = [
    "CENTROID_METHODS", "KarcherInfo", "centroid", "frechet_objective", "karcher_mean", "law_centroid",
    "tangent_centroid", "dist", "expmap", "hierarchical_weights", "lift", "logmap", "logmap0", "radius",
    "from_poincare", "to_poincare", "hdd_loss", "euclidean_mean_loss",
]
