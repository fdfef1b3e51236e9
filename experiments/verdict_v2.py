"""Verdict v2 on Fashion-MNIST: the design from the pilot, and the figures (a study folder in, CSV/Markdown/PNG out).

``hddgeo study fashionmnist_verdict_v2 --stage NAME`` runs the cells (the spec says the stages); this reads them:

    python experiments/verdict_v2.py design [--study DIR] [--stage pilot1]   # variance split -> seeds x networks
    python experiments/verdict_v2.py figures [--study DIR] [--table T ...]   # forest plot, curves of --curves T
    python experiments/verdict_v2.py map [--study DIR] [--stage regime1]     # the k / lambda grid of a tuning stage

``design`` splits the spread of each paired difference of the pilot into its between-seed part and its
evaluation-network part (:func:`hddgeo.stats.variance_components`), then lists, for every number of seeds S and
evaluation networks J, the expected 95 % half-width of each difference and the machine time of one IPC's stage
(from the pilot cells' own timings), and picks the cheapest (S, J) that meets the targets.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from studyfolder import curves_plot, finished_cells, logs

from hddgeo import stats
from hddgeo.rundir import read_json, write_csv, write_text
from hddgeo.tables import markdown_table

STUDY = "experiments/results/fashionmnist_verdict_v2"
# the differences the design must resolve, with their 95 % half-width targets in points (the issue's), per IPC
TARGETS = {1: 0.3, 10: 0.4}
DESIGNED = [("dm+hdd/law", "dm"), ("dm+hdd/karcher", "dm+hdd/law")]
REPORTED = DESIGNED + [("dm+hdd/law", "dm+clipped_euclidean"), ("dm+clipped_euclidean", "dm")]


def cell_costs(table: pd.DataFrame, study: str, ipc: int) -> dict:
    """Seconds of a distilled cell's loop and of one evaluation network: medians over the pilot's cells at ``ipc``."""
    loops, nets = [], []
    for run_dir in dict.fromkeys(table.loc[table["ipc"] == ipc, "run_dir"]):
        m = read_json(os.path.join(study, run_dir, "metrics.json"))
        if not stats.is_random(m.get("method", stats.RANDOM)):
            loops.append(m["loop_seconds"])
            nets.append(m["final_eval_seconds"] / len(m["accs"]))
    return {"loop": float(np.median(loops)), "network": float(np.median(nets)), "distilled": len(loops)}


def design(table: pd.DataFrame, ipc: int, costs: dict, variants: int, target: float,
           seeds=range(3, 31), networks=range(2, 17)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(components, grid)``: the variance split of every reported pair, and per (S, J) the half-widths (points)
    and the core-hours of one stage of ``variants`` distilled cells plus the random row per seed."""
    comps = []
    for a, b in REPORTED:
        try:
            c = stats.variance_components(table, a, b, ipc)
        except ValueError:
            continue
        comps.append({"ipc": ipc, "a": a, "b": b, "diff_mean": 100 * c["diff_mean"], "seeds": c["seeds"],
                      "networks": c["networks"], "sd_seed": 100 * np.sqrt(c["between"]),
                      "sd_network": 100 * np.sqrt(c["within"]), "between": c["between"], "within": c["within"]})
    comps = pd.DataFrame(comps)
    grid = []
    for s in seeds:
        for j in networks:
            per_seed = (variants * costs["loop"] + (variants + 1) * j * costs["network"]) / 3600
            # the pilot's cells are the stage's first seeds when it keeps their number of networks
            reused = min(s, int(comps["seeds"].max())) if j == int(comps["networks"].max()) else 0
            row = {"seeds": s, "networks": j, "core_hours": s * per_seed, "core_hours_left": (s - reused) * per_seed}
            for c in comps.itertuples():
                row[f"{c.a} − {c.b}"] = 100 * stats.half_width(c.between, c.within, s, j)
            grid.append(row)
    grid = pd.DataFrame(grid)
    designed = [f"{a} − {b}" for a, b in DESIGNED if f"{a} − {b}" in grid]
    grid["meets"] = (grid[designed] <= target).all(axis=1)
    return comps, grid


