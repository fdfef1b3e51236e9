"""Cross-architecture evaluation: train ConvNet, AlexNet, VGG11 and ResNet18 on a study's synthetic sets.

    hddgeo study demo --ipc 10                            # the synthetic sets: DM, DM+HDD law / karcher, seeds 0-2
    python experiments/cross_architecture.py results/demo --ipc 10 [--nets 3 --epochs 200]

Every distilled cell of the study folder is evaluated on every ``--models`` architecture by
:func:`hddgeo.distill.evaluate_run` (the run's DSA protocol and its seed's evaluation networks: differences are
paired by seed, per architecture; kept as ``RUN_DIR/eval_<model>.json`` and reused when networks and epochs match).
Writes ``cross_architecture.csv`` (one row per model, method, IPC, seed and network) and ``cross_architecture.md``
(per model: accuracy and paired differences) into the study folder.  ResNet18 takes ~11 min per digits set on a
CPU thread.
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from studyfolder import finished_cells

from hddgeo import stats
from hddgeo.distill import evaluate_run
from hddgeo.models import MODEL_NAMES
from hddgeo.rundir import read_json, write_csv, write_text


def evaluate(run_dir: str, model: str, nets: int, epochs: int, device: str) -> dict:
    """``evaluate_run``, unless ``RUN_DIR/eval_<model>.json`` already holds the same protocol."""
    path = os.path.join(run_dir, f"eval_{model}.json")
    if os.path.isfile(path):
        saved = read_json(path)
        if saved.get("epochs") == epochs and len(saved.get("accs", [])) == nets:
            return saved
    return evaluate_run(run_dir, model=model, num_nets=nets, epochs=epochs, progress=False, device=device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="a study folder (the --out of hddgeo study)")
    p.add_argument("--ipc", type=int, nargs="+", default=None, help="only these IPCs (default: every cell's)")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    p.add_argument("--nets", type=int, default=3, help="evaluation networks per set and architecture")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: each run's final evaluation's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args(argv)
    rows = []
    for run_dir, cfg, metrics in finished_cells(args.study, baselines=False):
        if args.ipc and cfg.ipc not in args.ipc:
            continue
        for model in args.models:
            print(f"{os.path.basename(run_dir)} on {model}", file=sys.stderr, flush=True)
            res = evaluate(run_dir, model, args.nets, args.epochs or cfg.final_eval_epochs, args.device)
            rows += [{"model": model, "method": metrics["method"], "ipc": cfg.ipc, "seed": cfg.seed, "network": j,
                      "acc": acc} for j, acc in enumerate(res["accs"])]
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"no distilled cell of {args.study} at IPC {args.ipc}")
    write_csv(os.path.join(args.study, "cross_architecture.csv"), table)
    text = "\n".join(f"## {model}\n\n{stats.report(table[table['model'] == model].drop(columns='model'))[2]}"
                     for model in args.models)
    write_text(os.path.join(args.study, "cross_architecture.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    from hddgeo.cli import run_main

    sys.exit(run_main(main))
