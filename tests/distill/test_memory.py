"""The memory budget of the accelerator path (hddgeo/distill/memory.py), out-of-memory errors, and what runs inside
the deterministic and autocast contexts."""
import re

import pytest
import torch
from conftest import tiny_config

from hddgeo.device import force_accelerator
from hddgeo.distill import build_method, prepare
from hddgeo.distill import memory
from hddgeo.distill import methods as methods_module
from hddgeo.distill.memory import GIB, ImageBytes, activation_bytes, plan_forward, plan_step
from hddgeo.models import build_model


def test_activation_bytes_of_convnet_in_closed_form():
    """ConvNet-3 (width 128) on 3x32x32: its largest layer pair is an instance norm (or ReLU) at 32x32, input and
    output of 128 x 32 x 32 float32 each; autograd may keep every leaf's input and output."""
    net = build_model("convnet", 3, 10, (32, 32))
    b = activation_bytes(net.embed, torch.zeros(1, 3, 32, 32))
    assert b.inference == 2 * 128 * 32 * 32 * 4
    per_block = [(128 * s * s * 4) for s in (32, 16, 8)]
    conv_in = [3 * 32 * 32 * 4, 128 * 16 * 16 * 4, 128 * 8 * 8 * 4]
    # conv (in + out), norm (2 out), ReLU (2 out), pool (out + out / 4), per block
    expected = sum(ci + a + 2 * a + 2 * a + a + a // 4 for ci, a in zip(conv_in, per_block))
    assert b.training == expected
    assert b.io == 3 * 32 * 32 * 4 + 2048 * 4


def test_plan_forward_in_closed_form():
    per = ImageBytes(inference=100, training=1000, io=10)
    p = plan_forward(95, per, 1000, grad=False)
    assert (p.chunk, p.chunks, p.checkpoint, p.peak_bytes) == (10, 10, False, 1000)
    p = plan_forward(5, per, 10_000, grad=True)  # everything fits: one forward, nothing recomputed
    assert (p.chunk, p.chunks, p.checkpoint, p.peak_bytes) == (5, 1, False, 5000)
    p = plan_forward(50, per, 10_000, grad=True)  # 50 x 10 kept, chunks of (10000 - 500) // 1000 = 9
    assert (p.chunk, p.chunks, p.checkpoint, p.peak_bytes) == (9, 6, True, 500 + 9000)
    assert plan_forward(3, per, 1, grad=False).chunk == 1  # never below one image
    with pytest.raises(ValueError, match="at least one image"):
        plan_forward(0, per, 1, grad=False)


@pytest.mark.parametrize("amp", ["none", "bf16"])
@pytest.mark.parametrize("ipc,factor", [(1, 1), (10, 1), (50, 1), (50, 2)])
def test_a_tinyimagenet_step_stays_within_the_budget(amp, ipc, factor):
    """200 classes of 3x64x64, 256 real images per class: one forward of the real images would hold 107 GB in its
    first activation alone (51,200 x 128 x 64 x 64 float32); the plan keeps every forward of the step (real, synthetic,
    IDM's cross-entropy: factor 2 expands IPC 50 to 40,000 images) within the default budget."""
    net = build_model("convnet", 3, 200, (64, 64))
    per = activation_bytes(net.embed, torch.zeros(1, 3, 64, 64), amp=amp)
    budget = memory.DEFAULT_BUDGET_GB * GIB
    assert 200 * 256 * 128 * 64 * 64 * 4 > 100e9  # what the unchunked forward asked for
    plans = plan_step(200, 256, 200 * ipc * factor ** 2, per, budget, cross_entropy=factor > 1)
    for name, plan in plans.items():
        assert plan.peak_bytes <= budget, (name, plan)
        assert plan.chunk * plan.chunks >= plan.count > plan.chunk * (plan.chunks - 1)
    assert plans["real"].chunks > 1


def _step(cfg, budget_gb):
    """Loss and image gradient of iteration 0 with the accelerator branches on and the given budget."""
    cfg.memory_budget_gb = budget_gb
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    syn = method.init_synset(torch.Generator().manual_seed(0))
    loss, parts, _ = method.step(0, syn)
    loss.backward()
    return loss.detach(), syn.images.grad.clone(), {k: float(v) for k, v in parts.items()}


@pytest.mark.parametrize("method,matcher", [("dm", "euclidean"), ("dm", "hdd"), ("idm", "euclidean"),
                                            ("dance", "euclidean")])
def test_chunked_forwards_give_the_unchunked_result(method, matcher, monkeypatch, tmp_path):
    """A budget of a few images per chunk (real images chunk by chunk, the synthetic ones and IDM's and DANCE's
    cross-entropy checkpointed) against one forward of everything: the same loss and image gradient, to float32
    rounding (the convolutions see other batch sizes)."""
    monkeypatch.setenv("HDDGEO_CACHE", str(tmp_path))
    calls = []
    real = methods_module.checkpointed
    monkeypatch.setattr(methods_module, "checkpointed", lambda *a: calls.append(a[2]) or real(*a))
    cfg = dict(method=method, matcher=matcher, ipc=3, batch_real=12, idm_queue=1,
               options={"num_experts": 1, "expert_epochs": 1} if method == "dance" else {})
    with force_accelerator():
        whole = _step(tiny_config(**cfg), 1000.0)
        assert calls == []
        per_image = 4 * 128 * 8 * 8 * 2  # digits (8x8): a few images per chunk
        chunked = _step(tiny_config(**cfg), 5 * per_image / GIB)
    assert calls and max(calls) < 10
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-5, atol=1e-6)
    # relative to the gradient's size (HDD's arcosh amplifies float32 rounding in its small entries)
    assert float((chunked[1] - whole[1]).norm() / whole[1].norm()) < 1e-4
    assert chunked[2].keys() == whole[2].keys()


