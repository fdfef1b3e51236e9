"""Figures: the Poincare disk view of a class, radius histograms, weight spreads, root/leaf images.

The disk view (:func:`poincare_projection`) respects the geometry instead of squashing a
high-dimensional hyperboloid with a Euclidean method: it works in the tangent space at the class's
Karcher mean ``m``, where distances from ``m`` and angles at ``m`` are exact, keeps the two directions
that carry most of the class's spread, and maps that plane back onto a hyperbolic plane, drawn as a
Poincare disk.  :func:`poincare_report` draws it for a finished distillation run.

The module selects matplotlib's non-interactive Agg backend: figures are written to files.
"""
from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from .geometry import karcher_mean, law_centroid, lift, radius
from .geometry._math import _frame_logs
from .geometry.lorentz import check_points, manifold_k
from .rundir import load_tensors, read_json, write_file
from .tables import markdown_table as save_table_md  # re-exported for the studies (in __all__)

matplotlib.use("Agg")  # figures go to files; switching after pyplot's import is fine while no figure exists

__all__ = [
    "PoincareProjection", "poincare_projection", "plot_poincare_disk", "plot_radius_histograms",
    "plot_weight_spread", "plot_root_leaf_images", "poincare_report", "save_table_md", "REAL_COLOR", "SYN_COLOR",
    "clip_radius", "clip_note",
]

_PALETTE = sns.color_palette("deep")
REAL_COLOR = _PALETTE[0]
SYN_COLOR = _PALETTE[3]


