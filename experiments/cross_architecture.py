"""Cross-architecture evaluation: train ConvNet, AlexNet, VGG11 and ResNet18 on distilled synthetic sets.

Either distils one run per variant (DM, DM+HDD law, DM+HDD karcher by default; the same seed and
budget for each) or reuses finished run directories given with ``--run-dir`` (e.g. cells of
``experiments/exact_vs_approximate.py``), then evaluates every synthetic set on every model with
:func:`hddgeo.distill.evaluate_run` (the run's own DSA and evaluation protocol; each result is also
stored as ``RUN_DIR/eval_<model>.json`` and reused when the number of networks and epochs match).

    python experiments/cross_architecture.py                               # digits IPC 10, 3 variants
    python experiments/cross_architecture.py --run-dir results/exact_vs_approximate/runs/ipc10_seed0_dm \\
        --run-dir results/exact_vs_approximate/runs/ipc10_seed0_hdd-karcher_k1_clip10
    python experiments/cross_architecture.py --quick --out /tmp/xa

Outputs in ``--out`` (default ``results/cross_architecture``): ``results.csv`` (one row per run and
model), ``results.md`` (rows = runs, columns = models, mean ± std in %), ``cross_architecture.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from hddgeo.distill import DistillConfig, describe, evaluate_run
from hddgeo.cli import run_main
from hddgeo.distill.study import check_seeds_and_jobs, run_cell
from hddgeo.models import MODEL_NAMES
from hddgeo.plots import save_figure, save_table_md
from hddgeo.rundir import write_csv, write_text

VARIANTS = {"dm": {"matcher": "euclidean"}, "hdd-law": {"matcher": "hdd", "centroid": "law"},
            "hdd-karcher": {"matcher": "hdd", "centroid": "karcher"},
            "hdd-tangent": {"matcher": "hdd", "centroid": "tangent"}}


def _max_norm(text: str):
    return None if text.lower() in ("none", "off", "inf") else float(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/cross_architecture")
    p.add_argument("--run-dir", action="append", default=[], help="finished run directory to evaluate (repeatable); "
                   "when given, nothing is distilled")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    p.add_argument("--nets", type=int, default=3, help="evaluation networks per model")
    p.add_argument("--epochs", type=int, default=200, help="evaluation epochs (default for distilled runs: 200)")
    # distillation (when no --run-dir is given)
    p.add_argument("--variants", nargs="+", default=["dm", "hdd-law", "hdd-karcher"], choices=list(VARIANTS))
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--k", type=float, default=1.0)
    p.add_argument("--max-norm", type=_max_norm, default=10.0)
    p.add_argument("--scale", type=float, default=None, help="lambda (default 1.0 on digits, 20 otherwise)")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--batch-real", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke setting (tests)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true")
    return p


# --quick changes these defaults; flags given explicitly still win
QUICK = dict(ipc=1, iterations=2, batch_real=8, nets=1, epochs=1, variants=["dm", "hdd-law"])


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**QUICK)
    return p.parse_args(argv)


def distil(args) -> list:
    """Run directories of the distilled variants (reused / resumed when already there)."""
    base = DistillConfig(dataset=args.dataset, data_root=args.data_root, ipc=args.ipc, method="dm", k=args.k,
                         max_norm=args.max_norm, scale=args.scale, iterations=args.iterations,
                         batch_real=args.batch_real, seed=args.seed, final_eval_nets=args.nets,
                         final_eval_epochs=args.epochs, checkpoint_every=25, device=args.device)
    dirs = []
    for name in args.variants:
        cfg = dataclasses.replace(base, **VARIANTS[name])
        run_dir = os.path.join(args.out, "runs", f"ipc{args.ipc}_seed{args.seed}_{name}")
        if not args.quiet:
            print(f"distilling {describe(cfg)} -> {run_dir}", file=sys.stderr, flush=True)
        run_cell(cfg, run_dir, progress=not args.quiet)
        dirs.append(run_dir)
    return dirs


def evaluate(run_dir: str, model: str, nets: int, epochs: int, progress: bool, device: str = "auto") -> dict:
    """``evaluate_run`` unless ``RUN_DIR/eval_<model>.json`` already holds the same protocol."""
    path = os.path.join(run_dir, f"eval_{model}.json")
    if os.path.exists(path):
        with open(path) as fh:
            saved = json.load(fh)
        if saved.get("epochs") == epochs and len(saved.get("accs", [])) == nets:
            return saved
    return evaluate_run(run_dir, model=model, num_nets=nets, epochs=epochs, progress=progress, device=device)


def plot(table: pd.DataFrame, models: list, path: str) -> None:
    runs = list(dict.fromkeys(table.run))
    colours = sns.color_palette("deep", len(runs))
    width = 0.8 / len(runs)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
        fig, ax = plt.subplots(figsize=(2.0 * len(models) + 3.5, 4.4))
        for i, run in enumerate(runs):
            sub = table[table.run == run].set_index("model").reindex(models)
            ax.bar(np.arange(len(models)) - 0.4 + width * (i + 0.5), 100 * sub.acc_mean, width * 0.92,
                   yerr=100 * sub.acc_std, capsize=3, color=colours[i], label=run)
        ax.set_xticks(range(len(models)), models)
        ax.set_xlabel("evaluation architecture (trained on the synthetic set)")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(title="synthetic set", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title("Cross-architecture generalisation of distilled sets (mean ± std over networks)")
        fig.tight_layout()
        save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_seeds_and_jobs([args.seed])
    torch.set_num_threads(args.threads)
    if args.scale is None:
        args.scale = 1.0 if args.dataset == "digits" else 20.0
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    run_dirs = args.run_dir or distil(args)
    rows = []
    for run_dir in run_dirs:
        if not os.path.exists(os.path.join(run_dir, "synset.pt")):
            raise SystemExit(f"cross_architecture: error: {run_dir} is not a finished run directory (no synset.pt)")
        with open(os.path.join(run_dir, "config.json")) as fh:
            cfg = DistillConfig.from_json(json.load(fh))
        clip = "none" if cfg.max_norm is None else f"{cfg.max_norm:g}"
        label = f"{describe(cfg)} IPC {cfg.ipc}" + (f" k={cfg.k:g} clip={clip}" if cfg.matcher != "euclidean" else "")
        for model in args.models:
            if not args.quiet:
                print(f"evaluating {label} on {model}", file=sys.stderr, flush=True)
            res = evaluate(run_dir, model, args.nets, args.epochs, progress=not args.quiet, device=args.device)
            rows.append({"run": label, "method": describe(cfg), "ipc": cfg.ipc, "dataset": cfg.dataset, "model": model,
                         "acc_mean": res["acc_mean"], "acc_std": res["acc_std"], "nets": len(res["accs"]),
                         "epochs": res["epochs"], "run_dir": run_dir})
    table = pd.DataFrame(rows)
    write_csv(os.path.join(args.out, "results.csv"), table)
    wide = table.assign(acc=[f"{100 * m:.1f} ± {100 * s:.1f}" for m, s in zip(table.acc_mean, table.acc_std)])
    wide = wide.pivot_table(index="run", columns="model", values="acc", aggfunc="first", sort=False)[args.models]
    text = (f"# Cross-architecture evaluation\n\nEach synthetic set trained {args.nets} network(s) per architecture for "
            f"{args.epochs} epochs (the run's DSA protocol); test accuracy mean ± std (%).\n\n"
            + save_table_md(wide.reset_index()))
    write_text(os.path.join(args.out, "results.md"), text)
    plot(table, args.models, os.path.join(args.out, "cross_architecture.png"))
    if not args.quiet:
        print(text)
        print(f"wrote {args.out}: results.csv, results.md, cross_architecture.png ({(time.time() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
