"""Lift, distances, radii, hierarchical weights, Poincare maps and input validation (hddgeo.geometry).

References: geoopt's own maps (moderate radii), closed forms in polar coordinates, the Poincare-ball
distance, and mpmath for nearby points far from the origin.
"""
import math

import geoopt
import numpy as np
import pytest
import torch

import hddgeo
from geometry_helpers import (
    DT,
    KS,
    ball_dist,
    ball_from_polar,
    from_polar,
    gen,
    manifold,
    manifold_error,
    mink,
    mp_dist_from_spatial,
    naive_dist,
    origin,
    plain,
    random_directions,
    wide_cloud,
)

mpmath = pytest.importorskip("mpmath")


# ============================================================================= lift
@pytest.mark.parametrize("k", KS)
def test_lift_lands_on_manifold_as_manifold_tensor_with_graph(k):
    M = manifold(k)
    v = (3 * math.sqrt(k) * torch.randn(6, 7, generator=gen(0), dtype=DT)).requires_grad_(True)
    z = hddgeo.lift(v, M)
    assert isinstance(z, geoopt.ManifoldTensor)
    assert z.manifold is M
    assert z.grad_fn is not None, "lift must keep the autograd graph of v"
    assert z.shape == (6, 8) and z.dtype == DT
    assert float(manifold_error(z, k).max()) < 1e-14
    assert bool((plain(z)[..., 0] >= math.sqrt(k)).all())
    # geoopt's own (absolute-tolerance) check agrees at moderate radii
    ok, reason = M._check_point_on_manifold(plain(hddgeo.lift(v.detach() / 4, M)), atol=1e-9, rtol=1e-9)
    assert ok, reason
    # gradients reach v
    plain(z).sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all()) and float(v.grad.abs().sum()) > 0


@pytest.mark.parametrize("k", KS)
def test_lift_equals_geoopt_expmap0_on_padded_input(k):
    M = manifold(k)
    g = gen(1)
    d = 9
    # |v|/sqrt(k) from 1e-3 to 6: moderate norms where geoopt is accurate (its norm clamps at 1e-4)
    v = random_directions((40,), d, g) * (math.sqrt(k) * torch.logspace(-3, math.log10(6), 40, dtype=DT)).unsqueeze(-1)
    z = plain(hddgeo.lift(v, M))
    u = torch.cat([torch.zeros(40, 1, dtype=DT), v], dim=-1)
    ref = M.expmap0(u)
    torch.testing.assert_close(z, ref, rtol=1e-12, atol=1e-12 * math.sqrt(k))


