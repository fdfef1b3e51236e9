"""The fast paths of the centroids: implicit logmaps, Hessian products and the analytic backward of the
Karcher mean, the lift's explicit vector-Jacobian product, the one-point shortcut, Law's frame path and
the one-pass input checks.

References are independent of the code under test: the explicit per-point logmaps
(``_frame_logs``, autograd through them), autograd Hessians of the Frechet objective written from
``_frame_exp`` and ``cosh_theta_minus_one``, closed forms of ``expmap0`` written here, finite
differences and mpmath.
"""
import math

import pytest
import torch

import hddgeo
from geometry_helpers import DT, KS, from_polar, gen, manifold, mp_dist_from_spatial, plain, random_weights, tight_cloud, wide_cloud
from hddgeo.geometry import _karcher_math as C
from hddgeo.geometry import _math as L
from hddgeo.geometry.lorentz import check_finite

mpmath = pytest.importorskip("mpmath")


def _pad(x):
    return torch.cat([torch.zeros_like(x[..., :1]), x], dim=-1)


def _frame_logs_at(z, w, k, move):
    """The implicit logmaps of sets ``z`` ``(B, n, D)`` at the Law centroid moved by the frame vectors ``move``,
    so that ``x`` is not along the reference direction (``e != 0``).  Returns the object and ``x``'s spatial part."""
    kt = torch.tensor(k, dtype=DT)
    sk = kt.sqrt()
    x0s = L._law(z, w, kt)[..., 1:]
    pts = C._points_about(z, x0s, sk)
    xs = _pad(L._frame_exp(x0s, move, sk))
    _, n = L._polar(xs, sk)
    e_dm = C._dot_rows((n - pts[3]).unsqueeze(-2), pts[1]).transpose(-1, -2)
    return C._FrameLogs(pts, xs, e_dm, w, sk), xs[..., 1:]


def _clouds(k, g):
    """Wide, tight-and-far (radius 10, angular spread 1e-5) and near-origin sets with a point exactly at the origin."""
    zw, _, _ = wide_cloud(9, 4, k, g, rmax=10.0)
    zt, _, _ = tight_cloud(9, 4, k, g, radius=10.0, spread=1e-5)
    zo, _, _ = wide_cloud(9, 4, k, g, rmax=1.0)
    zo[0] = 0
    zo[0, 0] = math.sqrt(k)
    return torch.stack([zw, zt, zo])


def _moves(g, sk, scale):
    return scale * sk * torch.randn(3, 4, generator=g, dtype=DT)


@pytest.mark.parametrize("k", KS)
def test_implicit_logmaps_equal_the_explicit_ones(k):
    g = gen(300)
    z = _clouds(k, g)
    w = random_weights((3, 9), g)
    w = w / w.sum(-1, keepdim=True)
    # moves of 1e-6 (Newton's last steps) and 0.3 (its first) away from the Law centroid
    for scale in (1e-6, 0.3):
        logs, xs = _frame_logs_at(z, w, k, _moves(g, math.sqrt(k), scale))
        explicit, theta = L._frame_logs(xs.unsqueeze(-2), z[..., 1:], math.sqrt(k))
        # float64 resolves a point at radius b only to ~eps sinh(b) sqrt(k): both forms carry that error
        sinh_b = L._polar(z[..., 1:], math.sqrt(k))[0].amax((-1, -2))
        bound = 1e-12 * explicit.norm(dim=-1).max(-1).values + 16 * torch.finfo(DT).eps * sinh_b * math.sqrt(k)
        torch.testing.assert_close(logs.theta, theta, rtol=1e-11, atol=1e-13)
        u = torch.randn(3, 9, generator=g, dtype=DT)
        ref_t = (u.unsqueeze(-1) * explicit).sum(-2)
        assert bool(((logs.apply_t(u)[..., 1:] - ref_t).norm(dim=-1) <= bound * u.abs().sum(-1)).all())
        v = torch.randn(3, 4, generator=g, dtype=DT)
        ref = (explicit * v.unsqueeze(-2)).sum(-1)
        assert bool(((logs.apply(_pad(v)) - ref).abs().max(-1).values <= bound * v.norm(dim=-1)).all())
        assert bool(((logs.grad[..., 1:] - (w.unsqueeze(-1) * explicit).sum(-2)).norm(dim=-1) <= bound).all())


