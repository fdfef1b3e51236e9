"""The Karcher solve on an accelerator: how many operations each conjugate-gradient iteration dispatches (a CPU
proxy for a GPU's kernel launches, counted with a TorchDispatchMode), the formed logs it uses checked against the
explicit logmaps, and a side of one point solved without padding.

``python tests/geometry/test_karcher_ops.py`` prints the counts (the numbers in the issue-24 note)."""
from collections import Counter

import geoopt
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hddgeo.device import force_accelerator
from hddgeo.geometry import _karcher_math
from hddgeo.geometry._math import _frame_logs, _law, _lift

# ops that make a view (no kernel on a GPU)
VIEWS = {"unsqueeze", "squeeze", "transpose", "slice", "view", "expand", "select", "t", "as_strided", "permute",
         "_unsafe_view", "alias", "split", "unbind", "detach"}


class OpCount(TorchDispatchMode):
    """Counts every aten operation dispatched, and those of them that are not views (``kernels``)."""

    def __init__(self):
        super().__init__()
        self.ops, self.kernels, self.names = 0, 0, Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops += 1
        self.kernels += name not in VIEWS
        self.names[name] += 1
        return func(*args, **(kwargs or {}))


def _logs(seed=0, C=3, n=24, d=16, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    kt = torch.tensor(1.0, dtype=torch.float64)
    z = _lift(torch.randn(C, n, d, generator=g, dtype=torch.float64) * spread, kt, None)
    w = torch.full(z.shape[:-1], 1.0 / n, dtype=torch.float64)
    logs, _ = _karcher_math._karcher_newton(z, w, torch.sqrt(kt), 1e-10, 50, _law(z, w, kt)[..., 1:])
    return z, w, logs


def per_iteration(accelerator: bool) -> tuple:
    """``(ops, kernels)`` one conjugate-gradient iteration dispatches, on the accelerator path or the CPU's (the
    difference between solves of 10 and 5 iterations that never stop early)."""
    counts = []
    with force_accelerator(accelerator):
        _, _, logs = _logs()
        b = logs.grad
        rtol = torch.zeros_like(b[..., :1])  # never converged: every iteration runs
        for iters in (5, 10):
            saved = _karcher_math._CG_ITERATIONS_ACCELERATOR
            _karcher_math._CG_ITERATIONS_ACCELERATOR = iters
            try:
                with OpCount() as c:
                    _karcher_math._conjugate_gradient(logs.hvp, b, rtol, iters)
            finally:
                _karcher_math._CG_ITERATIONS_ACCELERATOR = saved
            counts.append((c.ops, c.kernels))
    return tuple((b - a) / 5 for a, b in zip(*counts))


def test_a_conjugate_gradient_iteration_dispatches_half_the_kernels_on_an_accelerator():
    """Before: 40 operations (32 kernels) per iteration, the CPU's matrix-free products; after: the logs formed once
    per Newton step, dot products as one batched matmul, constants made once: 17 kernels."""
    cpu_ops, cpu_kernels = per_iteration(False)
    acc_ops, acc_kernels = per_iteration(True)
    # the CPU's path is unchanged: the accelerator's before, plus its stopping test (le, all, the read)
    assert (cpu_ops, cpu_kernels) == (43, 35)
    assert acc_kernels <= 17 and acc_ops <= 26


def test_the_formed_logs_are_the_logmaps():
    """``_FrameLogs.L`` (accelerator) against ``_frame_logs``, an independent explicit construction of the logmaps
    in the frame of the mean, and the formed products against the matrix-free ones."""
    with force_accelerator():
        z, w, logs = _logs(spread=6.0)
    explicit, _ = _frame_logs(logs.xs[..., 1:].unsqueeze(-2), z[..., 1:], logs.sk)
    torch.testing.assert_close(logs.L[..., 1:], explicit, rtol=1e-9, atol=1e-9)
    assert float(logs.L[..., 0].abs().max()) == 0.0  # time slot
    g = torch.Generator().manual_seed(5)
    v = torch.randn(logs.xs.shape, generator=g, dtype=torch.float64)
    v[..., 0] = 0
    implicit = _logs(spread=6.0)[2]  # the same solve on the CPU's path (no formed logs)
    assert implicit.L is None
    torch.testing.assert_close(logs.hvp(v), implicit.hvp(v), rtol=1e-9, atol=1e-9)


def test_the_fixed_length_solve_matches_the_tested_one():
    _, _, logs = _logs(spread=4.0)
    b = logs.grad
    rtol = torch.full_like(b[..., :1], 1e-12)
    ref = _karcher_math._conjugate_gradient(logs.hvp, b, rtol, 200)
    got = _karcher_math._conjugate_gradient_fixed(logs.hvp, b, rtol, 20)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_a_side_of_one_point_is_not_padded():
    """IPC 1: the synthetic mean is the point itself; the accelerator's joint solve used to pad it to the real
    side's size and solve twice the sets.  Now only the real side is solved, with the CPU's numbers."""
    from hddgeo.losses import hdd_loss

    M = geoopt.Lorentz(k=1.0)
    g = torch.Generator().manual_seed(3)
    vr = torch.randn(4, 12, 6, generator=g, dtype=torch.float64) * 2
    vs = torch.randn(4, 1, 6, generator=g, dtype=torch.float64) * 2
    shapes, original = [], _karcher_math._KarcherImplicit.apply

    def record(z, *rest):
        shapes.append(tuple(z.shape))
        return original(z, *rest)

    out = []
    for forced in (False, True):
        x = vs.clone().requires_grad_(True)
        _karcher_math._KarcherImplicit.apply = record
        try:
            with force_accelerator(forced):
                loss = hdd_loss(vr, x, M, centroid="karcher")
                (grad,) = torch.autograd.grad(loss, x)
        finally:
            _karcher_math._KarcherImplicit.apply = original
        out.append((loss.detach(), grad))
    assert shapes == [(4, 12, 7), (4, 12, 7)]  # the real sets alone, on both paths
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-8, atol=1e-10)


if __name__ == "__main__":
    for name, acc in (("CPU path (the accelerator's before, plus 3 for the stopping test)", False),
                      ("accelerator path", True)):
        ops, kernels = per_iteration(acc)
        print(f"{name}: {ops:.0f} operations, {kernels:.0f} kernels per conjugate-gradient iteration")
    with force_accelerator():
        vr = torch.randn(10, 64, 32, dtype=torch.float64)
        for m in (10, 1):
            vs = torch.randn(10, m, 32, dtype=torch.float64, requires_grad=True)
            from hddgeo.losses import hdd_loss

            with OpCount() as c:
                hdd_loss(vr, vs, geoopt.Lorentz(k=1.0), centroid="karcher").backward()
            print(f"hdd_loss karcher forward + backward, 10 classes x 64 real, {m} synthetic: {c.ops} operations, "
                  f"{c.kernels} kernels")