def cmd_design(args) -> int:
    table = pd.read_csv(os.path.join(args.study, f"{args.stage}.csv"))
    text = [f"# Design from the {args.stage} stage ({args.study})\n"]
    for ipc in sorted(table["ipc"].unique()):
        variants = table.loc[(table["ipc"] == ipc) & ~table["method"].map(stats.is_random), "method"].nunique()
        costs = cell_costs(table, args.study, ipc)
        comps, grid = design(table, int(ipc), costs, variants, TARGETS[int(ipc)])
        write_csv(os.path.join(args.study, f"design{ipc}_components.csv"), comps.drop(columns=["between", "within"]))
        write_csv(os.path.join(args.study, f"design{ipc}_grid.csv"), grid)
        ok = grid[grid["meets"]].sort_values("core_hours_left")
        chosen = ok.iloc[0] if len(ok) else None  # the cheapest design that meets the targets
        text += [f"## IPC {ipc}\n",
                 f"Pilot: {comps['seeds'].max()} seeds x {comps['networks'].max():.0f} evaluation networks; one distilled "
                 f"cell's loop {costs['loop'] / 60:.1f} min, one evaluation network {costs['network'] / 60:.2f} min "
                 f"(medians over the pilot's {costs['distilled']} distilled cells, on the machine that ran them: "
                 "cells that shared it with other work took up to 6x longer).\n",
                 "Standard deviations of each paired difference (points): between seeds (what more networks cannot "
                 "remove) and between evaluation networks within a seed:\n",
                 markdown_table(comps.drop(columns=["between", "within", "ipc"]).round(3)),
                 f"\nTarget: 95 % half-width <= {TARGETS[int(ipc)]} points for "
                 f"{', '.join(f'{a} − {b}' for a, b in DESIGNED)}.\n"]
        if chosen is None:
            best = grid.sort_values([f"{a} − {b}" for a, b in DESIGNED if f"{a} − {b}" in grid]).iloc[0]
            text.append(f"No design up to {grid['seeds'].max()} seeds x {grid['networks'].max()} networks meets it; "
                        f"the narrowest: {int(best['seeds'])} x {int(best['networks'])}.\n")
        else:
            text.append(f"Cheapest design that meets it: **{int(chosen['seeds'])} seeds x {int(chosen['networks'])} "
                        f"networks**, {chosen['core_hours']:.1f} core-hours for this IPC's {variants} distilled "
                        f"variants and the random row, {chosen['core_hours_left']:.1f} of them still to run (the "
                        f"pilot's cells count as its first seeds where the number of networks is the pilot's). "
                        f"The standard deviations come from {comps['seeds'].max()} seeds, so the half-widths are "
                        f"estimates: take a seed or two more than the cheapest design.\n")
            near = ok.head(8)[["seeds", "networks", "core_hours", "core_hours_left"] + [c for c in grid.columns if "−" in c]]
            text.append(markdown_table(near.round(3)))
    write_text(out := os.path.join(args.study, "design.md"), "\n".join(text) + "\n")
    print("\n".join(text))
    print(f"-> {out}")
    return 0


