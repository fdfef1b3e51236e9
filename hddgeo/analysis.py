"""What the hyperbolic centroid does to real features: per-class centroid comparisons and radii.

:func:`class_features` embeds a dataset with a random ConvNet (the DM protocol's feature map);
:func:`compare_centroids` lifts each class onto the hyperboloid and compares Law's centroid, the
exact Karcher mean and the tangent centroid (distances between them, radii, Karcher iterations).
"""
from __future__ import annotations

from typing import Optional

import geoopt
import pandas as pd

from .geometry import dist, hierarchical_weights, karcher_mean, law_centroid, lift, radius, tangent_centroid


def class_features(dataset, model: str = "convnet", seed: int = 0, per_class: Optional[int] = None,
                   batch_size: int = 512, device=None) -> list:
    """Features of each class's training images under a randomly initialised network (list of ``(n_c, d)``).

    The network runs on ``device`` (default: the CPU; its weights are drawn on the CPU whatever the
    device) and the features are returned on that device, where :func:`compare_centroids` computes."""
    from .models import embed, fresh_network

    net = fresh_network(model, dataset, seed, device=device).eval()
    feats = []
    for c in range(dataset.num_classes):
        x = dataset.train_images[dataset.train_labels == c]
        x = x if per_class is None else x[:per_class]
        feats.append(embed(net, x.to(device) if device is not None else x, batch_size))
    return feats


def compare_centroids(features: list, k: float = 1.0, max_norm: Optional[float] = 10.0,
                      feature_scale: float = 1.0) -> pd.DataFrame:
    """One row per class: Law / Karcher / tangent centroids compared after lifting ``feature_scale * v``."""
    M = geoopt.Lorentz(k=k)
    rows = []
    for c, v in enumerate(features):
        z = lift(v.double() * feature_scale, M, max_norm=max_norm)
        law = law_centroid(z, M)
        kar, info = karcher_mean(z, M, return_info=True)
        tan = tangent_centroid(z, M)
        r = radius(z, M)
        w = hierarchical_weights(z, M)
        rows.append({
            "class": c, "n": len(v), "k": k, "max_norm": max_norm, "feature_scale": feature_scale,
            "feature_norm_mean": float(v.norm(dim=-1).mean() * feature_scale),
            "radius_mean": float(r.mean()), "radius_std": float(r.std()) if len(r) > 1 else 0.0,
            "weight_mean": float(w.mean()), "weight_std": float(w.std()) if len(w) > 1 else 0.0,
            "radius_law": float(radius(law, M)), "radius_karcher": float(radius(kar, M)),
            "radius_tangent": float(radius(tan, M)),
            "d_law_karcher": float(dist(law, kar, M)), "d_tangent_karcher": float(dist(tan, kar, M)),
            "karcher_iterations": info.iterations, "karcher_grad_norm": float(info.grad_norm),
        })
    return pd.DataFrame(rows)