def _frechet_half(xs, z, w, sk):
    """``v -> sum_i w_i d(Exp_x(v), z_i)^2 / 2`` written from the explicit maps."""

    def f(v):
        moved = L._frame_exp(xs, v, sk)
        h = L.cosh_theta_minus_one(moved.unsqueeze(-2), z[..., 1:], sk)
        theta = 2 * torch.asinh(L.safe_sqrt(h / 2))
        return sk * sk * (w * theta * theta).sum(-1) / 2

    return f


@pytest.mark.parametrize("k", KS)
def test_hessian_products_equal_the_autograd_hessian(k):
    sk = math.sqrt(k)
    g = gen(301)
    z = _clouds(k, g)
    w = random_weights((3, 9), g)
    w = w / w.sum(-1, keepdim=True)
    logs, xs = _frame_logs_at(z, w, k, _moves(g, sk, 0.2))
    eye = torch.eye(4, dtype=DT)
    for b in range(3):
        f = _frechet_half(xs[b], z[b], w[b], sk)
        # normal coordinates: the Euclidean Hessian at 0 is the Riemannian one.  _frame_exp's norm has a
        # zero derivative exactly at 0 by design, so differentiate a hair away from it
        v0 = 1e-6 * sk * torch.nn.functional.normalize(torch.randn(4, generator=g, dtype=DT), dim=0)
        H = torch.autograd.functional.hessian(f, v0)
        grad = torch.autograd.functional.jacobian(f, torch.zeros(4, dtype=DT))
        cols = torch.stack([logs.hvp(_pad(eye[j]).expand(3, 5))[b, 1:] for j in range(4)], dim=-1)
        torch.testing.assert_close(cols, H, rtol=1e-5, atol=1e-5 * float(H.abs().max()))
        torch.testing.assert_close(logs.grad[b, 1:], -grad, rtol=1e-9, atol=1e-10 * sk)
        ev = torch.linalg.eigvalsh((H + H.T) / 2)
        assert float(ev.min()) >= 1 - 1e-8 and float(ev.max()) <= float(logs.alpha[b]) * (1 + 1e-8)


def _explicit_lam_g(xs, w, lam, sk):
    """``lam . sum_i w_i Log_x(z_i)`` as a function of the spatial parts, through the explicit logmaps."""
    return lambda zs: (lam.unsqueeze(-2) * (w.unsqueeze(-1) * L._frame_logs(xs.unsqueeze(-2), zs, sk)[0])).sum((-1, -2))