def forest_rows(table: pd.DataFrame, spec) -> list[dict]:
    """Per claim and IPC: the per-seed differences (points, on the seeds that report the claim), our interval, the
    paper's point and Welch interval."""
    from hddgeo.verdict import claim_difference

    rows = []
    for ipc in sorted(int(i) for i in table["ipc"].unique()):
        for c in spec.claims:
            found = claim_difference(table, c, ipc)
            if found is None or len(found[2]) < 2:
                continue
            a, b, d = found
            low, high = stats.t_interval(d.values)
            pa, pb = ((spec.paper or {}).get("accuracy", {}).get(x, {}).get(ipc) for x in (a, b))
            runs = (spec.paper or {}).get("runs", 3)
            p_low, p_high = stats.welch_interval(*pa, runs, *pb, runs) if pa and pb else (None, None)
            paper = (c.paper or {}).get(ipc, pa[0] - pb[0] if pa and pb else None)
            rows.append({"label": f"{c.claim}, IPC {ipc}", "group": c.group, "kind": c.kind, "seeds": d.values,
                         "random": stats.is_random(a) or stats.is_random(b), "tuned": bool(c.tune_seeds),
                         "mean": float(d.mean()), "low": low, "high": high, "paper": paper, "paper_low": p_low,
                         "paper_high": p_high})
    return rows


def forest_plot(rows: list, path: str, margin: float, title: str = "") -> None:
    """One row per claim: grey dots per seed, our 95 % interval (black), the paper's number and interval (red), 0 and
    the equivalence margin of ``same`` claims (shaded).  A panel and scale each for claims against random images (tens
    of points), between methods (tenths) and at tuned settings (points where a setting fails)."""
    import matplotlib.pyplot as plt

    from hddgeo.plots import save_figure  # (its import selects the Agg backend)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kinds = {(True, False): "against random images", (False, False): "between distillation methods",
             (False, True): "at a setting tuned on some seeds, reported on the others"}
    named = [(n, [r for r in rows if (r["random"], r["tuned"] and not r["random"]) == key]) for key, n in kinds.items()]
    names, panels = zip(*[(n, p) for n, p in named if p])
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 0.55 * len(rows) + 1.0 + 0.6 * len(panels)), squeeze=False,
                             gridspec_kw={"height_ratios": [len(p) + 0.8 for p in panels]})
    for ax, name, panel in zip(axes[:, 0], names, panels):
        ax.set_title(name, fontsize=8, loc="right")
        for y, r in enumerate(reversed(panel)):
            if r["kind"] == "same" or r["group"] == "project":  # the margin the words of both use
                ax.fill_betweenx([y - 0.4, y + 0.4], -margin, margin, color="#d8ecd8", zorder=0)
            ax.scatter(r["seeds"], [y - 0.18] * len(r["seeds"]), s=12, color="0.5", alpha=0.7, zorder=2)
            ax.plot([r["low"], r["high"]], [y, y], color="black", lw=2, zorder=3)
            ax.plot(r["mean"], y, "o", color="black", zorder=4)
            if r["paper"] is not None:
                if r["paper_low"] is not None:
                    ax.plot([r["paper_low"], r["paper_high"]], [y + 0.22, y + 0.22], color="tab:red", lw=1.5)
                ax.plot(r["paper"], y + 0.22, "D", color="tab:red", ms=5)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set(ylim=(-0.6, len(panel) - 0.4), yticks=range(len(panel)),
               yticklabels=[r["label"] + ("  [ours]" if r["group"] == "project" else "") for r in reversed(panel)])
        ax.set_xlabel("difference a − b (accuracy points)", fontsize=8)
    keys = [Line2D([], [], color=c, marker=m, lw=w, label=t) for c, m, w, t in (
        ("black", "o", 2, "ours: mean, 95 % t interval over seeds"), ("0.5", "o", 0, "ours: one seed (mean of its networks)"),
        ("tab:red", "D", 1.5, "the paper (Welch interval of its runs)"))]
    fig.legend(handles=keys + [Patch(color="#d8ecd8", label=f"±{margin:g}: the margin")], fontsize=7, loc="lower center",
               ncol=2, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.75 / fig.get_figheight(), 1, 1))
    save_figure(fig, path, dpi=130)