@pytest.mark.parametrize("k", KS)
def test_lift_closed_form_and_radius_equals_norm(k):
    """``lift(v) = sqrt(k) (cosh(|v|/sqrt k), sinh(|v|/sqrt k) v/|v|)`` and ``radius(lift(v)) = |v|`` up to 30 sqrt(k)."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(2)
    norms = torch.cat([torch.tensor([1e-9, 1e-5, 1e-4, 2e-4], dtype=DT), torch.linspace(0.01, 30, 60, dtype=DT)]) * sk
    u = random_directions((len(norms),), 5, g)
    v = norms.unsqueeze(-1) * u
    z = hddgeo.lift(v, M)
    torch.testing.assert_close(plain(z), from_polar(norms, u, k), rtol=1e-13, atol=0)
    r = hddgeo.radius(z, M)
    torch.testing.assert_close(r, norms, rtol=1e-13, atol=0)


def test_lift_jacobian_at_zero_is_the_padding():
    """d lift / dv at v = 0 is [0; I]: finite (no NaN from the norm) and exact."""
    M = manifold(0.7)
    v = torch.zeros(4, dtype=DT)
    J = torch.autograd.functional.jacobian(lambda a: plain(hddgeo.lift(a, M)), v)
    expected = torch.cat([torch.zeros(1, 4, dtype=DT), torch.eye(4, dtype=DT)])
    torch.testing.assert_close(J, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("k", KS)
def test_lift_gradcheck(k):
    M = manifold(k)
    v = (2 * math.sqrt(k) * torch.randn(3, 4, generator=gen(3), dtype=DT)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: plain(hddgeo.lift(a, M)), (v,))
    # with clipping active on some rows (away from the kink)
    v2 = torch.randn(4, 3, generator=gen(4), dtype=DT)
    v2 = v2 / v2.norm(dim=-1, keepdim=True) * math.sqrt(k) * torch.tensor([[0.5], [1.5], [3.0], [7.0]], dtype=DT)
    v2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: plain(hddgeo.lift(a, M, max_norm=2.0)), (v2,))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("max_norm", [0.5, 2.0, 10.0])
def test_lift_max_norm_clips_radius_and_keeps_direction(k, max_norm):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(5)
    u = random_directions((50,), 6, g)
    norms = torch.linspace(0.01, 3 * max_norm, 50, dtype=DT) * sk
    v = norms.unsqueeze(-1) * u
    z = hddgeo.lift(v, M, max_norm=max_norm)
    r = hddgeo.radius(z, M)
    expected = torch.clamp(norms, max=max_norm * sk)
    torch.testing.assert_close(r, expected, rtol=1e-12, atol=0)
    clipped = norms > max_norm * sk
    assert bool(clipped.any()) and bool((~clipped).any())
    # clipped rows sit exactly at max_norm*sqrt(k) in the direction of v
    torch.testing.assert_close(r[clipped], torch.full_like(r[clipped], max_norm * sk), rtol=1e-13, atol=0)
    zs = plain(z)[..., 1:]
    torch.testing.assert_close(zs / zs.norm(dim=-1, keepdim=True), u, rtol=1e-12, atol=1e-13)
    # unclipped rows equal the unclipped lift
    torch.testing.assert_close(plain(z)[~clipped], plain(hddgeo.lift(v[~clipped], M)), rtol=1e-14, atol=0)
    assert float(manifold_error(z, k).max()) < 1e-14


def test_lift_default_does_not_clip():
    M = manifold(1.0)
    v = torch.tensor([[25.0, 0.0]], dtype=DT)
    assert float(hddgeo.radius(hddgeo.lift(v, M), M)) == pytest.approx(25.0, rel=1e-13)


def test_lift_batch_shapes():
    M = manifold(1.3)
    g = gen(6)
    v = torch.randn(2, 3, 4, 5, generator=g, dtype=DT)
    z = hddgeo.lift(v, M)
    assert z.shape == (2, 3, 4, 6)
    torch.testing.assert_close(plain(z).reshape(-1, 6), plain(hddgeo.lift(v.reshape(-1, 5), M)), rtol=0, atol=0)
    assert hddgeo.lift(v[0, 0, 0], M).shape == (6,)


def test_lift_dtype_option():
    M = manifold(1.0)
    v32 = torch.randn(5, 4, generator=gen(7), dtype=DT).float()
    z_default = hddgeo.lift(v32, M)
    assert z_default.dtype == torch.float64, "geometry runs in float64 by default"
    torch.testing.assert_close(plain(z_default), plain(hddgeo.lift(v32.double(), M)), rtol=0, atol=0)
    z_keep = hddgeo.lift(v32, M, dtype=None)
    assert z_keep.dtype == torch.float32
    z32 = hddgeo.lift(v32.double(), M, dtype=torch.float32)
    assert z32.dtype == torch.float32
    assert float(manifold_error(z32.double(), 1.0).max()) < 1e-6
    torch.testing.assert_close(plain(z32).double(), plain(z_default), rtol=1e-6, atol=1e-6)
    # gradients reach a float32 leaf through the float64 computation
    v = v32.clone().requires_grad_(True)
    plain(hddgeo.lift(v, M)).sum().backward()
    assert v.grad is not None and v.grad.dtype == torch.float32


def test_lift_float32_overflow_is_reported():
    M = manifold(1.0)
    v = torch.tensor([[120.0, 0.0]])
    with pytest.raises(ValueError, match="overflow"):
        hddgeo.lift(v, M, dtype=torch.float32)
    # float64 (the default) handles it
    assert float(hddgeo.radius(hddgeo.lift(v, M), M)) == pytest.approx(120.0, rel=1e-13)


def test_lift_default_float32_k_manifold_consistent():
    """A plain geoopt.Lorentz(k=0.2) stores k in float32; lifted points still pass hddgeo's own checks."""
    M = geoopt.Lorentz(k=0.2)
    v = torch.randn(4, 3, generator=gen(8), dtype=DT)
    z = hddgeo.lift(v, M)
    k = float(M.k)
    assert float(manifold_error(z, k).max()) < 1e-14
    torch.testing.assert_close(hddgeo.radius(z, M), v.norm(dim=-1), rtol=1e-13, atol=0)
    c = hddgeo.karcher_mean(z, M)
    assert float(manifold_error(c, k)) < 1e-13


