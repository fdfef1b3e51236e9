"""hddgeo: hyperbolic dataset distillation on geoopt's Lorentz model.

The public geometry API (conventions in docs/design.md) is re-exported here: ``lift``, ``centroid``, ``law_centroid``,
``karcher_mean``, ``tangent_centroid``, ``radius``, ``hierarchical_weights``, ``to_poincare``,
``from_poincare`` and the matching loss ``hdd_loss``.
"""
from .geometry import *  # noqa: F401,F403
from .geometry import __all__ as _geometry_all
from .losses import euclidean_mean_loss, hdd_loss

__version__ = "0.1.0"
__all__ = list(_geometry_all) + ["hdd_loss", "euclidean_mean_loss"]
