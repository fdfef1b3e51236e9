"""Matching losses between real and synthetic feature sets.

* :func:`euclidean_mean_loss`: DM's squared distance between feature means, summed over classes.
* :func:`clipped_mean_loss`: the same on the tangent vectors HDD lifts (features shortened to ``|v|/sqrt(k) <=
  max_norm``): DM's matching after HDD's normalisation, without the hyperbolic centroid.
* :func:`hdd_loss`: HDD's ``lambda * d_L(centroid(real), centroid(syn))`` after lifting both sets onto
  the hyperboloid, with the centroid (``law`` | ``karcher`` | ``tangent``) as a switch.

Both accept one set ``(n, d)`` / ``(m, d)`` or a class batch ``(C, n, d)`` / ``(C, m, d)``; real and
synthetic sets may differ in size.
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch

from .device import on_accelerator
from .geometry._math import _dist, _lift, _radius, inv_sinhc
from .geometry.centroids import CENTROID_METHODS, _centroid, check_method, karcher_options, normalised_weights
from .geometry.lorentz import check_dtype, check_finite, check_max_norm, check_reach, k_tensor, manifold_k, plain
from .labels import CENTROID_MATCHERS

REDUCTIONS = ("sum", "mean", "none")


def _check_pair(v_real: torch.Tensor, v_syn: torch.Tensor):
    """Shapes and dtypes of a feature pair; their values are checked by :func:`_check_values`."""
    for x, what in ((v_real, "real features"), (v_syn, "synthetic features")):
        check_finite(x[:0] if torch.is_tensor(x) else x, what)  # type and dtype only: no values read
    if v_real.dim() not in (2, 3) or v_real.dim() != v_syn.dim():
        raise ValueError(
            f"features must both be (n, d) or both (C, n, d); got real {tuple(v_real.shape)} and synthetic {tuple(v_syn.shape)}"
        )
    if v_real.shape[-1] != v_syn.shape[-1] or v_real.shape[:-2] != v_syn.shape[:-2]:
        raise ValueError(
            f"real {tuple(v_real.shape)} and synthetic {tuple(v_syn.shape)} features must share the class count and feature dimension"
        )
    if v_real.shape[-2] == 0 or v_syn.shape[-2] == 0:
        raise ValueError("empty feature set: every class needs at least one real and one synthetic sample")


def _check_values(v_real, v_syn, z_real=None, z_syn=None, k: float = 1.0) -> None:
    """The features are finite and their lifts within float reach, read back in one host synchronisation
    (one per loss on a GPU, instead of one per check): the sums are finite whenever every value is, and when
    they are not (or overflow) the exact checks say which input is bad."""
    if on_accelerator(v_real.device):
        # no read on an accelerator, where it would stall the queue between forward and backward: a non-finite
        # feature makes the loss and the image gradient non-finite, which the runner's one read per iteration
        # (runner.read_back) catches before any checkpoint
        return
    total = v_real.detach().sum() + v_syn.detach().sum()
    if z_real is not None:
        total = total + (z_real[..., 0].detach() ** 2).sum() + (z_syn[..., 0].detach() ** 2).sum()
    if bool(torch.isfinite(total)):
        return
    check_finite(v_real, "real features")
    check_finite(v_syn, "synthetic features")
    if z_real is not None:
        check_reach(z_real, k, "lifting the real features")
        check_reach(z_syn, k, "lifting the synthetic features")


def _reduce(per_class: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return per_class.sum()
    if reduction == "mean":
        return per_class.mean()
    if reduction == "none":
        return per_class
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")


def euclidean_mean_loss(v_real: torch.Tensor, v_syn: torch.Tensor, *, reduction: str = "sum") -> torch.Tensor:
    """DM's moment matching: the squared Euclidean distance between the mean real and mean synthetic feature.

    ``|mean_i v_real_i - mean_j v_syn_j|^2`` per class, reduced over classes: the loss HDD's term replaces in the
    reference code (Zhao and Bilen's distribution matching).

    Parameters
    ----------
    v_real, v_syn : torch.Tensor
        Real and synthetic features, both ``(n, d)`` / ``(m, d)`` or both ``(C, n, d)`` / ``(C, m, d)`` (the set
        sizes may differ).
    reduction : {"sum", "mean", "none"}, optional
        Over classes: the sum (default, as DM sums over classes), the mean, or the per-class values ``(C,)``.

    Returns
    -------
    torch.Tensor
        A scalar, or ``(C,)`` with ``reduction="none"``.

    Raises
    ------
    TypeError
        A feature set is not a floating-point tensor.
    ValueError
        The shapes do not match, a set is empty, a feature is not finite (checked on the CPU; on an accelerator
        the loss becomes non-finite instead, without a host read), or ``reduction`` is unknown.

    References
    ----------
    B. Zhao and H. Bilen, "Dataset Condensation with Distribution Matching", WACV 2023.

    Examples
    --------
    >>> import torch, hddgeo
    >>> real = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])   # one class: mean (2, 0)
    >>> syn = torch.tensor([[[2.0, 1.0]]])                # mean (2, 1)
    >>> hddgeo.euclidean_mean_loss(real, syn)
    tensor(1.)
    """
    _check_pair(v_real, v_syn)
    _check_values(plain(v_real), plain(v_syn))
    diff = plain(v_real).mean(-2) - plain(v_syn).mean(-2)
    return _reduce((diff * diff).sum(-1), reduction)


def clip_features(v: torch.Tensor, *, k: float = 1.0, max_norm: Optional[float] = 10.0) -> torch.Tensor:
    """The tangent vectors HDD lifts: each feature ``v`` shortened to length ``max_norm * sqrt(k)`` where
    ``|v|/sqrt(k)`` exceeds ``max_norm`` (the direction kept), left as it is elsewhere; ``max_norm=None`` returns
    ``v``.  Differentiable: a clipped feature's gradient has no radial part, as in HDD's clamped lift.

    Examples
    --------
    >>> import torch
    >>> from hddgeo.losses import clip_features
    >>> clip_features(torch.tensor([[30.0, 40.0], [3.0, 4.0]]), k=1.0, max_norm=10.0)
    tensor([[6.0000, 8.0000],
            [3.0000, 4.0000]])
    """
    if max_norm is None:
        return v
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    bound = float(max_norm) * float(k) ** 0.5
    clipped = norm > bound
    return torch.where(clipped, v * (bound / torch.where(clipped, norm, torch.ones_like(norm))), v)


def clipped_mean_loss(v_real: torch.Tensor, v_syn: torch.Tensor, *, k: float = 1.0, max_norm: Optional[float] = 10.0,
                      reduction: str = "sum") -> torch.Tensor:
    """DM's mean matching on HDD's tangent vectors: ``|mean(clip(v_real)) - mean(clip(v_syn))|^2`` per class, with
    ``clip`` = :func:`clip_features` at ``max_norm`` (of ``|v|/sqrt(k)``).  The control that separates what HDD's
    normalisation of the features does from what its hyperbolic centroid does.

    Examples
    --------
    >>> import torch
    >>> from hddgeo.losses import clipped_mean_loss
    >>> real, syn = torch.tensor([[[30.0, 40.0]]]), torch.tensor([[[3.0, 4.0]]])
    >>> clipped_mean_loss(real, syn, k=1.0, max_norm=10.0)      # (6, 8) against (3, 4)
    tensor(25.0000)
    """
    _check_pair(v_real, v_syn)
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise TypeError(f"k must be a number, got {type(k).__name__}")
    if not (k > 0):
        raise ValueError(f"k must be positive (curvature K = -1/k), got {k}")
    check_max_norm(max_norm)
    _check_values(plain(v_real), plain(v_syn))
    diff = (clip_features(plain(v_real), k=k, max_norm=max_norm).mean(-2)
            - clip_features(plain(v_syn), k=k, max_norm=max_norm).mean(-2))
    return _reduce((diff * diff).sum(-1), reduction)


def hdd_loss(
    v_real: torch.Tensor,
    v_syn: torch.Tensor,
    M,
    *,
    scale: float = 20.0,
    centroid: str = "law",
    max_norm: Optional[float] = 10.0,
    weights_real: Optional[torch.Tensor] = None,
    weights_syn: Optional[torch.Tensor] = None,
    reduction: str = "sum",
    dtype: Optional[torch.dtype] = torch.float64,
    tol: Optional[float] = None,
    max_iter: Optional[int] = None,
    backward: str = "implicit",
) -> torch.Tensor:
    r"""HDD's matching loss: the geodesic distance between the real and the synthetic features' hyperbolic centroids.

    .. math::

        \mathcal{L} = \lambda \sum_c d_L\bigl(\mu(\operatorname{Exp}_o V^{real}_c),\
        \mu(\operatorname{Exp}_o V^{syn}_c)\bigr)

    (paper Eq. 13), where both feature sets of class ``c`` are lifted by :func:`lift` (``|v|/sqrt(k)`` clipped at
    ``max_norm``) and ``mu`` is the centroid chosen by ``centroid``.  Differentiable in both feature sets and the
    weights.  It reads nothing back from an accelerator (no host synchronisation inside a training step), so it
    does not warn when a Karcher solve stops short: check convergence with :func:`karcher_mean`'s
    ``return_info``.  A gradient through a Law centroid beyond :func:`~hddgeo.geometry.gradient_reach` is NaN on
    every device (see :func:`law_centroid`).

    Parameters
    ----------
    v_real, v_syn : torch.Tensor
        Real and synthetic features, both ``(n, d)`` / ``(m, d)`` or both ``(C, n, d)`` / ``(C, m, d)``.
    M : geoopt.Lorentz
        The manifold; its ``k`` is the paper's (Tables 5 and 6).
    scale : float, optional
        The paper's ``lambda`` (20 by default).
    centroid : {"law", "karcher", "tangent"}, optional
        The centroid of both sets: :func:`law_centroid` (default, as the paper), :func:`karcher_mean` or
        :func:`tangent_centroid`.
    max_norm : float or None, optional
        The clip of ``|v|/sqrt(k)`` before the lift: 10, as the reference code, by default; ``None`` disables it.
    weights_real, weights_syn : torch.Tensor, optional
        Per-sample weights ``(..., n)`` / ``(..., m)`` for the centroids; uniform by default.
    reduction : {"sum", "mean", "none"}, optional
        Over classes: the sum (default), the mean, or the per-class values ``(C,)``.
    dtype : torch.dtype or None, optional
        The dtype of the geometry: float64 by default; ``None`` keeps the features'.  In float32 Law's centroid has
        no finite gradient beyond ``|v|/sqrt(k)`` of about 3.7 (:func:`hddgeo.geometry.gradient_reach`), well inside
        the reference clip of 10: keep float64 for ``centroid="law"``.
    tol, max_iter, backward : optional
        The Karcher mean's options (see :func:`karcher_mean`); used with ``centroid="karcher"`` only.

    Returns
    -------
    torch.Tensor
        A scalar (in ``dtype``), or ``(C,)`` with ``reduction="none"``.

    Raises
    ------
    TypeError
        A feature set is not a floating-point tensor, ``M`` is not a ``geoopt.Lorentz``, an option has the wrong
        type, or a keyword is unknown.
    ValueError
        The shapes do not match, a set is empty, ``centroid``, ``reduction`` or ``backward`` is unknown,
        ``max_norm <= 0``, or (checked on the CPU) a feature is not finite or lifts beyond ``dtype``'s reach.

    References
    ----------
    W. Li, G. Li, K. Maeda, T. Ogawa and M. Haseyama, "Hyperbolic Dataset Distillation", NeurIPS 2025, Eq. 13.

    Examples
    --------
    >>> import geoopt, torch, hddgeo
    >>> M = geoopt.Lorentz(k=1.0)
    >>> real = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])   # one class; its centroid is the origin
    >>> syn = torch.tensor([[[0.0, 0.5]]], requires_grad=True)
    >>> loss = hddgeo.hdd_loss(real, syn, M, scale=2.0, centroid="karcher")
    >>> loss                                               # 2 * d(origin, lift(syn)) = 2 * 0.5
    tensor(1., dtype=torch.float64, grad_fn=<SumBackward0>)
    >>> loss.backward(); syn.grad                          # moves the synthetic feature towards the origin
    tensor([[[0., 2.]]])
    """
    k = manifold_k(M)
    _check_pair(v_real, v_syn)
    # every option checked once, before any work (the Karcher ones too when another centroid ignores them)
    check_method(centroid, "centroid")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    if isinstance(scale, bool) or not (isinstance(scale, numbers.Real) or torch.is_tensor(scale)):
        raise TypeError(f"scale must be a number, got {type(scale).__name__} {scale!r}"[:200])
    check_max_norm(max_norm)
    check_dtype(dtype)
    karcher_kwargs = {"tol": tol, "max_iter": max_iter, "backward": backward}
    karcher_options(torch.float64 if dtype is None else dtype, k, **karcher_kwargs)
    vr, vs = plain(v_real), plain(v_syn)
    if dtype is not None:
        vr, vs = vr.to(dtype), vs.to(dtype)
    kt = k_tensor(M, vr)
    zr, zs = _lift(vr, kt, max_norm), _lift(vs, kt, max_norm)
    _check_values(plain(v_real), plain(v_syn), zr, zs, k)
    wr, ws = normalised_weights(weights_real, zr), normalised_weights(weights_syn, zs)
    if centroid == "karcher" and on_accelerator(zr.device) and zr.shape[:-2] == zs.shape[:-2]:
        cr, cs = _karcher_together(zr, wr, zs, ws, kt, k, karcher_kwargs)
    else:
        cr = _centroid(zr, wr, kt, centroid, k_val=k, **karcher_kwargs)
        cs = _centroid(zs, ws, kt, centroid, k_val=k, **karcher_kwargs)
    return _reduce(scale * _dist(cr, cs, kt), reduction)


def _karcher_together(zr, wr, zs, ws, kt, k: float, karcher_kwargs: dict):
    """The Karcher means of the real and the synthetic sets in one solve (an accelerator's path: one Newton
    convergence test that reads the device instead of one per side, and half the kernel launches).  The smaller
    sets are padded to the larger size with copies of their first point at weight 0, which leaves every mean
    where it is (a zero-weight point adds nothing to the objective, its gradient or its Hessian)."""
    if min(zr.shape[-2], zs.shape[-2]) == 1:
        # a side of one point is its own mean (_karcher returns it without solving): solve the other side alone,
        # not padded to twice the work (IPC 1)
        return tuple(_centroid(z, w, kt, "karcher", k_val=k, **karcher_kwargs) for z, w in ((zr, wr), (zs, ws)))
    n = max(zr.shape[-2], zs.shape[-2])

    def pad(z, w):
        extra = n - z.shape[-2]
        if extra == 0:
            return z, w
        z = torch.cat([z, z[..., :1, :].expand(*z.shape[:-2], extra, z.shape[-1])], dim=-2)
        return z, torch.cat([w, torch.zeros(*w.shape[:-1], extra, dtype=w.dtype, device=w.device)], dim=-1)

    (zr, wr), (zs, ws) = pad(zr, wr), pad(zs, ws)
    both = _centroid(torch.stack([zr, zs]), torch.stack([wr, ws]), kt, "karcher", k_val=k, **karcher_kwargs)
    return both[0], both[1]


MATCHERS = ("euclidean", "clipped_euclidean", "hdd", "both")


class Matcher:
    """The feature-matching term of a distillation step, with the centroid as a switch.

    ``kind="euclidean"``: DM's mean matching; ``"clipped_euclidean"``: DM's mean matching on the tangent vectors
    HDD lifts (:func:`clipped_mean_loss`, with ``k`` and ``max_norm``); ``"hdd"``: HDD's centroid distance (which
    replaces DM's term in the reference code); ``"both"``: ``euclidean_weight * DM + hdd_weight * HDD`` for
    ablations.
    ``scale`` is the paper's ``lambda``; ``k``, ``centroid`` and ``max_norm`` configure the HDD term.
    Called on class batches ``(C, n, d)`` / ``(C, m, d)``; returns the scalar loss and its parts.
    """

    def __init__(self, kind: str = "euclidean", centroid: str = "law", *, k: float = 1.0, scale: float = 20.0,
                 max_norm: Optional[float] = 10.0, euclidean_weight: float = 1.0, hdd_weight: float = 1.0,
                 karcher_tol: Optional[float] = None, karcher_max_iter: Optional[int] = None,
                 num_classes: Optional[int] = None):
        if kind not in MATCHERS:
            raise ValueError(f"unknown matcher {kind!r}; choose one of {', '.join(MATCHERS)}")
        if centroid not in CENTROID_METHODS:
            raise ValueError(f"unknown centroid {centroid!r}; choose one of {', '.join(CENTROID_METHODS)}")
        if not (k > 0):
            raise ValueError(f"k must be positive (curvature K = -1/k), got {k}")
        if max_norm is not None and not (max_norm > 0):
            raise ValueError(f"max_norm must be positive or None, got {max_norm}")
        self.kind, self.centroid, self.k, self.scale, self.max_norm = kind, centroid, float(k), float(scale), max_norm
        self.euclidean_weight = float(euclidean_weight) if kind == "both" else 1.0
        self.hdd_weight = float(hdd_weight) if kind == "both" else 1.0
        self.karcher_kwargs = {"tol": karcher_tol, "max_iter": karcher_max_iter}
        # classes of the whole run (sharded processes see only some), for the centroid-gap averages
        self.num_classes = num_classes

    @property
    def manifold(self):
        """``geoopt.Lorentz(k)``, made when asked: its ``k`` is a CPU constant that the geometry reads as a
        number and copies to the features' device, not state of the run that lives on the device."""
        import geoopt

        return geoopt.Lorentz(k=self.k)

    def centroid_gaps(self, f_real: torch.Tensor, f_syn: torch.Tensor) -> dict:
        """Diagnostics of the lifted real and synthetic features (no gradients), each a mean over classes:

        * ``gap_real`` / ``gap_syn``: ``d(law, karcher)`` of the class;
        * ``radius_real`` / ``radius_syn``: the class's mean geodesic radius (the root-centric bias compares them);
        * ``clip_real`` / ``clip_syn``: the share of the class's features that ``max_norm`` clips;
        * ``wstd_real`` / ``wstd_syn``: the standard deviation of the class's hierarchical weights (Eq. 17),
          0 when every point lies at one radius.

        Per-class values are summed and divided by ``num_classes`` (all classes, not only this process's) so
        that the values of sharded processes add up to the mean.
        """
        kt = torch.full((), self.k, dtype=torch.float64, device=f_real.device)
        sk = self.k ** 0.5
        out = {}
        per_class = {}
        with torch.no_grad():
            for side, f in (("real", f_real), ("syn", f_syn)):
                v = plain(f).double()
                z = _lift(v, kt, self.max_norm)
                w = normalised_weights(None, z)
                per_class[f"gap_{side}"] = _dist(_centroid(z, w, kt, "law"),
                                                 _centroid(z, w, kt, "karcher", k_val=self.k), kt)
                r = _radius(z, kt)
                per_class[f"radius_{side}"] = r.mean(-1)
                clipped = (v.norm(dim=-1) / sk >= self.max_norm) if self.max_norm is not None else torch.zeros_like(r)
                per_class[f"clip_{side}"] = clipped.double().mean(-1)
                weights = inv_sinhc(r / sk)
                per_class[f"wstd_{side}"] = (weights.std(-1, unbiased=False) if weights.shape[-1] > 1
                                             else torch.zeros_like(weights[..., 0]))
            names = list(per_class)
            # one transfer for all of them (a GPU waits once)
            sums = torch.stack([per_class[n].sum() for n in names]).tolist()
        divisor = self.num_classes or per_class["gap_real"].numel()
        out.update({n: s / divisor for n, s in zip(names, sums)})
        return out

    def __call__(self, f_real: torch.Tensor, f_syn: torch.Tensor, diagnose: bool = False):
        """``(loss, logged parts)``; ``diagnose`` also logs the distance between Law's centroid and the Karcher
        mean of the real and the synthetic features (``gap_real``, ``gap_syn``), averaged over classes."""
        parts = {}
        total = f_syn.new_zeros(())
        if self.kind in ("euclidean", "both"):
            parts["euclidean"] = euclidean_mean_loss(f_real, f_syn)
            total = total + self.euclidean_weight * parts["euclidean"]
        if self.kind == "clipped_euclidean":
            parts["clipped_euclidean"] = clipped_mean_loss(f_real, f_syn, k=self.k, max_norm=self.max_norm)
            total = total + parts["clipped_euclidean"]
        if self.kind in ("hdd", "both"):
            parts["hdd"] = hdd_loss(f_real, f_syn, self.manifold, scale=self.scale, centroid=self.centroid,
                                    max_norm=self.max_norm, **self.karcher_kwargs).to(f_syn.dtype)
            total = total + self.hdd_weight * parts["hdd"]
        # detached 0-d tensors: the runner reads every logged value of an iteration in one transfer
        logged = {name: v.detach() for name, v in parts.items()}
        if diagnose:
            logged.update(self.centroid_gaps(f_real, f_syn))
        return total, logged

    def describe(self) -> str:
        if self.kind not in CENTROID_MATCHERS:
            return self.kind
        return f"{self.kind}/{self.centroid}"
