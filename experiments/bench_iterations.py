"""Seconds per distillation iteration for euclidean vs hdd/law vs hdd/karcher, side by side.

The three matchers run interleaved (one iteration of each in turn, same iteration index, so the
same network and real batch) on digits and on random CIFAR-sized 3x32x32 tensors; prints the median
seconds per iteration and the ratios to euclidean, and writes a CSV.

    python experiments/bench_iterations.py --iterations 20 --out results/bench_iterations.csv
"""
from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch

from hddgeo.data import ClassPool, load_dataset
from hddgeo.data.datasets import ImageDataset
from hddgeo.distill import DistillConfig, build_method
from hddgeo.losses import Matcher

MATCHERS = [("euclidean", "law"), ("hdd", "law"), ("hdd", "karcher")]


def random_cifar(n_per_class=300, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_per_class * classes, 3, 32, 32, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return ImageDataset("random-cifar", x, y, x[:10], y[:10], classes, [str(c) for c in range(classes)],
                        (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def bench(dataset, ipc, iterations, batch_real, warmup=2):
    pool = ClassPool(dataset.train_images, dataset.train_labels, dataset.num_classes)
    setups = []
    for kind, centroid in MATCHERS:
        cfg = DistillConfig(dataset="digits", ipc=ipc, matcher=kind, centroid=centroid, batch_real=batch_real)
        method = build_method("dm", cfg, dataset, pool, Matcher(kind, centroid, scale=1.0))
        syn = method.init_synset(torch.Generator().manual_seed(0))
        opt = torch.optim.SGD([syn.images], lr=1.0, momentum=0.5)
        setups.append((f"{kind}/{centroid}" if kind == "hdd" else kind, method, syn, opt, []))
    for it in range(warmup + iterations):
        for name, method, syn, opt, times in setups:
            t0 = time.perf_counter()
            loss, _, _ = method.step(it, syn)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if it >= warmup:
                times.append(time.perf_counter() - t0)
    med = {name: sorted(t)[len(t) // 2] for name, _, _, _, t in setups}
    return [{"dataset": dataset.name, "ipc": ipc, "batch_real": batch_real, "matcher": name,
             "seconds_per_iteration": s, "ratio_to_euclidean": s / med["euclidean"]} for name, s in med.items()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/bench_iterations.csv")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench(load_dataset("digits"), args.ipc, args.iterations, args.batch_real)
    rows += bench(random_cifar(), args.ipc, args.iterations, args.batch_real)
    df = pd.DataFrame(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    df.to_csv(args.out, index=False)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
