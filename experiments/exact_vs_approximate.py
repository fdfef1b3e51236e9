"""Exact (Karcher) versus approximate (Law, tangent) hyperbolic centroids inside the same DM pipeline.

Every cell is one :func:`hddgeo.distill.run_distillation` run; cells differ *only* in the centroid
(``law`` | ``karcher`` | ``tangent``) and the geometry (``k``, ``max_norm``), with plain DM
(euclidean mean matching) as the baseline.  All cells of one IPC and seed share the seed, hence the
same feature networks, real batches and DSA draws at every iteration, the same initial images and the
same evaluation networks: differences between cells come from the centroid alone.  Every run logs
``gap_real`` / ``gap_syn`` (mean over classes of ``d(Law centroid, Karcher mean)`` of the real and the
synthetic features) every ``--gap-every`` iterations.

    python experiments/exact_vs_approximate.py                  # digits, ~20 min on 2 busy CPU cores
    python experiments/exact_vs_approximate.py --quick --out /tmp/eva   # smoke test (seconds)
    python experiments/exact_vs_approximate.py --paper-scale --dataset cifar10 --data-root DATA

Default (digits): IPC 1 and 10; k in {0.1, 1} x max_norm in {10, none}; 100 iterations, 64 real
images per class per iteration, lambda (``--scale``) 1.0, lr_img 1, one seed; each cell evaluated by 3
ConvNets trained 200 epochs (the ``hddgeo demo`` budget).  Why these k: digits' 8x8 features have
norm ~4.9, so the clip ``|v|/sqrt(k) <= 10`` only bites for k < 0.24; at k = 0.1 it puts every feature
at radius ``10 sqrt(0.1) = 3.16`` (directions only), without it the features sit at ``|v|/sqrt(k) ~ 15``;
at k = 1 the two clip settings should give identical runs (a built-in check).  lambda = 1 because the
paper's 20 makes HDD's image gradients far larger than DM's on digits (see ``hddgeo demo --help``).

``--paper-scale`` switches to the paper's budget: 20,000 iterations, 256 real images per class,
evaluation 5 networks x 1000 epochs, and lambda / lr_img (and k, unless ``--k`` is given) from the
paper's Tables 5-6 for DM on the dataset and IPC (digits is not listed there: ``--scale`` is kept).

Outputs in ``--out`` (default ``results/exact_vs_approximate``):

* ``results.csv`` (one row per cell: accuracy mean/std over all evaluation networks of all seeds,
  seconds per iteration, final centroid gaps, image shift relative to the Karcher run) and
  ``runs.csv`` (one row per run directory), ``results.md`` (the tables);
* ``accuracy.png``, ``seconds_per_iteration.png``, ``loss_curves.png``, ``centroid_gap.png``;
* ``runs/<cell>/``: one resumable run directory per cell and seed (a killed study continues where
  it stopped when started again with the same arguments).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from hddgeo import stats
from hddgeo.distill import DistillConfig, paper_preset
from hddgeo.cli import run_main
from hddgeo.distill.study import baseline_row, check_seeds_and_jobs, initial_images, read_log, run_cell
from hddgeo.plots import save_figure, save_table_md
from hddgeo.rundir import write_csv, write_json, write_text

CENTROIDS = ("law", "karcher", "tangent")
METHOD_ORDER = ["DM", "HDD law", "HDD karcher", "HDD tangent"]
PALETTE = dict(zip(METHOD_ORDER, ["0.45"] + list(sns.color_palette("deep", 3))))


def _max_norm(text: str) -> Optional[float]:
    return None if text.lower() in ("none", "off", "inf") else float(text)


def clip_label(max_norm: Optional[float]) -> str:
    return "none" if max_norm is None else f"{max_norm:g}"


def geometry_label(k: float, max_norm: Optional[float]) -> str:
    return f"k={k:g}, clip={clip_label(max_norm)}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/exact_vs_approximate", help="output folder")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    p.add_argument("--centroids", nargs="+", default=list(CENTROIDS), choices=CENTROIDS)
    p.add_argument("--k", type=float, nargs="+", default=None, help="curvature parameters k (default 0.1 1)")
    p.add_argument("--max-norm", type=_max_norm, nargs="+", default=[10.0, None],
                   help="clips of |v|/sqrt(k) before expmap0 ('none' = no clip); default 10 none")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--batch-real", type=int, default=64, help="real images per class per iteration")
    p.add_argument("--scale", type=float, default=None, help="lambda (default 1.0 on digits, 20 otherwise)")
    p.add_argument("--lr-img", type=float, default=1.0)
    p.add_argument("--nets", type=int, default=3, help="evaluation networks per run")
    p.add_argument("--epochs", type=int, default=200, help="evaluation epochs")
    p.add_argument("--gap-every", type=int, default=5, help="log d(Law, Karcher) every N iterations")
    p.add_argument("--no-dm", action="store_true", help="skip the plain DM baseline")
    p.add_argument("--no-init-row", action="store_true", help="skip evaluating the initial (real) images")
    p.add_argument("--paper-scale", action="store_true", help="the paper's budget and hyperparameters (see above)")
    p.add_argument("--quick", action="store_true", help="tiny smoke setting (tests): 2 iterations, IPC 1, 1 net x 1 epoch")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    p.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true")
    return p


# --quick changes these defaults; flags given explicitly still win
QUICK = dict(ipc=[1], seeds=[0], iterations=2, batch_real=8, nets=1, epochs=1, gap_every=1, k=[1.0], max_norm=[10.0])


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**QUICK)
    return apply_modes(p.parse_args(argv))


def apply_modes(args) -> argparse.Namespace:
    """Resolve ``--quick`` / ``--paper-scale`` and dataset-dependent defaults."""
    if args.quick and args.paper_scale:
        raise ValueError("--quick and --paper-scale exclude each other")
    if args.paper_scale:
        args.iterations, args.batch_real, args.nets, args.epochs = 20000, 256, 5, 1000
        args.gap_every = max(args.gap_every, 500)
    args.k_given = args.k is not None
    if args.k is None:
        args.k = [0.1, 1.0]
    if args.scale is None:
        args.scale = 1.0 if args.dataset == "digits" else 20.0
    return args


def base_config(args, ipc: int, seed: int):
    """The DM configuration every cell of ``(ipc, seed)`` starts from, and the k grid to use with it."""
    ks = list(args.k)
    cfg = DistillConfig(dataset=args.dataset, data_root=args.data_root, download=args.download, ipc=ipc, method="dm",
                        matcher="euclidean", k=1.0, scale=args.scale, max_norm=10.0, iterations=args.iterations,
                        lr_img=args.lr_img, batch_real=args.batch_real, seed=seed, final_eval_nets=args.nets,
                        final_eval_epochs=args.epochs, gap_every=args.gap_every,
                        checkpoint_every=500 if args.paper_scale else 25, device=args.device)
    if args.paper_scale:
        try:
            preset = paper_preset("dm", args.dataset, ipc)
        except ValueError:
            warnings.warn(f"the paper lists no DM settings for {args.dataset} IPC {ipc}: keeping lambda={args.scale:g}, "
                          f"lr_img={args.lr_img:g}")
        else:
            cfg = dataclasses.replace(cfg, scale=preset["scale"], lr_img=preset["lr_img"])
            if not args.k_given:
                ks = [preset["k"]]
    return cfg, ks


def build_cells(args) -> list:
    """``[(cell dict, DistillConfig), ...]``: every (IPC, seed) x (DM, centroid x k x max_norm)."""
    cells = []
    for ipc in args.ipc:
        for seed in args.seeds:
            base, ks = base_config(args, ipc, seed)
            if not args.no_dm:
                cells.append(({"method": "DM", "centroid": "", "k": np.nan, "max_norm": "", "geometry": "-"}, base))
            for k in ks:
                for max_norm in args.max_norm:
                    for centroid in args.centroids:
                        cfg = dataclasses.replace(base, matcher="hdd", centroid=centroid, k=float(k), max_norm=max_norm)
                        cells.append(({"method": f"HDD {centroid}", "centroid": centroid, "k": float(k),
                                       "max_norm": clip_label(max_norm), "geometry": geometry_label(k, max_norm)}, cfg))
    for cell, cfg in cells:
        name = "dm" if cell["method"] == "DM" else f"hdd-{cfg.centroid}_k{cfg.k:g}_clip{clip_label(cfg.max_norm)}"
        cell.update(ipc=cfg.ipc, seed=cfg.seed, run_dir=os.path.join(args.out, "runs", f"ipc{cfg.ipc}_seed{cfg.seed}_{name}"))
        cfg.validate()
    return cells


def init_row(args, cfg: DistillConfig) -> dict:
    """Accuracy of the initial real images (cached as JSON so that a restarted study does not redo it)."""
    path = os.path.join(args.out, "runs", f"init_ipc{cfg.ipc}_seed{cfg.seed}.json")
    key = {"dataset": cfg.dataset, "ipc": cfg.ipc, "seed": cfg.seed, "nets": cfg.final_eval_nets,
           "epochs": cfg.final_eval_epochs, "model": cfg.model}
    if os.path.exists(path):
        with open(path) as fh:
            saved = json.load(fh)
        if saved.get("key") == key:
            return saved["row"]
    row = baseline_row(cfg)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, {"key": key, "row": row})
    return row


def run_summary(cell: dict, metrics: dict) -> dict:
    """One row of ``runs.csv``: accuracy, timing and final gaps of a finished run directory."""
    log = read_log(cell["run_dir"])
    plain = log[log["gap_real"].isna()] if "gap_real" in log else log
    plain = plain if len(plain) else log  # every iteration diagnosed (e.g. --gap-every 1)
    gaps = log.dropna(subset=["gap_real"]) if "gap_real" in log else log.iloc[:0]
    return {**{k: v for k, v in cell.items()}, "acc_mean": metrics.get("acc_mean"), "acc_std": metrics.get("acc_std"),
            "accs": metrics.get("accs", []),
            "sec_per_it": float(plain["seconds"].median()), "sec_per_it_mean": metrics["seconds_per_iteration"],
            "gap_real_final": float(gaps["gap_real"].iloc[-1]) if len(gaps) else np.nan,
            "gap_syn_final": float(gaps["gap_syn"].iloc[-1]) if len(gaps) else np.nan,
            "gap_syn_mean": float(gaps["gap_syn"].mean()) if len(gaps) else np.nan}


def image_shift(runs: pd.DataFrame, init: dict) -> pd.Series:
    """``|x - x_karcher| / |x_karcher - x_init|`` per run: how far a run's final synthetic images lie from
    those of the Karcher run of the same IPC, seed and geometry (DM: of each geometry's Karcher run,
    averaged), relative to how far distillation moved the Karcher run's images."""
    def params(run_dir):
        return torch.load(os.path.join(run_dir, "synset.pt"), map_location="cpu", weights_only=True)["params"].double()

    kar = {(r.ipc, r.seed, r.geometry): params(r.run_dir) for r in runs.itertuples() if r.centroid == "karcher"}
    out = []
    for r in runs.itertuples():
        x0 = init[(r.ipc, r.seed)]
        refs = [x for (ipc, seed, geo), x in kar.items() if ipc == r.ipc and seed == r.seed
                and (geo == r.geometry or r.method == "DM")]
        if not refs:
            out.append(np.nan)
            continue
        x = params(r.run_dir)
        out.append(float(np.mean([float((x - xk).norm() / (xk - x0).norm()) for xk in refs])))
    return pd.Series(out, index=runs.index)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (seeds pooled): accuracy mean/std over every evaluation network of every seed."""
    rows = []
    keys = ["ipc", "method", "centroid", "k", "max_norm", "geometry"]
    for key, g in runs.groupby(keys, sort=False, dropna=False):
        accs = [a for lst in g["accs"] for a in lst]
        rows.append({**dict(zip(keys, key)), "seeds": len(g), "nets": len(accs),
                     "acc_mean": float(np.mean(accs)) if accs else np.nan,
                     "acc_std": float(np.std(accs)) if accs else np.nan,
                     "sec_per_it": float(g["sec_per_it"].mean()), "sec_per_it_mean": float(g["sec_per_it_mean"].mean()),
                     "gap_real_final": float(g["gap_real_final"].mean()), "gap_syn_final": float(g["gap_syn_final"].mean()),
                     "gap_syn_mean": float(g["gap_syn_mean"].mean()), "shift_vs_karcher": float(g["shift_vs_karcher"].mean())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- tables
def _pm(m, s) -> str:
    return "" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{100 * m:.1f} ± {100 * s:.1f}"


def wide(table: pd.DataFrame, value) -> pd.DataFrame:
    """Rows = (method, geometry), one column per IPC, cells = ``value(row)``."""
    t = table.assign(_v=[value(r) for r in table.itertuples()])
    out = t.pivot_table(index=["method", "geometry"], columns="ipc", values="_v", aggfunc="first", sort=False)
    out.columns = [f"IPC {c}" for c in out.columns]
    out = out.reset_index()
    order = {m: i for i, m in enumerate([INIT] + METHOD_ORDER)}
    return out.sort_values(["geometry", "method"], key=lambda s: s.map(order) if s.name == "method" else s,
                           kind="stable").reset_index(drop=True)


INIT = "real init (no distillation)"


def init_table(init_rows: list) -> pd.DataFrame:
    """The initial real images' accuracy per IPC, pooled over the seeds' evaluation networks like a cell."""
    rows = []
    for ipc in dict.fromkeys(r["ipc"] for r in init_rows):
        accs = [a for r in init_rows if r["ipc"] == ipc for a in r["accs"]]
        rows.append({"ipc": ipc, "method": INIT, "centroid": "", "k": np.nan, "max_norm": "", "geometry": "-",
                     "seeds": sum(r["ipc"] == ipc for r in init_rows), "nets": len(accs),
                     "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs))})
    return pd.DataFrame(rows)


LABELS = {"DM": "dm", "HDD law": "dm+hdd/law", "HDD karcher": "dm+hdd/karcher", "HDD tangent": "dm+hdd/tangent"}


def paired_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Paired differences over seeds (hddgeo.stats) within each geometry; DM is every geometry's baseline."""
    long = pd.DataFrame([{"method": LABELS[r.method], "geometry": r.geometry, "ipc": r.ipc, "seed": r.seed,
                          "network": j, "acc": a} for r in runs.itertuples() for j, a in enumerate(r.accs)])
    if long.empty:
        return pd.DataFrame()
    parts = []
    for geometry in dict.fromkeys(g for g in long.geometry if g != "-"):
        sub = long[long.geometry.isin([geometry, "-"])].drop(columns="geometry")
        parts.append(stats.paired_differences(sub).assign(geometry=geometry))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_markdown(args, table: pd.DataFrame, runs: pd.DataFrame, path: str, elapsed: float) -> str:
    acc = table
    table = table[table.method != INIT]
    settings = (f"{args.dataset}, DM pipeline, {args.iterations} iterations, {args.batch_real} real images per class per "
                f"iteration, lambda = {args.scale:g}, lr_img = {args.lr_img:g}, seeds {args.seeds}; each run evaluated by "
                f"{args.nets} ConvNet(s) x {args.epochs} epochs; accuracy mean ± std (%) over all evaluation networks of all "
                f"seeds. Study wall time {elapsed / 60:.1f} min (this invocation).")
    parts = [f"# Exact vs approximate centroid\n\n{settings}\n", "## Accuracy (%)\n",
             save_table_md(wide(acc, lambda r: _pm(r.acc_mean, r.acc_std))),
             "\n## Seconds per iteration (median over iterations without the gap diagnostic)\n",
             save_table_md(wide(table, lambda r: f"{r.sec_per_it:.3f}")),
             "\n## Centroid gap d(Law, Karcher) at the last logged iteration: real / synthetic features\n",
             save_table_md(wide(table, lambda r: f"{r.gap_real_final:.2e} / {r.gap_syn_final:.2e}")),
             "\n## Final synthetic images: distance to the Karcher run's, relative to the Karcher run's own shift\n",
             "`|x - x_karcher| / |x_karcher - x_init|` (0 = identical images; DM: to each geometry's Karcher run)\n\n",
             save_table_md(wide(table, lambda r: f"{r.shift_vs_karcher:.3g}"))]
    if runs["seed"].nunique() > 1:
        per_seed = runs.assign(_v=[_pm(m, sd) for m, sd in zip(runs.acc_mean, runs.acc_std)])
        per_seed = per_seed.pivot_table(index=["geometry", "method", "seed"], columns="ipc", values="_v",
                                        aggfunc="first", sort=False)
        per_seed.columns = [f"IPC {c}" for c in per_seed.columns]
        per_seed = per_seed.reset_index().sort_values(
            ["geometry", "method", "seed"], key=lambda c: c.map(METHOD_ORDER.index) if c.name == "method" else c,
            kind="stable")
        parts += ["\n## Accuracy (%) per seed (mean ± std over that seed's evaluation networks)\n",
                  save_table_md(per_seed)]
        paired = paired_table(runs)
        if len(paired):
            write_csv(os.path.join(os.path.dirname(path), "paired.csv"), paired)
            view = pd.concat([paired[["geometry"]], stats.differences_view(paired)], axis=1)
            parts += ["\n## Paired differences over seeds (accuracy points, 95% t interval; hddgeo.stats)\n",
                      save_table_md(view)]
    text = "\n".join(parts)
    write_text(path, text)
    return text


