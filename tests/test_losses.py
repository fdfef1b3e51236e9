"""Matching losses: hdd_loss (HDD, paper Eq. 13) and euclidean_mean_loss (DM), checked against the public API."""
import math

import numpy as np
import pytest
import torch

import hddgeo
from geometry_helpers import DT, KS, gen, manifold, plain, random_directions, random_weights

from hddgeo.geometry._math import _lift
from hddgeo.losses import Matcher, euclidean_mean_loss

METHODS = ("law", "karcher", "tangent")


def _features(shape, k, g, scale=2.0):
    return scale * math.sqrt(k) * torch.randn(*shape, generator=g, dtype=DT)


def _public_loss(vr, vs, M, scale=20.0, method="law", max_norm=10.0, wr=None, ws=None, **kw):
    """``scale * dist(centroid(lift(v_r)), centroid(lift(v_s)))`` from the public geometry API (without the
    convergence warning, which the loss, its counterpart, never gives)."""
    if method == "karcher":
        kw = {"warn": False, **kw}
    cr = hddgeo.centroid(hddgeo.lift(vr, M, max_norm=max_norm), M, method=method, weights=wr, **kw)
    cs = hddgeo.centroid(hddgeo.lift(vs, M, max_norm=max_norm), M, method=method, weights=ws, **kw)
    return scale * hddgeo.geometry.dist(cr, cs, M)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", KS)
def test_hdd_loss_zero_for_identical_sets(method, k):
    M = manifold(k)
    g = gen(200)
    v = _features((3, 20, 8), k, g)
    loss = hddgeo.hdd_loss(v, v.clone(), M, centroid=method)
    assert loss.shape == () and float(loss) == 0.0
    # the same set in another order: zero up to rounding
    perm = torch.randperm(20, generator=g)
    assert float(hddgeo.hdd_loss(v, v[:, perm], M, centroid=method)) < 1e-8
    # and a different set is not at zero distance
    assert float(hddgeo.hdd_loss(v, v[:, :10], M, centroid=method)) > 1e-3


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", KS)
def test_hdd_loss_gradient_finite_at_identical_sets(method, k):
    M = manifold(k)
    g = gen(201)
    vr = _features((2, 10, 4), k, g)
    vs = vr.clone().requires_grad_(True)
    (gs,) = torch.autograd.grad(hddgeo.hdd_loss(vr, vs, M, centroid=method), vs)
    assert bool(torch.isfinite(gs).all())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("max_norm", [None, 10.0, 1.5])
def test_hdd_loss_equals_public_api_composition(method, k, max_norm):
    M = manifold(k)
    g = gen(202)
    vr = _features((50, 6), k, g, scale=3.0)
    vs = _features((7, 6), k, g, scale=3.0)  # different set sizes
    for scale in (20.0, 3.5):
        loss = hddgeo.hdd_loss(vr, vs, M, scale=scale, centroid=method, max_norm=max_norm)
        ref = _public_loss(vr, vs, M, scale=scale, method=method, max_norm=max_norm)
        assert loss.shape == ()
        assert float(loss) == pytest.approx(float(ref), rel=1e-10, abs=1e-12)
        assert float(loss) > 0


