"""Per-sample hierarchical weights (paper §3.3, Eq. 15-19, Appendix C) and hierarchical pruning (§4.3, Eq. 20).

Conventions (geoopt's ``Lorentz(k)``, curvature ``K = -1/k``, origin ``o = (sqrt(k), 0, ..., 0)``):

* a feature ``v`` is lifted as ``z = expmap0([0, feature_scale * v])`` with ``|v|/sqrt(k)`` clipped at
  ``max_norm`` (the reference code clips at 10; ``None`` disables the clip), see :func:`hddgeo.lift`;
* the *radius* ``r = d(o, z)`` (Eq. 15) is the sample's hierarchy level: small ``r`` is root-level
  (prototype-like), large ``r`` is leaf-level;
* the *hierarchical weight* is ``w(r) = (r/sqrt(k)) / sinh(r/sqrt(k))`` (Eq. 17 / 36);
* with ``u = z - cosh(r/sqrt(k)) o`` (Eq. 37; spatial part ``z_s``, length ``sqrt(k) sinh(r/sqrt(k))``)
  the log map at the origin is ``Log_o(z) = w(r) u`` (Eq. 38), so the tangent-space centroid of a
  class (Eq. 18) is ``m = (1/n) sum_i w(r_i) u_i``.

One consequence is easy to miss: ``|Log_o(z_i)| = r_i``.  ``w(r)`` damps the *ambient* vector ``u``,
whose length grows like ``sinh``; in the tangent space a farther sample still has a *longer* log vector.
The ``tangent_share`` column below measures what a sample actually contributes to ``m``.

A clip is not innocent: random ConvNet-3 features at 32x32 have norms near 23 with a tiny spread, so
with ``max_norm=10`` every sample sits at radius ``10 sqrt(k)`` and gets the same weight; on the 8x8
``digits`` the features have norm about 4.9 and nothing is clipped (but the spread of radii is tiny,
about 0.5%).  :func:`spread_table` shows what ``k``, ``max_norm`` and ``feature_scale`` do to it.
"""
from __future__ import annotations

import itertools
import math
import warnings
from typing import Iterable, Mapping, Optional, Sequence, Union

import geoopt
import numpy as np
import pandas as pd
import torch

from .geometry import dist, hierarchical_weights, karcher_mean, lift, logmap0, radius

__all__ = ["sample_table", "spread_samples", "spread_table", "root_and_leaf", "prune_by_level", "kept_count",
           "PRUNE_LEVELS"]

PRUNE_LEVELS = ("radius", "centroid_distance")

FeaturesByClass = Union[Sequence[torch.Tensor], Mapping[int, torch.Tensor]]


# ----------------------------------------------------------------------------- input handling
def _class_items(features_by_class: FeaturesByClass) -> list:
    """``[(label, (n, d) float64 tensor), ...]`` from a list (label = position) or a ``{label: tensor}`` dict."""
    if isinstance(features_by_class, Mapping):
        items = list(features_by_class.items())
    elif torch.is_tensor(features_by_class):
        raise ValueError(
            "features_by_class must be a list (or dict) of per-class (n_c, d) tensors, not one tensor; "
            "split a pool embedding with its labels, e.g. [v[labels == c] for c in range(C)]"
        )
    else:
        items = list(enumerate(features_by_class))
    if not items:
        raise ValueError("features_by_class is empty: give at least one class of features")
    out = []
    dim = None
    for label, v in items:
        if not torch.is_tensor(v):
            v = torch.as_tensor(np.asarray(v))
        if v.dim() != 2 or v.shape[0] == 0:
            raise ValueError(f"class {label}: features must have shape (n, d) with n >= 1, got {tuple(v.shape)}")
        if dim is not None and v.shape[1] != dim:
            raise ValueError(f"class {label}: feature dimension {v.shape[1]} differs from the first class's {dim}")
        dim = v.shape[1]
        out.append((int(label), v.detach().to("cpu", torch.float64)))
    return out


def _check_scale(feature_scale: float) -> float:
    feature_scale = float(feature_scale)
    if not (feature_scale > 0) or not math.isfinite(feature_scale):
        raise ValueError(f"feature_scale must be a positive finite number, got {feature_scale}")
    return feature_scale


def _manifold(k: float) -> geoopt.Lorentz:
    if not (float(k) > 0) or not math.isfinite(float(k)):
        raise ValueError(f"k must be positive (curvature K = -1/k), got {k}")
    return geoopt.Lorentz(k=float(k))


