"""Coreset baselines (random / herding / k-center / forgetting) under the distilled-set evaluation protocol.

For every method and IPC, selects real training images with :func:`hddgeo.coreset.select_coreset`,
trains ``--nets`` fresh ConvNets on them with DSA (:func:`hddgeo.coreset.evaluate_coreset`) and
tests on the real test split. Writes a tidy CSV (method, ipc, acc_mean, acc_std) and a markdown
table (mean ± std in %, one row per method, one column per IPC) to ``--out`` and prints the table.

    python experiments/coreset_baselines.py --dataset digits --ipc 1 10 --nets 3 --epochs 300 --out results/coreset

Herding and k-center rank the images by the features of a randomly initialised ConvNet, forgetting counts the
events of 3 training epochs (:func:`hddgeo.coreset.select_coreset`'s defaults); evaluation networks train with DSA.
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from hddgeo.coreset import CORESET_METHODS, evaluate_coreset
from hddgeo.data import load_dataset
from hddgeo.data.datasets import DATASET_NAMES
from hddgeo.device import resolve_device
from hddgeo.distill.study import write_report

TABLE_NAME = "coreset"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-root", default=None, help="directory holding the dataset (not needed for digits)")
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10], help="images per class (one or more)")
    p.add_argument("--methods", nargs="+", default=list(CORESET_METHODS), choices=CORESET_METHODS)
    p.add_argument("--nets", type=int, default=3, help="evaluation networks per cell")
    p.add_argument("--epochs", type=int, default=300, help="training epochs of each evaluation network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--out", default="results/coreset")
    return p.parse_args(argv)


def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    dataset = load_dataset(args.dataset, data_root=args.data_root)
    rows = []
    for ipc in args.ipc:
        for method in args.methods:
            t0 = time.perf_counter()
            res = evaluate_coreset(method, dataset, ipc, num_nets=args.nets, epochs=args.epochs, seed=args.seed,
                                   device=resolve_device(args.device))
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