# ----------------------------------------------------------------------------- figures
def _style():
    return sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=1.0)


def _curves(runs: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for r in runs.itertuples():
        log = read_log(r.run_dir)
        log = log.assign(ipc=r.ipc, seed=r.seed, method=r.method, geometry=r.geometry)
        frames.append(log)
    return pd.concat(frames, ignore_index=True)



def plot_loss_curves(curves: pd.DataFrame, geometries: list, ipcs: list, path: str, iterations: int) -> str:
    """Loss relative to its first iterations (rolling mean), rows = IPC, columns = geometry; DM in every panel."""
    window = max(1, iterations // 20)
    ax_style, ctx = _style()
    with ax_style, ctx:
        fig, axes = plt.subplots(len(ipcs), len(geometries), figsize=(4.2 * len(geometries) + 0.5, 3.4 * len(ipcs) + 0.8),
                                 squeeze=False, sharex=True)
        for i, ipc in enumerate(ipcs):
            for j, geo in enumerate(geometries):
                ax = axes[i, j]
                sub = curves[(curves.ipc == ipc) & ((curves.geometry == geo) | (curves.method == "DM"))]
                for (method, seed), g in sub.groupby(["method", "seed"], sort=False):
                    g = g.sort_values("iteration")
                    ref = g["loss"].iloc[:max(1, min(5, len(g)))].mean()
                    y = (g["loss"] / ref).rolling(window, min_periods=1).mean()
                    ax.plot(g["iteration"], y, color=PALETTE[method], lw=1.8 if method != "DM" else 1.4,
                            ls="--" if method == "DM" else "-", label=method if seed == sub["seed"].min() else None)
                ax.set_yscale("log")
                plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.2g}")
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(plain)
                ax.tick_params(axis="y", which="minor", labelsize="x-small")
                ax.set_title(f"IPC {ipc} · {geo}", fontsize=11)
                if i == len(ipcs) - 1:
                    ax.set_xlabel("iteration")
                if j == 0:
                    ax.set_ylabel(f"loss / initial loss\n(rolling mean over {window})")
        handles = [plt.Line2D([], [], color=PALETTE[m], ls="--" if m == "DM" else "-", lw=2, label=m)
                   for m in METHOD_ORDER if m in set(curves.method)]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02))
        fig.suptitle("Distillation loss, normalised by its value over the first 5 iterations\n"
                     "(HDD: lambda·d(c_real, c_syn) with the given centroid; DM: squared distance of feature means)")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        return save_figure(fig, path)


