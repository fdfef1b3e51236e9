"""What the report scripts share: a study folder's finished cells, their logs, and accuracy-vs-iteration curves.

The scripts beside this file read what ``hddgeo study SPEC`` wrote (its ``runs/`` and long tables); they import
this module with their own folder on ``sys.path`` (``experiments/`` is no package).
"""
from __future__ import annotations

import os

import pandas as pd

from hddgeo.distill.study import read_log, read_run
from hddgeo.labels import is_random


def finished_cells(study: str, baselines: bool = True) -> list[tuple]:
    """``(run_dir, config, metrics)`` of every finished cell in ``study/runs`` (name order), checked as ``hddgeo
    compare`` checks them; the random rows too unless ``baselines`` is false."""
    runs = os.path.join(study, "runs")
    if not os.path.isdir(runs):
        raise ValueError(f"{runs} not found: name a study folder (the --out of hddgeo study)")
    out = []
    for name in sorted(os.listdir(runs)):
        run_dir = os.path.join(runs, name)
        if os.path.isfile(os.path.join(run_dir, "metrics.json")):
            cfg, metrics = read_run(run_dir)
            if baselines or not is_random(metrics["method"]):
                out.append((run_dir, cfg, metrics))
    if not out:
        raise ValueError(f"no finished cell in {runs}")
    return out


def logs(cells: list) -> pd.DataFrame:
    """The ``log.csv`` of every distilled cell of ``cells``, one row per iteration, with its method, IPC and seed."""
    return pd.concat([read_log(d).assign(method=m["method"], ipc=cfg.ipc, seed=cfg.seed)
                      for d, cfg, m in cells if not is_random(m["method"])], ignore_index=True)


def curves_plot(logs: pd.DataFrame, path: str, title: str = "") -> bool:
    """Accuracy of the periodic evaluation (mean over seeds, band: their range) and loss against the iterations,
    per method and IPC, for the cells that evaluated periodically; False (nothing drawn) when none did."""
    if "eval_acc" not in logs or logs["eval_acc"].isna().all():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (method, ipc), g in logs.groupby(["method", "ipc"], sort=False):
        label = f"{method} (IPC {ipc})" if logs["ipc"].nunique() > 1 else method
        acc = g.dropna(subset=["eval_acc"]).groupby("iteration")["eval_acc"].agg(["mean", "min", "max"])
        axes[0].plot(acc.index, 100 * acc["mean"], marker="o", ms=3, label=label)
        axes[0].fill_between(acc.index, 100 * acc["min"], 100 * acc["max"], alpha=0.15)
        loss = g.groupby("iteration")["loss"].mean()
        axes[1].plot(loss.index, loss.values, label=label)
    axes[0].set(xlabel="iteration", ylabel="test accuracy (%), periodic evaluation",
                title="accuracy (band: the seeds' range)")
    axes[1].set(xlabel="iteration", ylabel="matching loss (own scale per method)", yscale="log", title="loss")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True