@contextmanager
def _style(font_scale: float = 1.15):
    """Seaborn styling for one figure, without changing the caller's global rcParams."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=font_scale):
        yield


def save_figure(fig, path: str, dpi: int = 110) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"  # the file object has no name to infer it from
    try:
        write_file(path, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white"),
                   binary=True)
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the projection
@dataclass
class PoincareProjection:
    """2-D Poincare-disk coordinates of one class (disk of radius ``sqrt(k)``, centre = real Karcher mean).

    ``real`` ``(n, 2)`` and ``syn`` ``(m, 2)`` are the projected points; ``law_real``, ``karcher_real``,
    ``law_syn``, ``karcher_syn`` (``(2,)``, NaN when there are no synthetic points) the projected
    centroids, computed in the full space and then projected; ``origin`` is the projected origin of
    the hyperboloid (the root of the hierarchy).  ``explained`` is the share of the real points'
    ``sum_i |Log_m(z_i)|^2`` that the two directions keep (1 means the picture is exact);
    ``d_law`` / ``d_karcher`` are the full-space geodesic distances between the real and synthetic
    Law / Karcher centroids; ``directions`` ``(d, 2)`` the chosen orthonormal directions in the frame
    of ``T_m``.
    """

    real: np.ndarray
    syn: np.ndarray
    law_real: np.ndarray
    karcher_real: np.ndarray
    law_syn: np.ndarray
    karcher_syn: np.ndarray
    origin: np.ndarray
    k: float
    explained: float
    d_law: float
    d_karcher: float
    directions: np.ndarray
    axes: str = "pca"

    @property
    def disk_radius(self) -> float:
        return math.sqrt(self.k)


def _to_disk(c: torch.Tensor, sk: float) -> torch.Tensor:
    """Tangent coordinates at the centre of the hyperbolic plane (curvature ``-1/k``) -> Poincare disk.

    ``Exp`` at the centre followed by the Lorentz-to-Poincare map: a vector of length ``rho`` lands at
    Euclidean radius ``sqrt(k) tanh(rho / (2 sqrt(k)))`` in the same direction.
    """
    t = c.norm(dim=-1, keepdim=True) / sk
    small = t < 1e-6
    safe = torch.where(small, torch.ones_like(t), t)
    factor = torch.where(small, 0.5 - t * t / 24, torch.tanh(safe / 2) / safe)
    return c * factor


def _top_direction(L: torch.Tensor) -> torch.Tensor:
    """Top right-singular vector of ``L`` (``(d,)``); the first axis if ``L`` is zero."""
    if L.shape[0] == 0 or float(L.abs().max()) == 0:
        e = torch.zeros(L.shape[1], dtype=L.dtype)
        e[0] = 1.0
        return e
    return torch.linalg.svd(L, full_matrices=False).Vh[0]


def _complete_basis(V: list, d: int, dtype) -> torch.Tensor:
    """Orthonormal ``(d, 2)``: the given directions, completed deterministically (zero column if ``d = 1``)."""
    cols = [v / v.norm() for v in V]
    for i in range(d):
        if len(cols) == 2:
            break
        e = torch.zeros(d, dtype=dtype)
        e[i] = 1.0
        for c in cols:
            e = e - (e @ c) * c
        if float(e.norm()) > 1e-8:
            cols.append(e / e.norm())
    while len(cols) < 2:
        cols.append(torch.zeros(d, dtype=dtype))
    return torch.stack(cols, dim=1)


def poincare_projection(z_real: torch.Tensor, z_syn: Optional[torch.Tensor], M, *,
                        axes: str = "pca") -> PoincareProjection:
    """Project one class's real and synthetic points onto a Poincaré disk, respecting the geometry.

    1. ``m`` = Karcher mean of the real points (the exact Fréchet mean).
    2. Every point ``z`` (real, synthetic, the four centroids and the hyperboloid's origin) is mapped to
       ``Log_m(z)`` in the tangent space ``T_m``, written in an orthonormal frame of ``T_m`` (so the
       Riemannian metric is the Euclidean dot product, and ``|Log_m(z)| = d(m, z)``).
    3. Two orthonormal directions are chosen: ``axes="pca"`` takes the top-2 principal directions of
       the real log vectors (they have zero mean at the Karcher mean, so this is plain PCA);
       ``axes="root"`` takes the direction from ``m`` towards the origin (the root) as the first axis
       and the top principal direction orthogonal to it as the second, so that "towards the root"
       reads as "towards the projected origin marker".
    4. Log vectors are projected orthogonally onto those two directions, giving tangent vectors of the
       2-D hyperbolic plane with curvature ``-1/k``; its exponential map at the centre followed by the
       map to the Poincaré disk of radius ``sqrt(k)`` gives the plotted point.

    Along the two directions nothing is distorted: the distance of a projected point from the centre
    is the length of its projected log vector, angles at ``m`` are kept, and points lying on the
    totally geodesic plane ``Exp_m(span)`` keep *all* their pairwise distances (the map is an isometry
    there).  Off that plane, projected points are closer to the centre than the real ones
    (``explained`` says how much of the spread the picture keeps).

    Parameters
    ----------
    z_real : torch.Tensor
        The class's real points on ``M``, shape ``(n, d+1)``, ``n >= 1``.
    z_syn : torch.Tensor or None
        Its synthetic points, shape ``(m, d+1)``; ``None`` or empty for none.
    M : geoopt.Lorentz
        The manifold.
    axes : {"pca", "root"}, optional
        How the two directions are chosen (step 3).

    Returns
    -------
    PoincareProjection
        The projected points and centroids, ``explained`` and the full-space centroid distances.

    Raises
    ------
    TypeError
        A point set is not a floating-point tensor, or ``M`` is not a ``geoopt.Lorentz``.
    ValueError
        A point is not finite or not on ``M``, ``z_real`` is empty or not 2-D, or ``axes`` is unknown.

    See Also
    --------
    plot_poincare_disk : draws the result.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> from hddgeo.plots import poincare_projection
    >>> M = geoopt.Lorentz(k=1.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> real = hddgeo.lift(1.0 + 0.5 * torch.randn(50, 8, generator=g), M)
    >>> syn = hddgeo.lift(1.0 + 0.5 * torch.randn(3, 8, generator=g), M)
    >>> proj = poincare_projection(real, syn, M, axes="root")
    >>> proj.real.shape, proj.syn.shape, 0 < proj.explained <= 1
    ((50, 2), (3, 2), True)
    >>> bool((abs(proj.real) < proj.disk_radius).all())          # inside the disk of radius sqrt(k)
    True
    """
    if axes not in ("pca", "root"):
        raise ValueError(f"axes must be 'pca' or 'root', got {axes!r}")
    k = manifold_k(M)
    sk = math.sqrt(k)
    zr = check_points(z_real, M, "real points z_real").detach().double()
    if zr.dim() != 2 or zr.shape[0] == 0:
        raise ValueError(f"z_real must have shape (n, d+1) with n >= 1, got {tuple(zr.shape)}")
    d = zr.shape[1] - 1
    if z_syn is None or z_syn.numel() == 0:
        zs = zr.new_zeros((0, d + 1))
    else:
        zs = check_points(z_syn, M, "synthetic points z_syn").detach().double()
        if zs.dim() != 2 or zs.shape[1] != d + 1:
            raise ValueError(f"z_syn must have shape (m, {d + 1}) like z_real, got {tuple(zs.shape)}")

    m = karcher_mean(zr, M).as_subclass(torch.Tensor).detach()
    law_r = law_centroid(zr, M).as_subclass(torch.Tensor).detach()
    if len(zs):
        law_s = law_centroid(zs, M).as_subclass(torch.Tensor).detach()
        kar_s = karcher_mean(zs, M).as_subclass(torch.Tensor).detach()
    ms = m[1:].unsqueeze(0)

    def logs(points: torch.Tensor) -> torch.Tensor:
        if points.shape[0] == 0:
            return points.new_zeros((0, d))
        return _frame_logs(ms, points[:, 1:], sk)[0]

    L_real = logs(zr)
    origin_log = logs(zr.new_zeros((1, d + 1)))[0]
    if axes == "pca":
        U = torch.linalg.svd(L_real, full_matrices=False).Vh[:2] if L_real.abs().max() > 0 else []
        V = _complete_basis(list(U), d, zr.dtype)
    else:
        if float(origin_log.norm()) > 0:
            e1 = origin_log / origin_log.norm()
            rest = L_real - (L_real @ e1).unsqueeze(-1) * e1
            V = _complete_basis([e1, _top_direction(rest)], d, zr.dtype)
        else:  # m is the origin: no root direction, fall back to PCA
            V = _complete_basis(list(torch.linalg.svd(L_real, full_matrices=False).Vh[:2]), d, zr.dtype)
    # deterministic orientation: the root lies on the non-negative side of both axes
    signs = torch.where(origin_log @ V < 0, -1.0, 1.0).to(zr.dtype)
    V = V * signs
    total = float((L_real * L_real).sum())
    kept = float(((L_real @ V) ** 2).sum())
    explained = kept / total if total > 0 else 1.0

    def project(points: torch.Tensor) -> np.ndarray:
        return _to_disk(logs(points) @ V, sk).numpy()

    nan2 = np.full(2, np.nan)
    return PoincareProjection(
        real=project(zr), syn=project(zs),
        law_real=project(law_r.unsqueeze(0))[0], karcher_real=project(m.unsqueeze(0))[0],
        law_syn=project(law_s.unsqueeze(0))[0] if len(zs) else nan2,
        karcher_syn=project(kar_s.unsqueeze(0))[0] if len(zs) else nan2,
        origin=_to_disk((origin_log @ V).unsqueeze(0), sk)[0].numpy(),
        k=k, explained=explained,
        d_law=float(_dist(law_r, law_s, sk)) if len(zs) else float("nan"),
        d_karcher=float(_dist(m, kar_s, sk)) if len(zs) else float("nan"),
        directions=V.numpy(), axes=axes,
    )


def _dist(x: torch.Tensor, y: torch.Tensor, sk: float) -> torch.Tensor:
    return _frame_logs(x[1:].unsqueeze(0), y[1:].unsqueeze(0), sk)[1][0] * sk


# ----------------------------------------------------------------------------- disk plot
_CENTROID_STYLE = {
    # key: (label, marker, colour, filled, size)
    "karcher_real": ("Karcher mean, real", "X", REAL_COLOR, True, 90),
    "law_real": ("Law centroid, real", "s", REAL_COLOR, False, 210),
    "karcher_syn": ("Karcher mean, synthetic", "X", SYN_COLOR, True, 90),
    "law_syn": ("Law centroid, synthetic", "s", SYN_COLOR, False, 210),
}


def disk_legend_handles(real_label: str = "real", syn_label: str = "synthetic") -> list:
    """Legend entries for :func:`plot_poincare_disk` (for one shared legend over a grid of disks)."""
    h = [
        Line2D([], [], ls="", marker="o", ms=5, color=REAL_COLOR, alpha=0.6, label=real_label),
        Line2D([], [], ls="", marker="o", ms=10, mfc=SYN_COLOR, mec="black", label=syn_label),
    ]
    for label, marker, colour, filled, size in _CENTROID_STYLE.values():
        h.append(Line2D([], [], ls="", marker=marker, ms=min(math.sqrt(size), 11), mfc=colour if filled else "none",
                        mec="black" if filled else colour, mew=1.0 if filled else 2.0, label=label))
    h.append(Line2D([], [], ls="", marker="^", ms=10, mfc="black", mec="black", label="origin o (root)"))
    return h


def plot_poincare_disk(ax, proj: PoincareProjection, title: Optional[str] = None, rings: Sequence[float] = (1, 2, 3),
                       legend: bool = False, real_label: str = "real", syn_label: str = "synthetic",
                       ring_labels: bool = True):
    """Draw one class's :class:`PoincareProjection` on ``ax``.

    The disk boundary (radius ``sqrt(k)``), faint geodesic circles at distances ``rings`` (in units of
    ``sqrt(k)``) from the centre (the real Karcher mean), the real points (small, translucent), the
    synthetic points (large, outlined), the four centroids (``X`` = Karcher mean, hollow square = Law
    centroid; blue = real, red = synthetic) and the projected origin of the hyperboloid (black triangle).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    proj : PoincareProjection
        From :func:`poincare_projection`.
    title : str, optional
        The axes' title.
    rings : sequence of float, optional
        Geodesic distances from the centre, in units of ``sqrt(k)``, drawn as dashed circles.
    legend : bool, optional
        Draw the legend of the markers on ``ax`` (:func:`disk_legend_handles` gives its handles).
    real_label, syn_label : str, optional
        The legend's names of the two sets.
    ring_labels : bool, optional
        Label the rings with their distances.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``.

    Examples
    --------
    >>> import geoopt, matplotlib, torch, hddgeo
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from hddgeo.plots import plot_poincare_disk, poincare_projection
    >>> M = geoopt.Lorentz(k=1.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> proj = poincare_projection(hddgeo.lift(torch.randn(40, 6, generator=g), M), None, M)
    >>> fig, ax = plt.subplots()
    >>> plot_poincare_disk(ax, proj, title="class 0", legend=True) is ax
    True
    >>> plt.close(fig)
    """
    R = proj.disk_radius
    ax.add_patch(Circle((0, 0), R, fill=False, lw=1.6, color="0.2", zorder=1))
    for rho in rings:
        rr = R * math.tanh(rho / 2)
        ax.add_patch(Circle((0, 0), rr, fill=False, lw=0.7, ls="--", color="0.6", zorder=1))
        if not ring_labels:
            continue
        ax.text(rr * math.cos(math.radians(70)), rr * math.sin(math.radians(70)), f"{rho:g}", fontsize=8,
                color="0.45", ha="center", va="center", zorder=1,
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    ax.scatter(proj.real[:, 0], proj.real[:, 1], s=6, color=REAL_COLOR, alpha=0.35, lw=0, zorder=2, label=real_label)
    if len(proj.syn):
        ax.scatter(proj.syn[:, 0], proj.syn[:, 1], s=120, color=SYN_COLOR, edgecolor="black", lw=0.8, zorder=4,
                   label=syn_label)
    for key, (label, marker, colour, filled, size) in _CENTROID_STYLE.items():
        p = getattr(proj, key)
        if np.isnan(p).any():
            continue
        if filled:
            ax.scatter([p[0]], [p[1]], s=size, marker=marker, color=colour, edgecolor="black", lw=1.0, zorder=6,
                       label=label)
        else:
            ax.scatter([p[0]], [p[1]], s=size, marker=marker, facecolor="none", edgecolor=colour, lw=2.0, zorder=5,
                       label=label)
    ax.scatter([proj.origin[0]], [proj.origin[1]], s=90, marker="^", color="black", zorder=6, label="origin o (root)")
    lim = 1.04 * R
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    if title is not None:
        ax.set_title(title)
    if legend:
        ax.legend(handles=disk_legend_handles(real_label, syn_label), loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  frameon=False)
    return ax


# ----------------------------------------------------------------------------- radius histograms
def _edges(values: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9 * max(1.0, abs(hi)):
        pad = max(1e-3 * abs(hi), 1e-3)
        lo, hi = lo - pad, hi + pad
        bins |= 1  # an odd count: the one value sits in the middle of a bar, not on its edge
    return np.linspace(lo, hi, bins + 1)


def clip_radius(k: float, max_norm: Optional[float]) -> Optional[float]:
    """The radius at which ``lift(..., max_norm=max_norm)`` puts every clipped point: ``max_norm * sqrt(k)``."""
    return None if max_norm is None else float(max_norm) * math.sqrt(k)


def _share_at(values: np.ndarray, at: float) -> float:
    return float(np.mean(np.abs(values - at) <= 1e-9 * max(1.0, abs(at)))) if values.size else 0.0


def clip_note(r_real, r_syn, clip_r: Optional[float]) -> Optional[str]:
    """A sentence for a figure saying how many points the radius clip put at ``clip_r`` (``None``: no clip or no
    point there)."""
    if clip_r is None:
        return None
    real = _share_at(np.asarray(r_real, dtype=float).ravel(), clip_r)
    syn = _share_at(np.asarray(r_syn, dtype=float).ravel(), clip_r)
    if real == 0 and syn == 0:
        return None
    if real == 1 and (syn == 1 or np.asarray(r_syn).size == 0):
        return (f"the clip put every point\nat radius {clip_r:g}: one bar,\nall hierarchical weights equal")
    return f"at the clip (radius {clip_r:g}):\n{100 * real:.0f}% of real,\n{100 * syn:.0f}% of synthetic points"


def plot_radius_histograms(ax, r_real, r_syn, bins: int = 30, title: Optional[str] = "Hyperbolic radius r = d(o, z)",
                           real_label: str = "real", syn_label: str = "synthetic", *, clip: Optional[float] = None,
                           legend: str = "inside"):
    """Density-normalised histograms of the radii of real and synthetic points (paper Fig. 4(d)).

    Each histogram integrates to one, so a small synthetic set compares with a large real one; a
    synthetic histogram shifted to the left is the root-centric bias of §4.5.  Dashed lines mark the
    means.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    r_real, r_syn : array_like
        Radii (:func:`hddgeo.radius`) of the real and the synthetic points, any shape (flattened).
    bins : int, optional
        Histogram bins, shared by both sets.
    title : str or None, optional
        The axes' title.
    real_label, syn_label : str, optional
        The legend's names of the two sets.
    clip : float, optional
        The radius the run's clip puts points at (:func:`clip_radius`): the points there are counted in a note
        on the axes, so a single bar reads as the clip's doing.
    legend : {"inside", "none"}, optional
        ``"inside"`` (upper left, above the bars) or ``"none"`` (the caller draws one, e.g. below the figure).

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``.

    References
    ----------
    W. Li et al., "Hyperbolic Dataset Distillation", NeurIPS 2025, Fig. 4(d) and Sec. 4.5.

    Examples
    --------
    >>> import geoopt, matplotlib, torch, hddgeo
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from hddgeo.plots import clip_radius, plot_radius_histograms
    >>> M = geoopt.Lorentz(k=1.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> r_real = hddgeo.radius(hddgeo.lift(3 * torch.randn(200, 8, generator=g), M, max_norm=10.0), M)
    >>> r_syn = hddgeo.radius(hddgeo.lift(2 * torch.randn(10, 8, generator=g), M, max_norm=10.0), M)
    >>> fig, ax = plt.subplots()
    >>> plot_radius_histograms(ax, r_real, r_syn, clip=clip_radius(1.0, 10.0)) is ax
    True
    >>> plt.close(fig)
    """
    r_real = np.asarray(torch.as_tensor(r_real).detach().cpu().double().flatten())
    r_syn = np.asarray(torch.as_tensor(r_syn).detach().cpu().double().flatten())
    if r_real.size == 0:
        raise ValueError("r_real is empty: need at least one real radius")
    edges = _edges(np.concatenate([r_real, r_syn]), bins)
    ax.hist(r_real, bins=edges, density=True, color=REAL_COLOR, alpha=0.45, edgecolor=REAL_COLOR, lw=0.8,
            label=f"{real_label} (n={r_real.size}, mean {r_real.mean():.3f})")
    ax.axvline(r_real.mean(), color=REAL_COLOR, ls="--", lw=1.8)
    if r_syn.size:
        ax.hist(r_syn, bins=edges, density=True, histtype="stepfilled", color=SYN_COLOR, alpha=0.35,
                edgecolor=SYN_COLOR, lw=1.6, label=f"{syn_label} (n={r_syn.size}, mean {r_syn.mean():.3f})")
        ax.axvline(r_syn.mean(), color=SYN_COLOR, ls="--", lw=1.8)
    ax.set_xlabel("radius r (geodesic distance to the origin)")
    ax.set_ylabel("density")
    ax.ticklabel_format(axis="x", useOffset=False)
    if title:
        ax.set_title(title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5))  # long tick labels of a narrow range
    note = clip_note(r_real, r_syn, clip)
    lo, hi = ax.get_ylim()
    if note or legend == "inside":  # headroom: the bars stay under the legend and the note
        ax.set_ylim(lo, hi * (1.6 if note and legend == "inside" else 1.35))
    if note:
        ax.text(0.02, 0.97, note, transform=ax.transAxes, ha="left", va="top", fontsize="small",
                bbox=dict(boxstyle="round,pad=0.35", facecolor="white", edgecolor="0.6", alpha=0.95), zorder=5)
    if legend == "inside":
        ax.legend(loc="upper right" if note else "upper left", fontsize="small")
    elif legend != "none":
        raise ValueError(f"legend must be 'inside' or 'none', got {legend!r}")
    return ax


# ----------------------------------------------------------------------------- weight spread
def plot_weight_spread(samples: pd.DataFrame, fig=None):
    """How spread out radii and hierarchical weights are under each setting of :func:`hddgeo.hierarchy.spread_samples`.

    Settings put radii on very different scales (``r`` is the clipped feature norm), so each panel shows
    values *relative to the setting's median*: left ``r / median(r)``, right ``w(r) / median(w)`` on a
    log axis; the medians are printed under the boxes and the ``max/min`` weight ratio above them.  A
    flat box at 1 means the setting erases the hierarchy: every sample sits at the same radius and gets
    the same weight (e.g. the reference clip ``max_norm=10`` with feature norms above ``10 sqrt(k)``).
    Returns the figure (a new one unless ``fig`` is given).
    """
    need = {"setting", "radius", "weight"}
    if not need <= set(samples.columns):
        raise ValueError(f"samples lacks {sorted(need - set(samples.columns))}; build it with hierarchy.spread_samples")
    order = list(dict.fromkeys(samples["setting"]))
    med = samples.groupby("setting", sort=False)[["radius", "weight"]].median()
    data = samples.assign(rel_radius=samples["radius"] / samples["setting"].map(med["radius"]),
                          rel_weight=samples["weight"] / samples["setting"].map(med["weight"]))
    with _style():
        if fig is None:
            # one panel above the other, so that a page shows the figure at full width whatever the settings
            fig = plt.figure(figsize=(max(7.0, 1.15 * len(order) + 1.5), 9.0), layout="constrained")
        ax_r, ax_w = fig.subplots(2, 1)
        palette = sns.color_palette("deep", len(order))
        kw = dict(data=data, x="setting", order=order, hue="setting", hue_order=order, palette=palette, legend=False,
                  fliersize=2, width=0.5)
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated ``vert``
            warnings.filterwarnings("ignore", message=".*vert.*deprecated", category=DeprecationWarning)
            sns.boxplot(ax=ax_r, y="rel_radius", **kw)
            sns.boxplot(ax=ax_w, y="rel_weight", **kw)
        ax_w.set_yscale("log")
        plain_fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax_w.yaxis.set_major_formatter(plain_fmt)
        ax_r.set_title("radius r = d(o, z), relative to its median")
        ax_w.set_title("weight w(r), relative to its median")
        ax_r.set_ylabel("r / median r")
        ax_w.set_ylabel("w / median w   (w = (r/√k) / sinh(r/√k))")
        for ax, col, name in ((ax_r, "radius", "r"), (ax_w, "weight", "w")):
            ax.set_xlabel("setting: curvature k, clip max_norm, feature scale")
            ax.set_xticks(range(len(order)),
                          [f"{s}\nmedian {name}\n= {med.loc[s, col]:.3g}" for s in order], fontsize="small")
        lo, hi = ax_w.get_ylim()
        lo, hi = min(lo, 0.5), max(hi, 2.0)
        ax_w.set_ylim(lo, hi * (hi / lo) ** 0.25)
        if hi / lo < 30:  # within about a decade the minor ticks need labels; over several they would overlap
            ax_w.yaxis.set_minor_formatter(plain_fmt)
            ax_w.tick_params(axis="y", which="minor", labelsize="x-small")
        else:
            ax_w.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for i, s in enumerate(order):
            w = samples.loc[samples["setting"] == s, "weight"].to_numpy()
            ax_w.text(i, hi * (hi / lo) ** 0.1, f"max/min\n{w.max() / w.min():.3g}", ha="center", va="center",
                      fontsize="small")
        fig.suptitle("Spread of hierarchical levels per setting (a flat box = every sample weighs the same)")
    return fig


# ----------------------------------------------------------------------------- root / leaf images
def _display(dataset, x: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` normalised image -> ``(H, W)`` or ``(H, W, 3)`` array in ``[0, 1]``."""
    img = dataset.denormalise(x.detach().cpu().float())
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def _strip(dataset, images: list, pad: int = 1) -> np.ndarray:
    tiles = [_display(dataset, x) for x in images]
    h = tiles[0].shape[0]
    gap = np.ones((h, pad) + tiles[0].shape[2:], dtype=tiles[0].dtype)
    out = []
    for i, t in enumerate(tiles):
        out += [gap, t] if i else [t]
    return np.concatenate(out, axis=1)


def _pick(images, c, i):
    if torch.is_tensor(images):
        return images[i]
    return images[c][i]


def plot_root_leaf_images(images, dataset, root_idx: dict, leaf_idx: dict, classes: Optional[Sequence[int]] = None,
                          root_title: str = "root-level\n(smallest radius first)",
                          leaf_title: str = "leaf-level\n(largest radius first)"):
    """Grid of prototype (root-level) versus leaf-level images, one row per class.

    ``root_idx`` / ``leaf_idx``: ``{class: [index, ...]}`` as returned by
    :func:`hddgeo.hierarchy.root_and_leaf`.  ``images`` is either a list / dict of per-class image
    tensors ``(n_c, C, H, W)`` indexed by those within-class indices (the layout of
    :func:`hddgeo.analysis.class_features`), or one ``(N, C, H, W)`` tensor when the indices are global.
    Images are denormalised with ``dataset.denormalise``.  Returns the figure.
    """
    classes = sorted(root_idx) if classes is None else list(classes)
    if not classes:
        raise ValueError("no classes to draw: root_idx is empty")
    for c in classes:
        if c not in root_idx or c not in leaf_idx:
            raise ValueError(f"class {c} is missing from root_idx or leaf_idx")
    n = max(max(len(root_idx[c]), len(leaf_idx[c])) for c in classes)
    names = getattr(dataset, "class_names", None) or [str(c) for c in range(max(classes) + 1)]
    rgb = getattr(dataset, "channels", 1) == 3
    with _style():
        fig, axes = plt.subplots(len(classes), 2, figsize=(2 * max(0.75 * n + 0.4, 2.6) + 0.8, 0.8 * len(classes) + 1.2),
                                 squeeze=False, layout="constrained")
        # constrained: a caller's fig.suptitle gets its own room above the column titles
        fig.get_layout_engine().set(wspace=0.04, hspace=0.02)
        for row, c in enumerate(classes):
            for col, idx in enumerate((root_idx[c], leaf_idx[c])):
                ax = axes[row, col]
                ax.imshow(_strip(dataset, [_pick(images, c, i) for i in idx]), cmap=None if rgb else "gray",
                          vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if col == 0:
                    ax.set_ylabel(names[c] if c < len(names) else str(c), rotation=0, ha="right", va="center")
            if row == 0:
                axes[0, 0].set_title(root_title)
                axes[0, 1].set_title(leaf_title)
    return fig


# ----------------------------------------------------------------------------- run report
def _load_run(run_dir: str):
    """``(config dict, synset dict)`` of a finished run, or a ``ValueError`` saying what is missing."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir} is not a directory; pass the --out directory of a finished `hddgeo distill` run")
    missing = [f for f in ("config.json", "synset.pt") if not os.path.exists(os.path.join(run_dir, f))]
    if missing:
        raise ValueError(
            f"{run_dir} is not a finished run directory: {', '.join(missing)} missing "
            "(synset.pt is written when a run completes; resume an interrupted run with --resume first)"
        )
    from .data import DATASET_NAMES
    from .models import MODEL_NAMES

    path = os.path.join(run_dir, "config.json")
    cfg = read_json(path)  # (``hddgeo plot`` checks it whole as a configuration first, as ``evaluate`` does)
    k, max_norm = cfg.get("k"), cfg.get("max_norm")
    for key, ok in (("dataset", cfg.get("dataset") in DATASET_NAMES), ("model", cfg.get("model") in MODEL_NAMES),
                    ("k", type(k) in (int, float) and math.isfinite(k) and k > 0),
                    ("max_norm", max_norm is None or type(max_norm) in (int, float) and max_norm > 0)):
        if not ok:
            raise ValueError(f"{path}: {key} is {cfg.get(key)!r}"[:200] + "; not a run directory written by hddgeo")
    syn = load_tensors(os.path.join(run_dir, "synset.pt"), "synthetic set")
    if "images" not in syn or "train_labels" not in syn:
        raise ValueError(f"{run_dir}/synset.pt lacks 'images' / 'train_labels': not a synthetic set written by hddgeo")
    return cfg, syn


def _check_synset(syn: dict, dataset, path: str):
    """The synthetic images and labels of ``syn`` (``path``), checked against ``dataset`` as ``hddgeo evaluate``
    checks them (shapes, finite images, labels among the dataset's classes): ``ValueError`` naming the file."""
    from .evaluate import _check_inputs

    try:
        images, labels, _, _, _ = _check_inputs(syn["images"], syn["train_labels"], dataset.test_images[:1],
                                                dataset.test_labels[:1], dataset.num_classes)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path}: {str(err).strip().splitlines()[0]}") from None
    return images, labels


def poincare_report(run_dir: str, out_dir: Optional[str] = None, classes: Optional[Sequence[int]] = None, seed: int = 0,
                    per_class: int = 200, axes: str = "pca", root_leaf_n: int = 6,
                    data_root: Optional[str] = None, device=None) -> list:
    """Figures of a finished run: per-class Poincaré disks, radius histograms, root/leaf real images.

    Loads ``config.json`` and ``synset.pt`` from ``run_dir`` and the run's dataset, embeds the first
    ``per_class`` training images of each class and every synthetic image with one randomly initialised
    network (``cfg["model"]``, seeded by ``seed``: the DM protocol's feature map), lifts them onto
    ``Lorentz(cfg["k"])`` with the run's clip ``cfg["max_norm"]`` and writes into ``out_dir``:

    * ``poincare_disk.png``: one disk per class (default: the first 10 classes, 5 per row), see
      :func:`poincare_projection` / :func:`plot_poincare_disk`;
    * ``radius_hist.png``: pooled radius histograms of real versus synthetic points, and the per-class
      radii (is the synthetic set closer to the root?);
    * ``root_leaf.png``: the ``root_leaf_n`` real images of each class with the smallest and the largest
      radius (:func:`hddgeo.hierarchy.root_and_leaf`).

    Parameters
    ----------
    run_dir : str
        A finished run directory (``hddgeo distill ... --out DIR``).
    out_dir : str, optional
        Where the figures go; ``run_dir/plots`` by default.
    classes : sequence of int, optional
        The classes drawn; the first 10 by default.
    seed : int, optional
        Seeds the random feature network.
    per_class : int, optional
        Real training images embedded per class.
    axes : {"pca", "root"}, optional
        The disks' directions (:func:`poincare_projection`).
    root_leaf_n : int, optional
        Images per class in the root/leaf strip.
    data_root : str, optional
        Where the run's dataset lives (default: the run's own ``data_root``).
    device : str or torch.device, optional
        Where the network embeds the images (default: the CPU); the features come back to the CPU, where the
        small geometry of a figure and matplotlib run.

    Returns
    -------
    list of str
        The paths of the PNG files written.

    Raises
    ------
    ValueError
        ``run_dir`` is not a finished run.

    Examples
    --------
    A finished run directory gives its figures (the command line does the same with
    ``hddgeo distill ... --out DIR`` and ``hddgeo plot poincare DIR``):

    >>> from hddgeo.plots import poincare_report
    >>> paths = poincare_report("runs/digits-hdd")                 # doctest: +SKIP
    >>> sorted(p.rsplit("/", 1)[-1] for p in paths)                # doctest: +SKIP
    ['poincare_disk.png', 'radius_hist.png', 'root_leaf.png']
    """
    import geoopt

    from .data import load_dataset
    from .stats import method_label
    from .models import embed, fresh_network
    from .hierarchy import root_and_leaf, sample_table

    cfg, syn = _load_run(run_dir)
    if out_dir is None:
        out_dir = os.path.join(run_dir, "plots")
        if os.path.islink(out_dir):  # a received run directory's link would send the figures elsewhere
            raise ValueError(f"{out_dir} is a link, not a folder of this run directory; remove it or pass --out")
    dataset = load_dataset(cfg["dataset"], data_root=data_root or cfg.get("data_root"))
    C = dataset.num_classes
    classes = list(range(min(C, 10))) if classes is None else [int(c) for c in classes]
    if not classes or any(not 0 <= c < C for c in classes):
        raise ValueError(f"classes must be a non-empty list of labels in [0, {C}), got {classes}")
    if per_class < 2:
        raise ValueError(f"per_class must be at least 2, got {per_class}")
    k = float(cfg["k"])
    max_norm = cfg.get("max_norm")
    M = geoopt.Lorentz(k=k)
    net = fresh_network(cfg["model"], dataset, seed, device=device).eval()
    syn_images, syn_labels = _check_synset(syn, dataset, os.path.join(run_dir, "synset.pt"))

    real_imgs, z_real, z_syn, feats = {}, {}, {}, {}
    for c in classes:
        real_imgs[c] = dataset.train_images[dataset.train_labels == c][:per_class]
        feats[c] = embed(net, real_imgs[c]).double()
        z_real[c] = lift(feats[c], M, max_norm=max_norm)
        x_syn = syn_images[syn_labels == c]
        z_syn[c] = lift(embed(net, x_syn).double(), M, max_norm=max_norm) if len(x_syn) else None

    label = method_label(cfg.get("method", "?"), cfg.get("matcher", "euclidean"), cfg.get("centroid", ""))
    clip = "none" if max_norm is None else f"{max_norm:g}"
    setting = f"{cfg['dataset']} · {label} · IPC {cfg.get('ipc', '?')} · k={k:g} · clip={clip}"
    names = dataset.class_names
    paths = []

    # -- Poincare disks
    ncols = min(5, len(classes))
    nrows = math.ceil(len(classes) / ncols)
    with _style(font_scale=1.0):
        fig, axs = plt.subplots(nrows, ncols, figsize=(2.25 * ncols + 0.3, 2.55 * nrows + 1.5), squeeze=False,
                                layout="constrained")
        for ax in axs.flat[len(classes):]:
            ax.set_visible(False)
        for ax, c in zip(axs.flat, classes):
            proj = poincare_projection(z_real[c], z_syn[c], M, axes=axes)
            plot_poincare_disk(ax, proj, title=f"class {names[c]}\nkept {100 * proj.explained:.0f}% · "
                                               f"d(K,K′)={proj.d_karcher:.2f}", ring_labels=False)
            ax.title.set_fontsize(11)
        fig.suptitle(f"Poincaré disk per class, centred at the real Karcher mean ({axes.upper()} axes)\n{setting}",
                     fontsize=13)
        fig.legend(handles=disk_legend_handles(), loc="outside lower center", ncol=4 if ncols > 3 else 2,
                   frameon=False, fontsize=10, columnspacing=1.0, handletextpad=0.3,
                   title="kept = share of the class's spread shown by the 2 axes · "
                         "d(K,K′) = real-to-synthetic Karcher distance · dashed circles: distance 1, 2, 3 ×√k from the centre",
                   title_fontsize=9)
        paths.append(save_figure(fig, os.path.join(out_dir, "poincare_disk.png")))

    # -- radii
    r_real = {c: radius(z_real[c], M).numpy() for c in classes}
    r_syn = {c: radius(z_syn[c], M).numpy() if z_syn[c] is not None else np.zeros(0) for c in classes}
    clip_r = clip_radius(k, max_norm)
    with _style():
        fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(12, 6.3), gridspec_kw=dict(width_ratios=(1.1, 1)))
        fig.subplots_adjust(left=0.08, right=0.98, top=0.84, bottom=0.31, wspace=0.28)
        plot_radius_histograms(ax_h, np.concatenate([r_real[c] for c in classes]),
                               np.concatenate([r_syn[c] for c in classes]), title="all shown classes pooled",
                               clip=clip_r, legend="none")
        xs = np.arange(len(classes))
        mean = np.array([r_real[c].mean() for c in classes])
        lo = np.array([np.percentile(r_real[c], 5) for c in classes])
        hi = np.array([np.percentile(r_real[c], 95) for c in classes])
        ax_c.errorbar(xs, mean, yerr=[mean - lo, hi - mean], fmt="o", color=REAL_COLOR, ms=7, capsize=4,
                      label="real: mean, 5–95% range")
        rng = np.random.default_rng(0)
        for i, c in enumerate(classes):
            if len(r_syn[c]):
                jitter = rng.uniform(-0.15, 0.15, len(r_syn[c])) if len(r_syn[c]) > 1 else np.zeros(1)
                ax_c.scatter(i + 0.25 + jitter, r_syn[c], s=55, marker="D", color=SYN_COLOR, edgecolor="black",
                             lw=0.6, zorder=3, label="synthetic images" if i == 0 else None)
        # class names are words ("T-shirt/top", "Ankle boot"): slanted, they no longer run into each other
        shown = [str(names[c]) for c in classes]
        if max(map(len, shown)) > 3:
            ax_c.set_xticks(xs, shown, rotation=35, ha="right", rotation_mode="anchor")
        else:
            ax_c.set_xticks(xs, shown)
        ax_c.set_xlabel("class")
        ax_c.set_ylabel("radius r")
        ax_c.ticklabel_format(axis="y", useOffset=False)
        ax_c.set_title("per class")
        if clip_r is not None and clip_note(np.concatenate(list(r_real.values())),
                                            np.concatenate(list(r_syn.values())), clip_r):
            ax_c.axhline(clip_r, color="0.4", ls=":", lw=1.2, zorder=1, label=f"clip: radius {clip_r:g}")
        # one legend for both panels, under them: nothing drawn over the data
        handles, labels = (sum(x, []) for x in zip(ax_h.get_legend_handles_labels(), ax_c.get_legend_handles_labels()))
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize="small", frameon=False)
        fig.suptitle(f"Radii of real and synthetic features (smaller = closer to the root)\n{setting}")
        paths.append(save_figure(fig, os.path.join(out_dir, "radius_hist.png")))

    # -- root / leaf images of the real data
    table = sample_table({c: feats[c] for c in classes}, k=k, max_norm=max_norm)
    root, leaf = root_and_leaf(table, n=root_leaf_n)
    tied = bool(table.groupby("class")["radius"].agg(np.ptp).eq(0).all())
    fig = plot_root_leaf_images(real_imgs, dataset, root, leaf, classes=classes)
    note = " (all radii clipped to the same value: ordered by unclipped feature norm)" if tied else ""
    fig.suptitle(f"Real images with the smallest and largest radius per class{note}\n{setting}", fontsize=12)
    paths.append(save_figure(fig, os.path.join(out_dir, "root_leaf.png")))
    return paths


# ----------------------------------------------------------------------------- tables