def plot_gaps(curves: pd.DataFrame, geometries: list, ipcs: list, path: str) -> str:
    """d(Law, Karcher) of the real batch (identical for every centroid: same networks and batches) and of the
    synthetic set of each run, over the iterations."""
    gaps = curves.dropna(subset=["gap_real"]) if "gap_real" in curves else curves.iloc[:0]
    ax_style, ctx = _style()
    with ax_style, ctx:
        fig, axes = plt.subplots(len(ipcs), len(geometries), figsize=(4.2 * len(geometries) + 0.5, 3.4 * len(ipcs) + 0.8),
                                 squeeze=False, sharex=True)
        for i, ipc in enumerate(ipcs):
            for j, geo in enumerate(geometries):
                ax = axes[i, j]
                sub = gaps[(gaps.ipc == ipc) & (gaps.geometry == geo)]
                first = True
                for (method, seed), g in sub.groupby(["method", "seed"], sort=False):
                    g = g.sort_values("iteration")
                    if first:  # the real batch's gap does not depend on the centroid of the loss
                        ax.plot(g["iteration"], g["gap_real"], color="black", lw=2.2, alpha=0.7,
                                label="real features")
                        first = False
                    ax.plot(g["iteration"], g["gap_syn"], color=PALETTE[method], lw=1.6, marker="o", ms=3,
                            label=f"synthetic, {method}")
                ax.set_title(f"IPC {ipc} · {geo}", fontsize=11)
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
                if i == len(ipcs) - 1:
                    ax.set_xlabel("iteration")
                if j == 0:
                    ax.set_ylabel("d(Law centroid, Karcher mean)\nmean over classes")
        handles = [plt.Line2D([], [], color="black", lw=2.2, alpha=0.7, label="real features (same for every run)")]
        handles += [plt.Line2D([], [], color=PALETTE[m], lw=1.6, marker="o", ms=4, label=f"synthetic features, {m} run")
                    for m in METHOD_ORDER[1:] if m in set(gaps.method)]
        fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, -0.04))
        fig.suptitle("How far Law's closed-form centroid is from the exact Karcher mean during distillation\n"
                     "(geodesic distance on Lorentz(k); IPC 1: one synthetic image per class, so its gap is 0)")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        return save_figure(fig, path)


