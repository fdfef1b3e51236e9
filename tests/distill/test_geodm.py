"""GeoDM: product-space distances, the debiased Sinkhorn term, learnable geometry, runs and resume."""
import math

import geoopt
import pytest
import torch
from conftest import assert_resume_reproduces

import hddgeo.distill.geodm as geodm
from hddgeo.distill import DistillConfig, build_method, prepare, run_distillation
from hddgeo.geometry._math import _lift

ot = pytest.importorskip("ot")


def tiny(**kw):
    base = dict(dataset="digits", method="geodm", ipc=2, iterations=4, batch_real=16, final_eval_nets=1,
                final_eval_epochs=1, checkpoint_every=2)
    base.update(kw)
    return DistillConfig(**base)


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: more threads only contend


@pytest.fixture(scope="module")
def method():
    cfg = tiny(options={"proj_dim": 16})
    dataset, pool, matcher = prepare(cfg)
    return build_method("geodm", cfg, dataset, pool, matcher)


def clouds(C=3, n=12, m=4, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, n, d, generator=g) + 3.0, torch.randn(C, m, d, generator=g) + 3.0


# ----------------------------------------------------------------------------- geometry
def test_pairwise_distances_match_geoopt_manifolds():
    torch.manual_seed(0)
    x, y = torch.randn(2, 5, 6, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    K = torch.tensor(0.7, dtype=torch.float64)
    hyp = geodm.pairwise_sq_dist(x, y, "hyperbolic", K)
    L = geoopt.Lorentz(k=1 / K)
    zx, zy = _lift(x, 1 / K), _lift(y, 1 / K)
    assert torch.allclose(hyp, L.dist(zx[:, :, None], zy[:, None]) ** 2, atol=1e-10)
    sph = geodm.pairwise_sq_dist(x, y, "spherical", K)
    R = 1 / K.sqrt()
    px, py = geodm.sphere_expmap0(x, K), geodm.sphere_expmap0(y, K)
    assert torch.allclose(px.norm(dim=-1), R.expand(2, 5))  # on the sphere of radius 1/sqrt(K)
    assert torch.allclose(sph, (R * geoopt.Sphere().dist(px[:, :, None] / R, py[:, None] / R)) ** 2, atol=1e-10)
    # geoopt's stereographic model: a tangent vector u at 0 has Riemannian length 2|u| there
    S = geoopt.SphereProjection(k=K)
    assert torch.allclose(sph, S.dist(S.expmap0(x[:, :, None] / 2), S.expmap0(y[:, None] / 2)) ** 2, atol=1e-10)
    assert torch.allclose(geodm.pairwise_sq_dist(x, y, "euclidean"), torch.cdist(x, y) ** 2, atol=1e-10)


@pytest.mark.parametrize("geometry", ["euclidean", "hyperbolic", "spherical"])
def test_self_distances_are_zero_with_finite_gradients(geometry):
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    K = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    d2 = geodm.pairwise_sq_dist(x, x, geometry, K)
    assert d2.diagonal().abs().max() < 1e-12
    d2.sum().backward()
    assert torch.isfinite(x.grad).all()
    if geometry != "euclidean":
        assert torch.isfinite(K.grad) and K.grad != 0


def test_far_points_keep_finite_distances_and_gradients():
    x = (torch.randn(4, 8, dtype=torch.float64) * 300).requires_grad_(True)
    for geometry in ("hyperbolic", "spherical"):
        d2 = geodm.pairwise_sq_dist(x, x.detach().flip(0), geometry, torch.tensor(10.0, dtype=torch.float64))
        assert torch.isfinite(d2).all()
        d2.sum().backward()
        assert torch.isfinite(x.grad).all()


def test_curvature_parameterisation_stays_in_range_and_inverts():
    lo, hi = geodm.CURVATURE_RANGE
    rho = torch.tensor([-1e6, -50.0, 0.0, 50.0, 1e6], dtype=torch.float64)
    K = geodm.curvature_from_logit(rho)
    assert torch.isfinite(K).all() and (K >= lo).all() and (K <= hi).all()
    for k0 in (0.01, 1.0, 5.0):
        rho0 = torch.tensor(geodm.curvature_to_logit(k0), dtype=torch.float64)
        assert math.isclose(geodm.curvature_from_logit(rho0).item(), k0, rel_tol=1e-9)


# ----------------------------------------------------------------------------- optimal transport
def test_entropic_ot_agrees_with_pot_and_has_the_envelope_gradient():
    torch.manual_seed(1)
    M = torch.rand(2, 6, 4, dtype=torch.float64)
    reg = 0.2
    # the same plan as POT's single-problem log-domain Sinkhorn (entropy and KL to a b^T differ by a constant)
    a, b = torch.full((6,), 1 / 6, dtype=torch.float64), torch.full((4,), 1 / 4, dtype=torch.float64)
    P = ot.sinkhorn(a, b, M[0], reg, method="sinkhorn_log", stopThr=1e-12)
    val, _ = geodm.entropic_ot(M, reg, max_iter=2000, tol=1e-13)
    kl = (P * torch.log(P / (a[:, None] * b[None]))).sum()
    assert torch.allclose(val[0], (P * M[0]).sum() + reg * kl, atol=1e-10)
    # POT's differentiable sinkhorn2 works with this torch (autodiff through the iterations)
    Mg = M[0].clone().requires_grad_(True)
    ot.sinkhorn2(a, b, Mg, reg).backward()
    assert torch.isfinite(Mg.grad).all()
    # the envelope gradient of the regularised value matches finite differences
    Mg = M.clone().requires_grad_(True)
    geodm.entropic_ot(Mg, reg, max_iter=2000, tol=1e-13)[0].sum().backward()
    E = torch.zeros_like(M)
    E[1, 2, 3] = 1e-6
    fd = (geodm.entropic_ot(M + E, reg, 2000, 1e-13)[0].sum() - geodm.entropic_ot(M - E, reg, 2000, 1e-13)[0].sum()) / 2e-6
    assert math.isclose(float(Mg.grad[1, 2, 3]), float(fd), rel_tol=1e-5)


def test_ot_term_vanishes_for_identical_sets_and_is_positive_for_different_ones(method):
    fr, fs = clouds()
    same, parts = method.ot_loss(fr, fr.clone())
    assert abs(same.item()) < 1e-10 and parts["ot"] == same.item()
    different, _ = method.ot_loss(fr, fs)
    assert different.item() > 0.1
    shifted, _ = method.ot_loss(fr, fr[:, :4] + 2.0)
    assert shifted.item() > 0.1


def test_ot_term_is_a_sum_of_independent_per_class_terms(method):
    """Class-sharded runs rely on each class's term not depending on the other classes."""
    fr, fs = clouds(C=4)
    full, _ = method.ot_loss(fr, fs)
    split = method.ot_loss(fr[:2], fs[:2])[0] + method.ot_loss(fr[2:], fs[2:])[0]
    # equal up to the Sinkhorn tolerance: the stopping test is over the whole batch of classes
    assert torch.allclose(full, split, rtol=1e-5)


# ----------------------------------------------------------------------------- learnable geometry
def test_curvatures_and_weights_get_finite_gradients_and_stay_in_range():
    cfg = tiny(options={"proj_dim": 16, "geo_lr": 5.0, "ot_max_iter": 30})
    dataset, pool, matcher = prepare(cfg)
    m = build_method("geodm", cfg, dataset, pool, matcher)
    syn = m.init_synset(torch.Generator().manual_seed(0))
    loss, parts, step = m.step(0, syn)
    assert {"ot", "w_hyperbolic", "curvature_spherical"} <= set(parts)
    loss.backward()
    for name, p in m.geo_params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).all(), name
    before = {k: p.detach().clone() for k, p in m.geo_params.items()}
    m.after_step(step)
    assert all(p.grad is None for p in m.geo_params.values())
    assert all(not torch.equal(before[k], p) for k, p in m.geo_params.items())
    # many steps with a huge learning rate on cheap random features: everything stays valid
    lo, hi = geodm.CURVATURE_RANGE
    for it in range(25):
        fr, fs = clouds(C=2, n=8, m=3, d=16, seed=it)
        m.ot_loss(fr, fs.requires_grad_(True))[0].backward()
        m.after_step()
        for g, K in m.curvatures().items():
            assert lo <= K.item() <= hi, (g, K.item())
        w = torch.stack(list(m.weights().values()))
        assert torch.isfinite(w).all() and math.isclose(w.sum().item(), 1.0, rel_tol=1e-12)
    assert all(torch.isfinite(p).all() for p in m.geo_params.values())


