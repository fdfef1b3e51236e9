"""The verdict study on Fashion-MNIST: does HDD beat DM, and does the exact Karcher mean matter against Law's
closed form, at a budget that can resolve it, with the controls that make a gain attributable to the geometry.

    python experiments/fashionmnist_verdict.py --stage pilot      # 3 seeds: the spread of the paired differences
    python experiments/fashionmnist_verdict.py --stage main       # every variant over the seeds the pilot asks for
    python experiments/fashionmnist_verdict.py --quick --data-root DIR --out /tmp/v   # smoke test (seconds)

Every cell is a run directory under ``--out``/runs (default ``experiments/results/fashionmnist_verdict``,
committed without its ``.pt`` files): finished cells are reused and unfinished ones resumed, so the study
spans sessions and a rerun only adds what is missing.  ``hddgeo compare experiments/results/fashionmnist_verdict``
recomputes every table from the committed ``config.json`` / ``metrics.json`` files.

Budget (``verdict``, every cell; one-thread cells, two at a time): 200 DM iterations with 64 real images per
class per iteration, DSA, the paper's k / lambda / lr_img for DM with HDD on Fashion-MNIST (Table 5: k 1,
lambda 20 at IPC 1 and 40 at IPC 10, lr_img 1), clip 10; each set evaluated by 5 ConvNets trained 300 epochs
at IPC 1 and 500 at IPC 10, tested on the whole test set.  Every 20 iterations the run logs the Law-Karcher
distance of the real and synthetic class centroids, their mean radii, the share of clipped features and the
spread of the hierarchical weights (``gap_every``); every iteration the image gradient's norm.

Variants (paired by seed: within one seed every cell shares its feature networks, real batches, DSA draws,
initial images and evaluation networks):

* pilot: ``random`` (the initial images), ``dm``, ``dm+hdd/law``, ``dm+hdd/karcher`` at IPC 1 and 10;
* main adds: ``dm@lrX`` (DM at larger image learning rates spanning the measured ratio of HDD's to DM's
  image-gradient norm), ``dm+hdd/tangent`` (the negative control), ``dm+hdd/law@noclip`` and
  ``dm+hdd/karcher@noclip`` (no clip: the regime where the centroids differ on these features), and
  ``dm+hdd/law@prune20`` (the 20 % most root-level images of each class as the pool).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

import numpy as np
import pandas as pd

from hddgeo import stats
from hddgeo.distill import DistillConfig, paper_preset
from hddgeo.cli import run_main
from hddgeo.distill.spec import load_spec
from hddgeo.distill.study import check_seeds_and_jobs, run_study, write_report
from hddgeo.tables import markdown_table

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "fashionmnist_verdict")

BUDGETS = {
    "verdict": dict(iterations=200, batch_real=64, final_eval_nets=5, epochs={1: 300, 10: 500}, gap_every=20),
    "quick": dict(iterations=2, batch_real=4, final_eval_nets=2, epochs={1: 2, 10: 2}, gap_every=1),
}
# The variants and the pilot's seeds have one source, the shipped spec hddgeo/specs/fashionmnist_verdict.toml
# (`hddgeo study fashionmnist_verdict` runs the same cells): edit them there.  Its [[variants]] are the pilot's
# (its [stages.pilot]) and then the controls: DM at larger image learning rates (the step-size control; DM_LR_FACTORS,
# chosen from the pilot's measured ratio of HDD's to DM's image-gradient norm, tags lr<value>), the tangent centroid,
# no clip, pruning.  tests/test_spec.py checks that the spec's cells are this script's.
SPEC = load_spec("fashionmnist_verdict")
PILOT_SEEDS = tuple(SPEC.stages["pilot"]["seeds"])
PILOT_VARIANTS = tuple(SPEC.stage_variants("pilot"))
CONTROL_VARIANTS = tuple(v for v in SPEC.variants if v not in PILOT_VARIANTS)
DM_LR_FACTORS = tuple(v["lr_img"] for v in CONTROL_VARIANTS if v.get("tag", "").startswith("lr"))
TARGET_HALF_WIDTH = 0.005  # 0.5 accuracy points
MAX_SEEDS = 10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["pilot", "main"], default="main")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="distillation seeds of the main stage (default: as many as the pilot asks for, at most "
                        f"{MAX_SEEDS}; the pilot's are {list(PILOT_SEEDS)})")
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke setting (tests)")
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST files "
                                                     "(default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--jobs", type=int, default=2, help="cells run at a time, each in a one-thread process")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def base_config(budget: dict, args) -> DistillConfig:
    return DistillConfig(dataset="fashionmnist", data_root=args.data_root, method="dm",
                         iterations=budget["iterations"], batch_real=budget["batch_real"],
                         final_eval_nets=budget["final_eval_nets"], eval_test_per_class=0,
                         gap_every=budget["gap_every"], checkpoint_every=50, threads=1, device=args.device)


def cell_adjuster(budget: dict):
    def cfg_for(cfg: DistillConfig) -> DistillConfig:
        preset = paper_preset("dm", "fashionmnist", cfg.ipc)  # HDD's k, lambda, lr_img at this IPC (Table 5)
        lr = cfg.lr_img if cfg.tag.startswith("lr") else preset["lr_img"]  # the step-size control sets its own
        return dataclasses.replace(cfg, k=preset["k"], scale=preset["scale"], lr_img=lr,
                                   final_eval_epochs=budget["epochs"][cfg.ipc])
    return cfg_for


def seeds_needed(sd: float, half_width: float = TARGET_HALF_WIDTH, most: int = 50) -> int:
    """Smallest number of seeds n >= 3 whose 95 % t interval half-width ``t(n-1) sd / sqrt(n)`` is at most
    ``half_width`` (``most + 1`` when even ``most`` seeds would not do)."""
    from scipy import stats as st

    for n in range(3, most + 1):
        if st.t.ppf(0.975, n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    return most + 1


PILOT_PAIRS = (("dm+hdd/law", "dm"), ("dm+hdd/karcher", "dm+hdd/law"))


def pilot_design(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Per IPC and pair: the standard deviation over seeds of the paired difference and the seeds it needs."""
    seeds = stats.per_seed(table)
    rows = []
    for ipc in sorted(seeds["ipc"].unique()):
        at = seeds[seeds["ipc"] == ipc].pivot(index="seed", columns="method", values="acc")
        for a, b in PILOT_PAIRS:
            if a in at and b in at:
                diff = (at[a] - at[b]).dropna()
                sd = float(diff.std(ddof=1))
                rows.append({"ipc": ipc, "difference": f"{a} − {b}", "seeds": len(diff),
                             "mean (points)": round(100 * float(diff.mean()), 2), "sd (points)": round(100 * sd, 2),
                             "seeds for ±0.5": seeds_needed(sd)})
    design = pd.DataFrame(rows)
    return design, int(design["seeds for ±0.5"].max()) if len(design) else 3