def plot_accuracy(table: pd.DataFrame, geometries: list, ipcs: list, path: str) -> str:
    ax_style, ctx = _style()
    hdd = [m for m in METHOD_ORDER[1:] if m in set(table.method)]
    with ax_style, ctx:
        fig, axes = plt.subplots(1, len(ipcs), figsize=(max(5.0, 1.6 * len(geometries) + 2.5) * len(ipcs), 4.4),
                                 squeeze=False)
        for ax, ipc in zip(axes[0], ipcs):
            sub = table[table.ipc == ipc]
            width = 0.8 / max(len(hdd), 1)
            for h, method in enumerate(hdd):
                for x, geo in enumerate(geometries):
                    r = sub[(sub.method == method) & (sub.geometry == geo)]
                    if len(r):
                        ax.errorbar(x - 0.4 + width * (h + 0.5), 100 * r.acc_mean.iloc[0], yerr=100 * r.acc_std.iloc[0],
                                    fmt="o", color=PALETTE[method], ms=7, capsize=4, lw=1.6,
                                    label=method if x == 0 else None)
            dm = sub[sub.method == "DM"]
            if len(dm):
                m, s = 100 * dm.acc_mean.iloc[0], 100 * dm.acc_std.iloc[0]
                ax.axhspan(m - s, m + s, color=PALETTE["DM"], alpha=0.15)
                ax.axhline(m, color=PALETTE["DM"], ls="--", lw=1.5, label="DM (mean ± std band)")
            for r in sub[sub.method == INIT].itertuples():
                ax.axhline(100 * r.acc_mean, color="black", ls=":", lw=1.5, label="real init, no distillation")
            ax.set_xticks(range(len(geometries)), [g.replace(", ", "\n") for g in geometries])
            ax.set_xlabel("geometry of the HDD term")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"IPC {ipc}")
            ax.legend(fontsize="small", loc="lower right")
        fig.suptitle("Accuracy of a ConvNet trained on the synthetic set (mean ± std over evaluation networks)")
        fig.tight_layout()
        return save_figure(fig, path)


