"""Property-based tests (hypothesis) of the geometry core.

k in [0.2, 5], radii up to 12 sqrt(k), n from 1 to 300, d from 2 to 2049, drawn so that n*d stays
moderate.  Isometries are Householder reflections and boosts along random directions (no d x d matrix).
"""
import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hddgeo
from geometry_helpers import (
    DT,
    ball_dist,
    ball_from_polar,
    boost_along,
    from_polar,
    gen,
    manifold,
    manifold_error,
    mink,
    plain,
    polar_dist,
    polar_of,
    random_directions,
    random_weights,
    reflect,
    unit,
)

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ks = st.floats(0.2, 5.0)
seeds = st.integers(0, 2**31 - 1)


@st.composite
def sizes(draw, budget=12000, nmax=300):
    d = draw(st.one_of(st.integers(2, 12), st.sampled_from([2, 3, 64, 257, 1024, 2049])))
    n = draw(st.integers(1, max(1, min(nmax, budget // d))))
    return n, d


@st.composite
def clouds(draw, budget=12000, nmax=300):
    """``(k, z, r, u, w)``: a wide or tight cloud on Lorentz(k), optional random weights."""
    k = draw(ks)
    n, d = draw(sizes(budget, nmax))
    seed = draw(seeds)
    kind = draw(st.sampled_from(["wide", "tight"]))
    g = gen(seed)
    sk = math.sqrt(k)
    if kind == "wide":
        rmax = draw(st.floats(0.0, 12.0))
        r = torch.rand(n, generator=g, dtype=DT) * rmax * sk
        u = random_directions((n,), d, g)
    else:
        radius = draw(st.floats(0.5, 12.0))
        spread = 10 ** draw(st.floats(-5.0, 0.0))
        r = radius * sk * (1 + 0.01 * (2 * torch.rand(n, generator=g, dtype=DT) - 1))
        u = unit(random_directions((), d, g) + spread * torch.randn(n, d, generator=g, dtype=DT) / math.sqrt(d))
    w = random_weights((n,), g) if draw(st.booleans()) else None
    return k, from_polar(r, u, k), r, u, w


def _dist(a, b, k):
    ra, ua = polar_of(a, k)
    rb, ub = polar_of(b, k)
    return polar_dist(ra, ua, rb, ub, k)


def _isometry(z, d, g, b):
    e1 = random_directions((), d, g)
    e2 = random_directions((), d, g)
    return boost_along(reflect(z, e1), e2, b)


# ----------------------------------------------------------------------------- lift, radius, weights, Poincare
@SETTINGS
@given(k=ks, nd=sizes(), seed=seeds, scale=st.floats(0.0, 12.0), batch=st.lists(st.integers(1, 3), max_size=2))
def test_lift_radius_weights_poincare(k, nd, seed, scale, batch):
    n, d = nd
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(seed)
    norms = torch.rand(*batch, n, generator=g, dtype=DT) * scale * sk
    u = random_directions((*batch, n), d, g)
    v = norms.unsqueeze(-1) * u
    z = hddgeo.lift(v, M)
    assert z.shape == (*batch, n, d + 1)
    assert float(manifold_error(z, k).max()) < 1e-14
    torch.testing.assert_close(plain(z), from_polar(norms, u, k), rtol=1e-12, atol=1e-15 * sk)
    r = hddgeo.radius(z, M)
    torch.testing.assert_close(r, norms, rtol=1e-12, atol=1e-15 * sk)
    th = (norms / sk).clamp_min(1e-300)
    w = hddgeo.hierarchical_weights(z, M)
    torch.testing.assert_close(w, torch.where(norms > 0, th / torch.sinh(th), torch.ones_like(th)), rtol=1e-12, atol=0)
    assert bool((w <= 1).all()) and bool((w > 0).all())
    p = hddgeo.to_poincare(z, M)
    assert p.shape == (*batch, n, d)
    assert bool((p.norm(dim=-1) < sk).all())
    torch.testing.assert_close(p, ball_from_polar(norms, u, k), rtol=1e-12, atol=1e-15 * sk)
    back = plain(hddgeo.from_poincare(p, M))
    torch.testing.assert_close(back, plain(z), rtol=1e-9, atol=1e-12 * sk)
    # clipping at a random max_norm
    mn = 0.1 + scale / 2
    zc = hddgeo.lift(v, M, max_norm=mn)
    torch.testing.assert_close(hddgeo.radius(zc, M), norms.clamp(max=mn * sk), rtol=1e-12, atol=1e-15 * sk)


# ----------------------------------------------------------------------------- dist
@SETTINGS
@given(k=ks, nd=sizes(), seed=seeds, rmax=st.floats(0.0, 12.0), b=st.floats(-1.5, 1.5))
def test_dist_metric_axioms_ball_formula_and_isometry_invariance(k, nd, seed, rmax, b):
    n, d = nd
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(seed)
    pts = []
    for _ in range(3):
        r = torch.rand(n, generator=g, dtype=DT) * rmax * sk
        u = random_directions((n,), d, g)
        pts.append((from_polar(r, u, k), r, u))
    (x, r1, u1), (y, r2, u2), (w, _, _) = pts
    dxy = hddgeo.geometry.dist(x, y, M)
    torch.testing.assert_close(dxy, hddgeo.geometry.dist(y, x, M), rtol=1e-15, atol=0)
    assert float(hddgeo.geometry.dist(x, x, M).max()) <= 1e-12 * sk
    dxw, dwy = hddgeo.geometry.dist(x, w, M), hddgeo.geometry.dist(w, y, M)
    assert bool((dxy <= dxw + dwy + 1e-11 * sk * (1 + dxw + dwy)).all())
    ref = ball_dist(ball_from_polar(r1, u1, k), ball_from_polar(r2, u2, k), k,
                    dp=k / torch.cosh(r1 / (2 * sk)) ** 2, dq=k / torch.cosh(r2 / (2 * sk)) ** 2)
    torch.testing.assert_close(dxy, ref, rtol=1e-8, atol=1e-8 * sk)
    # invariance under a reflection followed by a boost
    iso = lambda t: _isometry(t, d, gen(seed + 1), b)
    torch.testing.assert_close(hddgeo.geometry.dist(iso(x), iso(y), M), dxy, rtol=1e-9, atol=1e-9 * sk)


# ----------------------------------------------------------------------------- centroids
@SETTINGS
@given(cloud=clouds(), seed=seeds, b=st.floats(-1.5, 1.5))
def test_law_centroid_properties(cloud, seed, b):
    k, z, r, u, w = cloud
    n, d = u.shape
    M = manifold(k)
    sk = math.sqrt(k)
    c = plain(hddgeo.law_centroid(z, M, weights=w))
    assert float(manifold_error(c, k)) < 1e-13
    # Law's centroid minimises sum_i w_i ||c - z_i||_L^2 = const - 2 <c, zbar>_L over the hyperboloid:
    # no nearby point on the manifold does better
    wn = torch.full((n,), 1.0 / n, dtype=DT) if w is None else w / w.sum()
    zbar = (wn.unsqueeze(-1) * z).sum(-2)
    f0 = -mink(c, zbar)
    g = gen(seed)
    eps = 1e-3 * sk
    for _ in range(3):
        t = torch.randn(d + 1, generator=g, dtype=DT)
        t = t + mink(c, t) / k * c
        t = t / mink(t, t).sqrt()
        moved = math.cosh(eps / sk) * c + sk * math.sinh(eps / sk) * t
        assert float(-mink(moved, zbar)) >= float(f0) * (1 - 1e-13)
    # equivariance under a reflection and a boost (compare ambient coordinates, relative to their size).
    # The closed form divides by sqrt(-<zbar, zbar>_L), a difference of numbers of size z_0^2, so its
    # relative accuracy is only ~eps * (z_0 / sqrt(k))^2 for far-out sets.
    iso = lambda t: _isometry(t, d, gen(seed + 1), b)
    zi = iso(z)
    cond = float(torch.maximum(z[:, 0].max(), zi[:, 0].max())) ** 2 / k
    c_iso = plain(hddgeo.law_centroid(zi, M, weights=w))
    rel = 1e-12 + 1e-15 * cond
    torch.testing.assert_close(c_iso, iso(c), rtol=rel, atol=rel * float(iso(c).abs().max()))


@SETTINGS
@given(cloud=clouds(), seed=seeds, b=st.floats(-1.5, 1.5))
def test_karcher_mean_properties(cloud, seed, b):
    k, z, r, u, w = cloud
    n, d = u.shape
    M = manifold(k)
    sk = math.sqrt(k)
    c, info = hddgeo.karcher_mean(z, M, weights=w, return_info=True)
    assert info.iterations <= 20, info
    assert bool(info.converged) and float(info.grad_norm) <= info.tol
    assert float(manifold_error(c, k)) < 1e-13
    fk = float(hddgeo.frechet_objective(c, z, M, weights=w))
    # a mean with |gradient| <= tol is within tol of the minimiser: F exceeds the minimum by <= ~alpha tol^2
    slack = 30 * info.tol ** 2
    for other in (hddgeo.law_centroid(z, M, weights=w), hddgeo.tangent_centroid(z, M, weights=w)):
        assert fk <= float(hddgeo.frechet_objective(other, z, M, weights=w)) * (1 + 1e-12) + slack
    # stationarity by central differences of the objective along random geodesics through c,
    # and strict local minimality
    cp = plain(c)
    g = gen(seed)
    eps = 1e-3 * sk
    for _ in range(2):
        t = torch.randn(d + 1, generator=g, dtype=DT)
        t = t + mink(cp, t) / k * cp
        t = t / mink(t, t).sqrt()
        f = []
        for s in (1.0, -1.0):
            moved = math.cosh(eps / sk) * cp + sk * math.sinh(eps / sk) * s * t
            moved = torch.cat([torch.sqrt(k + (moved[1:] ** 2).sum(-1, keepdim=True)), moved[1:]])
            f.append(float(hddgeo.frechet_objective(moved, z, M, weights=w)))
        slope = (f[0] - f[1]) / (2 * eps)  # = -2 <G, t>, G the (minus) Riemannian gradient of F/2
        assert abs(slope) < 1e-5 * sk * max(1.0, fk / k) ** 0.5
        assert min(f) - fk > 0.5 * eps * eps
    # equivariance under a reflection and a boost
    iso = lambda t_: _isometry(t_, d, gen(seed + 1), b)
    c_iso = hddgeo.karcher_mean(iso(z), M, weights=w)
    assert float(_dist(c_iso, iso(cp), k)) < 1e-8 * sk


@SETTINGS
@given(k=ks, nd=sizes(budget=4000), seed=seeds, rmax=st.floats(0.0, 12.0), t=st.floats(0.0, 1.0))
def test_karcher_two_weighted_points_is_the_geodesic_point(k, nd, seed, rmax, t):
    n, d = nd
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(seed)
    r1 = torch.rand(n, generator=g, dtype=DT) * rmax * sk
    r2 = torch.rand(n, generator=g, dtype=DT) * rmax * sk
    u1 = random_directions((n,), d, g)
    u2 = random_directions((n,), d, g)
    x, y = from_polar(r1, u1, k), from_polar(r2, u2, k)
    w = torch.tensor([1 - t, t], dtype=DT)  # t = 0 or 1 (one zero weight) is valid
    c = hddgeo.karcher_mean(torch.stack([x, y], dim=-2), M, weights=w)
    dxy = polar_dist(r1, u1, r2, u2, k)
    torch.testing.assert_close(_dist(c, x, k), t * dxy, rtol=1e-9, atol=1e-9 * sk)
    torch.testing.assert_close(_dist(c, y, k), (1 - t) * dxy, rtol=1e-9, atol=1e-9 * sk)


@SETTINGS
@given(cloud=clouds(), seed=seeds)
def test_tangent_centroid_properties(cloud, seed):
    k, z, r, u, w = cloud
    n, d = u.shape
    M = manifold(k)
    sk = math.sqrt(k)
    c = hddgeo.tangent_centroid(z, M, weights=w)
    assert float(manifold_error(c, k)) < 1e-13
    wn = torch.full((n,), 1.0 / n, dtype=DT) if w is None else w / w.sum()
    mean_log = (wn.unsqueeze(-1) * r.unsqueeze(-1) * u).sum(-2)  # Log_o(z_i) = r_i u_i
    torch.testing.assert_close(plain(hddgeo.geometry.logmap0(c, M))[1:], mean_log, rtol=1e-10, atol=1e-12 * sk)
    e = random_directions((), d, gen(seed))
    torch.testing.assert_close(plain(hddgeo.tangent_centroid(reflect(z, e), M, weights=w)), reflect(c, e),
                               rtol=1e-11, atol=1e-12 * sk)


# ----------------------------------------------------------------------------- losses
@st.composite
def loss_sizes(draw):
    d = draw(st.sampled_from([2, 3, 17, 128, 2048]))
    n = draw(st.integers(1, 60 if d <= 128 else 8))
    m = draw(st.integers(1, 10 if d <= 128 else 3))
    return n, m, d


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(k=ks, seed=seeds, C=st.integers(1, 3), nmd=loss_sizes(), feat=st.floats(0.1, 25.0),
       method=st.sampled_from(["law", "karcher", "tangent"]), max_norm=st.sampled_from([None, 10.0, 2.0]))
def test_hdd_loss_properties(k, seed, C, nmd, feat, method, max_norm):
    """Loss = scale * dist of the public centroids, symmetric, zero on identical sets, triangle inequality.

    With max_norm=None and large ``feat`` the features reach radius ~25 sqrt(k): also exercises sets of
    a single far-out point."""
    n, m, d = nmd
    M = manifold(k)
    g = gen(seed)
    va = feat * torch.randn(C, n, d, generator=g, dtype=DT) / math.sqrt(d)
    vb = feat * torch.randn(C, m, d, generator=g, dtype=DT) / math.sqrt(d)
    vc = feat * torch.randn(C, m, d, generator=g, dtype=DT) / math.sqrt(d)
    L = lambda a, b_: hddgeo.hdd_loss(a, b_, M, scale=2.5, centroid=method, max_norm=max_norm, reduction="none")
    try:
        lab = L(va, vb)
    except ValueError:
        # far beyond float64's range (radius ~50 sqrt(k) when max_norm=None and k is small) an
        # implementation may refuse; then the public centroids must refuse too (not return inf/NaN)
        for v in (va, vb):
            try:
                c = hddgeo.centroid(hddgeo.lift(v, M, max_norm=max_norm), M, method=method)
            except ValueError:
                continue
            assert bool(torch.isfinite(c).all())
        return
    assert lab.shape == (C,) and bool((lab >= 0).all()) and bool(torch.isfinite(lab).all())
    ca = hddgeo.centroid(hddgeo.lift(va, M, max_norm=max_norm), M, method=method)
    cb = hddgeo.centroid(hddgeo.lift(vb, M, max_norm=max_norm), M, method=method)
    assert bool(torch.isfinite(ca).all()) and bool(torch.isfinite(cb).all()), "public centroid is not finite"
    torch.testing.assert_close(lab, 2.5 * hddgeo.geometry.dist(ca, cb, M), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(L(vb, va), lab, rtol=1e-12, atol=1e-12)
    assert float(L(va, va.clone()).abs().max()) == 0.0
    lbc, lac = L(vb, vc), L(va, vc)
    assert bool((lac <= lab + lbc + 1e-9 * (1 + lab + lbc)).all())
    assert float(hddgeo.hdd_loss(va, vb, M, scale=2.5, centroid=method, max_norm=max_norm)) == pytest.approx(float(lab.sum()), rel=1e-12)
