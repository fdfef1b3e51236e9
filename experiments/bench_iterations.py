"""Seconds per distillation iteration for euclidean vs hdd/law vs hdd/karcher, side by side, beside the floor
that the iteration's convolutions set.

The three matchers run interleaved (one iteration of each in turn, same iteration index, so the
same network and real batch) on digits, Fashion-MNIST (when Debian's ``dataset-fashion-mnist`` is
installed, or ``--fashionmnist-root``) and random CIFAR-sized 3x32x32 tensors; prints the median
seconds per iteration, the ratios to euclidean, and the floor: the convolution FLOPs of one iteration
(counted with forward hooks, 2 x output elements x C_in/groups x kh x kw per convolution; real images
forward only, synthetic images forward and backward, 3x their forward) divided by the float32
2048x2048 matrix-product rate measured in the same run. Writes a CSV.

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


def conv_flops_per_image(net, image_shape) -> float:
    """Forward FLOPs of every convolution of ``net`` on one image (multiply-adds counted as 2)."""
    total = []

    def hook(module, inputs, output):
        kh, kw = module.kernel_size
        total.append(2.0 * output.numel() * (module.in_channels // module.groups) * kh * kw)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, *image_shape))
    finally:
        for h in handles:
            h.remove()
    return sum(total)


def matmul_rate(n=2048, repeats=5) -> float:
    """FLOP/s of a float32 n x n matrix product on this machine now (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


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
    method = setups[0][1]
    per_image = conv_flops_per_image(method.network(0, torch.Generator().manual_seed(0)), dataset.train_images.shape[1:])
    C = dataset.num_classes
    flops = per_image * (C * method.n_real + 3 * C * ipc)
    rate = matmul_rate()
    floor = flops / rate
    return [{"dataset": dataset.name, "ipc": ipc, "batch_real": method.n_real, "matcher": name,
             "seconds_per_iteration": s, "ratio_to_euclidean": s / med["euclidean"],
             "conv_gflop_per_iteration": flops / 1e9, "matmul_gflops": rate / 1e9, "floor_seconds": floor,
             "ratio_to_floor": s / floor} for name, s in med.items()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fashionmnist-root", default=None,
                   help="folder with the Fashion-MNIST files (default: Debian's /usr/share/datasets/fashion-mnist)")
    p.add_argument("--datasets", nargs="+", default=["digits", "fashionmnist", "random-cifar"])
    p.add_argument("--out", default="results/bench_iterations.csv")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.datasets:
        if name == "random-cifar":
            dataset = random_cifar()
        else:
            try:
                dataset = load_dataset(name, data_root=args.fashionmnist_root if name == "fashionmnist" else None)
            except FileNotFoundError as err:
                print(f"skipping {name}: {str(err).splitlines()[0][:160]}")
                continue
        rows += bench(dataset, args.ipc, args.iterations, args.batch_real)
    df = pd.DataFrame(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    df.to_csv(args.out, index=False)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
