"""GeoDM: geometry-aware distribution matching in a Euclidean x hyperbolic x spherical product space.

GeoDM (Li et al., "Geometry-aware Distribution Matching for Dataset Distillation") is DM plus an
optimal-transport term computed in a product of three geometries whose curvatures and mixing
weights are learnt along with the synthetic images.  One iteration here:

1. DM's step: a fresh random ConvNet embeds real and synthetic images of every class (siamese DSA),
   and the configured :class:`~hddgeo.losses.Matcher` scores the raw features (DM's mean matching by
   default).
2. Each class's features are centred on the mean of its real features (option ``center``) and
   sent through three *fixed* random linear heads ``R^d -> R^proj_dim``, one per component.  Each
   head's output is rescaled, per class, by a constant (detached) factor so that the class's real
   tangent vectors have mean norm ``tangent_norm``; curvatures are in units of that scale.  Why
   centre: a random ConvNet's features share a large common component (on ``digits`` norm ~4.9,
   spread ~0.3 around the class mean), so uncentred points sit in a tiny patch far from the origin
   where all three geometries are nearly flat and the curvatures hardly matter.  Centring per class
   (rather than on the mean of all classes) keeps every class's term independent of the others,
   which class-sharded multi-process runs (``hddgeo.distill.distributed``) rely on.
3. The exponential map at the origin puts component ``g`` on its manifold: flat ``R^p``; the
   hyperboloid of curvature ``-K_h`` (geoopt's ``Lorentz(k=1/K_h)``, ``hddgeo.geometry._math._lift``);
   the sphere of curvature ``K_s`` (radius ``1/sqrt(K_s)``; geoopt's ``Sphere`` scaled, or
   equivalently ``SphereProjection(k=K_s)``).
4. Per class, the cost between two points is ``sum_g w_g d_g(x, y)^2 / s_g``: squared geodesic
   distances, each divided by its mean ``s_g`` over all pairs of that class's real-and-synthetic
   union (so every component's cost has mean 1 and the combined cost has mean exactly 1 because
   ``sum_g w_g = 1``), weighted by ``w = softmax(logits)``.
5. The OT term is the debiased Sinkhorn divergence between the real and synthetic clouds with uniform
   marginals, ``S = OT_eps(real, syn) - (OT_eps(real, real) + OT_eps(syn, syn)) / 2`` with
   ``OT_eps(a, b) = min_P <P, C> + eps KL(P | a b^T)``.  Debiasing makes ``S`` exactly 0 for identical
   sets (plain entropic OT is not).  Because the cost has mean 1, ``eps = ot_reg`` is relative to the
   mean cost.  ``S`` is dimensionless; it is multiplied by the class's (detached) mean squared distance
   between real features, ``2 * mean |f - mean f|^2``, which puts it in the units of DM's squared
   feature distances (on ``digits`` the two terms' image gradients are then within a factor ~3 of each
   other).  The loss adds ``ot_weight * sum_classes`` of that.

Curvature magnitudes ``K_h, K_s`` and the weight logits are ``nn.Parameter`` s of the method,
optimised by their own Adam (``geo_lr``) on the same loss (a min-min problem, as in the paper): they
receive gradients from the same backward pass that updates the images and are stepped in
:meth:`GeoDM.after_step` (summed over ranks first in class-sharded runs).  Minimising over the
weights favours whichever component currently shows the smallest divergence, so with a large
``geo_lr`` the weights collapse onto one component and the curvatures run to the ends of their range;
the default ``geo_lr`` moves them slowly.  A curvature magnitude is ``exp(log lo + (log hi - log lo) * sigmoid(rho))``
with ``[lo, hi] = [1e-3, 10]``: always inside the range, smooth, and never clamped (a clamp would zero
its gradient).

Implementation notes
--------------------
* Distances are computed from the polar form of the tangent vectors (radius ``r = |u|``, direction
  ``n``) by the law of cosines of each geometry, e.g. ``cosh(t) - 1 = 2 sinh^2((a - b)/2) +
  sinh(a) sinh(b) (1 - n.m)`` with ``a = sqrt(K) r``.  This is exact for points obtained by
  ``expmap0``, needs one matrix product per component instead of an ``(n, m, p)`` broadcast, and stays
  accurate for nearby points (the textbook ``arcosh(-<x, y>_L / k)`` / ``arccos`` forms cancel, and
  have infinite slope at coincident points, which the self-transport terms of the divergence contain).
  The tests check these distances against geoopt's ``Lorentz.dist`` and ``Sphere.dist``.
* Sinkhorn runs in POT's batched log-domain solver (``ot.batch.solve_batch``) on the detached cost,
  all classes at once; the value is then rebuilt as ``<P, C> + eps KL(P | a b^T)`` with ``P`` fixed, so
  its gradient in ``C`` is ``P`` (envelope theorem).  This is what POT's ``grad="envelope"`` does, but
  without recording the Sinkhorn loop on the autograd tape (``ot.sinkhorn2`` with torch tensors
  back-propagates through every iteration, which costs memory and time for no benefit here).
* Geometry runs in float64.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Dict, Optional

import torch

from . import distributed
from hddgeo.device import on_accelerator, to_device

from .methods import DM, register_method

COMPONENTS = ("euclidean", "hyperbolic", "spherical")
CURVATURE_RANGE = (1e-3, 10.0)  # magnitudes |K| of the hyperbolic and spherical curvatures

OPTION_DEFAULTS = {
    "proj_dim": 64,            # output dimension of each fixed random projection head
    "geo_lr": 0.01,            # Adam learning rate of the curvatures and geometry weights (0 freezes them)
    "ot_weight": 1.0,          # weight of the OT term (0 = plain DM plus logging)
    "ot_reg": 0.1,             # entropic regularisation eps, relative to the mean cost (which is 1)
    "ot_max_iter": 100,        # Sinkhorn iterations at most
    "ot_tol": 1e-4,            # Sinkhorn stops when the L2 error of the row marginals (sum 1) is below this
    "center": True,            # subtract each class's mean real feature before the heads (origin = class centre)
    "tangent_norm": 1.0,       # mean norm of each class's real tangent vectors after the heads
    "init_curvature": 1.0,     # initial |K| of the hyperbolic and spherical components
    "components": COMPONENTS,  # which geometries form the product (ablations: any non-empty subset)
}

_TINY = 1e-30
_MAX_THETA = 50.0


def _import_ot():
    try:
        import ot
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("GeoDM needs the POT optimal-transport library; install it with `pip install pot`") from e
    try:
        import ot.batch  # noqa: F401  (new in POT 0.9.6)
    except ImportError as e:  # pragma: no cover
        raise ImportError(f"GeoDM needs POT >= 0.9.6 (for ot.batch), found {getattr(ot, '__version__', '?')}; "
                          "upgrade with `pip install -U pot`") from e
    return ot


# ----------------------------------------------------------------------------- options
def parse_options(options: Optional[dict]) -> dict:
    """GeoDM's options with defaults filled in; ``ValueError`` for unknown keys or bad values."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown GeoDM option(s) {', '.join(map(repr, unknown))}; valid options are: {', '.join(OPTION_DEFAULTS)}"
        )
    out = {**OPTION_DEFAULTS, **options}

    def integer(name, lo):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"GeoDM option {name} must be an integer >= {lo}, got {v!r}")

    def number(name, positive):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
            kind = "positive" if positive else "non-negative"
            raise ValueError(f"GeoDM option {name} must be a finite {kind} number, got {v!r}")
        out[name] = float(v)

    integer("proj_dim", 1)
    integer("ot_max_iter", 1)
    number("geo_lr", positive=False)
    number("ot_weight", positive=False)
    number("ot_reg", positive=True)
    number("ot_tol", positive=True)
    number("tangent_norm", positive=True)
    number("init_curvature", positive=True)
    lo, hi = CURVATURE_RANGE
    if not (lo < out["init_curvature"] < hi):
        raise ValueError(
            f"GeoDM option init_curvature must lie strictly inside ({lo:g}, {hi:g}), got {out['init_curvature']}")
    if not isinstance(out["center"], bool):
        raise ValueError(f"GeoDM option center must be true or false, got {out['center']!r}")
    comps = out["components"]
    if isinstance(comps, str):
        comps = [c.strip() for c in comps.split(",") if c.strip()]
    comps = tuple(comps)
    bad = [c for c in comps if c not in COMPONENTS]
    if not comps or bad or len(set(comps)) != len(comps):
        raise ValueError(
            f"GeoDM option components must be a non-empty list of distinct names from {', '.join(COMPONENTS)}, "
            f"got {out['components']!r}"
        )
    out["components"] = tuple(c for c in COMPONENTS if c in comps)  # canonical order
    return out


