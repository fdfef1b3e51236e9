"""The verdict study on Fashion-MNIST: does HDD beat DM, and does the exact Karcher mean matter against Law's
closed form, at a budget that can resolve it, with the controls that make a gain attributable to the geometry.

    python experiments/fashionmnist_verdict.py --stage pilot      # 3 seeds: the spread of the paired differences
    python experiments/fashionmnist_verdict.py --stage main       # every variant over the seeds the pilot asks for
    python experiments/fashionmnist_verdict.py --stage main --report-only   # the tables from the committed cells
    python experiments/fashionmnist_verdict.py --rerun ipc1_dm_seed0         # rerun a committed cell, compare
    python experiments/fashionmnist_verdict.py --quick --data-root DIR --out /tmp/v   # smoke test (seconds)

Every cell is a run directory under ``--out``/runs (default ``experiments/results/fashionmnist_verdict``,
committed without its ``.pt`` files): finished cells are reused and unfinished ones resumed, so the study
spans sessions and a rerun only adds what is missing.  ``hddgeo compare experiments/results/fashionmnist_verdict``
recomputes every table from the committed ``config.json`` / ``metrics.json`` files, and ``hddgeo compare
experiments/results/fashionmnist_verdict/results.csv --claims fashionmnist_verdict`` the verdict from the committed
long table (the claims are the spec's ``[[claims]]``).

Budget (``verdict``, every cell; one-thread cells, two at a time): 200 DM iterations with 64 real images per
class per iteration, DSA, the paper's k / lambda / lr_img for DM with HDD on Fashion-MNIST (Table 5: k 1,
lambda 20 at IPC 1 and 40 at IPC 10, lr_img 1), clip 10; each set evaluated by 5 ConvNets trained 300 epochs
at IPC 1 and 500 at IPC 10, tested on the whole test set.  Every 20 iterations the run logs the Law-Karcher
distance of the real and synthetic class centroids, their mean radii, the share of clipped features and the
spread of the hierarchical weights (``gap_every``); every iteration the image gradient's norm.

Variants (paired by seed: within one seed every cell shares its feature networks, real batches, DSA draws,
initial images and evaluation networks):

* pilot: ``random`` (the initial images), ``dm``, ``dm+hdd/law``, ``dm+hdd/karcher`` at IPC 1 and 10, seeds
  0-2; its ``design.md`` gives the spread of the paired differences, the seeds a half-width of 0.5 points needs,
  and the ratio of HDD's to DM's image-gradient norm;
* main (the spec's stages ``controls``, ``seeds1``, ``seeds10``, ``prune10``, ``random10``, ``resolve1``, in that order, the
  seeds chosen from the pilot and written in the spec): ``dm@lr0.1/0.3/3`` (DM at image learning rates spanning that ratio),
  ``dm+hdd/tangent`` (the negative control), ``dm+hdd/law@k9`` and ``dm+hdd/karcher@k9`` (k 9: the
  regime where the centroids differ on these features) and ``dm+hdd/law@prune20`` (the 20 % most root-level
  images of each class as the pool) at IPC 1, seeds 0-2; the pilot's variants over more seeds at IPC 1 and 10;
  pruning at IPC 10, seeds 0-2; DM and the random images at IPC 10, seeds 3-4; DM at lr 0.1 and k 9's Law and
  Karcher at IPC 1, seeds 3-5.  Then ``results.md`` (every default pair, and HDD against the best DM of the
  learning-rate grid) and ``verdict.csv`` (one row per claim; ``python experiments/verdict_mechanism.py`` first
  adds the root-centric bias row).

``--seeds`` replaces the seeds of every main-stage block (tests; a smaller study).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Optional

import pandas as pd

from hddgeo import stats
from hddgeo.distill import DistillConfig, paper_preset
from hddgeo.cli import run_main
from hddgeo.distill.spec import load_spec
from hddgeo.distill.study import check_seeds_and_jobs, run_cells, run_study, study_cells, write_report
from hddgeo.rundir import write_csv, write_text
from hddgeo.tables import markdown_table
from hddgeo.verdict import best_of, claims_table

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "fashionmnist_verdict")

BUDGETS = {
    "verdict": dict(iterations=200, batch_real=64, final_eval_nets=5, epochs={1: 300, 10: 500}, gap_every=20),
    "quick": dict(iterations=2, batch_real=4, final_eval_nets=2, epochs={1: 2, 10: 2}, gap_every=1),
}
# The variants, the pilot's seeds and the main stage's blocks have one source, the shipped spec
# hddgeo/specs/fashionmnist_verdict.toml (`hddgeo study fashionmnist_verdict --stage NAME` runs the same cells):
# edit them there.  tests/test_spec.py checks that the spec's cells are this script's.
SPEC = load_spec("fashionmnist_verdict")
PILOT_SEEDS = tuple(SPEC.stages["pilot"]["seeds"])
PILOT_VARIANTS = tuple(SPEC.stage_variants("pilot"))
CONTROL_VARIANTS = tuple(v for v in SPEC.variants if v not in PILOT_VARIANTS)
TARGET_HALF_WIDTH = 0.005  # 0.5 accuracy points


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["pilot", "main"], default="main")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds of every main-stage block (default: the spec's, chosen from the pilot; the pilot's "
                        f"are {list(PILOT_SEEDS)})")
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke setting (tests)")
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST files "
                                                     "(default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--jobs", type=int, default=2, help="cells run at a time, each in a one-thread process")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report-only", action="store_true",
                   help="the tables of the finished cells in --out as they are (a checkout's committed cells: "
                        "config.json, metrics.json, log.csv); nothing runs")
    p.add_argument("--readme", default=None, metavar="FILE",
                   help="also write the tables between FILE's '<!-- TABLES-START -->' and '<!-- TABLES-END -->' "
                        "lines (docs/results.md: the verdict section of the docs' results page)")
    p.add_argument("--rerun", metavar="CELL", default=None,
                   help="rerun the committed cell CELL (a folder of OUT/runs) from its config.json into a new folder "
                        "and compare its accuracies with the committed metrics.json; nothing else runs")
    p.add_argument("--rerun-out", default=None, help="where --rerun writes (default: a temporary folder)")
    return p


def rerun(study: str, name: str, out: Optional[str] = None, progress: bool = True) -> dict:
    """Rerun one committed cell from its ``config.json`` (threads, device and data as it says) and compare the
    per-network accuracies with its ``metrics.json``: ``{"committed", "rerun", "identical", "max_abs_diff"}``."""
    import tempfile

    from hddgeo.distill import run_distillation
    from hddgeo.distill.study import baseline_cell
    from hddgeo.rundir import read_json

    cell = os.path.join(study, "runs", name)
    if not os.path.isfile(os.path.join(cell, "metrics.json")):
        raise ValueError(f"{cell} holds no finished cell (metrics.json); name a folder of {os.path.join(study, 'runs')}")
    cfg = DistillConfig.from_json(read_json(os.path.join(cell, "config.json")), source=os.path.join(cell, "config.json"))
    committed = read_json(os.path.join(cell, "metrics.json"))["accs"]
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(out or tmp, name)
        if "_random_" in name:
            got = baseline_cell(cfg, target, progress=progress)["accs"]
        else:
            got = run_distillation(cfg, target, progress=progress)["accs"]
    diff = max(abs(a - b) for a, b in zip(committed, got)) if len(committed) == len(got) else float("inf")
    return {"committed": committed, "rerun": got, "identical": committed == got, "max_abs_diff": diff}


def base_config(budget: dict, args) -> DistillConfig:
    return DistillConfig(dataset="fashionmnist", data_root=args.data_root, method="dm",
                         iterations=budget["iterations"], batch_real=budget["batch_real"],
                         final_eval_nets=budget["final_eval_nets"], eval_test_per_class=0,
                         gap_every=budget["gap_every"], checkpoint_every=50, threads=1, device=args.device,
                         seed_scheme=1)  # v1: its cells were run before seed scheme 2


def cell_adjuster(budget: dict):
    def cfg_for(cfg: DistillConfig) -> DistillConfig:
        preset = paper_preset("dm", "fashionmnist", cfg.ipc)  # HDD's k, lambda, lr_img at this IPC (Table 5)
        lr = cfg.lr_img if cfg.tag.startswith("lr") else preset["lr_img"]  # the step-size control sets its own
        k = cfg.k if cfg.tag.startswith("k") else preset["k"]  # and the regime control its k
        return dataclasses.replace(cfg, k=k, scale=preset["scale"], lr_img=lr,
                                   final_eval_epochs=budget["epochs"][cfg.ipc])
    return cfg_for


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
                             "seeds for ±0.5": stats.seeds_needed(sd, TARGET_HALF_WIDTH)})
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


# The main stage, in the order its cells run; each is a stage of the spec (variants, seeds, IPCs), so
# `hddgeo study fashionmnist_verdict --stage NAME` runs the same cells.  The spec's seeds are the design chosen
# from the pilot (printed beside what the pilot asks for).
MAIN_STAGES = ("controls", "seeds1", "seeds10", "prune10", "random10", "resolve1")
# the DM learning-rate grid: the labels of the spec's "best-tuned DM" claim
DM_GRID = next(c.b for c in SPEC.claims if isinstance(c.b, tuple))


def main_cells(base: DistillConfig, args, budget: dict, seeds=None) -> list:
    """Every cell of the main stage, pilot cells included (reused), each once, in :data:`MAIN_STAGES` order."""
    cells, seen = [], set()
    stages = [("pilot", None)] + [(name, seeds) for name in MAIN_STAGES]
    for name, given in stages:
        stage = SPEC.stages[name]
        ipcs = [i for i in stage.get("ipc", SPEC.ipcs) if i in args.ipc]
        block = study_cells(base, args.out, ipcs, SPEC.stage_variants(name), list(given or stage["seeds"]),
                            SPEC.baseline, cell_adjuster(budget), one_thread=args.jobs > 1)
        for cell in block:
            if cell.run_dir not in seen:
                seen.add(cell.run_dir)
                cells.append(cell)
    return cells


def verdict_table(table: pd.DataFrame, mechanism: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The spec's claims (:func:`hddgeo.verdict.claims_table`: what ``hddgeo compare --claims`` gives), then the
    root-centric bias rows from the mechanism tables when they are there."""
    verdict = claims_table(table, SPEC.claims, SPEC.designs)
    rows = []
    if mechanism is not None and len(mechanism):
        radius = mechanism[mechanism["quantity"] == "synthetic - real radius"]
        claims = (("HDD's synthetic points lie nearer the root than the real class's", "dm+hdd/law",
                   "(syn − real radius) of dm+hdd/law"),
                  ("HDD's synthetic points lie nearer the root than DM's", "dm+hdd/law − dm",
                   "(syn − real radius) of dm+hdd/law − of dm"))
        for ipc in sorted(int(i) for i in table["ipc"].unique()):
            for claim, of, what in claims:
                m = radius[(radius["ipc"] == ipc) & (radius["of"] == of)]
                if not len(m):
                    continue
                r = m.iloc[0]
                word = "not resolvable"
                if r["seeds"] >= 3 and r["ci_high"] < 0:
                    word = "reproduced"
                elif r["seeds"] >= 3 and r["ci_low"] > 0:
                    word = "contradicted"
                rows.append({"claim": claim, "IPC": ipc, "paper (points)": "qualitative",
                             "ours (points)": f"{r['mean']:+.3f} (radius)",
                             "95% CI": f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r["seeds"] > 1 else "n/a",
                             "seeds": int(r["seeds"]), "verdict": word, "difference": what})
    return pd.concat([verdict, pd.DataFrame(rows, columns=verdict.columns)], ignore_index=True) if rows else verdict