def read_tables(study: str, names: list) -> pd.DataFrame:
    """The long tables ``names`` of ``study`` as one (a cell in two of them counted once)."""
    table = pd.concat([pd.read_csv(os.path.join(study, f"{name}.csv")) for name in names], ignore_index=True)
    cell = table["run_dir"].map(lambda d: os.path.basename(os.path.normpath(d)))
    return table[~pd.concat([table[["method", "ipc", "seed", "network"]], cell], axis=1).duplicated()]


def tuning_map(table: pd.DataFrame, spec, stage: str, study: str) -> pd.DataFrame:
    """One row per variant of a tuning ``stage`` (its k, centroid and lambda): the mean and SD over the stage's
    seeds of the per-seed accuracy (%), and whether the claims' rule (:func:`hddgeo.verdict.best_of`, the best of
    one centroid's lambdas at one k, on those seeds) chooses it; ``random`` and ``dm`` on the same seeds first."""
    from hddgeo.distill.config import describe
    from hddgeo.verdict import best_of

    seeds = spec.stages[stage].get("seeds", spec.seeds)
    per = stats.per_seed(table[(table["ipc"] == 1) & table["seed"].isin(seeds)])
    rows = [{"k": None, "centroid": ref, "lambda": None} for ref in ("random", "dm")] + [
        {"k": c.cfg.k, "centroid": c.cfg.centroid, "lambda": c.cfg.scale, "label": describe(c.cfg)}
        for c in spec.cells(study, stage=stage, seeds=seeds[:1], ipcs=[1]) if c.kind == "distill"]
    out = pd.DataFrame(rows).assign(label=lambda d: d["label"].fillna(d["centroid"]))
    accs = per.groupby("method")["acc"]
    out["seeds"] = out["label"].map(accs.count()).fillna(0).astype(int)
    out["acc_mean"], out["acc_sd"] = out["label"].map(100 * accs.mean()), out["label"].map(100 * accs.std())
    groups = out.dropna(subset=["k"]).groupby(["k", "centroid"], sort=False)["label"]
    return out.assign(chosen=out["label"].isin([best_of(table, 1, list(g), seeds) for _, g in groups]))


def map_plot(grid: pd.DataFrame, path: str, title: str) -> None:
    """Accuracy against lambda (log scale), a panel per k, a line per centroid (its choice ringed), random and DM
    on the same seeds as horizontal lines."""
    import matplotlib.pyplot as plt

    from hddgeo.plots import save_figure  # (its import selects the Agg backend)

    ks = sorted(grid["k"].dropna().unique())
    fig, axes = plt.subplots(1, len(ks), figsize=(4.5 * len(ks), 3.6), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], ks):
        for (centroid, g), color in zip(grid[grid["k"] == k].groupby("centroid", sort=False), ("tab:blue", "tab:orange")):
            ax.errorbar(g["lambda"], g["acc_mean"], yerr=g["acc_sd"], marker="o", ms=4, capsize=2, color=color,
                        label=f"HDD {centroid}")
            ax.plot(g.loc[g["chosen"], "lambda"], g.loc[g["chosen"], "acc_mean"], "o", ms=11, mfc="none", color=color)
        for ref, style in (("random", ":"), ("dm", "--")):
            ax.axhline(grid.loc[grid["label"] == ref, "acc_mean"].iloc[0], color="0.3", ls=style, lw=1,
                       label=f"{ref} (same seeds)")
        ax.set(xscale="log", xlabel="lambda", title=f"k {k:g}")
    axes[0, 0].set_ylabel("accuracy (%), mean ± SD over seeds")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def cmd_map(args) -> int:
    from hddgeo.distill.spec import load_spec

    spec = load_spec(args.spec)  # an unknown stage is refused by spec.cells, naming the stages
    grid = tuning_map(read_tables(args.study, args.table), spec, args.stage, args.study)
    write_csv(out := os.path.join(args.study, f"{args.stage}_map.csv"), grid)
    seeds = spec.stages[args.stage].get("seeds", spec.seeds)

    def cell(r) -> str:
        return "—" if r.seeds == 0 else (f"{r.acc_mean:.1f}" + (f" ± {r.acc_sd:.1f}" if r.seeds > 1 else "")
                                         + (f" ({r.seeds} of {len(seeds)} seeds)" if r.seeds < len(seeds) else "")
                                         + (" (chosen)" if r.chosen else ""))

    shown = grid.dropna(subset=["k"]).assign(cell=lambda d: [cell(r) for r in d.itertuples()])
    wide = shown.pivot_table(index=["k", "centroid"], columns="lambda", values="cell", aggfunc="first", sort=False)
    refs = ", ".join(f"{r} {grid.loc[grid['label'] == r, 'acc_mean'].iloc[0]:.1f}" for r in ("random", "dm"))
    text = (f"Stage {args.stage}: accuracy (%) at each lambda, mean ± SD over seeds {', '.join(map(str, seeds))} "
            f"({refs} on the same seeds); chosen: each centroid's best lambda at its k, by the claims' rule\n\n"
            + markdown_table(wide.reset_index().rename(columns=lambda c: f"lambda {c:g}" if isinstance(c, float) else c)))
    write_text(md := os.path.join(args.study, f"{args.stage}_map.md"), text + "\n")
    os.makedirs(os.path.join(args.study, "figures"), exist_ok=True)
    map_plot(grid, png := os.path.join(args.study, "figures", f"{args.stage}_map.png"),
             f"{spec.name}, stage {args.stage}: mean ± SD over seeds {', '.join(map(str, seeds))}; ringed: the lambda "
             f"chosen for each centroid")
    print(text)
    print(f"-> {out}, {md}, {png}")
    return 0