# ----------------------------------------------------------------------------- geometry
def curvature_from_logit(rho: torch.Tensor) -> torch.Tensor:
    """Curvature magnitude in ``CURVATURE_RANGE``, log-uniform in ``sigmoid(rho)``."""
    lo, hi = (math.log(v) for v in CURVATURE_RANGE)
    # the clamp only removes rounding (exp(log 10) may exceed 10 by an ulp); it never binds otherwise
    return torch.exp(lo + (hi - lo) * torch.sigmoid(rho)).clamp(*CURVATURE_RANGE)


def curvature_to_logit(K: float) -> float:
    lo, hi = (math.log(v) for v in CURVATURE_RANGE)
    s = (math.log(K) - lo) / (hi - lo)
    return math.log(s / (1 - s))


def _polar(u: torch.Tensor):
    r = u.norm(dim=-1)
    n = u / r.clamp_min(_TINY).unsqueeze(-1)
    return r, n


def _asinh_sqrt_sq(t: torch.Tensor) -> torch.Tensor:
    """``asinh(sqrt(t))^2`` for ``t >= 0``, smooth at 0 (where ``sqrt`` alone has an infinite slope)."""
    small = t < 1e-12
    ts = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, t, torch.asinh(ts.sqrt()) ** 2)


def _asin_sqrt_sq(t: torch.Tensor) -> torch.Tensor:
    """``asin(sqrt(t))^2`` for ``t`` in ``[0, 1]``; antipodal pairs (``t = 1``) are clipped just below."""
    t = t.clamp(0.0, 1.0 - 1e-7)
    small = t < 1e-12
    ts = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, t, torch.asin(ts.sqrt()) ** 2)