def test_out_of_memory_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    """torch.OutOfMemoryError (a RuntimeError) in iteration 3: one line naming the run, the allocation and what to
    lower, exit status 2, the checkpoint of iteration 2 left as it was."""
    from hddgeo.cli import main
    from hddgeo.rundir import load_tensors

    original = methods_module.DistillMethod.step

    def step(self, it, syn, diagnose=False):
        if it == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.50 GiB. GPU 0 has a total "
                                         "capacity of 79.19 GiB of which 3.1 GiB is free.")
        return original(self, it, syn, diagnose)

    monkeypatch.setattr(methods_module.DistillMethod, "step", step)
    out = tmp_path / "run"
    code = main(["distill", "--iterations", "4", "--checkpoint-every", "2", "--final-eval-epochs", "0", "--quiet",
                 "--device", "cpu", "--batch-real", "8", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    line = err[0]
    assert str(out) in line and "at iteration 3" in line and "tried to allocate 12.50 GiB" in line
    for advice in ("--batch-real (now 8)", "--memory-budget-gb", "--amp bf16", "checkpoint of iteration 2 is kept"):
        assert advice in line, line
    assert int(load_tensors(str(out / "checkpoint.pt"), "checkpoint")["iteration"]) == 2
    assert not re.search(r"Traceback", line)


def test_dance_experts_train_with_deterministic_kernels(monkeypatch, tmp_path):
    """--deterministic holds while DANCE trains its experts (they are built with the method, before the loop)."""
    from hddgeo.distill import dance, run_distillation

    monkeypatch.setenv("HDDGEO_CACHE", str(tmp_path / "cache"))
    seen, original = [], dance.train_expert

    def train_expert(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(dance, "train_expert", train_expert)
    run_distillation(tiny_config(method="dance", deterministic=True, iterations=1, device="cpu",
                                 options={"num_experts": 1, "expert_epochs": 1}),
                     str(tmp_path / "run"), progress=False, final_eval=False)
    assert seen == [True]
    assert not torch.are_deterministic_algorithms_enabled()


def test_dance_calibration_dsa_runs_outside_autocast(monkeypatch, tmp_path):
    """Under --amp bf16 only the expert runs in autocast: the augmented images it gets are those of a float32 DSA
    (inside CPU autocast, affine_grid's product ran in bf16: differences up to ~0.3 on unit-scale images)."""
    monkeypatch.setenv("HDDGEO_CACHE", str(tmp_path))
    cfg = tiny_config(method="dance", amp="bf16", ipc=3, dsa_strategy="rotate", device="cpu",
                      options={"num_experts": 1, "expert_epochs": 1})
    dataset, pool, matcher = prepare(cfg)
    method = build_method("dance", cfg, dataset, pool, matcher)
    syn = method.init_synset(torch.Generator().manual_seed(0))
    images, labels = syn.expanded()
    seeds = list(range(11, 11 + pool.num_classes))
    expected = method.calibration_images(images.detach(), labels, seeds)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = method.calibration_images(images.detach(), labels, seeds)
    assert not torch.equal(inside, expected)  # the difference the fix removes
    got = []
    expert = method.experts[0].network
    handle = expert.register_forward_pre_hook(lambda m, a: got.append(a[0].detach().clone()))
    try:
        from hddgeo.distill.methods import Step

        method.extra_loss(Step(it=0, net=expert, draw={"expert": 0, "ce_seeds": seeds}), images, labels)
    finally:
        handle.remove()
    assert len(got) == 1 and got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], expected, rtol=0, atol=0)
