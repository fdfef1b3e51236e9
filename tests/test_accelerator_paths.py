"""The branches a GPU takes, run on the CPU (hddgeo.device.force_accelerator) against the CPU's own: the same
numbers, without the host reads and blocking copies that tests/test_host_reads.py counts.

Each replacement is checked against what it replaces: the four-gather warp against ``grid_sample`` (values
and gradients), the one-copy network move against ``.to``, the mean pooling against adaptive pooling, the
unread Sinkhorn against POT's, the masked Adam step against Adam's, and whole runs of every method with the
switch on against the same runs with it off.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from hddgeo.data.augment import _warp_gather, dsa
from hddgeo.device import deterministic, force_accelerator, move_module, on_accelerator
from hddgeo.distill import run_distillation
from hddgeo.models import build_model, fresh_network
from hddgeo.rundir import load_tensors
from hddgeo.training import sgd_epochs


def test_the_switch_is_scoped():
    assert not on_accelerator("cpu")
    with force_accelerator():
        assert on_accelerator("cpu") and on_accelerator(torch.device("cpu"))
    assert not on_accelerator("cpu")


# ----------------------------------------------------------------------------- DSA's deterministic warp
@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 7, 10)])
def test_the_gather_warp_is_grid_sample(shape):
    """Bilinear, zero fill, align_corners=True: values and input gradients, with grids reaching outside."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    theta = torch.randn(shape[0], 2, 3, generator=g, dtype=torch.float64) * 0.6
    theta[:, 0, 0] += 1.0
    theta[:, 1, 1] += 1.0
    grid = F.affine_grid(theta, list(shape), align_corners=True)
    assert (grid.abs() > 1).any()  # some samples fall outside the image
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    got = _warp_gather(x, grid)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    cot = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (g_ref,) = torch.autograd.grad((ref * cot).sum(), x)
    (g_got,) = torch.autograd.grad((got * cot).sum(), x)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("strategy", ["scale", "rotate", "color_crop_cutout_flip_scale_rotate"])
