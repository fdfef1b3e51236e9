"""Seconds per distillation iteration for euclidean vs hdd/law vs hdd/karcher, side by side, beside the floor
that the iteration's convolutions set.

The three matchers run interleaved (one iteration of each in turn, same iteration index, so the
same network and real batch) on digits, Fashion-MNIST (when Debian's ``dataset-fashion-mnist`` is
installed, or ``--fashionmnist-root``) and random CIFAR-sized 3x32x32 tensors; prints the median
seconds per iteration, the ratios to euclidean, and the floor: the convolution FLOPs of one iteration
(counted with forward hooks, 2 x output elements x C_in/groups x kh x kw per convolution; real images
forward only, synthetic images forward and backward, 3x their forward) divided by the float32
2048x2048 matrix-product rate measured in the same run, on the same device. Writes a CSV.

``--device`` (default ``auto``: CUDA when torch sees a GPU) puts the real-image pool, the networks and
the synthetic images there; ``--amp bf16`` runs the feature networks under bf16 autocast (the geometry
stays float64).  On CUDA every timer is read after ``torch.cuda.synchronize()``.  ``--tf32 auto|on|off`` (default
auto, as a run's ``tf32`` field: torch's default, TF32 for convolutions only) says whether TF32 may stand in for
float32 in CUDA convolutions and matmuls, the matrix-product rate included; every row records both settings as they were (``tf32_conv``,
``tf32_matmul``).

    python benchmarks/bench_iterations.py --iterations 20 --out results/bench_iterations.csv
    python benchmarks/bench_iterations.py --device cuda --amp bf16 --datasets fashionmnist random-cifar
"""
from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch

from hddgeo.data import ClassPool, load_dataset
from hddgeo.data.datasets import ImageDataset
from hddgeo.device import AMP_MODES, configure_process, resolve_device, tf32_settings
from hddgeo.distill import DistillConfig, build_method
from hddgeo.losses import Matcher
from hddgeo.rundir import write_csv

MATCHERS = [("euclidean", "law"), ("hdd", "law"), ("hdd", "karcher")]


def random_images(shape, name, n_per_class=300, classes=10, seed=0):
    """A dataset of standard-normal images of ``shape`` (C, H, W), ``n_per_class`` per class, class-major."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_per_class * classes, *shape, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return ImageDataset(name, x, y, x[:10], y[:10], classes, [str(c) for c in range(classes)],
                        (0.0,) * shape[0], (1.0,) * shape[0])


def random_cifar(n_per_class=300, classes=10, seed=0):
    return random_images((3, 32, 32), "random-cifar", n_per_class, classes, seed)


def _sync(device) -> None:
    """Wait for the device's queued work, so that a timer read next measures it (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tf32_matmul() -> bool:
    """Whether float32 CUDA matrix products may use TF32 (torch's default: no)."""
    return tf32_settings()["tf32_matmul"]


def conv_flops_per_image(net, image_shape) -> float:
    """Forward FLOPs of every convolution of ``net`` on one image (multiply-adds counted as 2)."""
    total = []

    def hook(module, inputs, output):
        kh, kw = module.kernel_size
        total.append(2.0 * output.numel() * (module.in_channels // module.groups) * kh * kw)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            net(torch.zeros(1, *image_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return sum(total)


def matmul_rate(n=2048, repeats=5, device="cpu") -> float:
    """FLOP/s of a float32 n x n matrix product on ``device`` now (best of ``repeats``); on CUDA with torch's
    TF32 setting as it is (:func:`tf32_matmul`), synchronised before each timer is read."""
    device = torch.device(device)
    a, b = torch.randn(n, n).to(device), torch.randn(n, n).to(device)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def bench(dataset, ipc, iterations, batch_real, warmup=2, device="cpu", amp="none", matchers=MATCHERS):
    """Rows of median seconds per DM iteration for each of ``matchers`` (``euclidean`` first: the ratios are
    to it), run interleaved on ``device`` (a name or ``torch.device``) with ``amp`` (none | bf16)."""
    device = resolve_device(str(device))
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    matchers = list(matchers)
    if not matchers or matchers[0] != ("euclidean", "law"):
        raise ValueError("matchers must start with ('euclidean', 'law'): the ratios are to euclidean")
    pool = ClassPool(dataset.train_images.to(device), dataset.train_labels, dataset.num_classes)
    setups = []
    for kind, centroid in matchers:
        cfg = DistillConfig(dataset="digits", ipc=ipc, matcher=kind, centroid=centroid, batch_real=batch_real,
                            device=str(device), amp=amp)
        method = build_method("dm", cfg, dataset, pool, Matcher(kind, centroid, scale=1.0))
        syn = method.init_synset(torch.Generator().manual_seed(0))
        opt = torch.optim.SGD([syn.images], lr=1.0, momentum=0.5)
        setups.append((f"{kind}/{centroid}" if kind == "hdd" else kind, method, syn, opt, []))
    rates = []  # the product rate, measured between rounds of iterations: on a shared machine one reading can
    # catch a busy moment (126 against 186 GFLOP/s within one run here), the best one is what the machine can do
    for it in range(warmup + iterations):
        for name, method, syn, opt, times in setups:
            _sync(device)
            t0 = time.perf_counter()
            loss, _, _ = method.step(it, syn)
            opt.zero_grad()
            loss.backward()
            opt.step()
            _sync(device)
            if it >= warmup:
                times.append(time.perf_counter() - t0)
        rates.append(matmul_rate(repeats=2, device=device))
    med = {name: sorted(t)[len(t) // 2] for name, _, _, _, t in setups}
    method = setups[0][1]
    per_image = conv_flops_per_image(method.network(0, torch.Generator().manual_seed(0)), dataset.train_images.shape[1:])
    C = dataset.num_classes
    flops = per_image * (C * method.n_real + 3 * C * ipc)
    rate = max(rates + [matmul_rate(device=device)])
    floor = flops / rate
    return [{"dataset": dataset.name, "ipc": ipc, "batch_real": method.n_real, "matcher": name,
             "seconds_per_iteration": s, "ratio_to_euclidean": s / med["euclidean"],
             "conv_gflop_per_iteration": flops / 1e9, "matmul_gflops": rate / 1e9, "floor_seconds": floor,
             "ratio_to_floor": s / floor, "device": str(device), "amp": amp, **tf32_settings()} for name, s in med.items()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fashionmnist-root", default=None,
                   help="folder with the Fashion-MNIST files (default: Debian's /usr/share/datasets/fashion-mnist)")
    p.add_argument("--datasets", nargs="+", default=["digits", "fashionmnist", "random-cifar"])
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--amp", default="none", choices=AMP_MODES,
                   help="bf16: the feature networks under bf16 autocast (the geometry stays float64)")
    p.add_argument("--tf32", default="auto", choices=["auto", "on", "off"],
                   help="TF32 for float32 CUDA work, a run's tf32 field: auto (torch's default: convolutions in TF32, "
                        "matmuls not), on (both), off (neither)")
    p.add_argument("--out", default="results/bench_iterations.csv")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        p.error(str(err))
    configure_process(tf32={"auto": None, "on": True, "off": False}[args.tf32], device=device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        print(f"device {device} ({torch.cuda.get_device_name(device)}); float32 convolutions and matmuls with TF32 "
              f"{args.tf32}")
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
        rows += bench(dataset, args.ipc, args.iterations, args.batch_real, device=device, amp=args.amp)
    df = pd.DataFrame(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_csv(args.out, df)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