@pytest.mark.parametrize("k", KS)
def test_backward_vjp_equals_autograd_and_finite_differences(k):
    sk = math.sqrt(k)
    g = gen(302)
    z = _clouds(k, g)
    w_raw = random_weights((3, 9), g)
    w = w_raw / w_raw.sum(-1, keepdim=True)
    # one set's mean sits exactly at the origin (sinh a = 0, no direction n)
    z[2, 1:] = z[2, 1:].flip(-2)
    for at_origin in (False, True):
        logs, xs = _frame_logs_at(z, w, k, _moves(g, sk, 0.2))
        if at_origin:
            xs = xs.clone()
            xs[2] = 0
            _, n = L._polar(_pad(xs), sk)
            dm2 = L._directions_about(z, logs.mu, sk)[2]
            e_dm = C._dot_rows((n - logs.mu).unsqueeze(-2), logs.dm).transpose(-1, -2)
            logs = C._FrameLogs((logs.sb, logs.dm, dm2, logs.mu), _pad(xs), e_dm, w, sk)
        lam = torch.randn(3, 4, generator=g, dtype=DT)
        gz, lam_l = logs.vjp(_pad(lam), needs_w=True)
        assert bool((gz[..., 0] == 0).all())
        zs = z[..., 1:].clone().requires_grad_(True)
        ww = w.clone().requires_grad_(True)
        f = _explicit_lam_g(xs, ww, lam, sk)
        ref_z, ref_w = torch.autograd.grad(f(zs).sum(), (zs, ww))
        scale = ref_z.abs().max()
        torch.testing.assert_close(gz[..., 1:], ref_z, rtol=1e-9, atol=1e-10 * float(scale))
        torch.testing.assert_close(lam_l * 1.0, ref_w, rtol=1e-9, atol=1e-10 * float(ref_w.abs().max()))
        # central differences along a random direction of every point (no autograd in the reference)
        dz = torch.randn(3, 9, 4, generator=g, dtype=DT)
        eps = 1e-4 * sk
        with torch.no_grad():
            fd = (f(z[..., 1:] + eps * dz) - f(z[..., 1:] - eps * dz)) / (2 * eps)
        # far out (radius 10) a move of eps in z_s is a move of ~eps/sinh(10) on the manifold: compare per set
        torch.testing.assert_close((gz[..., 1:] * dz).sum((-1, -2)), fd, rtol=1e-5, atol=1e-7 * float(scale))


def _expmap0_own(v, k, max_norm=None):
    """``(sk cosh t, sk sinh t v/|v|)`` with ``t = |v|/sk`` clipped at ``max_norm`` (no zero vectors)."""
    sk = k.sqrt() if torch.is_tensor(k) else math.sqrt(k)
    r = v.norm(dim=-1, keepdim=True)
    t = r / sk
    if max_norm is not None:
        t = torch.where(t > max_norm, torch.full_like(t, max_norm), t)
    return torch.cat([sk * torch.cosh(t), sk * torch.sinh(t) * v / r], dim=-1)


@pytest.mark.parametrize("max_norm", [None, 2.5])
def test_lift_vjp_equals_autograd_of_the_closed_form_in_v_and_k(max_norm):
    g = gen(303)
    v = torch.randn(6, 5, generator=g, dtype=DT) * torch.tensor([[0.01], [0.4], [1.0], [2.0], [3.5], [7.0]], dtype=DT)
    up = torch.randn(6, 6, generator=g, dtype=DT)
    for k0 in KS:
        vv = v.clone().requires_grad_(True)
        kk = torch.tensor(k0, dtype=DT, requires_grad=True)
        gv, gk = torch.autograd.grad((L._lift(vv, kk, max_norm) * up).sum(), (vv, kk))
        rv, rk = torch.autograd.grad((_expmap0_own(vv, kk, max_norm) * up).sum(), (vv, kk))
        torch.testing.assert_close(gv, rv, rtol=1e-11, atol=1e-12 * float(rv.abs().max()))
        torch.testing.assert_close(gk, rk, rtol=1e-11, atol=1e-12 * float(rk.abs().max()))
    # second order (the backward is differentiable), and in v also with a zero feature
    kk = torch.tensor(0.7, dtype=DT, requires_grad=True)
    # (moderate radii: finite differences of coordinates of size sinh(18) are noise)
    assert torch.autograd.gradgradcheck(lambda a, b: L._lift(a, b, max_norm), (v[:4].clone().requires_grad_(True), kk))
    v0 = v[:4].clone()
    v0[0] = 0
    v0.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda a: L._lift(a, 0.7, max_norm), (v0,))


