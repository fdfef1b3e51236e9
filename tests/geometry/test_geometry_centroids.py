"""Law centroid, Karcher mean, tangent centroid and their gradients (hddgeo.geometry.centroids).

Independent references: geoopt's expmap/logmap, closed-form geodesic points, a scipy/mpmath Frechet
minimiser (geometry_helpers.reference_frechet_mean), Lorentz isometries, finite differences.
"""
import math

import geoopt
import pytest
import torch

import hddgeo
from geometry_helpers import (
    DT,
    KS,
    apply,
    boost_matrix,
    from_polar,
    gen,
    geodesic_point,
    geoopt_midpoint,
    geoopt_riemannian_grad_norm,
    geoopt_tangent_mean,
    law_reference,
    manifold,
    manifold_error,
    mink,
    mp_dist_from_spatial,
    plain,
    polar_dist,
    polar_of,
    random_directions,
    random_weights,
    reference_frechet_mean,
    rotation_matrix,
    tight_cloud,
    wide_cloud,
)

pytest.importorskip("mpmath")
pytest.importorskip("scipy")

METHODS = ("law", "karcher", "tangent")


def _centroid_fn(method):
    return {"law": hddgeo.law_centroid, "karcher": hddgeo.karcher_mean, "tangent": hddgeo.tangent_centroid}[method]


def _dist(a, b, k):
    """Own accurate distance from polar coordinates (does not call hddgeo)."""
    ra, ua = polar_of(a, k)
    rb, ub = polar_of(b, k)
    return polar_dist(ra, ua, rb, ub, k)


# ============================================================================= common contract
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", KS)
def test_centroid_on_manifold_manifold_tensor_keeps_graph(method, k):
    M = manifold(k)
    g = gen(100)
    v = (3 * math.sqrt(k) * torch.randn(2, 30, 5, generator=g, dtype=DT)).requires_grad_(True)
    z = hddgeo.lift(v, M)
    c = _centroid_fn(method)(z, M)
    assert isinstance(c, geoopt.ManifoldTensor) and c.manifold is M
    assert c.shape == (2, 6) and c.dtype == DT
    assert c.grad_fn is not None
    assert float(manifold_error(c, k).max()) < 1e-13
    assert bool((plain(c)[..., 0] > 0).all())
    plain(c).sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all()) and float(v.grad.abs().sum()) > 0
    # the dispatcher gives the same thing
    c2 = hddgeo.centroid(z.detach(), M, method=method)
    torch.testing.assert_close(plain(c2), plain(c).detach(), rtol=0, atol=0)
    assert set(hddgeo.CENTROID_METHODS) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", KS)