@pytest.mark.parametrize("method", METHODS)
def test_hdd_loss_defaults_are_scale_20_law_and_max_norm_10(method):
    k = 1.0
    M = manifold(k)
    g = gen(203)
    # ConvNet-like features: norm ~ 23 with a tiny spread, so the clip at 10 is active
    vr = 23 * random_directions((30,), 16, g) * (1 + 0.01 * torch.rand(30, 1, generator=g, dtype=DT))
    vs = 23 * random_directions((5,), 16, g)
    default = hddgeo.hdd_loss(vr, vs, M)
    assert float(default) == pytest.approx(float(_public_loss(vr, vs, M, scale=20.0, method="law", max_norm=10.0)), rel=1e-12)
    assert float(hddgeo.hdd_loss(vr, vs, M, centroid=method)) == pytest.approx(
        float(_public_loss(vr, vs, M, method=method)), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", KS)
def test_hdd_loss_clipping_equals_rescaled_features(method, k):
    """With max_norm active, the loss equals the unclipped loss of features rescaled to norm max_norm*sqrt(k)."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(204)
    vr = random_directions((40,), 8, g) * (sk * (12 + 5 * torch.rand(40, 1, generator=g, dtype=DT)))
    vs = random_directions((6,), 8, g) * (sk * (12 + 5 * torch.rand(6, 1, generator=g, dtype=DT)))
    mn = 10.0
    clipped = hddgeo.hdd_loss(vr, vs, M, centroid=method, max_norm=mn)
    resc = lambda v: v / v.norm(dim=-1, keepdim=True) * mn * sk
    ref = hddgeo.hdd_loss(resc(vr), resc(vs), M, centroid=method, max_norm=None)
    assert float(clipped) == pytest.approx(float(ref), rel=1e-9)
    unclipped = hddgeo.hdd_loss(vr, vs, M, centroid=method, max_norm=None)
    assert abs(float(unclipped) - float(clipped)) > 1e-3 * float(clipped)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1.0, 2.0])
def test_hdd_loss_ipc1_unclipped_features_never_silently_wrong(method, k):
    """IPC = 1 with max_norm=None and ConvNet-like features (norm ~23): the synthetic centroid is the
    lifted feature itself, so the loss is scale * d(centroid(real), lift(v_syn)).  The loss must be
    that value -- never a silent 0 or inf/NaN.  (Refusing with a ValueError would also be acceptable.)"""
    M = manifold(k)
    g = gen(212)
    C = 3
    vr = 23 * random_directions((C, 30), 16, g) * (1 + 0.01 * torch.rand(C, 30, 1, generator=g, dtype=DT))
    vs = 23 * random_directions((C, 1), 16, g)
    # at radius ~23 sqrt(k) float64 coordinates resolve only ~5e-7 sqrt(k): ask the Karcher mean for that
    kw = {"tol": 1e-6 * math.sqrt(k), "max_iter": 20} if method == "karcher" else {}
    try:
        loss = hddgeo.hdd_loss(vr, vs, M, centroid=method, max_norm=None, reduction="none", **kw)
    except ValueError:
        return
    assert bool(torch.isfinite(loss).all()), loss
    # Law of 30 spread-out points is well conditioned: the public centroid is a fine reference
    cr = hddgeo.centroid(hddgeo.lift(vr, M), M, method=method, **kw)
    assert bool(torch.isfinite(cr).all()), "the public centroid of the real sets is not finite"
    expected = 20.0 * hddgeo.geometry.dist(cr, hddgeo.lift(vs, M)[:, 0], M)
    assert bool((loss > 0.5 * expected).all()), (loss, expected)
    # float64 coordinates of a point at radius r resolve it only to ~eps sinh(r/sqrt(k)) sqrt(k)
    resolution = 20 * torch.finfo(DT).eps * math.sinh(24 / math.sqrt(k)) * math.sqrt(k)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=20.0 * resolution)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", KS)
def test_hdd_loss_batched_sums_per_class_losses(method, k):
    M = manifold(k)
    g = gen(205)
    C = 4
    vr = _features((C, 30, 5), k, g)
    vs = _features((C, 3, 5), k, g)
    per_class = torch.stack([hddgeo.hdd_loss(vr[c], vs[c], M, centroid=method) for c in range(C)])
    total = hddgeo.hdd_loss(vr, vs, M, centroid=method)
    assert total.shape == ()
    assert float(total) == pytest.approx(float(per_class.sum()), rel=1e-10)
    none = hddgeo.hdd_loss(vr, vs, M, centroid=method, reduction="none")
    assert none.shape == (C,)
    torch.testing.assert_close(none, per_class, rtol=1e-10, atol=0)
    assert float(hddgeo.hdd_loss(vr, vs, M, centroid=method, reduction="mean")) == pytest.approx(float(per_class.mean()), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_hdd_loss_weights(method):
    k = 0.5
    M = manifold(k)
    g = gen(206)
    vr = _features((2, 20, 4), k, g)
    vs = _features((2, 4, 4), k, g)
    wr = random_weights((2, 20), g)
    ws = random_weights((2, 4), g)
    loss = hddgeo.hdd_loss(vr, vs, M, centroid=method, weights_real=wr, weights_syn=ws, reduction="none")
    ref = _public_loss(vr, vs, M, method=method, wr=wr, ws=ws)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    unweighted = hddgeo.hdd_loss(vr, vs, M, centroid=method, reduction="none")
    assert float((loss - unweighted).abs().max()) > 1e-6
    with pytest.raises(ValueError, match="negative"):
        hddgeo.hdd_loss(vr, vs, M, centroid=method, weights_real=-wr)


def test_hdd_loss_symmetric_and_scales_linearly():
    k = 2.0
    M = manifold(k)
    g = gen(207)
    vr = _features((3, 12, 5), k, g)
    vs = _features((3, 4, 5), k, g)
    for method in METHODS:
        a = hddgeo.hdd_loss(vr, vs, M, centroid=method)
        b = hddgeo.hdd_loss(vs, vr, M, centroid=method)
        assert float(a) == pytest.approx(float(b), rel=1e-12)
        assert float(hddgeo.hdd_loss(vr, vs, M, centroid=method, scale=1.0)) * 20 == pytest.approx(float(a), rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_hdd_loss_dtype_and_gradient_reach_float32_synthetic_features(method):
    k = 1.0
    M = manifold(k)
    g = gen(208)
    vr = _features((2, 16, 6), k, g).float()
    vs = _features((2, 3, 6), k, g).float().requires_grad_(True)
    loss = hddgeo.hdd_loss(vr, vs, M, centroid=method)
    assert loss.dtype == torch.float64
    loss.backward()
    assert vs.grad is not None and vs.grad.dtype == torch.float32
    assert bool(torch.isfinite(vs.grad).all()) and float(vs.grad.abs().sum()) > 0
    ref = _public_loss(vr.double(), vs.detach().double(), M, method=method).sum()
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-10)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("method", METHODS)
def test_hdd_loss_gradcheck_through_both_sets(k, method):
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(209)
    vr = (1.5 * sk * torch.randn(2, 4, 3, generator=g, dtype=DT)).requires_grad_(True)
    vs = (1.5 * sk * torch.randn(2, 2, 3, generator=g, dtype=DT)).requires_grad_(True)
    kw = {"tol": 1e-13 * sk} if method == "karcher" else {}
    f = lambda a, b: hddgeo.hdd_loss(a, b, M, scale=3.0, centroid=method, max_norm=None, reduction="none", **kw)
    assert torch.autograd.gradcheck(f, (vr, vs), eps=1e-6, atol=1e-6, rtol=1e-5)
    # with the clip active on some features (away from the kink)
    vr2 = vr.detach()[:1].clone()
    vr2[:, 0] = vr2[:, 0] / vr2[:, 0].norm(dim=-1, keepdim=True) * 4 * sk
    vr2.requires_grad_(True)
    f2 = lambda a, b: hddgeo.hdd_loss(a, b, M, scale=3.0, centroid=method, max_norm=2.0, **kw)
    assert torch.autograd.gradcheck(f2, (vr2, vs[:1].detach().clone().requires_grad_(True)), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("k", KS)
def test_hdd_loss_karcher_implicit_gradient_matches_public_unrolled(k):
    """hdd_loss(centroid='karcher') gradients equal those through karcher_mean(backward='unroll')."""
    M = manifold(k)
    sk = math.sqrt(k)
    g = gen(210)
    vr = 2 * sk * torch.randn(12, 4, generator=g, dtype=DT)
    vs = (2 * sk * torch.randn(3, 4, generator=g, dtype=DT)).requires_grad_(True)
    (gi,) = torch.autograd.grad(hddgeo.hdd_loss(vr, vs, M, centroid="karcher", tol=1e-13 * sk), vs)
    vs2 = vs.detach().clone().requires_grad_(True)
    cr = hddgeo.karcher_mean(hddgeo.lift(vr, M, max_norm=10.0), M, backward="unroll", tol=1e-14 * sk, max_iter=3000)
    cs = hddgeo.karcher_mean(hddgeo.lift(vs2, M, max_norm=10.0), M, backward="unroll", tol=1e-14 * sk, max_iter=3000)
    (gu,) = torch.autograd.grad(20.0 * hddgeo.geometry.dist(cr, cs, M), vs2)
    assert float((gi - gu).norm() / gu.norm()) < 1e-7


def test_hdd_loss_passes_karcher_options():
    """tol / max_iter reach the Karcher mean: max_iter=0 keeps the Law initialisation, as in karcher_mean."""
    k = 1.0
    M = manifold(k)
    g = gen(211)
    vr = 3 * torch.randn(40, 5, generator=g, dtype=DT)
    vs = 3 * torch.randn(4, 5, generator=g, dtype=DT)
    one = hddgeo.hdd_loss(vr, vs, M, centroid="karcher", max_iter=1)
    ref_one = _public_loss(vr, vs, M, method="karcher", max_iter=1)
    assert float(one) == pytest.approx(float(ref_one), rel=1e-12)
    zero = hddgeo.hdd_loss(vr, vs, M, centroid="karcher", max_iter=0)
    ref_zero = _public_loss(vr, vs, M, method="karcher", max_iter=0)
    assert float(ref_zero) == pytest.approx(float(hddgeo.hdd_loss(vr, vs, M, centroid="law")), rel=1e-12)
    assert float(zero) == pytest.approx(float(ref_zero), rel=1e-12), "max_iter=0 must be honoured, not replaced by the default"


# ----------------------------------------------------------------------------- euclidean_mean_loss
def test_euclidean_mean_loss_closed_form():
    g = gen(220)
    vr = torch.randn(3, 30, 7, generator=g, dtype=DT)
    vs = torch.randn(3, 5, 7, generator=g, dtype=DT)
    per = [float(((vr[c].sum(0) / 30 - vs[c].sum(0) / 5) ** 2).sum()) for c in range(3)]
    assert float(hddgeo.euclidean_mean_loss(vr, vs)) == pytest.approx(sum(per), rel=1e-13)
    torch.testing.assert_close(hddgeo.euclidean_mean_loss(vr, vs, reduction="none"), torch.tensor(per, dtype=DT), rtol=1e-13, atol=0)
    assert float(hddgeo.euclidean_mean_loss(vr, vs, reduction="mean")) == pytest.approx(sum(per) / 3, rel=1e-13)
    assert float(hddgeo.euclidean_mean_loss(vr[0], vs[0])) == pytest.approx(per[0], rel=1e-13)
    assert float(hddgeo.euclidean_mean_loss(vr, vr.flip(1))) < 1e-25
    # gradient of |mean_r - mean_s|^2 w.r.t. each synthetic sample: -2 (mean_r - mean_s) / m
    vs_ = vs.clone().requires_grad_(True)
    hddgeo.euclidean_mean_loss(vr, vs_).backward()
    expected = (-2 * (vr.mean(1) - vs.mean(1)) / 5).unsqueeze(1).expand_as(vs)
    torch.testing.assert_close(vs_.grad, expected, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("loss", ["hdd", "euclidean"])
def test_losses_reject_bad_input(loss):
    M = manifold(1.0)
    f = (lambda a, b, **kw: hddgeo.hdd_loss(a, b, M, **kw)) if loss == "hdd" else hddgeo.euclidean_mean_loss
    v = torch.randn(2, 6, 4, dtype=DT)
    with pytest.raises(ValueError, match="dimension"):
        f(v, torch.randn(2, 3, 5, dtype=DT))
    with pytest.raises(ValueError, match="class"):
        f(v, torch.randn(3, 3, 4, dtype=DT))
    with pytest.raises(ValueError, match="both"):
        f(v, torch.randn(3, 4, dtype=DT))
    with pytest.raises(ValueError, match="both"):
        f(v[0, 0], v[0, 0])
    with pytest.raises(ValueError, match="empty"):
        f(v, v[:, :0])
    with pytest.raises(ValueError, match="empty"):
        f(v[:, :0], v)
    bad = v.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        f(bad, v)
    bad[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN"):
        f(v, bad)
    with pytest.raises(ValueError, match="reduction"):
        f(v, v, reduction="max")


def test_hdd_loss_rejects_bad_options():
    M = manifold(1.0)
    v = torch.randn(6, 4, dtype=DT)
    with pytest.raises(ValueError, match="unknown centroid"):
        hddgeo.hdd_loss(v, v, M, centroid="einstein")
    with pytest.raises(ValueError, match="max_norm"):
        hddgeo.hdd_loss(v, v, M, max_norm=0.0)
    with pytest.raises(ValueError, match="weight"):
        hddgeo.hdd_loss(v, v, M, weights_syn=torch.ones(5, dtype=DT))
    with pytest.raises(ValueError, match="zero"):
        hddgeo.hdd_loss(v, v, M, weights_syn=torch.zeros(6, dtype=DT))


@pytest.mark.parametrize("method", METHODS)
def test_hdd_loss_float32_geometry_when_asked(method):
    """dtype=None keeps float32; at moderate radii it agrees with the float64 loss to float32 accuracy."""
    M = manifold(1.0)
    g = gen(213)
    vr = torch.randn(3, 40, 8, generator=g, dtype=DT).float()
    vs = torch.randn(3, 4, 8, generator=g, dtype=DT).float()
    a = hddgeo.hdd_loss(vr, vs, M, centroid=method, dtype=None, max_norm=2.0)
    b = hddgeo.hdd_loss(vr.double(), vs.double(), M, centroid=method, max_norm=2.0)
    assert a.dtype == torch.float32
    assert float(a) == pytest.approx(float(b), rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_hdd_loss_gradient_for_an_all_zero_synthetic_feature(method):
    """A synthetic feature that is exactly 0 (e.g. a constant image through instance norm + ReLU) lifts
    to the origin.  With one synthetic sample its centroid is the origin and the loss is
    scale * d(c_real, o) = scale * r_real; the gradient w.r.t. the feature is -scale * u_real, not 0."""
    k = 1.0
    M = manifold(k)
    g = gen(214)
    vr = 1.5 * torch.randn(20, 4, generator=g, dtype=DT) + 1.0
    vs = torch.zeros(1, 4, dtype=DT, requires_grad=True)
    loss = hddgeo.hdd_loss(vr, vs, M, scale=2.0, centroid=method)
    cr = hddgeo.centroid(hddgeo.lift(vr, M, max_norm=10.0), M, method=method)
    assert float(loss.detach()) == pytest.approx(2.0 * float(hddgeo.radius(cr, M)), rel=1e-10)
    (gs,) = torch.autograd.grad(loss, vs)
    u = plain(cr)[1:] / plain(cr)[1:].norm()
    torch.testing.assert_close(gs[0], -2.0 * u, rtol=0, atol=1e-6)


def _stable_reference(vr, vs):
    """HDD's distance (k 1, Law) of one synthetic point to the real centroid, by a formula without cancellation:
    the real centroid lies near the origin, and cosh d = c_0 cosh|u| - sinh|u| (c_s . u/|u|)."""
    from hddgeo.geometry._math import _law

    one = torch.tensor(1.0, dtype=torch.float64)
    zr = _lift(vr, one, None)
    c = _law(zr, torch.full((len(vr),), 1 / len(vr), dtype=torch.float64), one).detach()
    u = vs.detach().clone().requires_grad_(True)
    n = u.norm()
    d = torch.acosh(c[0] * torch.cosh(n) - torch.sinh(n) * (c[1:] @ (u[0] / n)))
    return float(d.detach()), torch.autograd.grad(d, u)[0]


@pytest.mark.parametrize("radius, ok", [(8.0, True), (12.0, True), (13.5, True), (15.0, False), (25.0, False)])
def test_a_gradient_through_a_far_law_centroid_is_nan_on_every_device_and_one_within_reach_is_right(radius, ok):
    """Far out, Law's closed form keeps its value but not its gradient (relative error ~ 2 eps cosh^2 r: 4e5x at
    radius 25, where Fashion-MNIST's unclipped features lie, and a single synthetic point is its own centroid):
    within reach the gradient matches a cancellation-free formula; beyond it the gradient is NaN, on the CPU and on
    the accelerator path alike (no host read decides it), and without a gradient the loss still answers.  The
    Karcher mean and the tangent centroid differentiate in frames: right out there."""
    from hddgeo.device import force_accelerator
    from hddgeo.geometry import gradient_reach

    assert 13.5 < gradient_reach(torch.float64) < 14 and 3 < gradient_reach(torch.float32) < 4
    g = torch.Generator().manual_seed(0)
    base = torch.randn(128, dtype=torch.float64, generator=g)
    vr = base + 0.6 * torch.randn(64, 128, dtype=torch.float64, generator=g)
    vr = vr / vr.norm(dim=-1, keepdim=True) * (radius + 0.3 * torch.randn(64, 1, dtype=torch.float64, generator=g))
    vs = base + 0.6 * torch.randn(1, 128, dtype=torch.float64, generator=g)
    vs = (vs / vs.norm() * radius).requires_grad_(True)
    M = manifold(1.0)
    value, ref = _stable_reference(vr, vs)
    for accelerator in (False, True):
        with force_accelerator(accelerator):
            loss = hddgeo.hdd_loss(vr, vs, M, scale=1.0, max_norm=None)
            grad = torch.autograd.grad(loss, vs)[0]
        assert float(loss.detach()) == pytest.approx(value, rel=1e-12)
        if ok:
            assert float((grad - ref).norm() / ref.norm()) < 1e-4
        else:
            assert bool(grad.isnan().all()), accelerator
    if not ok:
        with torch.no_grad():  # a value alone is fine out there
            assert float(hddgeo.hdd_loss(vr, vs, M, scale=1.0, max_norm=None)) == pytest.approx(value, rel=1e-12)
        loss = hddgeo.hdd_loss(vr, vs, M, scale=1.0, max_norm=10.0)  # the reference's clip keeps it within reach
        assert bool(torch.autograd.grad(loss, vs)[0].isfinite().all())
    # finite differences of the (accurate) value: the Karcher mean and the tangent centroid, and Law's centroid of a
    # set spread in angle (near the origin, whatever its points' radius), give the right gradient at any radius
    spread = (base + 0.6 * torch.randn(10, 128, dtype=torch.float64, generator=g))
    spread = (spread / spread.norm(dim=-1, keepdim=True) * radius).requires_grad_(True)
    for centroid, syn in (("karcher", vs), ("tangent", vs), ("law", spread)):
        loss = hddgeo.hdd_loss(vr, syn, M, scale=1.0, centroid=centroid, max_norm=None)
        grad = torch.autograd.grad(loss, syn)[0]
        d = torch.randn(syn.shape, dtype=torch.float64, generator=g)
        d /= d.norm()
        with torch.no_grad():
            fd = (hddgeo.hdd_loss(vr, syn + 1e-5 * d, M, scale=1.0, centroid=centroid, max_norm=None)
                  - hddgeo.hdd_loss(vr, syn - 1e-5 * d, M, scale=1.0, centroid=centroid, max_norm=None)) / 2e-5
        assert float((grad * d).sum()) == pytest.approx(float(fd), rel=1e-5, abs=1e-9), centroid


def test_only_the_sets_beyond_gradient_reach_get_a_nan_gradient():
    """The rule is per set: in a class batch, a class whose Law centroid is within reach keeps its exact gradient."""
    M = manifold(1.0)
    g = torch.Generator().manual_seed(1)
    d = torch.nn.functional.normalize(torch.randn(2, 1, 16, dtype=torch.float64, generator=g), dim=-1)
    v = (d * torch.tensor([5.0, 20.0], dtype=torch.float64).view(2, 1, 1)).requires_grad_(True)
    z = hddgeo.lift(v, M)
    (grad,) = torch.autograd.grad(hddgeo.law_centroid(z, M)[..., 0].sum(), v)
    (near,) = torch.autograd.grad(hddgeo.law_centroid(hddgeo.lift(v[:1], M), M)[..., 0].sum(), v)
    assert bool(grad[1].isnan().all()) and torch.equal(grad[0], near[0])


# ----------------------------------------------------------------------------- DM on HDD's clipped tangent vectors
def _clipped_mean_numpy(real, syn, k, max_norm):
    """The closed form, in numpy float64: shorten every feature longer than max_norm * sqrt(k) to that length,
    then DM's squared distance of the class means, summed over classes."""
    def clip(x):
        n = np.linalg.norm(x, axis=-1, keepdims=True)
        bound = max_norm * np.sqrt(k)
        return np.where(n > bound, x * bound / np.maximum(n, 1e-300), x)
    d = clip(real).mean(-2) - clip(syn).mean(-2)
    return (d * d).sum()


@pytest.mark.parametrize("k,max_norm", [(1.0, 10.0), (9.0, 1.0), (0.5, 3.0)])
def test_clipped_mean_loss_is_dm_on_the_tangent_vectors_hdd_lifts(k, max_norm):
    from hddgeo.losses import clip_features, clipped_mean_loss

    g = torch.Generator().manual_seed(4)
    real = torch.randn(3, 30, 12, generator=g, dtype=torch.float64) * torch.linspace(0.5, 8, 30).reshape(1, 30, 1)
    syn = torch.randn(3, 4, 12, generator=g, dtype=torch.float64) * 4
    got = clipped_mean_loss(real, syn, k=k, max_norm=max_norm)
    assert float(got) == pytest.approx(_clipped_mean_numpy(real.numpy(), syn.numpy(), k, max_norm), rel=1e-12)
    # some features clipped, some not: the case distinguishes it from both DM and direction matching
    n = real.norm(dim=-1) / k ** 0.5
    assert (n > max_norm).any() and (n < max_norm).any()
    # the clipped vectors are what HDD's lift takes: expmap0 of the clipped vector is the clipped lift
    kt = torch.tensor(k, dtype=torch.float64)
    assert torch.allclose(_lift(clip_features(real, k=k, max_norm=max_norm), kt, None), _lift(real, kt, max_norm), rtol=1e-12)


def test_clipped_mean_loss_reduces_to_dm_without_a_binding_clip_and_its_gradient_is_exact():
    from hddgeo.losses import clipped_mean_loss

    g = torch.Generator().manual_seed(5)
    real, syn = torch.randn(2, 9, 6, generator=g, dtype=torch.float64), torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    assert torch.equal(clipped_mean_loss(real, syn, max_norm=None), euclidean_mean_loss(real, syn))
    assert torch.allclose(clipped_mean_loss(real, syn, max_norm=1e6), euclidean_mean_loss(real, syn), rtol=0, atol=0)
    syn = (syn * 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: clipped_mean_loss(real * 2, s, k=2.0, max_norm=1.5), (syn,))
    # a clipped feature's gradient has no radial part (the clamp), as in HDD's lift
    far = torch.randn(1, 1, 6, generator=g, dtype=torch.float64) * 50
    far.requires_grad_(True)
    clipped_mean_loss(real[:1], far, max_norm=1.0).backward()
    assert abs(float((far.grad * far.detach()).sum())) < 1e-10 * float(far.grad.norm() * far.detach().norm())


def test_the_clipped_dm_matcher_is_a_matcher_of_its_own():
    from hddgeo.losses import clipped_mean_loss
    from hddgeo.stats import method_label

    g = torch.Generator().manual_seed(6)
    fr, fs = torch.randn(3, 20, 16, generator=g) * 5, torch.randn(3, 2, 16, generator=g) * 5
    loss, parts = Matcher("clipped_euclidean", k=4.0, max_norm=2.0)(fr, fs)
    assert set(parts) == {"clipped_euclidean"} and torch.equal(loss, clipped_mean_loss(fr, fs, k=4.0, max_norm=2.0))
    assert Matcher("clipped_euclidean").describe() == "clipped_euclidean"
    assert method_label("dm", "clipped_euclidean", "karcher") == "dm+clipped_euclidean"
