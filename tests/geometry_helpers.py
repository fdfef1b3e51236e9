"""Shared helpers for the geometry tests: point clouds, Lorentz isometries and independent references.

Nothing here calls hddgeo: the references are written from the closed forms of the hyperboloid and
the Poincare ball (or use geoopt / mpmath / scipy) so that the tests compare against something that
does not share code with the implementation under test.

Conventions (geoopt): ``<x, x>_L = -k``, origin ``(sqrt(k), 0, ...)``, ``d = sqrt(k) arcosh(-<x, y>_L / k)``.
A point at geodesic radius ``r`` in unit direction ``u`` is ``sqrt(k) (cosh(r/sqrt(k)), sinh(r/sqrt(k)) u)``
and sits at ``sqrt(k) tanh(r / (2 sqrt(k))) u`` in the Poincare ball of radius ``sqrt(k)``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import geoopt
import numpy as np
import torch

DT = torch.float64
KS = (0.2, 1.0, 5.0)


# ----------------------------------------------------------------------------- basics
def manifold(k: float) -> geoopt.Lorentz:
    """A Lorentz manifold whose ``k`` is exactly the float64 value ``k``."""
    return geoopt.Lorentz(k=torch.tensor(float(k), dtype=DT))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


def mink(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minkowski inner product over the last dimension (plain tensors)."""
    x, y = plain(x), plain(y)
    return (x[..., 1:] * y[..., 1:]).sum(-1) - x[..., 0] * y[..., 0]


def manifold_error(z: torch.Tensor, k: float) -> torch.Tensor:
    """Relative violation ``|<z,z>_L + k| / (k + z_0^2)`` (a difference of numbers of size z_0^2)."""
    z = plain(z).detach()
    return (mink(z, z) + k).abs() / (k + z[..., 0] ** 2)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def random_directions(shape: Sequence[int], d: int, g: torch.Generator) -> torch.Tensor:
    return unit(torch.randn(*shape, d, generator=g, dtype=DT))


def from_polar(r: torch.Tensor, u: torch.Tensor, k: float) -> torch.Tensor:
    """Point at geodesic radius ``r`` (shape ``S``) in unit direction ``u`` (``S + (d,)``)."""
    sk = math.sqrt(k)
    th = (r / sk).unsqueeze(-1)
    return torch.cat([sk * torch.cosh(th), sk * torch.sinh(th) * u], dim=-1)


def ball_from_polar(r: torch.Tensor, u: torch.Tensor, k: float) -> torch.Tensor:
    sk = math.sqrt(k)
    return sk * torch.tanh(r / (2 * sk)).unsqueeze(-1) * u


def origin(d: int, k: float, shape: Sequence[int] = ()) -> torch.Tensor:
    o = torch.zeros(*shape, d + 1, dtype=DT)
    o[..., 0] = math.sqrt(k)
    return o


# ----------------------------------------------------------------------------- point clouds
def wide_cloud(n: int, d: int, k: float, g: torch.Generator, rmax: float = 10.0, shape: Sequence[int] = ()):
    """Radii uniform in ``[0, rmax*sqrt(k)]``, directions uniform.  Returns ``(z, r, u)``."""
    r = torch.rand(*shape, n, generator=g, dtype=DT) * rmax * math.sqrt(k)
    u = random_directions((*shape, n), d, g)
    return from_polar(r, u, k), r, u


def tight_cloud(
    n: int, d: int, k: float, g: torch.Generator, radius: float = 10.0, spread: float = 0.05, shape: Sequence[int] = ()
):
    """All radii about ``radius*sqrt(k)`` (1% jitter), directions within ``spread`` radians of one axis."""
    sk = math.sqrt(k)
    r = radius * sk * (1 + 0.01 * (2 * torch.rand(*shape, n, generator=g, dtype=DT) - 1))
    mu = random_directions(shape, d, g).unsqueeze(-2)
    u = unit(mu + spread * torch.randn(*shape, n, d, generator=g, dtype=DT) / math.sqrt(d))
    return from_polar(r, u, k), r, u