def test_ot_weight_zero_reduces_to_dm():
    losses = []
    for name, opts in (("dm", {}), ("geodm", {"ot_weight": 0.0})):
        cfg = tiny(method=name, options=opts)
        dataset, pool, matcher = prepare(cfg)
        m = build_method(name, cfg, dataset, pool, matcher)
        syn = m.init_synset(torch.Generator().manual_seed(0))
        losses.append(m.step(3, syn)[0])
    assert torch.equal(losses[0], losses[1])


def test_options_are_validated_with_a_clear_message():
    dataset, pool, matcher = prepare(tiny())
    with pytest.raises(TypeError, match="unknown geodm option.*valid keys: .*proj_dim.*ot_reg"):
        tiny(options={"ot_lambda": 1})
    for bad in ({"ot_reg": 0}, {"proj_dim": 0}, {"geo_lr": -1}, {"components": ["flat"]}, {"components": []},
                {"init_curvature": 50.0}, {"center": "yes"}):
        with pytest.raises(ValueError, match="GeoDM option"):
            build_method("geodm", tiny(options=bad), dataset, pool, matcher)
    with pytest.raises(ValueError, match="at least 2 real images"):
        build_method("geodm", tiny(batch_real=1), dataset, pool, matcher)
    m = build_method("geodm", tiny(options={"components": "spherical,euclidean"}), dataset, pool, matcher)
    assert m.components == ("euclidean", "spherical") and set(m.geo_params) == {"weight_logits", "curvature_spherical"}