def gradient_ratio(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over iterations and seeds of each method's image-gradient norm, and its ratio to DM's."""
    rows = []
    for run_dir, group in table.groupby("run_dir"):
        log_path = os.path.join(run_dir, "log.csv")
        if not os.path.exists(log_path):
            continue
        log = pd.read_csv(log_path)
        if "grad_norm" not in log:
            continue
        rows.append({"method": group["method"].iloc[0], "ipc": group["ipc"].iloc[0], "seed": group["seed"].iloc[0],
                     "grad_norm": float(log["grad_norm"].mean())})
    if not rows:
        return pd.DataFrame()
    g = pd.DataFrame(rows).groupby(["ipc", "method"], sort=False)["grad_norm"].mean().reset_index()
    dm = g[g["method"] == "dm"].set_index("ipc")["grad_norm"]
    g["ratio_to_dm"] = [v / dm.get(i, float("nan")) for i, v in zip(g["ipc"], g["grad_norm"])]
    return g


def main(argv=None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    check_seeds_and_jobs(args.seeds, args.jobs)
    budget = BUDGETS["quick" if args.quick else "verdict"]
    base = base_config(budget, args)
    t0 = time.time()
    pilot = run_study(base, args.out, ipcs=args.ipc, variants=PILOT_VARIANTS, seeds=list(PILOT_SEEDS),
                      progress=not args.quiet, cfg_for=cell_adjuster(budget), jobs=args.jobs, name="pilot")
    design, needed = pilot_design(pilot)
    ratio = gradient_ratio(pilot)
    text = ("## Pilot (seeds 0, 1, 2)\n\nSpread of the paired differences over seeds, and the seeds a 95 % "
            "interval of half-width 0.5 points needs:\n\n" + markdown_table(design)
            + ("\nImage-gradient norm, mean over iterations and seeds, and its ratio to DM's:\n\n"
               + markdown_table(ratio) if len(ratio) else ""))
    table = pilot
    if args.stage == "main":
        seeds = args.seeds or list(range(min(max(needed, len(PILOT_SEEDS)), MAX_SEEDS)))
        text += (f"\nMain stage: seeds {seeds} (the pilot asks for {needed}"
                 + (f"; capped at {MAX_SEEDS}" if needed > MAX_SEEDS else "") + ").\n")
        table = run_study(base, args.out, ipcs=args.ipc, variants=PILOT_VARIANTS + CONTROL_VARIANTS, seeds=seeds,
                          progress=not args.quiet, cfg_for=cell_adjuster(budget), jobs=args.jobs, name="results")
    (design).to_csv(os.path.join(args.out, "pilot_design.csv"), index=False)
    with open(os.path.join(args.out, "design.md"), "w") as fh:
        fh.write(text)
    print(text)
    print(f"{(time.time() - t0) / 60:.1f} min; tables in {args.out}", file=sys.stderr)
    return table


if __name__ == "__main__":
    sys.exit(run_main(main))
