"""Study: which Karcher tolerance changes nothing downstream of the HDD loss.

For ``C`` classes of ``n`` real features and ``ipc`` synthetic ones (the benchmark's tight and wide
clouds, ``d`` = 2048), computes ``hdd_loss(..., centroid="karcher", tol=t)`` and its gradient to the
synthetic features for a range of tolerances and for fixed Newton step counts, and prints their
relative differences from a tight reference (``tol = 1e-12 sqrt(k)``), the Newton steps taken and the
time of a forward+backward.  A gradient that differs from the reference by less than float32's
resolution (~1e-7 relative) is the same gradient for a network that produced float32 features.

    python benchmarks/karcher_tolerance.py --classes 10 --n 256 --ipc 10
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_centroids import DEFAULT_SPREADS, SPREADS, make_cloud


def run(args):
    import geoopt
    import torch

    import hddgeo
    from hddgeo.geometry._karcher_math import _karcher
    from hddgeo.geometry._math import _lift

    torch.set_num_threads(args.threads)
    M = geoopt.Lorentz(k=args.k)
    sk = math.sqrt(args.k)
    rows = []
    for spread in args.spread:
        real = torch.stack([make_cloud(args.n, args.d, args.k, spread, seed=c) for c in range(args.classes)])
        g = torch.Generator().manual_seed(1)
        pick = torch.randint(args.n, (args.classes, args.ipc), generator=g)
        syn = torch.gather(real, 1, pick.unsqueeze(-1).expand(-1, -1, args.d))
        syn = syn * (1 + 0.05 * torch.randn(syn.shape, generator=g, dtype=syn.dtype))

        def loss_and_grad(**kw):
            vs = syn.clone().requires_grad_(True)
            t0 = time.perf_counter()
            loss = hddgeo.hdd_loss(real, vs, M, centroid="karcher", **kw)
            (grad,) = torch.autograd.grad(loss, vs)
            return float(loss.detach()), grad, time.perf_counter() - t0

        def newton_steps(**kw):
            kt = torch.tensor(args.k, dtype=torch.float64)
            z = _lift(real, kt, 10.0)
            w = torch.full(z.shape[:-1], 1.0 / args.n, dtype=torch.float64)
            tol = kw.get("tol", 1e-10 * sk)
            _, iters, gnorm = _karcher(z, w, args.k, tol, kw.get("max_iter", 50))
            return iters, float(gnorm.max())

        ref_loss, ref_grad, _ = loss_and_grad(tol=1e-12 * sk)
        settings = [dict(tol=t * sk) for t in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8, 1e-10)]
        settings += [dict(max_iter=m) for m in (0, 1, 2)]
        for kw in settings:
            times = []
            for _ in range(args.repeats):
                loss, grad, dt = loss_and_grad(**kw)
                times.append(dt)
            iters, gnorm = newton_steps(**kw)
            rows.append(dict(
                spread=spread, setting=", ".join(f"{k}={v:g}" for k, v in kw.items()), newton_steps_real=iters,
                grad_norm_real=gnorm, loss_rel_diff=abs(loss - ref_loss) / abs(ref_loss),
                grad_rel_diff=float((grad - ref_grad).norm() / ref_grad.norm()),
                fwd_bwd_ms=1e3 * sorted(times)[len(times) // 2]))
            r = rows[-1]
            print(f"{spread:5s} {r['setting']:14s} steps {iters:2d}  |G| {gnorm:8.1e}  loss diff {r['loss_rel_diff']:8.1e}  "
                  f"grad diff {r['grad_rel_diff']:8.1e}  {r['fwd_bwd_ms']:7.1f} ms", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--k", type=float, default=1.0)
    p.add_argument("--spread", nargs="+", default=DEFAULT_SPREADS, choices=list(SPREADS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/karcher_tolerance.csv")
    args = p.parse_args(argv)
    rows = run(args)
    import pandas as pd

    from hddgeo.rundir import write_csv

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_csv(args.out, pd.DataFrame(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
