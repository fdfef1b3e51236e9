"""Benchmark: Law centroid vs exact Karcher mean (forward and forward+backward).

For n in {64, 256, 1024, 4096}, d in {128, 2048} and a tight and a wide spread of radii, prints and
writes as CSV: Law / Karcher times (median of repeats), Karcher iterations and final gradient norm,
peak memory of one Karcher forward+backward, and the distance between the two centroids.

Each case runs in its own subprocess so that peak memory (``ru_maxrss`` above the level after the
inputs are built) belongs to that case alone.

``--api`` instead times the public API as a loss uses it: ``hddgeo.lift`` then ``law_centroid`` /
``karcher_mean``, gradient to the features, for one set of ``n`` points and for ``--classes`` sets
batched (``C x n x d``), Law and Karcher interleaved, medians and their ratio.

    python benchmarks/bench_centroids.py --out results/bench_centroids.csv
    python benchmarks/bench_centroids.py --api --n 256 --classes 1 10 --repeats 7
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SPREADS = {
    # tight: every point at radius ~10 sqrt(k) (the reference clip) with a small angular spread,
    # like clipped random-ConvNet features; wide: radii uniform in [0, 10 sqrt(k)], random directions
    "tight": dict(radius=10.0, radial_jitter=0.01, angular=0.05),
    "wide": dict(radius=10.0, radial_jitter=None, angular=None),
    # clipped: every point exactly at the clip radius 10 with angular spread 1e-3, where -<zbar, zbar>_L
    # cancels in float64 and Law's centroid takes its frame path (not in the default list)
    "clipped": dict(radius=10.0, radial_jitter=0.0, angular=1e-3),
}
DEFAULT_SPREADS = ["tight", "wide"]


def make_cloud(n, d, k, spread, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    cfg = SPREADS[spread]
    dirs = torch.randn(n, d, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    if cfg["angular"] is None:
        r = torch.rand(n, 1, generator=g, dtype=torch.float64) * cfg["radius"]
    else:
        base = torch.randn(1, d, generator=g, dtype=torch.float64)
        dirs = base / base.norm() + cfg["angular"] * dirs
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        r = cfg["radius"] * (1 + cfg["radial_jitter"] * torch.randn(n, 1, generator=g, dtype=torch.float64))
    return dirs * r * k**0.5  # tangent vectors at the origin with |v|/sqrt(k) = r


def timed(fns, repeats):
    """Median seconds of each function, run interleaved so that machine noise hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [sorted(ts)[len(ts) // 2] for ts in times]


def fwd_bwd(v, target, M, fn):
    """Lift the features, take the centroid, backpropagate ``<c, target>`` to the features."""
    import hddgeo

    def run():
        vv = v.clone().requires_grad_(True)
        c = fn(hddgeo.lift(vv, M), M)
        (c * target).sum().backward()
        return vv.grad

    return run


def run_api_case(n, d, classes, spread, k, repeats, threads):
    import geoopt
    import torch

    import hddgeo

    torch.set_num_threads(threads)
    M = geoopt.Lorentz(k=k)
    v = torch.stack([make_cloud(n, d, k, spread, seed=c) for c in range(classes)])
    if classes == 1:
        v = v[0]
    target = torch.randn(d + 1, dtype=torch.float64)
    law, kar = timed([fwd_bwd(v, target, M, hddgeo.law_centroid), fwd_bwd(v, target, M, hddgeo.karcher_mean)], repeats)
    _, info = hddgeo.karcher_mean(hddgeo.lift(v, M), M, return_info=True)
    return dict(n=n, d=d + 1, classes=classes, spread=spread, k=k, law_fwd_bwd_ms=1e3 * law, karcher_fwd_bwd_ms=1e3 * kar,
                ratio_fwd_bwd=kar / law, karcher_iters=info.iterations, karcher_grad_norm=float(info.grad_norm.max()))


def run_case(n, d, spread, k, repeats, threads=2):
    import resource

    import geoopt
    import torch

    import hddgeo

    torch.set_num_threads(threads)
    M = geoopt.Lorentz(k=k)
    v = make_cloud(n, d, k, spread)
    target = torch.randn(d + 1, dtype=torch.float64)

    def law_fwd():
        with torch.no_grad():
            return hddgeo.law_centroid(hddgeo.lift(v, M), M)

    def karcher_fwd():
        with torch.no_grad():
            return hddgeo.karcher_mean(hddgeo.lift(v, M), M)

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fwd_bwd(v, target, M, hddgeo.karcher_mean)()  # first: peak memory of one Karcher forward+backward
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    z = hddgeo.lift(v, M)
    c_k, info = hddgeo.karcher_mean(z, M, return_info=True)
    c_l = hddgeo.law_centroid(z, M)
    law_f, kar_f, law_fb, kar_fb = timed(
        [law_fwd, karcher_fwd, fwd_bwd(v, target, M, hddgeo.law_centroid), fwd_bwd(v, target, M, hddgeo.karcher_mean)], repeats)
    return dict(
        n=n, d=d + 1, spread=spread, k=k,
        law_fwd_ms=1e3 * law_f, law_fwd_bwd_ms=1e3 * law_fb, karcher_fwd_ms=1e3 * kar_f, karcher_fwd_bwd_ms=1e3 * kar_fb,
        karcher_iters=info.iterations,
        karcher_grad_norm=float(info.grad_norm),
        karcher_peak_mib=peak_mib,
        law_karcher_dist=float(hddgeo.geometry.dist(c_k, c_l, M)),
        frechet_gap=float(hddgeo.frechet_objective(c_l, z, M) - hddgeo.frechet_objective(c_k, z, M)),
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--d", type=int, nargs="+", default=[128, 2048], help="feature dims (points have d+1 coords)")
    p.add_argument("--spread", nargs="+", default=DEFAULT_SPREADS, choices=list(SPREADS))
    p.add_argument("--k", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 gives steadier numbers on a busy machine)")
    p.add_argument("--api", action="store_true", help="public API with the lift, one set and --classes sets batched")
    p.add_argument("--classes", type=int, nargs="+", default=[1, 10], help="set counts for --api")
    p.add_argument("--out", default=None, help="CSV path (default results/bench_centroids.csv, or ..._api.csv with --api)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args(argv)
    if args.case:
        parts = args.case.split(",")
        if len(parts) == 4:
            n, d, classes, spread = parts
            row = run_api_case(int(n), int(d), int(classes), spread, args.k, args.repeats, args.threads)
        else:
            n, d, spread = parts
            row = run_case(int(n), int(d), spread, args.k, args.repeats, args.threads)
        print(json.dumps(row))
        return 0
    if args.out is None:
        args.out = "results/bench_centroids_api.csv" if args.api else "results/bench_centroids.csv"
    if args.api:
        return api_main(args)

    import pandas as pd

    rows = []
    for spread in args.spread:
        for d in args.d:
            for n in args.n:
                row = _subprocess_case(f"{n},{d},{spread}", args)
                row["ratio_fwd_bwd"] = row["karcher_fwd_bwd_ms"] / row["law_fwd_bwd_ms"]
                rows.append(row)
                print(f"n={n:5d} d={d + 1:5d} {spread:5s}  law {row['law_fwd_bwd_ms']:8.2f} ms  karcher "
                      f"{row['karcher_fwd_bwd_ms']:8.2f} ms ({row['ratio_fwd_bwd']:.1f}x)  iters {row['karcher_iters']}  "
                      f"|grad| {row['karcher_grad_norm']:.1e}  peak {row['karcher_peak_mib']:.0f} MiB", flush=True)
    return _save(pd.DataFrame(rows), args.out, ["n", "d", "spread", "law_fwd_ms", "law_fwd_bwd_ms", "karcher_fwd_ms",
                                                 "karcher_fwd_bwd_ms", "ratio_fwd_bwd", "karcher_iters",
                                                 "karcher_grad_norm", "karcher_peak_mib", "law_karcher_dist"])


def _save(df, out, cols=None) -> int:
    """Write the CSV and print the table (``cols`` of it) as markdown when tabulate is there."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    from hddgeo.rundir import write_csv

    write_csv(str(out), df)
    shown = df if cols is None else df[cols]
    print(shown.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else shown.to_string(index=False))
    print(f"wrote {out}")
    return 0


def _subprocess_case(case, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--case", case, "--k", str(args.k), "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        raise SystemExit(f"case {case} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def api_main(args):
    import pandas as pd

    rows = []
    for spread in args.spread:
        for d in args.d:
            for n in args.n:
                for classes in args.classes:
                    row = _subprocess_case(f"{n},{d},{classes},{spread}", args)
                    rows.append(row)
                    print(f"n={n:5d} d={d + 1:5d} classes={classes:3d} {spread:5s}  law {row['law_fwd_bwd_ms']:8.2f} ms  karcher "
                          f"{row['karcher_fwd_bwd_ms']:8.2f} ms ({row['ratio_fwd_bwd']:.2f}x)  iters {row['karcher_iters']}  "
                          f"|grad| {row['karcher_grad_norm']:.1e}", flush=True)
    return _save(pd.DataFrame(rows), args.out)


def _has_tabulate():
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


if __name__ == "__main__":
    sys.exit(main())