def cmd_figures(args) -> int:
    from hddgeo.distill.spec import load_spec

    spec = load_spec(args.spec)
    table = read_tables(args.study, args.table)
    os.makedirs(out := os.path.join(args.study, "figures"), exist_ok=True)
    rows = forest_rows(table, spec)
    if rows:
        forest_plot(rows, os.path.join(out, "forest.png"), spec.margin,
                    f"{spec.name}: a − b paired by seed ({', '.join(args.table)}; {spec.budget()})")
        print(f"wrote {os.path.join(out, 'forest.png')} ({len(rows)} rows)")
    runs = {os.path.normpath(os.path.join(args.study, d)) for d in read_tables(args.study, args.curves)["run_dir"]}
    cells = [c for c in finished_cells(args.study, baselines=False) if os.path.normpath(c[0]) in runs]
    if cells and curves_plot(logs(cells), os.path.join(out, "curves.png"), f"{', '.join(args.curves)}; {spec.budget()}",
                             loss_only=True):
        print(f"wrote {os.path.join(out, 'curves.png')} ({len(cells)} distilled cells)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("design", help="variance split of the pilot and the seeds x networks design")
    f = sub.add_parser("figures", help="forest plot of the claims and accuracy-vs-iteration curves")
    m = sub.add_parser("map", help="a tuning stage's accuracy per k, centroid and lambda (table and figure)")
    for parser in (d, f, m):
        parser.add_argument("--study", default=STUDY)
    d.add_argument("--stage", default="pilot1", help="the report name of the pilot stage (its long table)")
    m.add_argument("--stage", default="regime1", help="the tuning stage of the spec")
    for parser, tables in ((f, ["results"]), (m, ["core1", "regime1"])):
        parser.add_argument("--table", nargs="+", default=tables, help="long tables of the study folder, read as one")
        parser.add_argument("--spec", default="fashionmnist_verdict_v2")
    f.add_argument("--curves", nargs="+", default=["core1"], help="long tables whose distilled cells the curves draw")
    args = p.parse_args(argv)
    return {"design": cmd_design, "figures": cmd_figures, "map": cmd_map}[args.command](args)


if __name__ == "__main__":
    from hddgeo.cli import run_main

    sys.exit(run_main(main))