def plot_seconds(table: pd.DataFrame, ipcs: list, path: str) -> str:
    ax_style, ctx = _style()
    with ax_style, ctx:
        data = table.assign(cell=[m if m == "DM" else f"{m}\n{g}" for m, g in zip(table.method, table.geometry)])
        fig, axes = plt.subplots(1, len(ipcs), figsize=(max(6, 0.55 * data.cell.nunique() + 2) * len(ipcs) / 1.3, 4.6),
                                 squeeze=False, sharey=True)
        for ax, ipc in zip(axes[0], ipcs):
            sub = data[data.ipc == ipc]
            ax.bar(range(len(sub)), sub.sec_per_it, color=[PALETTE[m] for m in sub.method])
            ax.set_xticks(range(len(sub)), sub.cell, rotation=90, fontsize="x-small")
            ax.set_ylabel("seconds per iteration (median)")
            ax.set_title(f"IPC {ipc}")
        handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[m], label=m) for m in METHOD_ORDER if m in set(data.method)]
        fig.legend(handles=handles, loc="upper right", frameon=False, fontsize="small")
        fig.suptitle("Cost of one distillation iteration per cell (shared CPU: compare within a figure only)")
        fig.tight_layout(rect=(0, 0, 0.87, 1))
        return save_figure(fig, path)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    check_seeds_and_jobs(args.seeds)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cells = build_cells(args)
    os.makedirs(args.out, exist_ok=True)
    init_rows, init = [], {}
    for ipc in args.ipc:
        for seed in args.seeds:
            cfg, _ = base_config(args, ipc, seed)
            init[(ipc, seed)] = initial_images(cfg).double()
            if not args.no_init_row:
                init_rows.append(init_row(args, cfg))
    rows = []
    for n, (cell, cfg) in enumerate(cells, 1):
        if not args.quiet:
            print(f"[{n}/{len(cells)}] IPC {cell['ipc']} seed {cell['seed']} {cell['method']} {cell['geometry']}",
                  file=sys.stderr, flush=True)
        metrics = run_cell(cfg, cell["run_dir"], progress=not args.quiet)
        rows.append(run_summary(cell, metrics))
    runs = pd.DataFrame(rows)
    runs["shift_vs_karcher"] = image_shift(runs, init)
    table = aggregate(runs)
    if init_rows:
        table = pd.concat([init_table(init_rows), table], ignore_index=True)
    write_csv(os.path.join(args.out, "runs.csv"), runs.drop(columns=["accs"]))
    write_csv(os.path.join(args.out, "results.csv"), table)
    text = write_markdown(args, table, runs, os.path.join(args.out, "results.md"), time.time() - t0)

    geometries = list(dict.fromkeys(g for g in table.geometry if g != "-")) or ["-"]
    distilled = table[table.method != INIT]
    curves = _curves(runs)
    plot_loss_curves(curves, geometries, args.ipc, os.path.join(args.out, "loss_curves.png"), args.iterations)
    plot_gaps(curves, geometries, args.ipc, os.path.join(args.out, "centroid_gap.png"))
    plot_accuracy(table, geometries, args.ipc, os.path.join(args.out, "accuracy.png"))
    plot_seconds(distilled, args.ipc, os.path.join(args.out, "seconds_per_iteration.png"))
    if not args.quiet:
        print(text)
        print(f"wrote {args.out}/results.csv, runs.csv, results.md and 4 figures in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
