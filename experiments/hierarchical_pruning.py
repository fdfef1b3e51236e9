"""Accuracy curves of the hierarchical-pruning study and their stability, read from its folder.

    hddgeo study hierarchical_pruning                  # IPC 1 (then --stage ipc10); accuracy paired by seed
    hddgeo compare results/hierarchical_pruning --claims hierarchical_pruning    # the claims, both stages
    python experiments/hierarchical_pruning.py [STUDY] # these curves (default results/hierarchical_pruning)

Every cell evaluates its set every ``eval_every`` iterations (hddgeo/specs/hierarchical_pruning.toml); per method
and IPC this prints the images the pool keeps of the smallest class, the curve's last point and its stability (the
std of the accuracy over the curve's last half), means over seeds; ``curves.csv``, ``stability.csv`` and
``accuracy_curves.png`` go into the study folder.
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from studyfolder import curves_plot, finished_cells, logs

from hddgeo import stats
from hddgeo.data import load_dataset
from hddgeo.hierarchy import kept_count
from hddgeo.rundir import write_csv
from hddgeo.tables import markdown_table


def stability(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method, IPC and seed: the curve's last point and the std (points) of its second half."""
    rows = []
    for (method, ipc, seed), g in curves.dropna(subset=["eval_acc"]).groupby(["method", "ipc", "seed"], sort=False):
        last = g[g["iteration"] > g["iteration"].max() / 2]
        rows.append({"method": method, "ipc": ipc, "seed": seed, "final": 100 * g["eval_acc"].iloc[-1],
                     "last_half_mean": 100 * last["eval_acc"].mean(), "last_half_std": 100 * last["eval_acc"].std(ddof=0)})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", nargs="?", default="results/hierarchical_pruning", help="the study folder")
    study = p.parse_args(argv).study
    cells = finished_cells(study, baselines=False)
    curves = logs(cells)
    per_seed = stability(curves)
    view = per_seed.groupby(["ipc", "method"], sort=False)[["final", "last_half_mean", "last_half_std"]].mean()
    view = view.reset_index().sort_values(["ipc", "method"], key=lambda c: c.map(stats.method_rank)
                                          if c.name == "method" else c, kind="stable")
    cfgs = {m["method"]: cfg for _, cfg, m in cells}
    dataset = load_dataset(cells[0][1].dataset, data_root=cells[0][1].data_root)
    smallest = int(dataset.train_labels.bincount().min())
    view.insert(2, "kept (smallest class)", [kept_count(smallest, cfgs[m].prune_fraction) for m in view["method"]])
    write_csv(os.path.join(study, "curves.csv"), curves[["method", "ipc", "seed", "iteration", "eval_acc", "loss"]])
    write_csv(os.path.join(study, "stability.csv"), per_seed)
    drawn = curves_plot(curves, os.path.join(study, "accuracy_curves.png"),
                        "Accuracy during distillation from a pruned pool (each point: fresh ConvNets on the current set)")
    print("Periodic evaluation, means over seeds (accuracy in %; the last half's std is the stability):\n\n"
          + markdown_table(view.round(2)))
    print(f"wrote {os.path.join(study, 'curves.csv')}, stability.csv" + (" and accuracy_curves.png" if drawn else ""))
    return 0


if __name__ == "__main__":
    from hddgeo.cli import run_main

    sys.exit(run_main(main))
