"""Hierarchical pruning (paper §4.3): match only the most root-level share of each class's real images.

DM and DM+HDD are distilled from the same pruned real pool (``DistillConfig.prune_fraction`` = share of
each class kept, ``prune_level`` = how "root-level" is measured), evaluating the synthetic set every
``--eval-every`` iterations so that each run's ``log.csv`` holds an accuracy curve.

Level (``--levels``):

* ``radius`` (default, the paper's): the geodesic distance ``d(o, z)`` of a sample's lifted feature (one
  random ConvNet seeded by the run's seed, lifted with the run's ``k`` and ``max_norm``) to the origin;
  the smallest radii are kept.  On digits nothing reaches the clip, so this keeps the samples with the
  smallest feature norm.
* ``centroid_distance``: the distance to the class's own Karcher mean; the most central samples are kept.

Ranking is per class (class balance is kept); a class of n keeps ``ceil(fraction * n)``.  A cell whose
IPC exceeds what the pruned pool keeps per class cannot be initialised from real images and is listed
as skipped (e.g. IPC 10 at 5% of digits' ~143 images per class keeps 8).

    python experiments/hierarchical_pruning.py                 # digits, IPC 1 and 10, ~20 min
    python experiments/hierarchical_pruning.py --quick --out /tmp/hp
    python experiments/hierarchical_pruning.py --levels radius centroid_distance

Outputs in ``--out`` (default ``results/hierarchical_pruning``): ``results.csv`` / ``results.md`` (final
accuracy mean ± std over the final evaluation networks, and the stability number: the std of the
evaluation accuracy over the last half of the curve), ``curves.csv`` (tidy accuracy curves),
``accuracy_curves.png``, ``accuracy_vs_fraction.png`` and one resumable run directory per cell in ``runs/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from hddgeo.data import load_dataset
from hddgeo.distill import DistillConfig
from hddgeo.cli import run_main
from hddgeo.distill.study import check_seeds_and_jobs, read_log, run_cell
from hddgeo.hierarchy import PRUNE_LEVELS, kept_count
from hddgeo.plots import save_figure, save_table_md
from hddgeo.rundir import write_csv, write_json, write_text


def _max_norm(text: str):
    return None if text.lower() in ("none", "off", "inf") else float(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/hierarchical_pruning")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.2, 0.5, 1.0], help="share of each class kept")
    p.add_argument("--levels", nargs="+", default=["radius"], choices=PRUNE_LEVELS)
    p.add_argument("--centroid", default="law", help="centroid of the DM+HDD runs")
    p.add_argument("--no-dm", action="store_true", help="only DM+HDD")
    p.add_argument("--k", type=float, default=1.0)
    p.add_argument("--max-norm", type=_max_norm, default=10.0)
    p.add_argument("--scale", type=float, default=None, help="lambda (default 1.0 on digits, 20 otherwise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--batch-real", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-nets", type=int, default=1, help="networks per point of the accuracy curve")
    p.add_argument("--eval-epochs", type=int, default=100, help="epochs per point of the accuracy curve")
    p.add_argument("--nets", type=int, default=3, help="final evaluation networks")
    p.add_argument("--epochs", type=int, default=200, help="final evaluation epochs")
    p.add_argument("--no-init-row", action="store_true", help="skip evaluating the (pruned) initial real images")
    p.add_argument("--quick", action="store_true", help="smoke setting (tests)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true")
    return p


# --quick changes these defaults; flags given explicitly still win
QUICK = dict(ipc=[1], fractions=[0.2, 1.0], iterations=2, batch_real=8, eval_every=1, eval_nets=1, eval_epochs=1, nets=1,
             epochs=1)


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**QUICK)
    return p.parse_args(argv)


def build_cells(args, class_counts: list) -> list:
    """``[(cell dict, config or None), ...]``; ``None`` marks a cell that cannot run (reason in ``status``)."""
    base = DistillConfig(dataset=args.dataset, data_root=args.data_root, method="dm", k=args.k, max_norm=args.max_norm,
                         scale=args.scale, iterations=args.iterations, batch_real=args.batch_real, seed=args.seed,
                         eval_every=args.eval_every, eval_nets=args.eval_nets, eval_epochs=args.eval_epochs,
                         final_eval_nets=args.nets, final_eval_epochs=args.epochs, checkpoint_every=25,
                         device=args.device)
    methods = ([] if args.no_dm else [("DM", {"matcher": "euclidean"})]) + \
        [(f"DM+HDD {args.centroid}", {"matcher": "hdd", "centroid": args.centroid})]
    cells = []
    for ipc in args.ipc:
        for method, over in methods:
            for level in args.levels:
                for fraction in sorted(args.fractions):
                    if fraction >= 1 and level != args.levels[0]:
                        continue  # the full pool does not depend on the level: one run
                    kept = min(kept_count(n, fraction) for n in class_counts)
                    cfg = dataclasses.replace(base, ipc=ipc, prune_fraction=float(fraction), prune_level=level, **over)
                    lvl = "full data" if fraction >= 1 else level
                    name = f"ipc{ipc}_{'dm' if method == 'DM' else 'hdd-' + args.centroid}_" + \
                        ("full" if fraction >= 1 else f"{level}{fraction:g}")
                    cell = {"ipc": ipc, "method": method, "level": lvl, "prune_fraction": float(fraction),
                            "kept_per_class_min": kept, "run_dir": os.path.join(args.out, "runs", name), "status": "ok"}
                    if ipc > kept:
                        cell["status"] = f"skipped: IPC {ipc} > {kept} images kept per class"
                        cfg = None
                    else:
                        cfg.validate()
                    cells.append((cell, cfg))
    return cells


INIT = "real init (pruned pool)"


def init_rows(args, cells: list) -> list:
    """Accuracy of the real images each run starts from, per (IPC, level, fraction): they are drawn from the
    pruned pool, so pruning changes the starting point as well as the matching target.  Cached as JSON."""
    from hddgeo.distill.study import baseline_row

    out, seen = [], set()
    for cell, cfg in cells:
        key = (cell["ipc"], cell["level"], cell["prune_fraction"])
        if cfg is None or key in seen:
            continue
        seen.add(key)
        base = os.path.basename(cell["run_dir"]).replace("_dm_", "_").replace(f"_hdd-{args.centroid}_", "_")
        path = os.path.join(os.path.dirname(cell["run_dir"]), "init_" + base + ".json")
        ident = {k: v for k, v in cfg.to_json().items() if k in ("dataset", "ipc", "seed", "k", "max_norm", "prune_fraction",
                                                                "prune_level", "final_eval_nets", "final_eval_epochs", "model")}
        res = None
        if os.path.exists(path):
            with open(path) as fh:
                saved = json.load(fh)
            res = saved["row"] if saved.get("key") == ident else None
        if res is None:
            res = baseline_row(cfg)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json(path, {"key": ident, "row": res})
        out.append({**cell, "method": INIT, "run_dir": "", "acc_mean": res["acc_mean"], "acc_std": res["acc_std"]})
    return out


def summarise(cell: dict, metrics: dict, iterations: int) -> tuple:
    log = read_log(cell["run_dir"])
    curve = log.dropna(subset=["eval_acc"])[["iteration", "eval_acc"]] if "eval_acc" in log else log.iloc[:0]
    last = curve[curve["iteration"] > iterations / 2]
    row = {**cell, "acc_mean": metrics.get("acc_mean"), "acc_std": metrics.get("acc_std"),
           "curve_final": float(curve["eval_acc"].iloc[-1]) if len(curve) else np.nan,
           "curve_last_half_mean": float(last["eval_acc"].mean()) if len(last) else np.nan,
           "stability_std": float(last["eval_acc"].std(ddof=0)) if len(last) else np.nan,
           "curve_points_last_half": len(last), "sec_per_it": float(log["seconds"].median())}
    return row, curve.assign(**{k: cell[k] for k in ("ipc", "method", "level", "prune_fraction")})


def _pm(m, s) -> str:
    return "skipped" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{100 * m:.1f} ± {100 * s:.1f}"


def tables_markdown(args, table: pd.DataFrame, elapsed: float) -> str:
    levels = list(dict.fromkeys(lev for lev in table.level if lev != "full data")) or ["full data"]
    full = table[table.level == "full data"]
    # the full-data run belongs to every level's row (its 100% column)
    table = pd.concat([table[table.level != "full data"]] + [full.assign(level=lev) for lev in levels], ignore_index=True)
    table = table.sort_values(["ipc", "method", "level"], key=lambda s: s.map({m: i for i, m in enumerate(
        dict.fromkeys(full.method))}) if s.name == "method" else s, kind="stable")

    def pivot(value):
        t = table.assign(_v=[value(r) for r in table.itertuples()],
                         _f=[f"{100 * f:g}%" for f in table.prune_fraction])
        out = t.pivot_table(index=["ipc", "method", "level"], columns="_f", values="_v", aggfunc="first", sort=False)
        return out[[f"{100 * f:g}%" for f in sorted(table.prune_fraction.unique())]].reset_index()

    final = pivot(lambda r: _pm(r.acc_mean, r.acc_std))
    stab = pivot(lambda r: "skipped" if r.status != "ok" else f"{100 * r.stability_std:.2f} (mean {100 * r.curve_last_half_mean:.1f})")
    stab = stab[stab.method != INIT]
    kept = table.drop_duplicates("prune_fraction")[["prune_fraction", "kept_per_class_min"]]
    settings = (f"{args.dataset}, DM pipeline, {args.iterations} iterations, {args.batch_real} real images per class per "
                f"iteration (fewer when the pruned class is smaller), seed {args.seed}; DM+HDD: {args.centroid} centroid, "
                f"k = {args.k:g}, clip = {args.max_norm}, lambda = {args.scale:g}. Columns: share of each class kept "
                f"(smallest class keeps {', '.join(f'{100 * f:g}% -> {k}' for f, k in kept.itertuples(index=False))} "
                f"images). Study wall time {elapsed / 60:.1f} min (this invocation).")
    return "\n".join([
        f"# Hierarchical pruning\n\n{settings}\n",
        f"## Final accuracy (%), mean ± std over {args.nets} ConvNets x {args.epochs} epochs\n",
        save_table_md(final),
        f"\n## Stability: std (%) of the evaluation accuracy over the last half of the curve "
        f"(one point every {args.eval_every} iterations, {args.eval_nets} net x {args.eval_epochs} epochs); "
        "mean of those points in brackets\n",
        save_table_md(stab),
    ])


def plot_curves(curves: pd.DataFrame, table: pd.DataFrame, ipcs: list, path: str) -> None:
    table = table[table.method != INIT]
    methods = list(dict.fromkeys(table.method))
    fractions = sorted(table.prune_fraction.unique())
    colours = dict(zip(fractions, sns.color_palette("viridis", len(fractions))))
    levels = list(dict.fromkeys(lev for lev in table.level if lev != "full data"))
    styles = dict(zip(levels, ["-", "--", ":"]))
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
        fig, axes = plt.subplots(len(ipcs), len(methods), figsize=(5.6 * len(methods), 3.8 * len(ipcs) + 0.9),
                                 squeeze=False, sharex=True)
        for i, ipc in enumerate(ipcs):
            for j, method in enumerate(methods):
                ax = axes[i, j]
                sub = curves[(curves.ipc == ipc) & (curves.method == method)] if len(curves) else curves
                for (level, fraction), g in sub.groupby(["level", "prune_fraction"], sort=True):
                    ax.plot(g["iteration"], 100 * g["eval_acc"], color=colours[fraction], marker="o", ms=4, lw=1.8,
                            ls=styles.get(level, "-"))
                skipped = table[(table.ipc == ipc) & (table.method == method) & (table.status != "ok")]
                note = ("\n(skipped: keep " + ", ".join(f"{100 * f:g}%" for f in skipped.prune_fraction)
                        + f", fewer than {ipc} images kept per class)") if len(skipped) else ""
                ax.set_title(f"{method} · IPC {ipc}{note}", fontsize=11)
                if i == len(ipcs) - 1:
                    ax.set_xlabel("distillation iteration")
                if j == 0:
                    ax.set_ylabel("test accuracy (%)")
        handles = [plt.Line2D([], [], color=colours[f], marker="o", lw=2, label=f"keep {100 * f:g}%" +
                              (" (full data)" if f >= 1 else "")) for f in fractions]
        if len(levels) > 1:
            handles += [plt.Line2D([], [], color="0.3", ls=styles[lev], lw=2, label=f"level: {lev}") for lev in levels]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.01))
        fig.suptitle("Accuracy during distillation with hierarchical pruning of the real data\n"
                     f"(each point: a fresh ConvNet trained on the current synthetic set; pruning level: "
                     f"{', '.join(levels) or 'none'})")
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        save_figure(fig, path)


def plot_final(table: pd.DataFrame, ipcs: list, path: str) -> None:
    ok = table[table.status == "ok"]
    methods = list(dict.fromkeys(table.method))
    colours = dict(zip([m for m in methods if m != INIT], [sns.color_palette("deep")[i] for i in (7, 0, 1, 2)]))
    colours[INIT] = "black"
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
        fig, axes = plt.subplots(1, len(ipcs), figsize=(5.2 * len(ipcs), 4.2), squeeze=False)
        for ax, ipc in zip(axes[0], ipcs):
            for h, method in enumerate(methods):
                sub = ok[(ok.ipc == ipc) & (ok.method == method)].sort_values("prune_fraction")
                for level in dict.fromkeys(lev for lev in sub.level if lev != "full data"):
                    g = sub[(sub.level == level) | (sub.level == "full data")]
                    ax.errorbar(100 * g.prune_fraction * (1 + 0.03 * (h - 0.5)), 100 * g.acc_mean, yerr=100 * g.acc_std,
                                color=colours[method], marker="o" if method != INIT else "s", capsize=4,
                                lw=1.6 if method != INIT else 1.2, ms=6 if method != INIT else 4,
                                ls=(":" if method == INIT else "-" if level == "radius" else "--"),
                                label=f"{method} ({level})")
                if set(sub.level) == {"full data"}:
                    ax.errorbar(100 * sub.prune_fraction, 100 * sub.acc_mean, yerr=100 * sub.acc_std, color=colours[method],
                                marker="o", capsize=4, label=method)
            ax.set_xscale("log")
            ax.set_xticks([100 * f for f in sorted(table.prune_fraction.unique())],
                          [f"{100 * f:g}%" for f in sorted(table.prune_fraction.unique())])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("share of each class kept (log scale)")
            ax.set_ylabel("final test accuracy (%)")
            ax.set_title(f"IPC {ipc}")
            ax.legend(fontsize="small")
        fig.suptitle("Final accuracy versus the share of real data kept (mean ± std over evaluation networks)")
        fig.tight_layout()
        save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_seeds_and_jobs([args.seed])
    torch.set_num_threads(args.threads)
    if args.scale is None:
        args.scale = 1.0 if args.dataset == "digits" else 20.0
    if any(not (0 < f <= 1) for f in args.fractions):
        raise SystemExit("hierarchical_pruning: error: --fractions must lie in (0, 1]")
    t0 = time.time()
    dataset = load_dataset(args.dataset, data_root=args.data_root)
    counts = torch.bincount(dataset.train_labels, minlength=dataset.num_classes).tolist()
    cells = build_cells(args, counts)
    rows, curves = [], []
    for n, (cell, cfg) in enumerate(cells, 1):
        if cfg is None:
            rows.append({**cell, "acc_mean": np.nan, "acc_std": np.nan})
            continue
        if not args.quiet:
            print(f"[{n}/{len(cells)}] IPC {cell['ipc']} {cell['method']} keep {100 * cell['prune_fraction']:g}% "
                  f"({cell['level']})", file=sys.stderr, flush=True)
        metrics = run_cell(cfg, cell["run_dir"], progress=not args.quiet)
        row, curve = summarise(cell, metrics, args.iterations)
        rows.append(row)
        curves.append(curve)
    if not args.no_init_row:
        rows = init_rows(args, cells) + rows
    table = pd.DataFrame(rows)
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["iteration", "eval_acc", "ipc", "method", "level", "prune_fraction"])
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "results.csv"), table)
    write_csv(os.path.join(args.out, "curves.csv"), curves)
    text = tables_markdown(args, table, time.time() - t0)
    write_text(os.path.join(args.out, "results.md"), text)
    plot_curves(curves, table, args.ipc, os.path.join(args.out, "accuracy_curves.png"))
    plot_final(table, args.ipc, os.path.join(args.out, "accuracy_vs_fraction.png"))
    if not args.quiet:
        print(text)
        print(f"wrote {args.out}: results.csv/.md, curves.csv, accuracy_curves.png, accuracy_vs_fraction.png "
              f"({(time.time() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