def test_karcher_of_one_point_is_the_point_exactly_with_gradients():
    k = 1.0
    M = manifold(k)
    g = gen(304)
    r = torch.tensor([0.0, 3.0, 10.0, 23.0], dtype=DT)
    u = torch.nn.functional.normalize(torch.randn(4, 5, generator=g, dtype=DT), dim=-1)
    z = from_polar(r, u, k).unsqueeze(-2)  # (4, 1, 6): four sets of one point
    zz = z.clone().requires_grad_(True)
    w = random_weights((4, 1), g).requires_grad_(True)
    c, info = hddgeo.karcher_mean(zz, M, weights=w, return_info=True)
    assert torch.equal(plain(c).detach(), z[:, 0])
    assert info.iterations == 0 and bool(info.converged.all()) and bool((info.grad_norm == 0).all())
    up = torch.randn(4, 6, generator=g, dtype=DT)
    gz, gw = torch.autograd.grad((plain(c) * up).sum(), (zz, w))
    torch.testing.assert_close(gz[:, 0], up, rtol=0, atol=0)
    # d(w / sum w)/dw = 0; autograd's 1/w - w/w^2 leaves rounding of the size of the upstream term
    assert float(gw.abs().max()) <= 1e-15 * float((z[:, 0].abs() * up.abs()).sum(-1).max() / w.detach().min())
    # the same set as three copies goes through Newton and the implicit backward: the same point, and in
    # the chart z_0 = sqrt(k + |z_s|^2) the copies' gradients add up to the one point's
    z3 = z[:2].expand(2, 3, 6).clone().requires_grad_(True)
    c3 = hddgeo.karcher_mean(z3, M)
    assert float(hddgeo.geometry.dist(c3.detach(), z[:2, 0], M).max()) < 1e-10
    (g3,) = torch.autograd.grad((plain(c3) * up[:2]).sum(), z3)
    x = z[:2, 0]
    chart = lambda gr: gr[..., 1:] + gr[..., :1] * x[..., 1:] / x[..., :1]
    torch.testing.assert_close(chart(g3.sum(1)), chart(up[:2]), rtol=1e-8, atol=1e-8 * float(up.abs().max()))


def test_karcher_unreachable_tolerance_stops_at_max_iter_finite_and_converged_as_far_as_possible():
    k = 1.0
    M = manifold(k)
    z, _, _ = wide_cloud(40, 6, k, gen(305), rmax=10.0, shape=(2,))
    c_ref = hddgeo.karcher_mean(z, M)
    c, info = hddgeo.karcher_mean(z, M, tol=0.0, max_iter=12, warn=False, return_info=True)
    assert info.iterations <= 12 and bool(torch.isfinite(plain(c)).all())
    assert float(info.grad_norm.max()) < 1e-12
    assert float(hddgeo.geometry.dist(c, c_ref, M).max()) < 1e-10


def test_law_far_out_tight_cloud_matches_mpmath():
    """Radius 12 and angular spread 1e-6: -<zbar, zbar>_L cancels in float64, so the frame path runs."""
    k = 1.0
    M = manifold(k)
    g = gen(306)
    z, _, _ = tight_cloud(12, 4, k, g, radius=12.0, spread=1e-6, shape=(2,))
    w = random_weights((2, 12), g)
    zbar = ((w / w.sum(-1, keepdim=True)).unsqueeze(-1) * z).sum(-2)
    q = zbar[..., 0] ** 2 - (zbar[..., 1:] ** 2).sum(-1)
    assert bool((8 * torch.finfo(DT).eps * zbar[..., 0] ** 2 > 1e-9 * q).all()), "test of the test: the frame path runs"
    c = plain(hddgeo.law_centroid(z, M, weights=w))
    with mpmath.workdps(60):
        for b in range(2):
            pts = [[mpmath.mpf(float(a)) for a in z[b, i, 1:]] for i in range(12)]
            ws = [mpmath.mpf(float(a)) for a in w[b]]
            tot = mpmath.fsum(ws)
            zb0 = mpmath.fsum(wi * mpmath.sqrt(k + mpmath.fsum(a * a for a in p)) for wi, p in zip(ws, pts)) / tot
            zbs = [mpmath.fsum(wi * p[j] for wi, p in zip(ws, pts)) / tot for j in range(4)]
            scale = mpmath.sqrt(k) / mpmath.sqrt(zb0 ** 2 - mpmath.fsum(a * a for a in zbs))
            ref = [a * scale for a in zbs]
            assert mp_dist_from_spatial(c[b, 1:].tolist(), ref, k) < 1e-9