def pairwise_sq_dist(x: torch.Tensor, y: torch.Tensor, geometry: str, curvature=None) -> torch.Tensor:
    """Squared geodesic distances between ``expmap0(x_i)`` and ``expmap0(y_j)``.

    ``x`` ``(..., n, p)`` and ``y`` ``(..., m, p)`` are tangent vectors at the origin; ``geometry`` is
    ``euclidean``, ``hyperbolic`` (curvature ``-curvature``; geoopt ``Lorentz(k=1/curvature)``) or
    ``spherical`` (curvature ``+curvature``, radius ``1/sqrt(curvature)``).  Returns ``(..., n, m)``.
    """
    rx, nx = _polar(x)
    ry, ny = _polar(y)
    one_minus_cos = (1 - nx @ ny.transpose(-1, -2)).clamp_min(0.0)  # 1 - cos(angle at the origin)
    rx, ry = rx.unsqueeze(-1), ry.unsqueeze(-2)
    if geometry == "euclidean":
        return ((rx - ry) ** 2 + 2 * rx * ry * one_minus_cos).clamp_min(0.0)
    if curvature is None:
        raise ValueError(f"the {geometry} geometry needs a curvature magnitude")
    K = curvature if torch.is_tensor(curvature) else torch.tensor(float(curvature), dtype=x.dtype)
    sk = K.sqrt()
    a, b = sk * rx, sk * ry
    if geometry == "hyperbolic":
        # radii beyond _MAX_THETA curvature radii are clipped: sinh(a) sinh(b) would overflow float64
        a, b = a.clamp_max(_MAX_THETA), b.clamp_max(_MAX_THETA)
        # (cosh(t) - 1) / 2 = sinh^2(t/2), t the distance in curvature-radius units
        half = torch.sinh((a - b) / 2) ** 2 + torch.sinh(a) * torch.sinh(b) * one_minus_cos / 2
        return 4 * _asinh_sqrt_sq(half.clamp_min(0.0)) / K
    if geometry == "spherical":
        half = torch.sin((a - b) / 2) ** 2 + torch.sin(a) * torch.sin(b) * one_minus_cos / 2
        return 4 * _asin_sqrt_sq(half) / K
    raise ValueError(f"unknown geometry {geometry!r}; choose one of {', '.join(COMPONENTS)}")


