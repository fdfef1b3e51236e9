"""Library edge cases: every wrong input is a ValueError that says what to fix, never a silent wrong answer."""
import math
import re

import geoopt
import pytest
import torch

import hddgeo
from hddgeo.geometry.lorentz import check_points

M = geoopt.Lorentz(k=1.0)


def _far(radius, n=6, d=16, seed=0):
    v = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True) * radius


@pytest.mark.parametrize("radius", [360.0, 500.0, 700.0])
def test_points_beyond_float64_reach_raise_with_advice_to_clip(radius):
    with pytest.raises(ValueError, match="max_norm"):
        hddgeo.lift(_far(radius), M)
    with pytest.raises(ValueError, match="reach"):
        hddgeo.hdd_loss(_far(radius)[None], _far(radius, seed=1)[None], M, max_norm=None)
    # a hand-made point out there (finite coordinates, squares overflow) is refused by the point check too
    t = torch.tensor(radius, dtype=torch.float64)
    z = torch.stack([torch.cosh(t), torch.sinh(t), torch.zeros((), dtype=torch.float64)])
    assert torch.isfinite(z).all()
    with pytest.raises(ValueError, match="reach"):
        check_points(z, M)
    with pytest.raises(ValueError, match="reach"):
        hddgeo.geometry.dist(z, z, M)


def test_points_just_inside_reach_still_work():
    v = _far(300.0)
    vs = (_far(300.0, seed=1) * 0.99).requires_grad_(True)
    loss = hddgeo.hdd_loss(v[None], vs[None], M, max_norm=None, centroid="karcher")
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(vs.grad).all()


@pytest.mark.parametrize("kwargs, word, error", [
    ({"max_iter": -1}, "max_iter", ValueError),
    ({"max_iter": 2.5}, "max_iter", TypeError),
    ({"max_iter": "3"}, "max_iter", TypeError),
    ({"tol": -1.0}, "tol", ValueError),
    ({"tol": float("nan")}, "tol", ValueError),
    ({"tol": float("inf")}, "tol", ValueError),
    ({"tol": "1e-3"}, "tol", TypeError),
    ({"maxiter": 3}, "maxiter", TypeError),
    ({"backward": "magic"}, "backward", ValueError),
])
def test_karcher_options_are_checked_alike_in_the_loss_and_the_mean(kwargs, word, error):
    """A value of the wrong type or an unknown keyword is a TypeError, as Python and torch raise; a bad value a
    ValueError; the loss, the mean and the centroid switch agree."""
    v = torch.randn(1, 8, 4, dtype=torch.float64)
    z = hddgeo.lift(v, M)
    for call in (lambda: hddgeo.hdd_loss(v, v[:, :3], M, centroid="karcher", **kwargs),
                 lambda: hddgeo.hdd_loss(v, v[:, :3], M, centroid="law", **kwargs),  # checked though unused
                 lambda: hddgeo.karcher_mean(z, M, **kwargs),
                 lambda: hddgeo.centroid(z, M, method="karcher", **kwargs)):
        with pytest.raises(error, match=word):
            call()


def test_huge_weights_do_not_overflow_the_centroid():
    z = hddgeo.lift(torch.randn(5, 8, dtype=torch.float64), M)
    for w in (torch.full((5,), 1e308, dtype=torch.float64), torch.tensor([1e308, 1e308, 1.0, 0.0, 5e307], dtype=torch.float64)):
        for centroid in (hddgeo.law_centroid, hddgeo.tangent_centroid, hddgeo.karcher_mean):
            c = centroid(z, M, weights=w)
            inner = -c[0] ** 2 + (c[1:] ** 2).sum()
            assert torch.isfinite(c).all() and float(inner) == pytest.approx(-1.0, abs=1e-9), centroid.__name__
            ref = centroid(z, M, weights=w / w.max())  # the same weights, rescaled: the same centroid
            torch.testing.assert_close(c, ref)


def test_integer_dtype_is_refused_not_truncated():
    with pytest.raises(ValueError, match="floating-point"):  # a dtype, but not a floating one: a value
        hddgeo.lift(torch.randn(3, 4), M, dtype=torch.long)


def test_half_precision_karcher_warns_when_it_cannot_converge():
    v = torch.randn(20, 16, generator=torch.Generator().manual_seed(3)) * 2
    z = hddgeo.lift(v, M, max_norm=5.0, dtype=torch.float16)
    with pytest.warns(RuntimeWarning, match="float64"):
        _, info = hddgeo.karcher_mean(z, M, return_info=True)
    assert not bool(info.converged.all())