# ----------------------------------------------------------------------------- runs
def test_geodm_runs_end_to_end(tmp_path):
    cfg = tiny(ipc=1, iterations=3, options={"proj_dim": 16, "ot_reg": 0.2})
    metrics = run_distillation(cfg, str(tmp_path / "run"), progress=False)
    assert metrics["method"] == "geodm" and 0 <= metrics["acc_mean"] <= 1
    header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"euclidean", "ot", "w_euclidean", "curvature_hyperbolic", "curvature_spherical"} <= set(header)
    assert (tmp_path / "run" / "synset.pt").exists()


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    cfg = tiny(iterations=4, checkpoint_every=2, options={"proj_dim": 16, "geo_lr": 0.1})
    full, part = assert_resume_reproduces(cfg, tmp_path, final_eval=False)
    sa = torch.load(full / "checkpoint.pt", weights_only=False)["method"]
    sb = torch.load(part / "checkpoint.pt", weights_only=False)["method"]
    for k in sa["params"]:
        assert torch.equal(sa["params"][k], sb["params"][k]), k
    assert not torch.equal(sa["params"]["curvature_hyperbolic"],
                           torch.tensor(geodm.curvature_to_logit(1.0), dtype=torch.float64))
    strip = lambda lines: [",".join(line.split(",")[:-1]) for line in lines]  # drop the seconds column
    assert strip((full / "log.csv").read_text().splitlines()) == strip((part / "log.csv").read_text().splitlines())