def sphere_expmap0(u: torch.Tensor, curvature) -> torch.Tensor:
    """``expmap0`` onto the sphere of curvature ``K`` in ambient ``R^{p+1}`` (north pole first)."""
    K = curvature if torch.is_tensor(curvature) else torch.tensor(float(curvature), dtype=u.dtype)
    R = 1 / K.sqrt()
    r, n = _polar(u)
    t = (r / R).unsqueeze(-1)
    return R * torch.cat([torch.cos(t), torch.sin(t) * n], dim=-1)


# ----------------------------------------------------------------------------- optimal transport
def entropic_ot(M: torch.Tensor, reg: float, max_iter: int = 100, tol: float = 1e-4):
    """``min_P <P, M> + reg KL(P | a b^T)`` with uniform ``a, b`` for a batch of costs ``(B, n, m)``.

    Returns the values ``(B,)`` and the number of Sinkhorn iterations.  The plan is found by POT on the
    detached cost; the value's gradient in ``M`` is that plan (envelope theorem).
    """
    with torch.no_grad():
        if on_accelerator(M.device):
            P, iters = _log_sinkhorn_unread(M.detach(), float(reg), int(max_iter), float(tol))
        else:
            ot = _import_ot()
            res = ot.batch.solve_batch(M.detach(), reg=float(reg), max_iter=int(max_iter), tol=float(tol),
                                       method="log_sinkhorn", reg_type="kl", grad="detach")
            P, iters = res.plan, int(res.log["n_iter"]) + 1
        n, m = M.shape[-2:]
        # KL(P | a b^T) = sum P log P + (sum P) log(n m) for uniform marginals
        kl = torch.special.xlogy(P, P).sum((-2, -1)) + P.sum((-2, -1)) * math.log(n * m)
    return (P * M).sum((-2, -1)) + reg * kl, iters


def _log_sinkhorn_unread(M: torch.Tensor, reg: float, max_iter: int, tol: float):
    """POT's batched log-domain Sinkhorn (``ot.batch``: the same updates, the same error test every 10
    iterations) without host reads, for an accelerator: where POT stops at the first test below ``tol``, the
    iterate of that test is frozen (``torch.where``) and the loop runs on to ``max_iter``.  Returns the plan and
    the iteration count as a 0-d device tensor (POT's ``n_iter + 1``)."""
    B, n, m = M.shape
    K = -M / reg
    a = torch.ones((B, n), dtype=M.dtype, device=M.device) / n
    b = torch.ones((B, m), dtype=M.dtype, device=M.device) / m
    loga, logb = torch.log(a), torch.log(b)
    u, v = torch.zeros_like(a), torch.zeros_like(b)
    done = torch.zeros((), dtype=torch.bool, device=M.device)
    iters = torch.zeros((), dtype=torch.int64, device=M.device)
    for it in range(max_iter):
        u = torch.where(done, u, loga - torch.logsumexp(K + v[:, None, :], dim=2))
        v = torch.where(done, v, logb - torch.logsumexp(K + u[:, :, None], dim=1))
        iters = torch.where(done, iters, it + 1)
        if it % 10 == 0:
            err = (torch.exp(K + u[:, :, None] + v[:, None, :]).sum(2) - a).pow(2).sum(1).sqrt().max()
            done = done | (err < tol)
    return torch.exp(K + u[:, :, None] + v[:, None, :]), iters


def sinkhorn_divergence(C_xy: torch.Tensor, C_xx: torch.Tensor, C_yy: torch.Tensor, reg: float,
                        max_iter: int = 100, tol: float = 1e-4):
    """Debiased ``OT(x, y) - (OT(x, x) + OT(y, y)) / 2`` per batch entry, and the largest iteration count."""
    v_xy, i_xy = entropic_ot(C_xy, reg, max_iter, tol)
    v_xx, i_xx = entropic_ot(C_xx, reg, max_iter, tol)
    v_yy, i_yy = entropic_ot(C_yy, reg, max_iter, tol)
    iters = (i_xy, i_xx, i_yy)
    most = (torch.stack(iters).max() if torch.is_tensor(i_xy) else max(iters))  # a device tensor on an accelerator
    return v_xy - 0.5 * (v_xx + v_yy), most