def test_dsa_on_the_deterministic_accelerator_path_matches_the_cpu(strategy):
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    for seed in range(6):
        ref = dsa(x, seed, strategy)
        with force_accelerator(), deterministic(True):
            got = dsa(x, seed, strategy)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        ref_each = dsa(x, seed, strategy, siamese=False)
        with force_accelerator(), deterministic(True):
            got_each = dsa(x, seed, strategy, siamese=False)
        torch.testing.assert_close(got_each, ref_each, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- networks
class _Data:
    channels, num_classes, image_size = 1, 3, (8, 8)


def test_a_network_moves_in_one_copy_per_dtype_with_the_same_weights(monkeypatch):
    """On an accelerator fresh_network packs the weights into one buffer per dtype (one copy instead of one per
    parameter), and seeds the CPU generator only: torch.manual_seed would reseed every CUDA generator too."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    ref = fresh_network("convnet", _Data, seed=5, device="cpu")
    with force_accelerator():
        net = fresh_network("convnet", _Data, seed=5, device="cpu")
    assert reseeded == []
    for (name, a), (_, b) in zip(ref.state_dict().items(), net.state_dict().items()):
        assert torch.equal(a, b), name
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()}
    assert len(storages) == 1  # every parameter is a view of one packed copy
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(net(x), ref(x))
    # the views train like parameters
    labels = torch.tensor([0, 1, 2, 0])
    for model in (ref, net):
        sgd_epochs(model, x, labels, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(0),
                   epochs=2, batch_size=2)
    for a, b in zip(ref.parameters(), net.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_move_module_keeps_buffers_and_their_dtypes():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    with force_accelerator():
        moved = move_module(net, "cpu")
    assert {k: (v.dtype, v.shape) for k, v in moved.state_dict().items()} == {k: (v.dtype, v.shape) for k, v in ref.items()}
    assert all(torch.equal(moved.state_dict()[k], v) for k, v in ref.items())
    assert moved[1].num_batches_tracked.dtype == torch.int64


def test_resnet_pools_by_a_mean_on_an_accelerator():
    net = build_model("resnet18", 3, 4, (16, 16))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = net.embed(x)
    with force_accelerator():
        got = net.embed(x)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_training_can_leave_its_loss_unread():
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    losses = []
    for read in (True, False):
        torch.manual_seed(0)
        net = build_model("convnet", 1, 3, (8, 8))
        losses.append(sgd_epochs(net, x, y, torch.optim.SGD(net.parameters(), lr=0.01),
                                 torch.Generator().manual_seed(1), epochs=3, batch_size=4, read=read))
    assert isinstance(losses[0], float) and torch.is_tensor(losses[1]) and losses[1].dim() == 0
    assert losses[0] == float(losses[1])
    assert math.isnan(sgd_epochs(net, x, y, torch.optim.SGD(net.parameters(), lr=0.01), torch.Generator(), epochs=0,
                                 batch_size=4))


# ----------------------------------------------------------------------------- GeoDM
def test_the_unread_sinkhorn_is_pots():
    pytest.importorskip("ot")
    from hddgeo.distill.geodm import entropic_ot

    g = torch.Generator().manual_seed(0)
    M = torch.rand(3, 5, 4, generator=g, dtype=torch.float64)
    for reg, max_iter in ((0.5, 100), (0.05, 100), (0.01, 7)):
        ref, ref_iters = entropic_ot(M, reg, max_iter=max_iter)
        with force_accelerator():
            got, got_iters = entropic_ot(M, reg, max_iter=max_iter)
        assert torch.is_tensor(got_iters) and int(got_iters) == ref_iters
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_the_masked_adam_step_is_adams_or_no_step():
    from conftest import tiny_config as cfg_of

    from hddgeo.distill import build_method, prepare

    cfg = cfg_of(method="geodm")
    dataset, pool, matcher = prepare(cfg)
    methods = [build_method("geodm", cfg, dataset, pool, matcher) for _ in range(2)]
    for finite in (True, False):
        params = []
        for m in methods:
            ps = list(m.geo_params.values())
            for i, p in enumerate(ps):
                p.grad = torch.full_like(p, 0.1 * (i + 1))
            params.append(ps)
        if not finite:
            for ps in params:
                ps[0].grad[0] = float("nan")
        before = [[p.detach().clone() for p in ps] for ps in params]
        moments = {k: v.clone() for k, v in methods[1].geo_opt.state.get(params[1][0], {}).items() if k != "step"}
        if finite:
            methods[0].geo_opt.step()
        with torch.no_grad():
            methods[1]._masked_step(params[1], torch.tensor(finite))
        if finite:
            for a, b in zip(params[0], params[1]):
                assert torch.equal(a, b)
        else:
            for a, b in zip(before[1], params[1]):
                assert torch.equal(a, b)
            state = methods[1].geo_opt.state[params[1][0]]
            for k, v in moments.items():
                assert torch.equal(state[k], v), k


# ----------------------------------------------------------------------------- whole runs
CASES = [dict(method="dm"), dict(method="dm", matcher="hdd", centroid="law"),
         dict(method="dm", matcher="hdd", centroid="karcher"), dict(method="idm"),
         dict(method="dance", options={"num_experts": 1, "expert_epochs": 1}), dict(method="geodm")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for k, v in c.items() if k != "options"))
def test_a_run_on_the_accelerator_path_computes_what_the_cpu_path_does(tmp_path, case):
    """One batch of all classes, packed uploads, unread checks and solvers: the same synthetic set to float32
    rounding (the batched real pass and the Karcher solver's less frequent stopping tests round differently)."""
    if case["method"] == "geodm":
        pytest.importorskip("ot")
    cfg = tiny_config(iterations=3, checkpoint_every=0, **case)
    run_distillation(cfg, str(tmp_path / "cpu"), progress=False, final_eval=False)
    with force_accelerator():
        run_distillation(cfg, str(tmp_path / "acc"), progress=False, final_eval=False)
    a = load_tensors(str(tmp_path / "cpu" / "synset.pt"))["params"]
    b = load_tensors(str(tmp_path / "acc" / "synset.pt"))["params"]
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_dance_refuses_a_batch_that_does_not_split_into_its_classes():
    from hddgeo.distill.dance import Dance

    method = Dance.__new__(Dance)
    method.cfg, method.classes = tiny_config(method="dance"), [0, 1, 2]
    with pytest.raises(ValueError, match="do not split evenly into 3 classes"):
        method.calibration_images(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), [1, 2, 3])


@pytest.mark.parametrize("m", [1, 3, 7])
def test_the_joint_karcher_solve_gives_each_sides_mean(m):
    """Padding a side with zero-weight copies of its first point and solving both sides at once leaves each
    mean and its gradients where the separate solves put them."""
    from hddgeo.geometry.centroids import _centroid
    from hddgeo.geometry._math import _lift
    from hddgeo.losses import _karcher_together

    g = torch.Generator().manual_seed(m)
    kt = torch.tensor(1.0, dtype=torch.float64)
    vr = (torch.randn(3, 5, 6, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    vs = (torch.randn(3, m, 6, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    cot = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    results = []
    for together in (False, True):
        zr, zs = _lift(vr, kt, 10.0), _lift(vs, kt, 10.0)
        wr, ws = torch.full((3, 5), 0.2, dtype=torch.float64), torch.full((3, m), 1.0 / m, dtype=torch.float64)
        if together:
            cr, cs = _karcher_together(zr, wr, zs, ws, kt, 1.0, {})
        else:
            cr, cs = _centroid(zr, wr, kt, "karcher", k_val=1.0), _centroid(zs, ws, kt, "karcher", k_val=1.0)
        grads = torch.autograd.grad((cr * cot[0]).sum() + (cs * cot[1]).sum(), (vr, vs))
        results.append((cr.detach(), cs.detach()) + grads)
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("spread", [0.5, 3.0, 15.0])
def test_the_karcher_mean_without_stopping_reads_is_the_cpus(spread):
    """On an accelerator the conjugate-gradient solves run a fixed number of iterations and Newton tests
    convergence once after a few steps: the same mean and gradients as the CPU's test-every-step solves, from
    tight clouds to sets spread far out (radius up to ~40)."""
    import geoopt

    from hddgeo.geometry import karcher_mean, lift

    M = geoopt.Lorentz(k=1.0)
    g = torch.Generator().manual_seed(int(spread * 10))
    v = torch.randn(4, 20, 8, generator=g, dtype=torch.float64) * spread
    cot = torch.randn(4, 9, generator=g, dtype=torch.float64)
    out = []
    for forced in (False, True):
        x = v.clone().requires_grad_(True)
        with force_accelerator(forced):
            mean = karcher_mean(lift(x, M, max_norm=None), M)
            (grad,) = torch.autograd.grad((mean * cot).sum(), x)
        out.append((mean.detach(), grad))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-7, atol=1e-9)
