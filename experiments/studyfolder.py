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


def curves_plot(logs: pd.DataFrame, path: str, title: str = "", loss_only: bool = False) -> bool:
    """Accuracy of the periodic evaluation (mean over seeds, band: their range) and loss against the iterations,
    per method and IPC; False (nothing drawn) when no cell evaluated periodically, unless ``loss_only`` (then the
    loss alone is drawn, and its title says the accuracy was not measured)."""
    has_acc = "eval_acc" in logs and not logs["eval_acc"].isna().all()
    if logs.empty or not (has_acc or loss_only):
        return False
    import matplotlib.pyplot as plt

    from hddgeo.plots import save_figure  # (its import selects the Agg backend)

    fig, axes = plt.subplots(1, 1 + has_acc, figsize=(11 if has_acc else 6.5, 4), squeeze=False)
    ax_acc, ax_loss = axes[0][0], axes[0][-1]
    for (method, ipc), g in logs.groupby(["method", "ipc"], sort=False):
        label = f"{method} (IPC {ipc})" if logs["ipc"].nunique() > 1 else method
        if has_acc:
            acc = g.dropna(subset=["eval_acc"]).groupby("iteration")["eval_acc"].agg(["mean", "min", "max"])
            ax_acc.plot(acc.index, 100 * acc["mean"], marker="o", ms=3, label=label)
            ax_acc.fill_between(acc.index, 100 * acc["min"], 100 * acc["max"], alpha=0.15)
        first = g.sort_values("iteration").groupby("seed")["loss"].transform("first")
        loss = (g["loss"] / first).groupby(g["iteration"]).agg(["mean", "min", "max"])  # each cell's own start = 1
        ax_loss.plot(loss.index, loss["mean"], label=label)
        ax_loss.fill_between(loss.index, loss["min"], loss["max"], alpha=0.15)
    ax_loss.set(xlabel="iteration", ylabel="matching loss / its value at iteration 1", yscale="log",
                title="loss (band: the seeds' range)" + ("" if has_acc else "; no periodic evaluation"))
    if has_acc:
        ax_acc.set(xlabel="iteration", ylabel="test accuracy (%), periodic evaluation",
                   title="accuracy (band: the seeds' range)")
    ax_acc.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    return True