def product_cost(tangents: Dict[str, torch.Tensor], weights: Dict[str, torch.Tensor],
                 curvatures: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum_g w_g d_g^2 / mean(d_g^2)`` over all pairs of each batch entry's points ``(B, N, p)``."""
    cost = None
    for g, u in tangents.items():
        d2 = pairwise_sq_dist(u, u, g, curvatures.get(g))
        term = weights[g] * d2 / d2.mean((-2, -1), keepdim=True).clamp_min(_TINY)
        cost = term if cost is None else cost + term
    return cost


# ----------------------------------------------------------------------------- the method
class GeoDM(DM):
    """DM plus a geometry-aware Sinkhorn divergence in a learnable product space (see the module doc)."""

    name = "geodm"
    parse_options = staticmethod(parse_options)

    def __init__(self, cfg, dataset, pool, matcher):
        super().__init__(cfg, dataset, pool, matcher)
        self.options = parse_options(cfg.method_options())
        if self.n_real < 2:
            raise ValueError(f"GeoDM needs at least 2 real images per class in a batch (batch_real is {cfg.batch_real})")
        _import_ot()
        o = self.options
        self.components = o["components"]
        dev = self.device
        params = {"weight_logits": torch.nn.Parameter(torch.zeros(len(self.components), dtype=torch.float64, device=dev))}
        for g in self.components:
            if g != "euclidean":
                params[f"curvature_{g}"] = torch.nn.Parameter(
                    torch.tensor(curvature_to_logit(o["init_curvature"]), dtype=torch.float64, device=dev))
        self.geo_params = params
        self.geo_opt = torch.optim.Adam(list(params.values()), lr=o["geo_lr"])
        self._heads: Dict[str, torch.Tensor] = {}

    # -- learnt geometry -----------------------------------------------------------------------------
    def weights(self) -> Dict[str, torch.Tensor]:
        w = torch.softmax(self.geo_params["weight_logits"], 0)
        return {g: w[i] for i, g in enumerate(self.components)}

    def curvatures(self) -> Dict[str, torch.Tensor]:
        """Curvature magnitudes ``|K|`` (hyperbolic curvature is ``-|K|``, spherical ``+|K|``)."""
        return {g: curvature_from_logit(self.geo_params[f"curvature_{g}"]) for g in self.components if g != "euclidean"}

    def geometry(self) -> dict:
        """Current weights and signed curvatures as 0-d tensors (the runner reads every logged value of an
        iteration in one transfer)."""
        with torch.no_grad():
            out = {f"w_{g}": w.detach().clone() for g, w in self.weights().items()}
            for g, K in self.curvatures().items():
                out[f"curvature_{g}"] = (-K if g == "hyperbolic" else K).detach().clone()
        return out

    def heads(self, dim: int) -> Dict[str, torch.Tensor]:
        """The fixed random projection heads for features of size ``dim`` (a function of the seed only)."""
        if dim not in self._heads:
            gen = self.seeds.geodm_projection()
            p = self.options["proj_dim"]
            # drawn on the CPU (the same heads on every device), kept where the features are
            self._heads[dim] = {g: to_device(torch.randn(dim, p, generator=gen, dtype=torch.float64) / math.sqrt(p), self.device)
                                for g in COMPONENTS}
        return self._heads[dim]

    def tangents(self, f_real: torch.Tensor, f_syn: torch.Tensor):
        """Per-component tangent vectors at the origin for the real and synthetic features ``(C, n, d)``."""
        fr, fs = f_real.detach().double(), f_syn.double()
        if self.options["center"]:
            mu = fr.mean(-2, keepdim=True)
            fr, fs = fr - mu, fs - mu
        heads = self.heads(fr.shape[-1])
        out = {}
        for g in self.components:
            W = heads[g].to(fr.device)
            ur, us = fr @ W, fs @ W
            scale = self.options["tangent_norm"] / ur.norm(dim=-1).mean(-1, keepdim=True).clamp_min(_TINY)
            out[g] = (ur * scale.unsqueeze(-1), us * scale.unsqueeze(-1))
        return out

    def ot_loss(self, f_real: torch.Tensor, f_syn: torch.Tensor):
        """Sum over classes of the Sinkhorn divergence in the product space, and logged parts."""
        o = self.options
        tang = self.tangents(f_real, f_syn)
        n = f_real.shape[1]
        cost = product_cost({g: torch.cat(pair, dim=1) for g, pair in tang.items()}, self.weights(), self.curvatures())
        div, iters = sinkhorn_divergence(cost[:, :n, n:], cost[:, :n, :n], cost[:, n:, n:], o["ot_reg"],
                                         o["ot_max_iter"], o["ot_tol"])
        # back to the units of DM's squared feature distances: times the (detached) mean squared
        # distance between the class's real features, 2 * mean |f - mean f|^2
        fr = f_real.detach().double()
        units = 2 * (fr - fr.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1)
        loss = (div * units).sum()
        return loss, {"ot": loss.detach(), **self._per_run({"sinkhorn_iters": iters, **self.geometry()})}

    @staticmethod
    def _per_run(values: dict) -> dict:
        # the runner sums logged parts over ranks (right for the per-class sums such as "ot"); values
        # that every rank shares are divided by the world size so that the sum logs them unchanged
        world = torch.distributed.get_world_size() if distributed.active() else 1
        return {k: v / world for k, v in values.items()} if world > 1 else values

    # -- hooks ---------------------------------------------------------------------------------------
    def extra_loss(self, step, syn_images, syn_labels, total=None):
        if self.options["ot_weight"] == 0:
            return None, self._per_run(self.geometry())
        loss, parts = self.ot_loss(step.f_real, step.f_syn)  # the features of this same step
        return (self.options["ot_weight"] * loss).to(step.f_syn.dtype), parts

    def after_step(self, step=None):
        """One Adam step of the curvatures and weights on the gradients of this iteration's loss."""
        if self.options["ot_weight"] == 0:
            return
        params = list(self.geo_params.values())
        if not distributed.active() and all(p.grad is None for p in params):
            return  # nothing was back-propagated this iteration
        for p in params:
            if p.grad is None:  # e.g. a rank without classes: it still joins the sum below
                p.grad = torch.zeros_like(p)
            distributed.sum_(p.grad)  # class-sharded runs: every rank takes the same step
        finite = torch.stack([torch.isfinite(p.grad).all() for p in params]).all()
        if on_accelerator(self.device):
            self._masked_step(params, finite)
        elif bool(finite):  # one read-back
            self.geo_opt.step()
        else:
            where = f" at iteration {step.it + 1}" if step is not None else ""
            warnings.warn(f"GeoDM: non-finite gradient of the curvatures/weights{where}; geometry update skipped",
                          RuntimeWarning)
        self.geo_opt.zero_grad(set_to_none=True)

    def _masked_step(self, params, finite: torch.Tensor) -> None:
        """The Adam step without reading ``finite``: where a gradient is not finite, the parameters and Adam's
        moments keep their values (only Adam's host-side step counter advances), and no warning is given."""
        kept = [(p.detach().clone(), {k: v.clone() for k, v in self.geo_opt.state.get(p, {}).items()
                                      if k in ("exp_avg", "exp_avg_sq")}) for p in params]
        self.geo_opt.step()
        with torch.no_grad():
            for p, (before, moments) in zip(params, kept):
                p.copy_(torch.where(finite, p, before))
                state = self.geo_opt.state[p]
                for k in ("exp_avg", "exp_avg_sq"):
                    state[k].copy_(torch.where(finite, state[k], moments.get(k, torch.zeros_like(state[k]))))

    def state_dict(self):
        return {"params": {k: p.detach().clone() for k, p in self.geo_params.items()},
                "optimizer": copy.deepcopy(self.geo_opt.state_dict())}

    def load_state_dict(self, state):
        if set(state["params"]) != set(self.geo_params):
            raise ValueError(f"GeoDM checkpoint holds {sorted(state['params'])}, this run expects {sorted(self.geo_params)}")
        with torch.no_grad():
            for k, p in self.geo_params.items():
                p.copy_(state["params"][k])
        self.geo_opt.load_state_dict(state["optimizer"])


register_method("geodm", GeoDM)