def random_weights(shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    return 0.1 + torch.rand(*shape, generator=g, dtype=DT)


# ----------------------------------------------------------------------------- isometries
def rotation_matrix(d: int, g: torch.Generator) -> torch.Tensor:
    """``(d+1) x (d+1)`` Lorentz rotation: a random orthogonal matrix acting on the spatial coordinates."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    q = q * torch.sign(torch.diagonal(r))
    L = torch.eye(d + 1, dtype=DT)
    L[1:, 1:] = q
    return L


def boost_matrix(d: int, b: float, axis: int = 1) -> torch.Tensor:
    """Boost of rapidity ``b`` in the ``(t, x_axis)`` plane: ``[[cosh b, sinh b], [sinh b, cosh b]]``.

    It preserves ``<., .>_L`` (hence every hyperboloid ``<x,x>_L = -k``, whatever k) and the upper sheet,
    and moves the origin a geodesic distance ``sqrt(k) |b|``.
    """
    L = torch.eye(d + 1, dtype=DT)
    L[0, 0] = L[axis, axis] = math.cosh(b)
    L[0, axis] = L[axis, 0] = math.sinh(b)
    return L


def apply(L: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return plain(z) @ L.T


def reflect(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Householder reflection of the spatial part across the hyperplane normal to unit ``e`` (an isometry)."""
    z = plain(z)
    zs = z[..., 1:]
    return torch.cat([z[..., :1], zs - 2 * (zs @ e).unsqueeze(-1) * e], dim=-1)


def boost_along(z: torch.Tensor, e: torch.Tensor, b: float) -> torch.Tensor:
    """Boost of rapidity ``b`` along the unit spatial direction ``e``, without forming a matrix."""
    z = plain(z)
    t, xs = z[..., :1], z[..., 1:]
    par = (xs @ e).unsqueeze(-1)
    t_new = math.cosh(b) * t + math.sinh(b) * par
    xs_new = xs + ((math.cosh(b) - 1) * par + math.sinh(b) * t) * e
    return torch.cat([t_new, xs_new], dim=-1)


# ----------------------------------------------------------------------------- reference distances
def naive_dist(x: torch.Tensor, y: torch.Tensor, k: float) -> torch.Tensor:
    """Textbook ``sqrt(k) arcosh(-<x,y>_L/k)`` (cancels catastrophically for nearby far-out points)."""
    return math.sqrt(k) * torch.acosh((-mink(x, y) / k).clamp_min(1.0))


def ball_dist(p: torch.Tensor, q: torch.Tensor, k: float, dp: Optional[torch.Tensor] = None, dq: Optional[torch.Tensor] = None):
    """Distance in the Poincare ball of radius sqrt(k): ``sqrt(k) arcosh(1 + 2k|p-q|^2 / ((k-|p|^2)(k-|q|^2)))``.

    ``dp``/``dq`` may pass the conformal denominators ``k - |p|^2`` exactly when they are known in closed
    form (``k / cosh(theta/2)^2``); ``arcosh(1+x)`` is evaluated as ``log1p(x + sqrt(x (x + 2)))``.
    """
    sk = math.sqrt(k)
    if dp is None:
        np_ = p.norm(dim=-1)
        dp = (sk - np_) * (sk + np_)
    if dq is None:
        nq = q.norm(dim=-1)
        dq = (sk - nq) * (sk + nq)
    diff = p - q
    x = 2 * k * (diff * diff).sum(-1) / (dp * dq)
    return sk * torch.log1p(x + torch.sqrt(x * (x + 2)))


def mp_dist_from_spatial(xs, ys, k: float, dps: int = 80) -> float:
    """High-precision distance between the points with spatial parts ``xs``, ``ys`` (floats taken exactly, or mpf)."""
    import mpmath

    with mpmath.workdps(dps):
        kk = mpmath.mpf(float(k))
        X = [a if isinstance(a, mpmath.mpf) else mpmath.mpf(float(a)) for a in xs]
        Y = [a if isinstance(a, mpmath.mpf) else mpmath.mpf(float(a)) for a in ys]
        x0 = mpmath.sqrt(kk + mpmath.fsum(a * a for a in X))
        y0 = mpmath.sqrt(kk + mpmath.fsum(a * a for a in Y))
        ip = x0 * y0 - mpmath.fsum(a * b for a, b in zip(X, Y))
        return float(mpmath.sqrt(kk) * mpmath.acosh(ip / kk))


# ----------------------------------------------------------------------------- reference means / maps
def geodesic_point(x: torch.Tensor, y: torch.Tensor, t: float, k: float, theta: torch.Tensor) -> torch.Tensor:
    """Point at fraction ``t`` of the geodesic from ``x`` to ``y``: ``(sinh((1-t)th) x + sinh(t th) y) / sinh(th)``."""
    x, y = plain(x), plain(y)
    th = theta.unsqueeze(-1)
    return (torch.sinh((1 - t) * th) * x + torch.sinh(t * th) * y) / torch.sinh(th)


def geoopt_midpoint(x: torch.Tensor, y: torch.Tensor, M) -> torch.Tensor:
    """``Exp_x(Log_x(y) / 2)`` with geoopt's own maps (fine for moderate radii)."""
    x, y = plain(x), plain(y)
    return M.expmap(x, M.logmap(x, y) / 2)


def geoopt_riemannian_grad_norm(c: torch.Tensor, z: torch.Tensor, M, w: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Minkowski norm of ``sum_i w_i Log_c(z_i)`` (normalised weights) with geoopt's logmap."""
    c, z = plain(c), plain(z)
    n = z.shape[-2]
    w = torch.full(z.shape[:-1], 1.0 / n, dtype=DT) if w is None else w / w.sum(-1, keepdim=True)
    logs = M.logmap(c.unsqueeze(-2).expand_as(z), z)
    g = (w.unsqueeze(-1) * logs).sum(-2)
    return mink(g, g).clamp_min(0).sqrt()


def geoopt_tangent_mean(z: torch.Tensor, M, w: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``Exp_o(sum_i w_i Log_o(z_i))`` with geoopt's logmap0 / expmap0 (normalised weights)."""
    z = plain(z)
    n = z.shape[-2]
    w = torch.full(z.shape[:-1], 1.0 / n, dtype=DT) if w is None else w / w.sum(-1, keepdim=True)
    m = (w.unsqueeze(-1) * M.logmap0(z)).sum(-2)
    m = torch.cat([torch.zeros_like(m[..., :1]), m[..., 1:]], dim=-1)
    return M.expmap0(m)


def law_reference(z: np.ndarray, k: float, w: Optional[np.ndarray] = None) -> np.ndarray:
    """Law et al.'s centroid in numpy: ``sqrt(k) zbar / sqrt(-<zbar, zbar>_L)``."""
    z = np.asarray(z, dtype=np.float64)
    n = z.shape[-2]
    w = np.full(z.shape[:-1], 1.0 / n) if w is None else np.asarray(w, dtype=np.float64)
    w = w / w.sum(-1, keepdims=True)
    zbar = (w[..., None] * z).sum(-2)
    q = -zbar[..., 0] ** 2 + (zbar[..., 1:] ** 2).sum(-1)
    return math.sqrt(k) * zbar / np.sqrt(-q)[..., None]


def _tangent_frechet_minimiser(r: torch.Tensor, u: torch.Tensor, k: float, w: torch.Tensor) -> torch.Tensor:
    """Tangent vector ``a`` at the origin minimising ``sum_i w_i d(Exp_o(a), z_i)^2`` (float64).

    scipy's BFGS with an analytic gradient (torch autograd of the Poincare-ball distance), then a few
    Newton steps on the autograd Hessian.  Accurate when the minimiser is near the origin.
    """
    from scipy.optimize import minimize

    sk = math.sqrt(k)
    n, d = u.shape
    q = ball_from_polar(r, u, k)
    dq = k / torch.cosh(r / (2 * sk)) ** 2

    def objective(a: torch.Tensor) -> torch.Tensor:
        na = torch.sqrt((a * a).sum() + 1e-300)
        t = na / sk
        p = sk * torch.tanh(t / 2) * a / na
        dp = k / torch.cosh(t / 2) ** 2
        dd = ball_dist(p.expand_as(q), q, k, dp=dp.expand(n), dq=dq)
        return (w * dd * dd).sum()

    def fun(a_np):
        a = torch.tensor(a_np, dtype=DT, requires_grad=True)
        f = objective(a)
        (g,) = torch.autograd.grad(f, a)
        return float(f.detach()), g.numpy().astype(np.float64)

    a0 = (w.unsqueeze(-1) * r.unsqueeze(-1) * u).sum(0)  # the weighted tangent mean
    res = minimize(fun, a0.numpy(), jac=True, method="BFGS", options={"gtol": 1e-13, "maxiter": 20000})
    a = torch.tensor(res.x, dtype=DT)
    for _ in range(6):
        a_req = a.clone().requires_grad_(True)
        f = objective(a_req)
        (g,) = torch.autograd.grad(f, a_req, create_graph=True)
        H = torch.stack([torch.autograd.grad(g[i], a_req, retain_graph=True)[0] for i in range(d)])
        a_new = a - torch.linalg.solve(H.detach(), g.detach())
        if float(objective(a_new)) <= float(f.detach()) * (1 + 1e-15):
            a = a_new
        else:
            break
    return a


def _mp_boost(x, e, b):
    """Boost of rapidity ``b`` along the unit spatial direction ``e`` of the mp vector ``x``."""
    import mpmath

    par = mpmath.fsum(ei * xi for ei, xi in zip(e, x[1:]))
    t = mpmath.cosh(b) * x[0] + mpmath.sinh(b) * par
    c = (mpmath.cosh(b) - 1) * par + mpmath.sinh(b) * x[0]
    return [t] + [xi + c * ei for xi, ei in zip(x[1:], e)]


def reference_frechet_mean(r: torch.Tensor, u: torch.Tensor, k: float, w: Optional[torch.Tensor] = None, dps: int = 40):
    """Independent slow Frechet mean of the points ``(r_i, u_i)`` given in polar form.

    A float64 minimiser over the tangent space at the origin (:func:`_tangent_frechet_minimiser`) is
    only accurate when the mean is near the origin, so the cloud is re-centred twice: the current
    estimate is boosted to the origin in mpmath (``dps`` digits), the minimiser runs on the re-centred
    cloud, and its result is boosted back in mpmath.  Returns the spatial part of the mean as a list of
    mpmath numbers (compare with :func:`mp_dist_from_spatial`).
    """
    import mpmath

    n, d = u.shape
    w = torch.full((n,), 1.0 / n, dtype=DT) if w is None else (w / w.sum()).to(DT)
    with mpmath.workdps(dps):
        sk = mpmath.sqrt(mpmath.mpf(float(k)))
        pts = []
        for i in range(n):
            th = mpmath.mpf(float(r[i])) / sk
            ui = [mpmath.mpf(float(a)) for a in u[i]]
            nu = mpmath.sqrt(mpmath.fsum(a * a for a in ui))
            pts.append([sk * mpmath.cosh(th)] + [sk * mpmath.sinh(th) * a / nu for a in ui])
        centre = [sk] + [mpmath.mpf(0)] * d
        for _ in range(3):
            cs = centre[1:]
            nc = mpmath.sqrt(mpmath.fsum(a * a for a in cs))
            e = [a / nc for a in cs] if nc > 0 else [mpmath.mpf(1)] + [mpmath.mpf(0)] * (d - 1)
            beta = mpmath.asinh(nc / sk)
            moved = [_mp_boost(p, e, -beta) for p in pts]
            rr, uu = [], []
            for p in moved:
                ns = mpmath.sqrt(mpmath.fsum(a * a for a in p[1:]))
                rr.append(float(sk * mpmath.asinh(ns / sk)))
                uu.append([float(a / ns) for a in p[1:]])
            a = _tangent_frechet_minimiser(torch.tensor(rr, dtype=DT), torch.tensor(uu, dtype=DT), k, w)
            am = [mpmath.mpf(float(x)) for x in a]
            na = mpmath.sqrt(mpmath.fsum(x * x for x in am))
            if na > 0:
                local = [sk * mpmath.cosh(na / sk)] + [sk * mpmath.sinh(na / sk) * x / na for x in am]
            else:
                local = [sk] + [mpmath.mpf(0)] * d
            centre = _mp_boost(local, e, beta)
        return centre[1:]


def to_ball(z: torch.Tensor, k: float) -> torch.Tensor:
    """Own Lorentz -> ball map ``sqrt(k) z_s / (sqrt(k) + z_0)`` (for comparisons)."""
    z = plain(z)
    sk = math.sqrt(k)
    return sk * z[..., 1:] / (sk + z[..., :1])


def polar_of(z: torch.Tensor, k: float):
    """Radius and unit direction of points, from their spatial parts (exact at any radius)."""
    z = plain(z)
    sk = math.sqrt(k)
    zs = z[..., 1:]
    nz = zs.norm(dim=-1)
    u = torch.where(nz.unsqueeze(-1) > 0, zs / nz.clamp_min(1e-300).unsqueeze(-1), torch.zeros_like(zs))
    return sk * torch.asinh(nz / sk), u


def polar_dist(r1, u1, r2, u2, k: float) -> torch.Tensor:
    """Distance between points in polar form: ``cosh(th) - 1 = 2 sinh^2((a-b)/2) + sinh a sinh b |u1-u2|^2/2``."""
    sk = math.sqrt(k)
    a, b = r1 / sk, r2 / sk
    du = u1 - u2
    h = 2 * torch.sinh((a - b) / 2) ** 2 + torch.sinh(a) * torch.sinh(b) * (du * du).sum(-1) / 2
    return sk * 2 * torch.asinh(torch.sqrt(h / 2))
