"""hddgeo: hyperbolic dataset distillation on geoopt's Lorentz model.

The public API (conventions in docs/design.md): the lift onto the hyperboloid, the three centroids, radii,
hierarchical weights, the Poincaré maps and the matching losses, each ``f(tensors..., M, *, options)``.  The
Riemannian maps ``dist``, ``expmap``, ``logmap``, ``logmap0`` are in :mod:`hddgeo.geometry`.
"""
import warnings as _warnings

from .geometry import (
    CENTROID_METHODS,
    KarcherInfo,
    centroid,
    frechet_objective,
    from_poincare,
    hierarchical_weights,
    karcher_mean,
    law_centroid,
    lift,
    radius,
    tangent_centroid,
    to_poincare,
)
from .losses import euclidean_mean_loss, hdd_loss

__version__ = "0.2.0.dev0"
__all__ = [
    "CENTROID_METHODS", "KarcherInfo", "centroid", "frechet_objective", "karcher_mean", "law_centroid",
    "tangent_centroid", "hierarchical_weights", "lift", "radius", "from_poincare", "to_poincare", "hdd_loss",
    "euclidean_mean_loss",
]

# geoopt's method names with another call shape: only in hddgeo.geometry now (hddgeo.geometry.dist(x, y, M))
_MOVED = ("dist", "expmap", "logmap", "logmap0")


def __getattr__(name):
    if name in _MOVED:
        _warnings.warn(f"hddgeo.{name} moved to hddgeo.geometry.{name} (same call); the top-level name will go",
                       DeprecationWarning, stacklevel=2)
        from . import geometry

        return getattr(geometry, name)
    raise AttributeError(f"module 'hddgeo' has no attribute {name!r}")