# ----------------------------------------------------------------------------- per-sample table
def _class_rows(label: int, v: torch.Tensor, M, max_norm: Optional[float], feature_scale: float,
                with_karcher: bool = True) -> dict:
    """Columns of one class as arrays (see :func:`sample_table`)."""
    k = float(M.k)
    sk = math.sqrt(k)
    v = v * feature_scale
    z = lift(v, M, max_norm=max_norm)
    r = radius(z, M)
    w = hierarchical_weights(z, M)
    logs = logmap0(z, M)[:, 1:]  # Log_o(z_i) = w(r_i) u_i (spatial part; the time part is 0)
    n = len(v)
    mean_log = logs.mean(0)
    sq = float(mean_log @ mean_log)
    if sq > 0:
        # component of each term w_i u_i / n along m, over |m|: these add up to 1 exactly
        share = (logs @ mean_log) / (n * sq)
    else:  # the tangent mean vanishes (e.g. a symmetric class): no direction to share, split evenly
        share = torch.full((n,), 1.0 / n, dtype=torch.float64)
    feat_norm = v.norm(dim=-1)
    cols = {
        "class": np.full(n, label, dtype=np.int64),
        "index": np.arange(n, dtype=np.int64),
        "feature_norm": feat_norm.numpy(),
        "clipped": (feat_norm / sk > max_norm).numpy() if max_norm is not None else np.zeros(n, dtype=bool),
        "radius": r.numpy(),
        "weight": w.numpy(),
        "tangent_share": share.numpy(),
    }
    if with_karcher:
        kar = karcher_mean(z, M)
        cols["dist_karcher"] = dist(kar.unsqueeze(0), z, M).numpy()
    return cols


def sample_table(features_by_class: FeaturesByClass, *, k: float = 1.0, max_norm: Optional[float] = 10.0,
                 feature_scale: float = 1.0) -> pd.DataFrame:
    """One row per sample: its hierarchy level and what it contributes to its class's centroids.

    ``features_by_class``: a list of per-class feature tensors ``(n_c, d)`` (class label = position, as
    returned by :func:`hddgeo.analysis.class_features`) or a ``{label: tensor}`` dict.  Features are
    scaled by ``feature_scale`` and lifted onto ``Lorentz(k)`` with the clip ``max_norm``.

    Columns:

    ``class``, ``index``
        class label and position of the sample within its class's tensor.
    ``feature_norm``
        ``|feature_scale * v|`` before clipping; ``clipped`` says whether ``max_norm`` cut it.
    ``radius``
        ``r = d(o, z)`` (Eq. 15); equals ``min(feature_norm, max_norm sqrt(k))``.
    ``weight``
        ``w(r) = (r/sqrt(k)) / sinh(r/sqrt(k))`` (Eq. 17).
    ``tangent_share``
        the sample's share of its class's tangent-space centroid ``m = (1/n) sum_j w(r_j) u_j`` (Eq. 18):
        the projection of its term onto the direction of ``m``, divided by ``|m|``,
        ``share_i = <w(r_i) u_i / n, m> / |m|^2``.  Shares sum to exactly 1 within a class; a share
        above ``1/n`` means the sample pulls the centroid further along its direction than an average
        sample, a negative share means it pulls against it.  (If ``m = 0`` every share is ``1/n``.)
    ``dist_karcher``
        geodesic distance to the class's exact Karcher mean (the Frechet mean of the lifted class).
    """
    M = _manifold(k)
    feature_scale = _check_scale(feature_scale)
    frames = [pd.DataFrame(_class_rows(label, v, M, max_norm, feature_scale))
              for label, v in _class_items(features_by_class)]
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- spread over settings
def _setting_label(k: float, max_norm: Optional[float], feature_scale: float) -> str:
    clip = "none" if max_norm is None else f"{max_norm:g}"
    return f"k={k:g}\nclip={clip}\nscale={feature_scale:g}"