def test_overflow_advice_does_not_recommend_float64_to_float64_input():
    with pytest.raises(ValueError) as err:
        hddgeo.lift(_far(720.0), M)
    assert "use dtype=torch.float64" not in str(err.value) and "already" in str(err.value)
    with pytest.raises(ValueError, match="dtype=torch.float64"):
        hddgeo.lift(_far(60.0).float(), M, dtype=None)
    assert math.isfinite(float(hddgeo.lift(_far(40.0).float(), M, dtype=None)[0, 0]))


@pytest.mark.parametrize("far,rtol", [(20.0, 1e-12), (32.0, 1e-7)])
def test_law_centroid_of_a_spread_set_with_one_far_point_matches_high_precision(far, rtol):
    """A set spread in angle whose one point is far out has its Law centroid much nearer the origin than the
    point with zbar's spatial part; in that point's frame q cancelled (q = 1 instead of 3.3e18 at radius 32,
    found by a property test; 3e-5 off at radius 20).  The closed form's value from 60-digit arithmetic on the
    same float64 points, to what float64 resolves there."""
    import mpmath

    k = 0.25
    M = geoopt.Lorentz(k=k)
    g = torch.Generator().manual_seed(168)
    v = torch.randn(1, 9, 2, generator=g, dtype=torch.float64) * 3.0
    v[0, 5] *= far * math.sqrt(k) / float(v[0, 5].norm())  # that point at radius far * sqrt(k)
    z = hddgeo.lift(v, M)
    c = hddgeo.law_centroid(z, M)
    check_points(c, M, "Law centroid")  # on the manifold
    with mpmath.workdps(60):
        pts = [[mpmath.mpf(float(x)) for x in p] for p in z[0].as_subclass(torch.Tensor).tolist()]
        zb = [mpmath.fsum(p[i] for p in pts) / len(pts) for i in range(3)]
        q = zb[0] ** 2 - zb[1] ** 2 - zb[2] ** 2
        exact = [float(mpmath.sqrt(k) * x / mpmath.sqrt(q)) for x in zb]
    assert torch.allclose(c[0].as_subclass(torch.Tensor), torch.tensor(exact, dtype=torch.float64), rtol=rtol, atol=0)


def test_the_riemannian_maps_refuse_shapes_that_do_not_broadcast_and_vectors_off_the_tangent_space():
    from hddgeo.geometry import expmap, logmap

    x, y = hddgeo.lift(torch.randn(3, 4, dtype=torch.float64), M), hddgeo.lift(torch.randn(2, 4, dtype=torch.float64), M)
    for call, words in ((lambda: logmap(x, y, M), "x (3, 5) and y (2, 5)"),
                        (lambda: expmap(x, torch.zeros(2, 5, dtype=torch.float64), M), "x (3, 5) and u (2, 5)"),
                        (lambda: hddgeo.frechet_objective(x, hddgeo.lift(torch.randn(2, 6, 4), M), M), "one point per set"),
                        (lambda: hddgeo.karcher_mean(x[0], M), "add a set dimension")):
        with pytest.raises(ValueError, match=re.escape(words)):
            call()
    o = hddgeo.lift(torch.zeros(4), M)
    radial = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # along the time axis: not tangent at o
    with pytest.raises(ValueError, match="not tangent"):
        expmap(o, radial, M)
    # what geoopt's proju makes of it is tangent (here: zero), and a logmap's output always is, far out too
    assert torch.equal(expmap(o, M.proju(o, radial), M), o)
    far = hddgeo.lift(torch.randn(6, 4, dtype=torch.float64) * 8, M, max_norm=None)
    for dtype in (torch.float64, torch.float32):
        a, b = far[:3].to(dtype), far[3:].to(dtype)
        u = logmap(a, b, M)
        expmap(a, u, M)  # accepted


def test_hdd_loss_checks_every_option_before_any_work():
    v = torch.randn(2, 4, 3, dtype=torch.float64)
    for kwargs, error, word in (({"centroid": 5}, TypeError, "string"), ({"dtype": "float64"}, TypeError, "torch.dtype"),
                                ({"scale": "a"}, TypeError, "scale"), ({"reduction": "avg"}, ValueError, "reduction")):
        with pytest.raises(error, match=word):
            hddgeo.hdd_loss(v, v[:, :2], M, **kwargs)