# ============================================================================= dist
@pytest.mark.parametrize("k", KS)
def test_dist_matches_geoopt_for_moderate_radii(k):
    M = manifold(k)
    g = gen(10)
    x, _, _ = wide_cloud(200, 6, k, g, rmax=4.0)
    y, _, _ = wide_cloud(200, 6, k, g, rmax=4.0)
    d = hddgeo.geometry.dist(x, y, M)
    ref = M.dist(x, y)
    assert float(ref.min()) > 1e-2 * math.sqrt(k)
    torch.testing.assert_close(d, ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("k", KS)
def test_dist_closed_forms(k):
    """Radial pairs: |r1 - r2|; from the origin: r; same radius, angle phi: cosh(d/sk) = cosh^2 - sinh^2 cos(phi)."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(11)
    u = random_directions((30,), 4, g)
    r1 = torch.rand(30, generator=g, dtype=DT) * 12 * sk
    r2 = torch.rand(30, generator=g, dtype=DT) * 12 * sk
    d = hddgeo.geometry.dist(from_polar(r1, u, k), from_polar(r2, u, k), M)
    torch.testing.assert_close(d, (r1 - r2).abs(), rtol=1e-12, atol=1e-12 * sk)
    d0 = hddgeo.geometry.dist(origin(4, k), from_polar(r1, u, k), M)
    torch.testing.assert_close(d0, r1, rtol=1e-13, atol=0)
    # two directions at angle phi in the (e1, e2) plane
    phi = torch.linspace(0.01, math.pi, 30, dtype=DT)
    th = torch.rand(30, generator=g, dtype=DT) * 4
    e1 = torch.zeros(30, 4, dtype=DT)
    e1[:, 0] = 1
    e2 = torch.zeros(30, 4, dtype=DT)
    e2[:, 0] = torch.cos(phi)
    e2[:, 1] = torch.sin(phi)
    d = hddgeo.geometry.dist(from_polar(th * sk, e1, k), from_polar(th * sk, e2, k), M)
    expected = sk * torch.acosh(torch.cosh(th) ** 2 - torch.sinh(th) ** 2 * torch.cos(phi))
    torch.testing.assert_close(d, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("k", KS)
def test_dist_symmetric_zero_on_diagonal_and_triangle(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(12)
    x, _, _ = wide_cloud(300, 5, k, g, rmax=12.0)
    y, _, _ = wide_cloud(300, 5, k, g, rmax=12.0)
    w, _, _ = wide_cloud(300, 5, k, g, rmax=12.0)
    dxy, dyx = hddgeo.geometry.dist(x, y, M), hddgeo.geometry.dist(y, x, M)
    torch.testing.assert_close(dxy, dyx, rtol=1e-15, atol=0)
    assert float(hddgeo.geometry.dist(x, x, M).abs().max()) <= 1e-12 * sk
    assert bool((dxy > 0).all())
    dxw, dwy = hddgeo.geometry.dist(x, w, M), hddgeo.geometry.dist(w, y, M)
    assert bool((dxy <= dxw + dwy + 1e-12 * (dxw + dwy)).all())


@pytest.mark.parametrize("k", KS)
def test_dist_gradient_at_the_origin(k):
    """d/dv d(lift(v), y) at v = 0 is -u_y (minus the unit direction of y): the distance is smooth there."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(18)
    u = random_directions((), 3, g)
    y = from_polar(torch.tensor(2.0 * sk, dtype=DT), u, k)
    for v0 in (torch.zeros(3, dtype=DT), 1e-9 * sk * random_directions((), 3, g)):
        v = v0.clone().requires_grad_(True)
        (gv,) = torch.autograd.grad(hddgeo.geometry.dist(hddgeo.lift(v, M), y, M), v)
        torch.testing.assert_close(gv, -u, rtol=0, atol=1e-6)


def test_dist_broadcasts():
    k = 0.5
    M = manifold(k)
    g = gen(13)
    x, _, _ = wide_cloud(3, 4, k, g, rmax=3.0)
    y, _, _ = wide_cloud(5, 4, k, g, rmax=3.0)
    D = hddgeo.geometry.dist(x.unsqueeze(1), y.unsqueeze(0), M)
    assert D.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert float(D[i, j]) == pytest.approx(float(M.dist(x[i], y[j])), rel=1e-10)


@pytest.mark.parametrize("k", KS)
def test_dist_agrees_with_poincare_ball_formula_far_out(k):
    """Points spread up to radius 15 sqrt(k): compare with the ball distance built from polar coordinates."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(14)
    x, r1, u1 = wide_cloud(200, 3, k, g, rmax=15.0)
    y, r2, u2 = wide_cloud(200, 3, k, g, rmax=15.0)
    ref = ball_dist(ball_from_polar(r1, u1, k), ball_from_polar(r2, u2, k), k,
                    dp=k / torch.cosh(r1 / (2 * sk)) ** 2, dq=k / torch.cosh(r2 / (2 * sk)) ** 2)
    torch.testing.assert_close(hddgeo.geometry.dist(x, y, M), ref, rtol=1e-9, atol=1e-9 * sk)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("radial", [False, True])
def test_dist_nearby_points_far_from_origin_match_mpmath(k, radial):
    """Two points at radius 10 sqrt(k) separated by 1e-9..1 sqrt(k): agree with a 80-digit reference.

    The points are *defined* by their float64 spatial parts (the time coordinate is implied), so the
    reference is the exact distance between those exact points.  A backward-stable method loses about
    ``eps * |x_s| ~ 2e-12 sqrt(k)`` absolutely; the textbook arcosh formula loses ~1e-4 here.
    """
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(15 + int(radial))
    d = 6
    u = random_directions((), d, g)
    xs = sk * math.sinh(10.0) * u
    seps = torch.tensor([1e-9, 1e-7, 1e-5, 1e-3, 1e-1, 1.0], dtype=DT) * sk
    e = u if radial else random_directions((len(seps),), d, g)
    ys = xs + seps.unsqueeze(-1) * e
    with_t = lambda s: torch.cat([torch.sqrt(k + (s * s).sum(-1, keepdim=True)), s], dim=-1)
    x = with_t(xs.expand_as(ys).clone())
    y = with_t(ys)
    ours = hddgeo.geometry.dist(x, y, M)
    ref = torch.tensor([mp_dist_from_spatial(x[i, 1:].tolist(), y[i, 1:].tolist(), k) for i in range(len(seps))], dtype=DT)
    err = (ours - ref).abs()
    assert float(err.max()) < 1e-10 * sk, f"abs errors {err.tolist()} vs refs {ref.tolist()}"
    assert bool((err <= 1e-10 * sk + 1e-12 * ref).all())
    if not radial:
        # test of the test: the textbook formula misses this tolerance for the closest pairs
        naive_err = (naive_dist(x, y, k) - ref).abs()
        assert float(naive_err[:3].max()) > 1e-8 * sk


@pytest.mark.parametrize("k", KS)
def test_radius_matches_mpmath_and_geoopt(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(17)
    z, r, u = wide_cloud(20, 4, k, g, rmax=20.0)
    rad = hddgeo.radius(z, M)
    o = [0.0] * 4
    ref = torch.tensor([mp_dist_from_spatial(o, z[i, 1:].tolist(), k) for i in range(20)], dtype=DT)
    torch.testing.assert_close(rad, ref, rtol=1e-13, atol=1e-15 * sk)
    zm, _, _ = wide_cloud(20, 4, k, g, rmax=4.0)
    zm[:, 0] = torch.sqrt(k + (zm[:, 1:] ** 2).sum(-1))
    torch.testing.assert_close(hddgeo.radius(zm, M), M.dist0(zm), rtol=1e-9, atol=1e-7 * sk)


# ============================================================================= hierarchical weights
@pytest.mark.parametrize("k", KS)
def test_hierarchical_weight_is_one_at_origin(k):
    M = manifold(k)
    o = origin(7, k, shape=(3,))
    w = hddgeo.hierarchical_weights(o, M)
    assert w.shape == (3,)
    assert bool((w == 1).all())
    w_lift = hddgeo.hierarchical_weights(hddgeo.lift(torch.zeros(2, 7, dtype=DT), M), M)
    assert bool((w_lift == 1).all())


@pytest.mark.parametrize("k", KS)
def test_hierarchical_weight_closed_form_and_strictly_decreasing(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(20)
    th = torch.cat([torch.tensor([0.0, 1e-8, 1e-6, 5e-5, 9.9e-5, 1e-4, 1.01e-4, 2e-4, 1e-3], dtype=DT),
                    torch.linspace(2e-3, 30, 500, dtype=DT)])
    u = random_directions((len(th),), 3, g)
    w = hddgeo.hierarchical_weights(from_polar(th * sk, u, k), M)
    with mpmath.workdps(40):
        ref = torch.tensor([1.0 if t == 0 else float(mpmath.mpf(float(t)) / mpmath.sinh(mpmath.mpf(float(t))))
                            for t in th.tolist()], dtype=DT)
    torch.testing.assert_close(w, ref, rtol=1e-12, atol=0)
    assert bool((torch.diff(w[1:]) < 0).all()), "w(r) must decrease strictly with the radius"
    assert bool((w > 0).all()) and bool((w <= 1).all())


@pytest.mark.parametrize("k", KS)
def test_hierarchical_weight_is_the_logmap0_factor(k):
    """Appendix C: ``Log_o(z) = w(r) (z - cosh(r/sqrt(k)) o)``."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(21)
    z, r, _ = wide_cloud(100, 5, k, g, rmax=12.0)
    w = hddgeo.hierarchical_weights(z, M)
    o = origin(5, k)
    rhs = w.unsqueeze(-1) * (z - torch.cosh(r / sk).unsqueeze(-1) * o)
    lhs = plain(hddgeo.geometry.logmap0(z, M))
    torch.testing.assert_close(lhs, rhs, rtol=1e-11, atol=1e-11 * sk)
    # Log_o(z) has length r
    torch.testing.assert_close(mink(lhs, lhs).sqrt(), r, rtol=1e-11, atol=1e-14)
    # geoopt's logmap0 agrees for moderate radii
    zm, rm, _ = wide_cloud(100, 5, k, g, rmax=4.0)
    wm = hddgeo.hierarchical_weights(zm, M)
    rhs_m = wm.unsqueeze(-1) * (zm - torch.cosh(rm / sk).unsqueeze(-1) * o)
    torch.testing.assert_close(M.logmap0(zm), rhs_m, rtol=1e-8, atol=1e-8 * sk)


def test_jacobians_at_the_origin_are_finite_and_exact():
    """At v = 0: radius and w(r) are flat (|v| has a zero subgradient, w = 1 - |v|^2/(6k) + ...),
    to_poincare(lift(v)) = v/2 + O(|v|^3), logmap0(lift(v)) = (0, v)."""
    k = 2.0
    M = manifold(k)
    v = torch.zeros(2, 3, dtype=DT)
    jac = lambda f: torch.autograd.functional.jacobian(lambda x: plain(f(hddgeo.lift(x, M), M)), v)
    eye = torch.eye(3, dtype=DT)
    block = lambda m: torch.stack([torch.stack([m if i == j else torch.zeros_like(m) for j in range(2)], 1) for i in range(2)])
    torch.testing.assert_close(jac(hddgeo.radius), torch.zeros(2, 2, 3, dtype=DT), rtol=0, atol=0)
    torch.testing.assert_close(jac(hddgeo.hierarchical_weights), torch.zeros(2, 2, 3, dtype=DT), rtol=0, atol=0)
    torch.testing.assert_close(jac(hddgeo.to_poincare), block(eye / 2), rtol=0, atol=1e-15)
    torch.testing.assert_close(jac(hddgeo.geometry.logmap0), block(torch.cat([torch.zeros(1, 3, dtype=DT), eye])), rtol=0, atol=1e-15)


# ============================================================================= Poincare maps
@pytest.mark.parametrize("k", KS)
def test_to_poincare_inside_ball_with_closed_form_norm(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(30)
    z, r, u = wide_cloud(300, 4, k, g, rmax=15.0)
    p = hddgeo.to_poincare(z, M)
    assert p.shape == (300, 4)
    assert bool((p.norm(dim=-1) < sk).all())
    torch.testing.assert_close(p, ball_from_polar(r, u, k), rtol=1e-13, atol=1e-15 * sk)
    # geoopt's lorentz_to_poincare maps to the unit ball: ours is sqrt(k) times it
    ref_unit = geoopt.manifolds.lorentz.math.lorentz_to_poincare(z, M.k)
    torch.testing.assert_close(p, sk * ref_unit, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("k", KS)
def test_poincare_round_trip(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(31)
    z, _, _ = wide_cloud(200, 5, k, g, rmax=10.0)
    back = hddgeo.from_poincare(hddgeo.to_poincare(z, M), M)
    assert isinstance(back, geoopt.ManifoldTensor) and back.manifold is M
    torch.testing.assert_close(plain(back), z, rtol=1e-9, atol=1e-12 * sk)
    assert float(manifold_error(back, k).max()) < 1e-12
    p = 0.95 * sk * random_directions((50,), 5, g) * torch.rand(50, 1, generator=g, dtype=DT)
    torch.testing.assert_close(hddgeo.to_poincare(hddgeo.from_poincare(p, M), M), p, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("k", KS)
def test_poincare_preserves_distances(k):
    """geoopt.PoincareBall(c=1/k).dist(to_poincare(x), to_poincare(y)) = hddgeo.geometry.dist(x, y) = geoopt M.dist(x, y)."""
    M = manifold(k)
    sk = math.sqrt(k)
    ball = geoopt.PoincareBall(c=torch.tensor(1.0 / k, dtype=DT))
    g = gen(32)
    x, _, _ = wide_cloud(200, 6, k, g, rmax=4.0)
    y, _, _ = wide_cloud(200, 6, k, g, rmax=4.0)
    dl = hddgeo.geometry.dist(x, y, M)
    db = ball.dist(hddgeo.to_poincare(x, M), hddgeo.to_poincare(y, M))
    torch.testing.assert_close(db, dl, rtol=1e-9, atol=1e-9 * sk)
    torch.testing.assert_close(M.dist(x, y), dl, rtol=1e-9, atol=1e-9 * sk)
    # further out, compare with our own accurate ball formula
    x, _, _ = wide_cloud(200, 6, k, g, rmax=10.0)
    y, _, _ = wide_cloud(200, 6, k, g, rmax=10.0)
    torch.testing.assert_close(ball_dist(hddgeo.to_poincare(x, M), hddgeo.to_poincare(y, M), k),
                               hddgeo.geometry.dist(x, y, M), rtol=1e-8, atol=1e-8 * sk)


def test_poincare_any_batch_shape():
    k = 2.0
    M = manifold(k)
    g = gen(33)
    z, _, _ = wide_cloud(5, 7, k, g, rmax=6.0, shape=(2, 3))
    p = hddgeo.to_poincare(z, M)
    assert p.shape == (2, 3, 5, 7)
    torch.testing.assert_close(p.reshape(-1, 7), hddgeo.to_poincare(z.reshape(-1, 8), M), rtol=0, atol=0)
    back = hddgeo.from_poincare(p, M)
    assert back.shape == (2, 3, 5, 8)
    torch.testing.assert_close(plain(back), z, rtol=1e-10, atol=1e-12)
    assert hddgeo.to_poincare(z[0, 0, 0], M).shape == (7,)


def test_from_poincare_rejects_points_outside_the_ball():
    M = manifold(4.0)  # ball of radius 2
    with pytest.raises(ValueError, match="ball"):
        hddgeo.from_poincare(torch.tensor([[2.0, 0.0]], dtype=DT), M)
    with pytest.raises(ValueError, match="ball"):
        hddgeo.from_poincare(torch.tensor([[1.5, 1.5]], dtype=DT), M)
    # 1.9 is inside the radius-2 ball (but outside the unit ball)
    z = hddgeo.from_poincare(torch.tensor([[1.9, 0.0]], dtype=DT), M)
    assert float(manifold_error(z, 4.0)) < 1e-12


# ============================================================================= expmap / logmap
@pytest.mark.parametrize("k", KS)
def test_logmap_expmap_match_geoopt_and_invert(k):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(40)
    x, _, _ = wide_cloud(50, 4, k, g, rmax=3.0)
    y, _, _ = wide_cloud(50, 4, k, g, rmax=3.0)
    lg = plain(hddgeo.geometry.logmap(x, y, M))
    torch.testing.assert_close(lg, M.logmap(x, y), rtol=1e-8, atol=1e-8 * sk)
    torch.testing.assert_close(mink(x, lg), torch.zeros(50, dtype=DT), rtol=0, atol=1e-9 * k)
    torch.testing.assert_close(mink(lg, lg).sqrt(), M.dist(x, y), rtol=1e-8, atol=0)
    back = plain(hddgeo.geometry.expmap(x, lg, M))
    torch.testing.assert_close(back, y, rtol=1e-9, atol=1e-9 * sk)
    torch.testing.assert_close(back, M.expmap(x, lg), rtol=1e-9, atol=1e-9 * sk)


# ============================================================================= bad input
def _good(k=1.0, n=4, d=3, seed=50):
    M = manifold(k)
    z, _, _ = wide_cloud(n, d, k, gen(seed), rmax=2.0)
    return M, z


POINT_FUNCS = {
    "radius": lambda z, M: hddgeo.radius(z, M),
    "hierarchical_weights": lambda z, M: hddgeo.hierarchical_weights(z, M),
    "to_poincare": lambda z, M: hddgeo.to_poincare(z, M),
    "logmap0": lambda z, M: hddgeo.geometry.logmap0(z, M),
    "dist": lambda z, M: hddgeo.geometry.dist(z, z, M),
    "law_centroid": lambda z, M: hddgeo.law_centroid(z, M),
    "karcher_mean": lambda z, M: hddgeo.karcher_mean(z, M),
    "tangent_centroid": lambda z, M: hddgeo.tangent_centroid(z, M),
    "centroid": lambda z, M: hddgeo.centroid(z, M, method="karcher"),
    "frechet_objective": lambda z, M: hddgeo.frechet_objective(z[0], z, M),
}

SET_FUNCS = {name: f for name, f in POINT_FUNCS.items() if name in ("law_centroid", "karcher_mean", "tangent_centroid", "centroid")}


@pytest.mark.parametrize("name", sorted(POINT_FUNCS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_points_rejected(name, bad):
    M, z = _good()
    z = z.clone()
    z[1, 2] = bad
    with pytest.raises(ValueError, match="NaN"):
        POINT_FUNCS[name](z, M)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_rejected_by_lift(bad):
    M = manifold(1.0)
    v = torch.randn(3, 4, dtype=DT)
    v[0, 1] = bad
    with pytest.raises(ValueError, match="NaN"):
        hddgeo.lift(v, M)


@pytest.mark.parametrize("name", sorted(POINT_FUNCS))
@pytest.mark.parametrize("kind", ["scaled", "lower_sheet", "euclidean"])
def test_points_off_the_manifold_rejected(name, kind):
    M, z = _good()
    z = z.clone()
    if kind == "scaled":
        z[2] = 1.01 * z[2]
    elif kind == "lower_sheet":
        z[2] = -z[2]
    else:
        z = torch.randn(4, 4, generator=gen(51), dtype=DT)
    with pytest.raises(ValueError, match="manifold"):
        POINT_FUNCS[name](z, M)


@pytest.mark.parametrize("kval", [-1.0, 0.0])
def test_non_positive_k_rejected(kval):
    _, z = _good()
    M = geoopt.Lorentz(k=1.0)
    M.k.data = torch.tensor(kval)  # geoopt itself accepts k <= 0; make sure regardless of geoopt
    v = torch.randn(4, 2, dtype=DT)
    calls = [
        lambda: hddgeo.lift(v, M),
        lambda: hddgeo.from_poincare(torch.zeros(2, 2, dtype=DT), M),
        lambda: hddgeo.hdd_loss(v, v[:2], M),
        lambda: hddgeo.hdd_loss(v, v[:2], M, centroid="karcher"),
    ] + [lambda f=f: f(z, M) for f in POINT_FUNCS.values()]
    for call in calls:
        with pytest.raises(ValueError, match="k > 0"):
            call()


def test_geoopt_negative_k_construction_rejected():
    try:
        M = geoopt.Lorentz(k=-1.0)
    except Exception:  # pragma: no cover - a future geoopt may refuse by itself
        pytest.skip("geoopt refuses k <= 0 itself")
    with pytest.raises(ValueError, match="k > 0"):
        hddgeo.lift(torch.ones(2, 3, dtype=DT), M)


def test_not_a_lorentz_manifold_rejected():
    _, z = _good()
    for M in (geoopt.PoincareBall(), geoopt.Euclidean(), 1.0, None):
        with pytest.raises(TypeError, match="Lorentz"):
            hddgeo.lift(torch.ones(2, 3, dtype=DT), M)
        with pytest.raises(TypeError, match="Lorentz"):
            hddgeo.law_centroid(z, M)


@pytest.mark.parametrize("name", sorted(POINT_FUNCS))
def test_points_with_last_dim_one_rejected(name):
    M = manifold(1.0)
    z = torch.ones(4, 1, dtype=DT)
    with pytest.raises(ValueError, match="shape"):
        POINT_FUNCS[name](z, M)


@pytest.mark.parametrize("name", sorted(SET_FUNCS))
def test_centroid_of_unbatched_point_rejected(name):
    M, z = _good()
    with pytest.raises(ValueError, match="shape"):
        SET_FUNCS[name](z[0], M)


@pytest.mark.parametrize("name", sorted(SET_FUNCS))
def test_empty_sets_rejected(name):
    M, z = _good()
    with pytest.raises(ValueError, match="empty"):
        SET_FUNCS[name](z[:0], M)
    with pytest.raises(ValueError, match="empty"):
        SET_FUNCS[name](z[:0].unsqueeze(0).expand(3, 0, 4), M)


@pytest.mark.parametrize("method", ["law", "karcher", "tangent"])
def test_bad_weights_rejected(method):
    M, z = _good()
    f = lambda w: hddgeo.centroid(z, M, method=method, weights=w)
    with pytest.raises(ValueError, match="negative"):
        f(torch.tensor([1.0, -0.5, 1.0, 1.0], dtype=DT))
    with pytest.raises(ValueError, match="zero"):
        f(torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match="NaN"):
        f(torch.tensor([1.0, float("nan"), 1.0, 1.0], dtype=DT))
    with pytest.raises(ValueError, match="weight"):
        f(torch.ones(5, dtype=DT))
    # one all-zero set in a batch
    zb = z.unsqueeze(0).expand(2, 4, 4)
    w = torch.ones(2, 4, dtype=DT)
    w[1] = 0
    with pytest.raises(ValueError, match="zero"):
        hddgeo.centroid(zb, M, method=method, weights=w)


def test_unknown_centroid_method_rejected():
    M, z = _good()
    with pytest.raises(ValueError, match="unknown centroid"):
        hddgeo.centroid(z, M, method="frechet")
    v = torch.randn(5, 3, dtype=DT)
    with pytest.raises(ValueError, match="unknown centroid"):
        hddgeo.hdd_loss(v, v, M, centroid="frechet")


def test_other_bad_arguments_rejected():
    M, z = _good()
    with pytest.raises(ValueError, match="max_norm"):
        hddgeo.lift(torch.ones(2, 3, dtype=DT), M, max_norm=0.0)
    with pytest.raises(ValueError, match="max_norm"):
        hddgeo.lift(torch.ones(2, 3, dtype=DT), M, max_norm=-1.0)
    with pytest.raises(ValueError, match="tol"):
        hddgeo.karcher_mean(z, M, tol=-1.0)
    with pytest.raises(ValueError, match="backward"):
        hddgeo.karcher_mean(z, M, backward="finite")
    with pytest.raises(TypeError, match="floating"):
        hddgeo.lift(torch.ones(2, 3, dtype=torch.int64), M)
    with pytest.raises(ValueError, match="shape"):
        hddgeo.lift(torch.ones(2, 0, dtype=DT), M)
    with pytest.raises(ValueError, match="broadcast"):
        hddgeo.geometry.dist(z[:3], z, M)
    with pytest.raises(TypeError, match="Tensor"):
        hddgeo.lift(np.ones((2, 3)), M)
