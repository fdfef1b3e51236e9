"""Coreset baselines (random / herding / k-center / forgetting) under the distilled-set evaluation protocol.

For every method and IPC, selects real training images with :func:`hddgeo.coreset.select_coreset`,
trains ``--nets`` fresh ConvNets on them with DSA (:func:`hddgeo.coreset.evaluate_coreset`) and
tests on the real test split. Writes a tidy CSV (method, ipc, acc_mean, acc_std) and a markdown
table (mean ± std in %, one row per method, one column per IPC) to ``--out`` and prints the table.

    python experiments/coreset_baselines.py --dataset digits --ipc 1 10 --nets 3 --epochs 300 \\
        --out results/coreset
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from hddgeo.coreset import CORESET_METHODS, FEATURE_MODELS, evaluate_coreset
from hddgeo.data import load_dataset
from hddgeo.data.datasets import DATASET_NAMES
from hddgeo.device import resolve_device
from hddgeo.distill.study import write_report

TABLE_NAME = "coreset"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-root", default=None, help="directory holding the dataset (not needed for digits)")
    p.add_argument("--download", action="store_true", help="download torchvision datasets that are missing")
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10], help="images per class (one or more)")
    p.add_argument("--methods", nargs="+", default=list(CORESET_METHODS), choices=CORESET_METHODS)
    p.add_argument("--nets", type=int, default=3, help="evaluation networks per cell")
    p.add_argument("--epochs", type=int, default=300, help="training epochs of each evaluation network")
    p.add_argument("--model", default="convnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-dsa", action="store_true", help="train evaluation networks without DSA")
    p.add_argument("--feature-model", default="random", choices=FEATURE_MODELS,
                   help="network behind herding / k-center features: randomly initialised or briefly trained")
    p.add_argument("--feature-epochs", type=int, default=3, help="training epochs when --feature-model trained")
    p.add_argument("--forgetting-epochs", type=int, default=3,
                   help="epochs of the network whose forgetting events are counted")
    p.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is much faster than the default on a busy shared machine)")
    p.add_argument("--out", default="results/coreset")
    return p.parse_args(argv)


def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset, data_root=args.data_root, download=args.download)
    select_kwargs = {"feature_model": args.feature_model, "feature_epochs": args.feature_epochs,
                     "forgetting_epochs": args.forgetting_epochs}
    rows = []
    for ipc in args.ipc:
        for method in args.methods:
            t0 = time.perf_counter()
            res = evaluate_coreset(method, dataset, ipc, num_nets=args.nets, epochs=args.epochs, seed=args.seed,
                                   dsa=not args.no_dsa, model=args.model, device=resolve_device(args.device),
                                   select_kwargs=select_kwargs)
            seconds = time.perf_counter() - t0
            print(f"{method:>10s} ipc {ipc:>3d}: {100 * res['mean']:.1f} ± {100 * res['std']:.1f} "
                  f"({seconds:.0f} s)", file=sys.stderr, flush=True)
            rows += [{"method": method, "ipc": ipc, "seed": args.seed, "network": j, "acc": acc}
                     for j, acc in enumerate(res["accs"])]
    table = pd.DataFrame(rows)
    print(write_report(table, args.out, TABLE_NAME)[2], end="")
    return table


if __name__ == "__main__":
    main()
