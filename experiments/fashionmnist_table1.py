"""The Fashion-MNIST column of the paper's Table 1: Random, DM, and DM+HDD with the Law, Karcher and tangent
centroids, paired over distillation seeds.

    python experiments/fashionmnist_table1.py                 # CPU budget, IPC 1 and 10 (54 min on 2 shared cores)
    python experiments/fashionmnist_table1.py --ipc50         # add IPC 50
    python experiments/fashionmnist_table1.py --preset paper  # the paper's budget, for a GPU
    python experiments/fashionmnist_table1.py --quick --data-root DIR --out /tmp/t1   # smoke test (seconds)

Data: the original Fashion-MNIST files, by default from ``/usr/share/datasets/fashion-mnist`` (Debian's
``apt-get install dataset-fashion-mnist``); ``--data-root`` for any other folder holding them.

Budgets (every cell of one seed shares feature networks, real batches, DSA draws, initial images and
evaluation networks; HDD's k, lambda and lr_img are the paper's Table 5 values for DM with HDD on
Fashion-MNIST: k 1, lambda 20 / 40 / 60 at IPC 1 / 10 / 50, lr_img 1; clip |v|/sqrt(k) at 10):

* ``cpu`` (default): 80 iterations with 16 real images per class per iteration; each set evaluated by 5
  ConvNets trained 200 epochs at IPC 1 and 30 epochs at IPC 10 (15 at IPC 50; one SGD step per epoch at
  batch 256 up to IPC 25, so 200 / 30 / 30 steps), tested on a fixed stratified 2,000-image subset of the
  test set (the first 200 test images of each class; every cell is tested on the same images).  The budget
  is what 2 shared CPU cores finish in about an hour (two one-thread cells at a time, ``--jobs 2``); the
  paper's protocol is 250x more distillation iterations, 16x larger real batches, 5-33x more evaluation training and 5x more test images.
* ``paper``: 20,000 iterations, 256 real images per class, 5 ConvNets x 1000 epochs, the whole test set.

Outputs in ``--out`` (default ``results/fashionmnist_table1``): ``results.csv`` (one row per method, IPC,
seed and evaluation network), ``results_summary.csv``, ``results_paired.csv`` (paired differences with 95 %
t intervals over seeds), ``results.md`` (our table beside the paper's numbers, and the differences), and
``runs/``: one resumable run directory per cell (a rerun skips finished cells and resumes unfinished ones).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

import pandas as pd
import torch

from hddgeo import stats
from hddgeo.distill import DistillConfig, paper_preset
from hddgeo.cli import run_main
from hddgeo.distill.study import check_seeds_and_jobs, run_study, write_report
from hddgeo.tables import markdown_table

# The paper's Table 1, Fashion-MNIST column (mean ± std in %, IPC 1 / 10 / 50).
PAPER = {
    "random": {1: "51.4 ± 3.8", 10: "73.8 ± 0.7", 50: "82.5 ± 0.7"},
    "dm": {1: "70.7 ± 0.6", 10: "83.4 ± 0.1", 50: "88.1 ± 0.6"},
    "dm+hdd": {1: "72.1 ± 0.2", 10: "84.0 ± 0.1", 50: "88.8 ± 0.4"},
}
BUDGETS = {
    "cpu": dict(iterations=80, batch_real=16, final_eval_nets=5, epochs={1: 200, 10: 30, 50: 15}, test_per_class=200),
    "paper": dict(iterations=20_000, batch_real=256, final_eval_nets=5, epochs={1: 1000, 10: 1000, 50: 1000},
                  test_per_class=0),
    "quick": dict(iterations=2, batch_real=4, final_eval_nets=2, epochs={1: 2, 10: 2, 50: 2}, test_per_class=0),
}
VARIANTS = (
    {"matcher": "euclidean"},
    {"matcher": "hdd", "centroid": "law"},
    {"matcher": "hdd", "centroid": "karcher"},
    {"matcher": "hdd", "centroid": "tangent"},
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["cpu", "paper"], default="cpu", help="budget (see above)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke setting (tests)")
    p.add_argument("--ipc50", action="store_true", help="add IPC 50")
    p.add_argument("--ipc", type=int, nargs="+", default=None, help="IPCs to run (default 1 10, plus 50 with --ipc50)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="distillation seeds (at least 3 for intervals)")
    p.add_argument("--nets", type=int, default=None, help="evaluation networks per cell (default 5)")
    p.add_argument("--iterations", type=int, default=None, help="override the budget's iterations")
    p.add_argument("--batch-real", type=int, default=None, help="override the budget's real images per class")
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST files "
                                                     "(default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads with --jobs 1 (default: torch's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--jobs", type=int, default=2, help="cells run at a time, each in a one-thread process")
    p.add_argument("--out", default="results/fashionmnist_table1")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def paper_table(summary: pd.DataFrame, ipcs) -> pd.DataFrame:
    """Our mean ± std beside the paper's, one row per method."""
    ours = stats.summary_wide(summary).set_index("method")
    rows = []
    for method in ours.index:
        paper_key = "dm+hdd" if method.startswith("dm+hdd/") else method
        row = {"method": method}
        for ipc in ipcs:
            row[f"IPC {ipc} (ours)"] = ours.loc[method].get(f"IPC {ipc}", "")
            row[f"IPC {ipc} (paper)"] = PAPER.get(paper_key, {}).get(ipc, "")
        rows.append(row)
    return pd.DataFrame(rows)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    check_seeds_and_jobs(args.seeds, args.jobs)
    budget = dict(BUDGETS["quick" if args.quick else args.preset])
    for name in ("iterations", "batch_real"):
        if getattr(args, name) is not None:
            budget[name] = getattr(args, name)
    if args.nets is not None:
        budget["final_eval_nets"] = args.nets
    ipcs = args.ipc or ([1, 10, 50] if args.ipc50 else [1, 10])
    if args.threads:
        torch.set_num_threads(args.threads)
    base = DistillConfig(dataset="fashionmnist", data_root=args.data_root, method="dm",
                         iterations=budget["iterations"], batch_real=budget["batch_real"],
                         final_eval_nets=budget["final_eval_nets"], eval_test_per_class=budget["test_per_class"],
                         checkpoint_every=50, threads=args.threads, device=args.device)

    def cfg_for(cfg: DistillConfig) -> DistillConfig:
        preset = paper_preset("dm", "fashionmnist", cfg.ipc)  # HDD's k, lambda, lr_img for this IPC
        return dataclasses.replace(cfg, k=preset["k"], scale=preset["scale"], lr_img=preset["lr_img"],
                                   final_eval_epochs=budget["epochs"][cfg.ipc])

    t0 = time.time()
    table = run_study(base, args.out, ipcs=ipcs, variants=VARIANTS, seeds=args.seeds, progress=not args.quiet,
                      cfg_for=cfg_for, jobs=args.jobs)
    elapsed = time.time() - t0
    summary = stats.summarise(table)
    budget_text = (f"budget `{'quick' if args.quick else args.preset}`: {budget['iterations']} iterations, "
                   f"{budget['batch_real']} real images per class per iteration, DSA, seeds {args.seeds}; each set "
                   f"evaluated by {budget['final_eval_nets']} ConvNets trained "
                   + ", ".join(f"{budget['epochs'][i]} epochs at IPC {i}" for i in ipcs)
                   + ", tested on " + (f"the first {budget['test_per_class']} test images of each class"
                                       if budget["test_per_class"] else "the whole test set")
                   + "; HDD with the paper's k / lambda / lr_img (Table 5)")
    threads = f"{args.jobs} one-thread cells at a time" if args.jobs > 1 else f"{torch.get_num_threads()} thread(s)"
    machine = (f"{os.cpu_count()} CPU(s), {cpu_model()}, torch {torch.__version__}, {threads}; this invocation "
               f"took {elapsed / 60:.1f} min (finished cells are reused, not rerun)")
    preamble = (f"# Fashion-MNIST, paper Table 1 column\n\n{budget_text}.\n\nMachine: {machine}.\n\n"
                f"## Beside the paper (mean ± std in %; the paper's DM+HDD row is one number per IPC)\n\n"
                + markdown_table(paper_table(summary, ipcs)) + "\n## This run\n")
    _, _, text = write_report(table, args.out, "results", preamble=preamble)
    print(text)
    print(f"wrote {os.path.join(args.out, 'results.md')} and the CSVs beside it", file=sys.stderr)
    return table


if __name__ == "__main__":
    sys.exit(run_main(main))