def test_centroid_of_one_point_and_of_copies_is_the_point(method, k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(101)
    z, r, _ = wide_cloud(5, 4, k, g, rmax=10.0)
    for i in range(5):
        # Law's closed form normalises by sqrt(-<zbar, zbar>_L), a difference of numbers of size z_0^2:
        # it is only accurate to ~eps cosh(r/sqrt(k))^2 (about 1e-8 at radius 10).  The Karcher mean is
        # polished to its tolerance 1e-10 sqrt(k); the tangent mean is exact.
        bound = {
            "law": 1e-15 * math.cosh(float(r[i]) / sk) ** 2 + 1e-14,
            "karcher": 1e-10,
            "tangent": 1e-12,
        }[method] * sk
        for copies in (1, 7):
            c = _centroid_fn(method)(z[i].expand(copies, 5), M)
            assert float(_dist(c, z[i], k)) < bound


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("radius", [16.0, 23.0, 40.0])
def test_centroid_of_a_single_far_out_point_is_never_silently_non_finite(method, k, radius):
    """A set of one point (IPC = 1) far out: ConvNet-3 features have norm ~23, so with max_norm=None
    they lie at radius ~23/sqrt(k) in units of sqrt(k) (about 51 for k = 0.2).  The centroid of one
    point (or of copies of it) is that point.  Every method must return a finite point in the right
    direction -- or refuse with a ValueError, which is only acceptable at radius 40 where float64
    coordinates (~1e17 sqrt(k)) no longer resolve positions at all.  Up to radius 23 the Karcher and
    tangent means must return the point to float64 resolution; Law's closed form may be inaccurate
    radially (its normalisation cancels) but never inf/NaN.
    """
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(105)
    u = random_directions((4,), 5, g)
    pts = from_polar(torch.full((4,), radius * sk, dtype=DT), u, k)
    kw = {}
    if method == "karcher":
        # float64 spatial coordinates of size sqrt(k) sinh(r/sqrt(k)) resolve ~eps sinh(r/sqrt(k)) sqrt(k)
        # (4e-10 sqrt(k) at radius 16), below the default Karcher tol: ask for a reachable tolerance
        kw = {"tol": 1e-8 * sk, "warn": False} if radius < 30 else {"max_iter": 10, "warn": False}
    for copies in (1, 3):
        z = pts.unsqueeze(-2).expand(4, copies, 6)
        try:
            c = _centroid_fn(method)(z, M, **kw)
        except ValueError:
            if radius < 30:
                raise
            continue
        assert bool(torch.isfinite(c).all()), f"{method} centroid of {copies} point(s) at radius {radius} sqrt(k) is {plain(c).tolist()}"
        cs = plain(c)[..., 1:]
        torch.testing.assert_close(cs / cs.norm(dim=-1, keepdim=True), u, rtol=0, atol=1e-12)
        if method != "law" and radius < 30:
            assert float(_dist(c, pts, k).max()) < (1e-10 + 1e-14 * math.sinh(radius)) * sk


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("radius,spread", [(20.0, 1e-3), (20.0, 0.05), (25.0, 0.3), (16.0, 1e-6)])
def test_karcher_far_out_tight_clouds_match_reference(k, radius, spread):
    """Far beyond the default clip (radius 16-25 sqrt(k)): Karcher still agrees with the mpmath-recentred reference."""
    M = manifold(k)
    z, r, u = tight_cloud(15, 4, k, gen(106), radius=radius, spread=spread)
    c, info = hddgeo.karcher_mean(z, M, return_info=True)
    # beyond the radius-10 regime of the convergence requirement: only ask that it converges well before max_iter
    assert bool(info.converged) and info.iterations <= 30, info
    ref = reference_frechet_mean(r, u, k)
    assert mp_dist_from_spatial(plain(c)[1:].tolist(), ref, k) < 1e-8


@pytest.mark.parametrize("method", METHODS)
def test_centroid_batched_equals_per_class(method):
    k = 0.8
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(102)
    zw, _, _ = wide_cloud(40, 6, k, g)
    zt, _, _ = tight_cloud(40, 6, k, g, spread=0.01)
    zn, _, _ = wide_cloud(40, 6, k, g, rmax=0.5)
    z = torch.stack([zw, zt, zn])
    w = random_weights((3, 40), g)
    fn = _centroid_fn(method)
    cb = fn(z, M, weights=w)
    assert cb.shape == (3, 7)
    for i in range(3):
        ci = fn(z[i], M, weights=w[i])
        assert float(_dist(cb[i], ci, k)) < 1e-11 * sk
    # a batch of shape (2, 3, n, d+1)
    z4 = torch.stack([z, z.flip(0)])
    c4 = fn(z4, M)
    assert c4.shape == (2, 3, 7)
    assert float(_dist(c4[1, 0], fn(zn, M), k)) < 1e-11 * sk


@pytest.mark.parametrize("method", METHODS)
def test_weights_normalised_and_zero_weights_drop_points(method):
    k = 1.7
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(103)
    z, _, _ = wide_cloud(12, 4, k, g, rmax=6.0)
    w = random_weights((12,), g)
    fn = _centroid_fn(method)
    c = fn(z, M, weights=w)
    assert float(_dist(fn(z, M, weights=7.3 * w), c, k)) < 1e-11 * sk
    w0 = w.clone()
    w0[::3] = 0
    keep = w0 > 0
    assert float(_dist(fn(z, M, weights=w0), fn(z[keep], M, weights=w[keep]), k)) < 1e-11 * sk
    # uniform weights are the default
    assert float(_dist(fn(z, M, weights=torch.ones(12, dtype=DT)), fn(z, M), k)) < 1e-11 * sk
    # weights broadcast over a batch of sets
    zb = torch.stack([z, z])
    cb = fn(zb, M, weights=w)
    assert float(_dist(cb[1], c, k)) < 1e-11 * sk


@pytest.mark.parametrize("method", METHODS)
def test_centroid_permutation_invariant(method):
    k = 1.0
    M = manifold(k)
    g = gen(104)
    z, _, _ = wide_cloud(25, 5, k, g)
    w = random_weights((25,), g)
    perm = torch.randperm(25, generator=g)
    fn = _centroid_fn(method)
    assert float(_dist(fn(z, M, weights=w), fn(z[perm], M, weights=w[perm]), k)) < 1e-11


# ============================================================================= Law
@pytest.mark.parametrize("k", KS)
def test_law_matches_numpy_closed_form(k):
    M = manifold(k)
    g = gen(110)
    z, _, _ = wide_cloud(30, 5, k, g, rmax=8.0, shape=(3,))
    w = random_weights((3, 30), g)
    c = plain(hddgeo.law_centroid(z, M, weights=w))
    ref = torch.from_numpy(law_reference(z.numpy(), k, w.numpy()))
    torch.testing.assert_close(c, ref, rtol=1e-12, atol=0)
    assert float(mink(c, c).add(k).abs().max()) < 1e-12 * float((c[..., 0] ** 2).max())


@pytest.mark.parametrize("k", KS)
def test_law_of_two_points_is_the_geodesic_midpoint(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(111)
    x, r1, u1 = wide_cloud(40, 4, k, g, rmax=4.0)
    y, r2, u2 = wide_cloud(40, 4, k, g, rmax=4.0)
    c = hddgeo.law_centroid(torch.stack([x, y], dim=-2), M)
    mid = geoopt_midpoint(x, y, M)
    torch.testing.assert_close(plain(c), mid, rtol=1e-9, atol=1e-9 * sk)
    mid2 = geodesic_point(x, y, 0.5, k, polar_dist(r1, u1, r2, u2, k) / sk)
    torch.testing.assert_close(plain(c), mid2, rtol=1e-12, atol=1e-12 * sk)
    # and equidistant at half the distance, also far out
    x, r1, u1 = wide_cloud(40, 4, k, g, rmax=12.0)
    y, r2, u2 = wide_cloud(40, 4, k, g, rmax=12.0)
    c = hddgeo.law_centroid(torch.stack([x, y], dim=-2), M)
    dxy = polar_dist(r1, u1, r2, u2, k)
    torch.testing.assert_close(_dist(c, x, k), dxy / 2, rtol=1e-10, atol=1e-10 * sk)
    torch.testing.assert_close(_dist(c, y, k), dxy / 2, rtol=1e-10, atol=1e-10 * sk)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("iso", ["rotation", "boost+", "boost-", "rotation*boost"])
@pytest.mark.parametrize("centroid", ["law", "karcher"])
def test_centroids_are_isometry_equivariant(centroid, k, iso):
    """c(L z) = L c(z) for rotations, boosts and their products, with weights, on a batch of two clouds."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(112)
    d = 5
    z, _, _ = wide_cloud(40, d, k, g, rmax=5.0, shape=(2,))
    w = random_weights((2, 40), g)
    L = {
        "rotation": rotation_matrix(d, g),
        "boost+": boost_matrix(d, 1.2),
        "boost-": boost_matrix(d, -1.4, axis=3),
        "rotation*boost": rotation_matrix(d, g) @ boost_matrix(d, 1.5, axis=2),
    }[iso]
    mean = {"law": hddgeo.law_centroid, "karcher": hddgeo.karcher_mean}[centroid]
    c_of_Lz = plain(mean(apply(L, z), M, weights=w))
    L_of_c = apply(L, plain(mean(z, M, weights=w)))
    assert float(_dist(c_of_Lz, L_of_c, k).max()) < 1e-9 * sk


# ============================================================================= Karcher
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("weighted", [False, True])
def test_karcher_riemannian_gradient_vanishes(k, weighted):
    """``sum_i w_i Log_c(z_i)`` computed with geoopt's logmap is ~0 at the Karcher mean."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(120)
    z, _, _ = wide_cloud(50, 6, k, g, rmax=3.0, shape=(3,))
    w = random_weights((3, 50), g) if weighted else None
    c = hddgeo.karcher_mean(z, M, weights=w)
    gn = geoopt_riemannian_grad_norm(c, z, M, w)
    assert float(gn.max()) < 1e-9 * sk, gn
    # ... while it is not ~0 at the Law centroid (test of the test)
    gl = geoopt_riemannian_grad_norm(hddgeo.law_centroid(z, M, weights=w), z, M, w)
    assert float(gl.min()) > 1e-4 * sk


@pytest.mark.parametrize("k", KS)
def test_karcher_objective_not_larger_than_law_or_tangent_or_neighbours(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(121)
    z, _, _ = wide_cloud(60, 5, k, g, rmax=10.0, shape=(2,))
    w = random_weights((2, 60), g)
    c = hddgeo.karcher_mean(z, M, weights=w)
    fk = hddgeo.frechet_objective(c, z, M, weights=w)
    fl = hddgeo.frechet_objective(hddgeo.law_centroid(z, M, weights=w), z, M, weights=w)
    ft = hddgeo.frechet_objective(hddgeo.tangent_centroid(z, M, weights=w), z, M, weights=w)
    assert bool((fk <= fl).all()) and bool((fk <= ft).all())
    assert bool((fk < fl * (1 - 1e-6)).all()), "on a wide cloud the Law centroid is not the Frechet mean"
    # independent objective value (own distance formula)
    wn = w / w.sum(-1, keepdim=True)
    own = (wn * _dist(c.unsqueeze(-2).expand_as(z), z, k) ** 2).sum(-1)
    torch.testing.assert_close(fk, own, rtol=1e-12, atol=0)
    # moving the mean by a small step in any direction increases the objective (by ~eps^2)
    eps = 1e-3 * sk
    cp = plain(c)
    for _ in range(10):
        u = torch.randn(2, 6, generator=g, dtype=DT)
        u = u + mink(cp, u).unsqueeze(-1) / k * cp  # project on T_c
        u = u / mink(u, u).sqrt().unsqueeze(-1)
        for s in (1, -1):
            moved = math.cosh(eps / sk) * cp + sk * math.sinh(eps / sk) * s * u
            moved = torch.cat([torch.sqrt(k + (moved[..., 1:] ** 2).sum(-1, keepdim=True)), moved[..., 1:]], -1)
            fm = hddgeo.frechet_objective(moved, z, M, weights=w)
            assert bool((fm - fk > 0.5 * eps * eps).all())


@pytest.mark.parametrize("k", KS)
def test_karcher_of_two_points_is_the_geodesic_midpoint(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(122)
    x, r1, u1 = wide_cloud(30, 4, k, g, rmax=4.0)
    y, r2, u2 = wide_cloud(30, 4, k, g, rmax=4.0)
    c = hddgeo.karcher_mean(torch.stack([x, y], dim=-2), M)
    torch.testing.assert_close(plain(c), geoopt_midpoint(x, y, M), rtol=1e-9, atol=1e-9 * sk)
    # equals the Law centroid of the two points (both are the midpoint)
    torch.testing.assert_close(plain(c), plain(hddgeo.law_centroid(torch.stack([x, y], dim=-2), M)), rtol=1e-11, atol=1e-11 * sk)


@pytest.mark.parametrize("k", KS)
def test_karcher_of_two_weighted_points_is_the_geodesic_point(k):
    """Weights (1-t, t): the minimiser of (1-t) d(p,x)^2 + t d(p,y)^2 is the geodesic point at fraction t."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(123)
    x, r1, u1 = wide_cloud(30, 4, k, g, rmax=10.0)
    y, r2, u2 = wide_cloud(30, 4, k, g, rmax=10.0)
    t = torch.rand(30, generator=g, dtype=DT) * 0.9 + 0.05
    w = torch.stack([1 - t, t], dim=-1)
    c = hddgeo.karcher_mean(torch.stack([x, y], dim=-2), M, weights=w)
    dxy = polar_dist(r1, u1, r2, u2, k)
    torch.testing.assert_close(_dist(c, x, k), t * dxy, rtol=1e-10, atol=1e-10 * sk)
    torch.testing.assert_close(_dist(c, y, k), (1 - t) * dxy, rtol=1e-10, atol=1e-10 * sk)
    xm, r1, u1 = wide_cloud(30, 4, k, g, rmax=3.0)
    ym, r2, u2 = wide_cloud(30, 4, k, g, rmax=3.0)
    cm = hddgeo.karcher_mean(torch.stack([xm, ym], dim=-2), M, weights=w)
    ref = torch.stack([geodesic_point(xm[i], ym[i], float(t[i]), k, polar_dist(r1[i], u1[i], r2[i], u2[i], k) / sk)
                       for i in range(30)])
    torch.testing.assert_close(plain(cm), ref, rtol=1e-10, atol=1e-10 * sk)
    # the weighted Law centroid is *not* the geodesic point (it minimises a different functional)
    cl = hddgeo.law_centroid(torch.stack([xm, ym], dim=-2), M, weights=w)
    assert float(_dist(cl, cm, k).max()) > 1e-3 * sk


def _cloud(kind, n, d, k, g):
    if kind == "wide":
        return wide_cloud(n, d, k, g, rmax=10.0)
    if kind == "near_origin":
        return wide_cloud(n, d, k, g, rmax=1.0)
    spread = {"tight": 0.05, "tighter": 1e-3, "tightest": 1e-5}[kind]
    return tight_cloud(n, d, k, g, radius=10.0, spread=spread)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kind", ["wide", "near_origin", "tight", "tighter", "tightest"])
@pytest.mark.parametrize("weighted", [False, True])
def test_karcher_matches_independent_scipy_mpmath_minimiser(k, kind, weighted):
    """d(c_ref, c) < 1e-8 with c_ref from BFGS + Newton on the Poincare-ball objective, re-centred in mpmath."""
    M = manifold(k)
    g = gen(125 + KS.index(k))
    n, d = 15, 4
    z, r, u = _cloud(kind, n, d, k, g)
    w = random_weights((n,), g) if weighted else None
    c = hddgeo.karcher_mean(z, M, weights=w)
    ref = reference_frechet_mean(r, u, k, w)
    err = mp_dist_from_spatial(plain(c)[1:].tolist(), ref, k)
    assert err < 1e-8, f"distance to the reference mean {err:.3g}"


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kind", ["wide", "tight", "tighter", "tightest"])
def test_karcher_converges_fast_on_wide_and_tight_clouds(k, kind):
    M = manifold(k)
    g = gen(130)
    z, _, _ = _cloud(kind, 200, 32, k, g)
    w = random_weights((200,), g)
    for weights in (None, w):
        c, info = hddgeo.karcher_mean(z, M, weights=weights, return_info=True)
        assert isinstance(info, hddgeo.KarcherInfo)
        assert info.iterations <= 20, info
        assert info.tol == pytest.approx(1e-10 * math.sqrt(k))
        assert float(info.grad_norm) <= info.tol
        assert bool(info.converged)
        assert float(manifold_error(c, k)) < 1e-13


def test_karcher_converges_fast_batched_and_high_dimensional():
    k = 1.0
    M = manifold(k)
    g = gen(131)
    zw, _, _ = wide_cloud(64, 2048, k, g, rmax=10.0)
    zt, _, _ = tight_cloud(64, 2048, k, g, spread=0.3)
    zc, _, _ = tight_cloud(64, 2048, k, g, spread=1e-4)
    z = torch.stack([zw, zt, zc])
    c, info = hddgeo.karcher_mean(z, M, return_info=True)
    assert info.iterations <= 20
    assert info.grad_norm.shape == (3,)
    assert bool((info.grad_norm <= info.tol).all()) and bool(info.converged.all())
    for i in range(3):
        ci = hddgeo.karcher_mean(z[i], M)
        assert float(_dist(c[i], ci, k)) < 1e-10


def test_karcher_max_iter_zero_returns_the_law_centroid_and_reports_not_converged():
    k = 1.0
    M = manifold(k)
    z, _, _ = wide_cloud(30, 4, k, gen(132))
    c, info = hddgeo.karcher_mean(z, M, max_iter=0, warn=False, return_info=True)
    torch.testing.assert_close(plain(c), plain(hddgeo.law_centroid(z, M)), rtol=1e-13, atol=1e-13)
    assert info.iterations == 0 and not bool(info.converged)
    assert float(info.grad_norm) == pytest.approx(float(geoopt_riemannian_grad_norm(hddgeo.law_centroid(z, M), z, M)), rel=1e-6)


def test_karcher_warns_once_when_it_stops_short_and_is_silent_when_told_or_converged():
    """As POT's solvers: a RuntimeWarning, once per call whatever the number of sets, naming the count and what to
    change; warn=False silences it (and returns the same mean); a converged call says nothing."""
    import warnings

    M = manifold(1.0)
    z, _, _ = wide_cloud(30, 4, 1.0, gen(134))
    zz = torch.stack([z, z.flip(0), z * 1])  # three sets, all short after one step
    with pytest.warns(RuntimeWarning, match=r"stopped short of tol=1e-10 in 3 of 3 set\(s\).*max_iter=1.*warn=False") as rec:
        c_warned = hddgeo.karcher_mean(zz, M, max_iter=1)
    assert len([w for w in rec if w.category is RuntimeWarning]) == 1 and rec[0].filename == __file__  # the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c_silent, info = hddgeo.karcher_mean(zz, M, max_iter=1, warn=False, return_info=True)
        assert not bool(info.converged.any()) and torch.equal(plain(c_silent), plain(c_warned))
        hddgeo.karcher_mean(zz, M)  # converges: no warning
        hddgeo.centroid(zz, M, method="karcher", max_iter=1, warn=False)
        g = gen(136)
        vr, vs = 3 + 2 * torch.randn(20, 4, dtype=DT, generator=g), torch.randn(5, 4, dtype=DT, generator=g)
        hddgeo.hdd_loss(vr, vs, M, centroid="karcher", max_iter=1)  # the loss never reads, never warns
        from hddgeo.losses import Matcher  # the distillation runner's path: no warning per iteration

        Matcher("hdd", "karcher", karcher_max_iter=1)(vr[None].float(), vs[None].float(), diagnose=True)
    with pytest.warns(RuntimeWarning, match="stopped short") as rec:
        hddgeo.centroid(zz, M, method="karcher", max_iter=1)
    assert rec[0].filename == __file__
    with pytest.raises(TypeError, match="warn"):
        hddgeo.karcher_mean(zz, M, warn="no")


def test_options_after_the_manifold_are_keyword_only_and_unknown_keywords_are_type_errors():
    """``f(tensors..., M, *, options)``, as geoopt and torch.nn.functional: a positional option or an unknown
    keyword is a TypeError; an option of the Karcher mean given to another centroid is one too."""
    M = manifold(1.0)
    z, _, _ = wide_cloud(10, 3, 1.0, gen(135))
    w = torch.ones(10, dtype=DT)
    v = torch.randn(2, 5, 3, dtype=DT)
    positional = [
        lambda: hddgeo.lift(v, M, 10.0),
        lambda: hddgeo.law_centroid(z, M, w),
        lambda: hddgeo.tangent_centroid(z, M, w),
        lambda: hddgeo.karcher_mean(z, M, w),
        lambda: hddgeo.centroid(z, M, "law"),
        lambda: hddgeo.frechet_objective(z[0], z, M, w),
        lambda: hddgeo.hdd_loss(v, v, M, 20.0),
        lambda: hddgeo.euclidean_mean_loss(v, v, "sum"),
    ]
    for call in positional:
        with pytest.raises(TypeError, match="positional"):
            call()
    unknown = [
        lambda: hddgeo.lift(v, M, clip=10.0),
        lambda: hddgeo.law_centroid(z, M, weight=w),
        lambda: hddgeo.karcher_mean(z, M, tolerance=1e-8),
        lambda: hddgeo.hdd_loss(v, v, M, lam=20.0),
        lambda: hddgeo.radius(z, M, keepdim=True),
    ]
    for call in unknown:
        with pytest.raises(TypeError, match="unexpected keyword"):
            call()
    for method in ("law", "tangent"):
        with pytest.raises(TypeError, match="belong to the Karcher mean"):
            hddgeo.centroid(z, M, method=method, tol=1e-3)
        with pytest.raises(TypeError, match="unexpected keyword|belong to the Karcher"):
            hddgeo.centroid(z, M, method=method, colour="red")
    with pytest.raises(TypeError, match="unexpected keyword"):
        hddgeo.centroid(z, M, method="karcher", colour="red")
    with pytest.raises(ValueError, match="law, karcher, tangent"):
        hddgeo.centroid(z, M, method="frechet")
    with pytest.raises(TypeError, match="string"):
        hddgeo.centroid(z, M, method=None)


@pytest.mark.parametrize("bad, error, match", [
    ("not a tensor", TypeError, "torch.Tensor"),
    ([[1.0, 2.0]], TypeError, "torch.Tensor"),
    (torch.ones(2, 3, dtype=torch.int64), TypeError, "floating-point"),
    (torch.full((2, 3), float("nan"), dtype=DT), ValueError, "NaN"),
])
def test_wrong_types_are_type_errors_and_bad_values_value_errors(bad, error, match):
    M = manifold(1.0)
    with pytest.raises(error, match=match):
        hddgeo.lift(bad, M)
    with pytest.raises(error, match=match):
        hddgeo.hdd_loss(bad, torch.ones(2, 3, dtype=DT), M)
    with pytest.raises(error, match=match):
        hddgeo.euclidean_mean_loss(torch.ones(2, 3, dtype=DT), bad)
    if torch.is_tensor(bad) and not bad.is_floating_point():
        return
    with pytest.raises(error, match=match):
        hddgeo.radius(bad if error is TypeError else torch.full((2, 3), float("nan"), dtype=DT), M)
    for max_norm, err in (("10", TypeError), (True, TypeError), (0.0, ValueError), (-1.0, ValueError)):
        with pytest.raises(err, match="max_norm"):
            hddgeo.lift(torch.ones(2, 3, dtype=DT), M, max_norm=max_norm)
        with pytest.raises(err, match="max_norm"):
            hddgeo.hdd_loss(torch.ones(2, 3, dtype=DT), torch.ones(2, 3, dtype=DT), M, max_norm=max_norm)
    with pytest.raises(TypeError, match="dtype"):
        hddgeo.lift(torch.ones(2, 3, dtype=DT), M, dtype="float64")


def test_the_riemannian_maps_live_in_hddgeo_geometry_and_the_old_top_level_names_forward_with_a_warning():
    """geoopt's method names with another call shape are not in hddgeo's namespace; the old names still work,
    with a DeprecationWarning naming the new place."""
    import hddgeo.geometry as G

    for name in ("dist", "expmap", "logmap", "logmap0"):
        assert name not in hddgeo.__all__ and name in G.__all__
        with pytest.warns(DeprecationWarning, match=f"hddgeo.geometry.{name}"):
            assert getattr(hddgeo, name) is getattr(G, name)
    with pytest.raises(AttributeError):
        hddgeo.no_such_name  # noqa: B018


def test_karcher_float32_points():
    k = 1.0
    M = manifold(k)
    z, _, _ = wide_cloud(50, 8, k, gen(133), rmax=4.0)
    c32, info = hddgeo.karcher_mean(z.float(), M, return_info=True)
    assert c32.dtype == torch.float32
    assert info.tol == pytest.approx(1e-4)
    c64 = hddgeo.karcher_mean(z, M)
    assert float(_dist(c32.double(), c64, k)) < 1e-3


# ============================================================================= tangent centroid
@pytest.mark.parametrize("k", KS)
def test_tangent_centroid_matches_geoopt_and_log_identity(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(140)
    z, _, _ = wide_cloud(40, 5, k, g, rmax=3.0, shape=(2,))
    w = random_weights((2, 40), g)
    c = hddgeo.tangent_centroid(z, M, weights=w)
    torch.testing.assert_close(plain(c), geoopt_tangent_mean(z, M, w), rtol=1e-9, atol=1e-9 * sk)
    # far out: Log_o(c) equals the weighted mean of w(r_i) z_i,s (own formula for Log_o)
    z, r, u = wide_cloud(40, 5, k, g, rmax=12.0, shape=(2,))
    c = plain(hddgeo.tangent_centroid(z, M, weights=w))
    wn = w / w.sum(-1, keepdim=True)
    mean_log = (wn.unsqueeze(-1) * r.unsqueeze(-1) * u).sum(-2)  # Log_o(z_i) = r_i u_i
    rc, uc = polar_of(c, k)
    torch.testing.assert_close(rc.unsqueeze(-1) * uc, mean_log, rtol=1e-11, atol=1e-12 * sk)


@pytest.mark.parametrize("k", KS)
def test_tangent_centroid_rotation_equivariant_but_not_boost_equivariant(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(141)
    d = 4
    z, _, _ = wide_cloud(30, d, k, g, rmax=4.0)
    R = rotation_matrix(d, g)
    torch.testing.assert_close(plain(hddgeo.tangent_centroid(apply(R, z), M)), apply(R, hddgeo.tangent_centroid(z, M)),
                               rtol=1e-11, atol=1e-11 * sk)
    B = boost_matrix(d, 1.0)
    gap = _dist(hddgeo.tangent_centroid(apply(B, z), M), apply(B, hddgeo.tangent_centroid(z, M)), k)
    assert float(gap) > 1e-4 * sk, "the tangent mean at the origin depends on the origin"


def test_tangent_centroid_equals_karcher_for_points_on_one_geodesic_through_origin():
    """On a geodesic through the origin all three are 1-D means; tangent = Karcher (both = mean signed radius)."""
    k = 2.0
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(142)
    e = random_directions((), 3, g)
    t = (torch.rand(9, generator=g, dtype=DT) * 2 - 1) * 6 * sk
    z = hddgeo.lift(t.unsqueeze(-1) * e, M)
    w = random_weights((9,), g)
    ct = hddgeo.tangent_centroid(z, M, weights=w)
    ck = hddgeo.karcher_mean(z, M, weights=w)
    expected = hddgeo.lift(((w * t).sum() / w.sum()) * e, M)
    assert float(_dist(ct, expected, k)) < 1e-11 * sk
    assert float(_dist(ck, expected, k)) < 1e-10 * sk


# ============================================================================= frechet_objective
@pytest.mark.parametrize("k", KS)
def test_frechet_objective_matches_geoopt(k):
    M = manifold(k)
    g = gen(150)
    z, _, _ = wide_cloud(30, 4, k, g, rmax=3.0, shape=(2,))
    x, _, _ = wide_cloud(2, 4, k, g, rmax=3.0)
    w = random_weights((2, 30), g)
    f = hddgeo.frechet_objective(x, z, M, weights=w)
    wn = w / w.sum(-1, keepdim=True)
    ref = (wn * M.dist(x.unsqueeze(-2), z) ** 2).sum(-1)
    torch.testing.assert_close(f, ref, rtol=1e-10, atol=0)


# ============================================================================= gradients
def _upstream(c, R):
    return (plain(c) * R).sum()


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("spread", [2.0, 8.0])
def test_karcher_implicit_gradient_equals_unrolled(k, spread):
    """Gradients w.r.t. features v (through lift) and weights: implicit backward vs unrolled iteration."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(160)
    n, d = 7, 4
    v = random_directions((2, n), d, g) * (torch.rand(2, n, 1, generator=g, dtype=DT) * spread * sk)
    w = random_weights((2, n), g)
    R = torch.randn(2, d + 1, generator=g, dtype=DT)

    def grads(backward, **kw):
        vv = v.clone().requires_grad_(True)
        ww = w.clone().requires_grad_(True)
        c = hddgeo.karcher_mean(hddgeo.lift(vv, M), M, weights=ww, backward=backward, **kw)
        gv, gw = torch.autograd.grad(_upstream(c, R), (vv, ww))
        return c.detach(), gv, gw

    ci, gvi, gwi = grads("implicit", tol=1e-13 * sk)
    cu, gvu, gwu = grads("unroll", tol=1e-14 * sk, max_iter=3000)
    assert float(_dist(ci, cu, k).max()) < 1e-11 * sk
    for a, b in ((gvi, gvu), (gwi, gwu)):
        assert float((a - b).norm() / b.norm()) < 1e-7, (a, b)
    # weights gradients are invariant to the scale of all weights: sum_i w_i dL/dw_i = 0
    torch.testing.assert_close((gwi * w).sum(-1), torch.zeros(2, dtype=DT), rtol=0, atol=1e-9 * float(gwi.abs().max()))


@pytest.mark.parametrize("k", KS)
def test_karcher_gradcheck_features_and_weights(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(161)
    v = (1.5 * sk * torch.randn(4, 3, generator=g, dtype=DT)).requires_grad_(True)
    w = random_weights((4,), g).requires_grad_(True)
    f = lambda a, b: plain(hddgeo.karcher_mean(hddgeo.lift(a, M), M, weights=b, tol=1e-13 * sk))
    assert torch.autograd.gradcheck(f, (v, w), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_karcher_gradcheck_far_out_batched():
    k = 1.0
    M = manifold(k)
    g = gen(162)
    v = (random_directions((2, 4), 3, g) * torch.tensor([[[9.0], [9.5], [8.7], [9.2]]], dtype=DT)
         + 0.3 * torch.randn(2, 4, 3, generator=g, dtype=DT)).requires_grad_(True)
    w = random_weights((2, 4), g).requires_grad_(True)
    f = lambda a, b: hddgeo.to_poincare(hddgeo.karcher_mean(hddgeo.lift(a, M), M, weights=b, tol=1e-13), M)
    assert torch.autograd.gradcheck(f, (v, w), eps=1e-7, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("method", ["law", "tangent"])
def test_closed_form_centroids_gradcheck(k, method):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(163)
    v = (2 * sk * torch.randn(2, 5, 3, generator=g, dtype=DT)).requires_grad_(True)
    w = random_weights((2, 5), g).requires_grad_(True)
    fn = _centroid_fn(method)
    f = lambda a, b: plain(fn(hddgeo.lift(a, M), M, weights=b))
    assert torch.autograd.gradcheck(f, (v, w))
    # and with a feature at the origin (removable singularities must stay finite)
    v0 = v.detach().clone()
    v0[0, 0] = 0
    v0.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: plain(fn(hddgeo.lift(a, M), M)), (v0,))


@pytest.mark.parametrize("k", KS)
def test_dist_gradcheck(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(164)
    a = (3 * sk * torch.randn(5, 3, generator=g, dtype=DT)).requires_grad_(True)
    b = (3 * sk * torch.randn(5, 3, generator=g, dtype=DT)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: hddgeo.geometry.dist(hddgeo.lift(x, M), hddgeo.lift(y, M), M), (a, b))
    assert torch.autograd.gradcheck(lambda x: hddgeo.hierarchical_weights(hddgeo.lift(x, M), M), (a,))
    assert torch.autograd.gradcheck(lambda x: hddgeo.radius(hddgeo.lift(x, M), M), (a,))


def test_dist_gradient_finite_at_coincident_points():
    M = manifold(1.0)
    a = torch.randn(3, 4, generator=gen(165), dtype=DT).requires_grad_(True)
    z = hddgeo.lift(a, M)
    d = hddgeo.geometry.dist(z, z.detach().clone(), M).sum()
    (ga,) = torch.autograd.grad(d, a)
    assert bool(torch.isfinite(ga).all())


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_when_a_data_point_coincides_with_the_centroid(method):
    """A symmetric set {v, -v, 0} has its centroid at the origin, which is also a data point:
    the removable singularities of Log at theta = 0 must not spoil the gradients."""
    k = 1.0
    M = manifold(k)
    g = gen(166)
    a = torch.randn(2, 3, generator=g, dtype=DT)
    v = torch.cat([a, -a, torch.zeros(1, 3, dtype=DT)]).requires_grad_(True)
    fn = _centroid_fn(method)
    kw = {"tol": 1e-13} if method == "karcher" else {}
    c = fn(hddgeo.lift(v.detach(), M), M, **kw)
    assert float(hddgeo.radius(c, M)) < 1e-12
    f = lambda x: plain(fn(hddgeo.lift(x, M), M, **kw))
    assert torch.autograd.gradcheck(f, (v,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_gradient_wrt_a_feature_exactly_at_zero(method, backward):
    """One feature is exactly 0 (its point is the origin), the centroid is elsewhere.  The centroid is
    smooth in that feature; d c / d v_0 must match central differences (it is not zero along the
    direction of the centroid)."""
    if method != "karcher" and backward == "unroll":
        pytest.skip("backward only applies to the Karcher mean")
    M = manifold(1.0)
    v = torch.tensor([[0.0, 0.0], [1.0, 0.3], [0.8, -0.5]], dtype=DT)
    fn = _centroid_fn(method)
    kw = {"tol": 1e-14, "backward": backward, "max_iter": 3000} if method == "karcher" else {}
    f = lambda x: plain(fn(hddgeo.lift(x, M), M, **kw))
    J = torch.autograd.functional.jacobian(f, v)[:, 0, :]  # d c / d v_0, shape (3, 2)
    eps = 1e-6
    Jfd = torch.stack([(f(v + eps * E) - f(v - eps * E)) / (2 * eps)
                       for E in (torch.eye(6, dtype=DT)[j].reshape(3, 2) for j in range(2))], dim=-1)
    torch.testing.assert_close(J, Jfd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_centroid_jacobian_when_all_features_are_zero(method):
    """All points at the origin: d c / d v_i = (0; I) / n for every method (the mean is linear to first order)."""
    M = manifold(2.0)
    v = torch.zeros(3, 2, dtype=DT)
    J = torch.autograd.functional.jacobian(lambda x: plain(_centroid_fn(method)(hddgeo.lift(x, M), M)), v)
    expected = torch.cat([torch.zeros(1, 2, dtype=DT), torch.eye(2, dtype=DT)]).unsqueeze(1).expand(3, 3, 2) / 3
    torch.testing.assert_close(J, expected, rtol=0, atol=1e-14)