def _as_list(values, name: str) -> list:
    if values is None or isinstance(values, (int, float)):
        return [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one value")
    return values


def spread_samples(features_by_class: FeaturesByClass, *, ks: Iterable[float] = (1.0,),
                   max_norms: Iterable[Optional[float]] = (10.0,),
                   feature_scales: Iterable[float] = (1.0,)) -> pd.DataFrame:
    """Long-form radii and weights of every sample under every ``(k, max_norm, feature_scale)`` setting.

    Columns: ``setting`` (a short multi-line label), ``k``, ``max_norm``, ``feature_scale``, ``class``,
    ``index``, ``feature_norm``, ``clipped``, ``radius``, ``weight``, ``tangent_share``.  Settings are
    the Cartesian product of the three lists, in that nesting order; this is what
    :func:`hddgeo.plots.plot_weight_spread` draws and what :func:`spread_table` summarises.
    """
    items = _class_items(features_by_class)
    frames = []
    for k, max_norm, scale in itertools.product(_as_list(ks, "ks"), _as_list(max_norms, "max_norms"),
                                                _as_list(feature_scales, "feature_scales")):
        M = _manifold(k)
        scale = _check_scale(scale)
        for label, v in items:
            df = pd.DataFrame(_class_rows(label, v, M, max_norm, scale, with_karcher=False))
            df.insert(0, "feature_scale", scale)
            df.insert(0, "max_norm", np.nan if max_norm is None else float(max_norm))
            df.insert(0, "k", float(k))
            df.insert(0, "setting", _setting_label(float(k), max_norm, scale))
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def spread_table(features_by_class: FeaturesByClass, *, ks: Iterable[float] = (1.0,),
                 max_norms: Iterable[Optional[float]] = (10.0,), feature_scales: Iterable[float] = (1.0,),
                 samples: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per ``(k, max_norm, feature_scale)`` setting: how spread out radii and weights are.

    Statistics are over all samples of all classes pooled.  Columns: ``k``, ``max_norm`` (NaN = no
    clip), ``feature_scale``, ``n``, ``feature_norm_mean``, ``clipped_fraction``,
    ``radius_{mean,std,min,max}``, ``weight_{mean,std,min,max}`` and ``weight_ratio`` (max / min
    weight: how much more the most root-level sample weighs than the most leaf-level one; 1 means
    the weights carry no hierarchy at all).  Standard deviations are population ones (``ddof=0``); a
    setting where every feature norm exceeds ``max_norm * sqrt(k)`` shows zero radius spread (up to
    rounding, about 1e-15).
    ``samples`` reuses a frame from :func:`spread_samples` instead of recomputing it.
    """
    if samples is None:
        samples = spread_samples(features_by_class, ks=ks, max_norms=max_norms, feature_scales=feature_scales)
    rows = []
    for setting, g in samples.groupby("setting", sort=False):
        r, w = g["radius"].to_numpy(), g["weight"].to_numpy()
        rows.append({
            "k": g["k"].iloc[0], "max_norm": g["max_norm"].iloc[0], "feature_scale": g["feature_scale"].iloc[0],
            "n": len(g), "feature_norm_mean": float(g["feature_norm"].mean()),
            "clipped_fraction": float(g["clipped"].mean()),
            "radius_mean": float(r.mean()), "radius_std": float(r.std()), "radius_min": float(r.min()),
            "radius_max": float(r.max()),
            "weight_mean": float(w.mean()), "weight_std": float(w.std()), "weight_min": float(w.min()),
            "weight_max": float(w.max()),
            "weight_ratio": float(w.max() / w.min()) if w.min() > 0 else math.inf,
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- root / leaf samples
def _rank_key(level: np.ndarray) -> np.ndarray:
    """Levels rounded to 1e-10 so that radii equal up to rounding (all clipped to ``max_norm``) tie."""
    return np.round(np.asarray(level, dtype=np.float64), 10)


def root_and_leaf(table: pd.DataFrame, *, n: int = 8, by: str = "radius") -> tuple:
    """The ``n`` most root-level and ``n`` most leaf-level samples of each class of a :func:`sample_table`.

    ``by="radius"`` (default) orders by radius (smallest = root), which is the same order as by
    weight (largest = root) since ``w`` is strictly decreasing; ``by="dist_karcher"`` orders by the
    distance to the class's Karcher mean (closest = most central).  Levels are compared to 1e-10; ties,
    e.g. when the clip put every sample at the same radius, are broken by the unclipped ``feature_norm``
    and then by ``index``, so the order is deterministic and still means "closer to the root before
    clipping".

    Returns ``(root, leaf)``: two ``{class: [index, ...]}`` dicts, root-most first in ``root`` and
    leaf-most first in ``leaf``.  A class with fewer than ``2 n`` samples gives overlapping lists.
    """
    if by not in ("radius", "weight", "dist_karcher"):
        raise ValueError(f"by must be 'radius', 'weight' or 'dist_karcher', got {by!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    missing = {"class", "index", by, "feature_norm"} - set(table.columns)
    if missing:
        raise ValueError(f"table lacks column(s) {sorted(missing)}; build it with hddgeo.hierarchy.sample_table")
    # ascending level: radius and distance as they are; weight reversed
    level = -table["weight"] if by == "weight" else table[by]
    ordered = table.assign(_level=_rank_key(level.to_numpy()))
    ordered = ordered.sort_values(["class", "_level", "feature_norm", "index"], kind="stable")
    root, leaf = {}, {}
    for c, g in ordered.groupby("class", sort=True):
        idx = g["index"].tolist()
        root[int(c)] = idx[:n]
        leaf[int(c)] = idx[::-1][:n]
    return root, leaf


# ----------------------------------------------------------------------------- hierarchical pruning
def kept_count(n: int, fraction: float) -> int:
    """Samples a class of ``n`` keeps under :func:`prune_by_level`: ``ceil(fraction * n)``.

    Rounded up so that a non-empty class never loses every sample; this removes ``floor((1-fraction) n)``
    samples, at most one fewer than Eq. 20's ``ceil(alpha N)`` with the prune ratio ``alpha = 1 -
    fraction``.  The product is rounded to 9 decimals first so that ``0.2 * 100`` keeps 20, not 21.
    """
    return min(n, int(math.ceil(round(fraction * n, 9))))


def _levels(v: torch.Tensor, M, max_norm, feature_scale, level: str):
    """Primary level (ascending = root-most) and the tie-breaking unclipped feature norm."""
    v = v * feature_scale
    z = lift(v, M, max_norm=max_norm)
    if level == "radius":
        primary = radius(z, M)
    else:
        primary = dist(karcher_mean(z, M).unsqueeze(0), z, M)
    return _rank_key(primary.numpy()), v.norm(dim=-1).numpy()


def _keep(primary: np.ndarray, tie: np.ndarray, fraction: float) -> np.ndarray:
    order = np.lexsort((np.arange(len(primary)), tie, primary))  # last key is the primary one
    return np.sort(order[: kept_count(len(primary), fraction)])


def prune_by_level(features, fraction: float, *, level: str = "radius", k: float = 1.0,
                   max_norm: Optional[float] = 10.0, labels: Optional[torch.Tensor] = None,
                   feature_scale: float = 1.0):
    """Hierarchical pruning (paper §4.3, Eq. 20): keep the most root-level ``fraction`` of every class.

    The paper sorts samples by their level in the hierarchy and drops the top ``alpha`` share of
    high-level (leaf) samples; it keeps the samples near the root because they "possess greater
    representativeness".  Two readings of *level* are offered:

    * ``level="radius"`` (default, the paper's): the geodesic distance ``d(o, z)`` of the lifted
      feature to the origin of ``Lorentz(k)``; smallest radii are kept.
    * ``level="centroid_distance"``: the geodesic distance to the class's own Karcher mean; the samples
      closest to the class centre are kept (a hyperbolic analogue of herding-style selection).

    Ranking is per class, so class balance is preserved (Eq. 20 ranks the whole dataset at once).
    Each class of ``n_c`` samples keeps exactly :func:`kept_count` ``= ceil(fraction * n_c)`` of them.
    Levels equal to 1e-10 are ties, broken by the unclipped feature norm, then by position.  With the
    reference clip (``max_norm=10``) and features whose norm exceeds ``10 sqrt(k)``, every radius is the
    same and ``level="radius"`` then ranks by feature norm alone; a warning says so.

    ``features`` is either a list / dict of per-class ``(n_c, d)`` tensors, and the result is a list
    of sorted ``LongTensor`` positions within each class (in the order of the input classes), or one
    ``(N, d)`` pool embedding with its ``labels`` ``(N,)``, and the result is one sorted ``LongTensor``
    of row indices into the pool (e.g. for :meth:`hddgeo.data.ClassPool.subset`).
    """
    if level not in PRUNE_LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {', '.join(PRUNE_LEVELS)}")
    fraction = float(fraction)
    if not (0 < fraction <= 1):
        raise ValueError(f"fraction is the share of each class to keep and must lie in (0, 1], got {fraction}")
    M = _manifold(k)
    feature_scale = _check_scale(feature_scale)
    if torch.is_tensor(features) and labels is None:
        raise ValueError("a single (N, d) feature tensor needs its labels (N,); or pass a list of per-class tensors")
    if labels is not None:
        if not torch.is_tensor(features) or features.dim() != 2:
            raise ValueError("with labels, features must be one (N, d) tensor (the pool embedding)")
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (features.shape[0],):
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
        feats = features.detach().cpu().double()
        keep = []
        all_tied = True
        for c in torch.unique(labels).tolist():
            rows = torch.nonzero(labels == c).flatten()
            primary, tie = _levels(feats[rows], M, max_norm, feature_scale, level)
            all_tied &= bool(np.ptp(primary) == 0) and len(primary) > 1
            keep.append(rows[torch.from_numpy(_keep(primary, tie, fraction))])
        out = torch.sort(torch.cat(keep)).values
    else:
        out = []
        all_tied = True
        for _, v in _class_items(features):
            primary, tie = _levels(v, M, max_norm, feature_scale, level)
            all_tied &= bool(np.ptp(primary) == 0) and len(primary) > 1
            out.append(torch.from_numpy(_keep(primary, tie, fraction)).long())
    if level == "radius" and all_tied:
        warnings.warn(
            f"every sample is clipped to the same radius (max_norm={max_norm}, k={k:g}); pruning by radius "
            "falls back to the unclipped feature norm. Use max_norm=None or a smaller feature_scale to rank "
            "by hyperbolic radius.",
            stacklevel=2,
        )
    return out
