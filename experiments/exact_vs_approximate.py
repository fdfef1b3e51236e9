"""Centroid measurements of the exact-vs-approximate study, read from its folder (a study folder in, tables out).

    hddgeo study exact_vs_approximate                     # the cells (the spec says the grid); results.md
    hddgeo compare results/exact_vs_approximate/results.csv --claims exact_vs_approximate   # the verdict
    python experiments/exact_vs_approximate.py [STUDY]    # these measurements (default results/exact_vs_approximate)

Per method and IPC, means over seeds: ``gap_real`` / ``gap_syn``, the Law-Karcher distance of the real batch's
and the synthetic set's class centroids at the last logged iteration (``gap_every``; the synthetic one is 0 at
IPC 1); ``shift_vs_karcher``, ``|x - x_karcher| / |x_karcher - x_init|`` of the final images against those of the
Karcher run of the same IPC, seed and geometry (DM: the untagged one; needs ``synset.pt``); ``sec_per_it``, the
median seconds of an iteration without the gap diagnostic.  Writes ``centroids.csv``, ``centroids.md`` and
``centroid_gap.png`` (the gaps against the iterations, per IPC and geometry) into the study folder.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from studyfolder import finished_cells, logs

from hddgeo import stats
from hddgeo.distill.study import initial_images
from hddgeo.rundir import write_csv, write_text
from hddgeo.tables import markdown_table


def geometry(method: str) -> str:
    """The geometry a label's tag names (``k0.15-noclip``); untagged: the paper's k 1, clip 10."""
    return method.partition("@")[2] or "k1 (clip 10)"


def _images(run_dir: str):
    path = os.path.join(run_dir, "synset.pt")
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["params"].double()


def measure(cells: list) -> pd.DataFrame:
    """One row per distilled cell: its final gaps, step time and image shift against its Karcher run."""
    rows, karcher, init = [], {}, {}
    for run_dir, cfg, metrics in cells:
        method = metrics["method"]
        log = pd.read_csv(os.path.join(run_dir, "log.csv"))
        gaps = log.dropna(subset=["gap_real"]) if "gap_real" in log else log.iloc[:0]
        plain = log[log["gap_real"].isna()] if "gap_real" in log else log
        rows.append({"method": method, "geometry": geometry(method), "ipc": cfg.ipc, "seed": cfg.seed,
                     "gap_real": float(gaps["gap_real"].iloc[-1]) if len(gaps) else np.nan,
                     "gap_syn": float(gaps["gap_syn"].iloc[-1]) if len(gaps) else np.nan,
                     "sec_per_it": float((plain if len(plain) else log)["seconds"].median()), "run_dir": run_dir})
        if cfg.centroid == "karcher" and cfg.matcher == "hdd":
            karcher[(cfg.ipc, cfg.seed, geometry(method))] = _images(run_dir)
            if (cfg.ipc, cfg.seed) not in init:
                init[(cfg.ipc, cfg.seed)] = initial_images(cfg).double()
    table = pd.DataFrame(rows).sort_values(["ipc", "method"], key=lambda c: c.map(stats.method_rank)
                                           if c.name == "method" else c, kind="stable", ignore_index=True)
    shifts = []
    for r in table.itertuples():
        ref = karcher.get((r.ipc, r.seed, r.geometry))
        x = _images(r.run_dir)
        ok = ref is not None and x is not None and (r.ipc, r.seed) in init
        shifts.append(float((x - ref).norm() / (ref - init[(r.ipc, r.seed)]).norm()) if ok else np.nan)
    return table.assign(shift_vs_karcher=shifts)


def gap_plot(curves: pd.DataFrame, path: str) -> None:
    """d(Law, Karcher) of the real batch (black) and of each run's synthetic set, mean over seeds, per iteration."""
    import matplotlib.pyplot as plt

    from hddgeo.plots import save_figure  # (its import selects the Agg backend)

    curves = curves.dropna(subset=["gap_real"]).assign(geometry=lambda t: t["method"].map(geometry))
    ipcs, geos = sorted(curves["ipc"].unique()), list(dict.fromkeys(curves["geometry"]))
    fig, axes = plt.subplots(len(ipcs), len(geos), figsize=(4 * len(geos), 3.2 * len(ipcs) + 0.6), squeeze=False,
                             sharex=True)
    for i, ipc in enumerate(ipcs):
        for j, geo in enumerate(geos):
            ax, sub = axes[i, j], curves[(curves["ipc"] == ipc) & (curves["geometry"] == geo)]
            real = sub.groupby("iteration")["gap_real"].mean()
            ax.plot(real.index, real.values, color="black", lw=2, alpha=0.7, label="real batch")
            for method, g in sub.groupby("method", sort=False):
                syn = g.groupby("iteration")["gap_syn"].mean()
                ax.plot(syn.index, syn.values, marker="o", ms=3, label=f"synthetic, {method.partition('@')[0]}")
            ax.set_title(f"IPC {ipc} · {geo}", fontsize=10)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            ax.set_xlabel("iteration" if i == len(ipcs) - 1 else "")
            ax.set_ylabel("d(Law, Karcher), mean over classes" if j == 0 else "")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Law's centroid against the exact Karcher mean\nduring distillation (mean over seeds)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", nargs="?", default="results/exact_vs_approximate", help="the study folder")
    study = p.parse_args(argv).study
    cells = finished_cells(study, baselines=False)
    table = measure(cells)
    write_csv(os.path.join(study, "centroids.csv"), table.drop(columns="run_dir"))
    means = table.groupby(["ipc", "method"], sort=False)[["gap_real", "gap_syn", "shift_vs_karcher", "sec_per_it"]]
    view = means.mean().reset_index().assign(seeds=means.size().values)
    text = ("Per method and IPC, means over seeds: the Law-Karcher distance of the real and synthetic class centroids "
            "at the last logged iteration, the final images' shift against the Karcher run's (relative to its own), "
            "seconds per iteration.\n\n" + markdown_table(view.round(6)))
    write_text(os.path.join(study, "centroids.md"), text)
    gap_plot(logs(cells), os.path.join(study, "centroid_gap.png"))
    print(text)
    print(f"wrote {os.path.join(study, 'centroids.csv')}, centroids.md and centroid_gap.png")
    return 0


if __name__ == "__main__":
    from hddgeo.cli import run_main

    sys.exit(run_main(main))