def test_one_pass_checks_still_catch_non_finite_values_and_accept_huge_finite_ones():
    M = manifold(1.0)
    v = torch.randn(3, 50, 8, generator=gen(307), dtype=DT)
    for bad in (float("nan"), float("inf"), -float("inf")):
        vb = v.clone()
        vb[1, 7, 3] = bad
        with pytest.raises(ValueError, match="1 NaN/inf"):
            hddgeo.lift(vb, M)
        z = plain(hddgeo.lift(v, M)).clone()
        z[2, 4, 0 if bad != bad else 5] = bad
        with pytest.raises(ValueError, match="NaN/inf"):
            hddgeo.law_centroid(z, M)
    # a sum of finite values may overflow: that alone must not be reported as non-finite
    huge = torch.full((4, 3), 1e308, dtype=DT)
    check_finite(huge, "huge")
    # a point off the manifold is still reported as such
    z = plain(hddgeo.lift(v, M)).clone()
    z[0, 0, 0] *= 1.01
    with pytest.raises(ValueError, match="not on the Lorentz manifold"):
        hddgeo.karcher_mean(z, M)


def test_law_gradient_on_its_frame_path_matches_mpmath_differences():
    """Where -<zbar, zbar>_L cancels (radius 12, spread 1e-6) the value comes from the frame and the
    derivative from the closed form: d<c, up>/dv along random directions equals central differences of
    Law's centroid evaluated in 60-digit arithmetic."""
    k = 1.0
    M = manifold(k)
    g = gen(308)
    z, r, u = tight_cloud(6, 3, k, g, radius=12.0, spread=1e-6)
    v = (r.unsqueeze(-1) * u).requires_grad_(True)  # Log_o of the points: lift(v) = z
    up = torch.randn(4, generator=g, dtype=DT)
    (gv,) = torch.autograd.grad((plain(hddgeo.law_centroid(hddgeo.lift(v, M), M)) * up).sum(), v)

    def mp_objective(vm):
        pts = []
        for row in vm:
            nrm = mpmath.sqrt(mpmath.fsum(a * a for a in row))
            pts.append([mpmath.cosh(nrm)] + [mpmath.sinh(nrm) * a / nrm for a in row])
        zb = [mpmath.fsum(p[j] for p in pts) / len(pts) for j in range(4)]
        scale = 1 / mpmath.sqrt(zb[0] ** 2 - mpmath.fsum(a * a for a in zb[1:]))
        return mpmath.fsum(mpmath.mpf(float(up[j])) * zb[j] * scale for j in range(4))

    with mpmath.workdps(60):
        base = [[mpmath.mpf(float(a)) for a in row] for row in v.detach()]
        h = mpmath.mpf("1e-20")
        for _ in range(3):
            dv = torch.randn(6, 3, generator=g, dtype=DT)
            dvm = [[mpmath.mpf(float(a)) for a in row] for row in dv]
            plus = [[a + h * b for a, b in zip(ra, rb)] for ra, rb in zip(base, dvm)]
            minus = [[a - h * b for a, b in zip(ra, rb)] for ra, rb in zip(base, dvm)]
            fd = float((mp_objective(plus) - mp_objective(minus)) / (2 * h))
            ours = float((gv * dv).sum())
            assert abs(ours - fd) <= 1e-7 * abs(fd) + 1e-9 * float(gv.abs().sum()), (ours, fd)