def pilot_text(pilot: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    design, _ = pilot_design(pilot)
    ratio = gradient_ratio(pilot)
    text = ("## Pilot (seeds 0, 1, 2)\n\nSpread of the paired differences over seeds, and the seeds a 95 % "
            "interval of half-width 0.5 points needs:\n\n" + markdown_table(design)
            + ("\nImage-gradient norm, mean over iterations and seeds, and its ratio to DM's:\n\n"
               + markdown_table(ratio) if len(ratio) else ""))
    return text, design


def main_text(table: pd.DataFrame, out: str, seeds=None) -> str:
    """The main stage's design, its report (``results.*``, HDD against the best DM of the grid too) and the
    verdict (``verdict.csv``); the mechanism rows come from ``mechanism_paired.csv`` when it is there."""
    text = "\n## Main stage (the spec's stages, in order)\n\n" + "\n".join(
        f"- {name}: {', '.join(SPEC.stages[name]['variants'])} at IPC "
        f"{', '.join(map(str, SPEC.stages[name].get('ipc', SPEC.ipcs)))}, seeds "
        f"{seeds or SPEC.stages[name]['seeds']}" for name in MAIN_STAGES) + "\n"
    pairs = stats.default_pairs(table["method"])
    for ipc in sorted(table["ipc"].unique()):
        best = best_of(table, ipc, DM_GRID)
        if best is not None and best != "dm" and ("dm+hdd/law", best) not in pairs:
            pairs.append(("dm+hdd/law", best))
    write_report(table, out, "results", pairs=pairs)
    mech_path = os.path.join(out, "mechanism_paired.csv")
    mechanism = pd.read_csv(mech_path) if os.path.isfile(mech_path) else None
    verdict = verdict_table(table, mechanism)
    write_csv(os.path.join(out, "verdict.csv"), verdict)
    return text + "\n## Verdict\n\n" + markdown_table(verdict) + "\n"


def write_readme_tables(readme: str, text: str, out: str) -> None:
    """Put ``text`` (the design and verdict), the cell count and the mechanism tables between the markers of
    ``readme`` (the docs' results page, ``docs/results.md``)."""
    start, end = "<!-- TABLES-START -->", "<!-- TABLES-END -->"
    with open(readme, encoding="utf-8") as fh:
        content = fh.read()
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise ValueError(f"{readme} needs one '{start}' line and, after it, one '{end}' line")
    done = sum(os.path.isfile(os.path.join(out, "runs", d, "metrics.json")) for d in os.listdir(os.path.join(out, "runs")))
    designed_cells = len({c.run_dir for stage in ("pilot",) + MAIN_STAGES for c in SPEC.cells(out_dir=out, stage=stage)})
    body = text.replace("## ", "#### ")
    body += f"\nCells finished: {done} of the design's {designed_cells}.\n"
    mech = os.path.join(out, "mechanism.md")
    if os.path.isfile(mech):
        with open(mech, encoding="utf-8") as fh:
            body += "\n#### Mechanism (experiments/verdict_mechanism.py)\n\n" + fh.read().strip() + "\n"
    i, j = content.index(start) + len(start), content.index(end)
    write_text(readme, content[:i] + "\n" + body.strip() + "\n" + content[j:])


def main(argv=None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    if args.rerun:
        res = rerun(args.out, args.rerun, args.rerun_out, progress=not args.quiet)
        print(f"{args.rerun}: committed {res['committed']}\n{' ' * len(args.rerun)}  rerun     {res['rerun']}\n"
              + ("identical" if res["identical"] else f"DIFFERENT (largest difference {res['max_abs_diff']:.4g})"))
        return 0 if res["identical"] else 1
    check_seeds_and_jobs(args.seeds, args.jobs)
    t0 = time.time()
    if args.report_only:  # the finished cells as they are (a checkout's committed ones): nothing runs
        from hddgeo.distill.study import read_runs

        table, _ = read_runs([args.out])
        table = table.drop(columns=["dataset"])
        labels = ["random"] + SPEC.labels()[:len(PILOT_VARIANTS)]
        pilot = table[table["method"].isin(labels) & table["seed"].isin(PILOT_SEEDS)].reset_index(drop=True)
        text, design = pilot_text(pilot)
        if args.stage == "main":
            text += main_text(table, args.out, args.seeds)
    else:
        budget = BUDGETS["quick" if args.quick else "verdict"]
        base = base_config(budget, args)
        pilot = run_study(base, args.out, ipcs=args.ipc, variants=PILOT_VARIANTS, seeds=list(PILOT_SEEDS),
                          progress=not args.quiet, cfg_for=cell_adjuster(budget), jobs=args.jobs, name="pilot")
        text, design = pilot_text(pilot)
        table = pilot
        if args.stage == "main":
            cells = main_cells(base, args, budget, seeds=args.seeds)
            table = run_cells(cells, args.out, "results", jobs=args.jobs, progress=not args.quiet)
            text += main_text(table, args.out, args.seeds)
    write_csv(os.path.join(args.out, "pilot_design.csv"), design)
    write_text(os.path.join(args.out, "design.md"), text)
    if args.readme:
        write_readme_tables(args.readme, text, args.out)
    print(text)
    print(f"{(time.time() - t0) / 60:.1f} min; tables in {args.out}", file=sys.stderr)
    return table


if __name__ == "__main__":
    sys.exit(run_main(main))
