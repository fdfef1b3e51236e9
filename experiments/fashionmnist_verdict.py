"""The verdict study on Fashion-MNIST (v1): its design, tables and verdict, read from the committed study folder.

The cells are run by ``hddgeo study fashionmnist_verdict --stage NAME`` (hddgeo/specs/fashionmnist_verdict.toml);
this script only reads what they wrote:

    python experiments/fashionmnist_verdict.py                 # every table from the committed long table
    python experiments/fashionmnist_verdict.py --rerun ipc1_dm_seed0   # rerun one committed cell, compare

From the long table ``results.csv`` (built from the cells' ``metrics.json`` when absent) and the cells' ``log.csv``
it writes ``pilot_design.csv`` (the pilot's spread and the seeds a half-width of 0.5 points needs), ``results_*``
(every default pair, and HDD against the best DM of the learning-rate grid), ``verdict.csv`` (the spec's claims,
then the root-centric bias rows of ``experiments/verdict_mechanism.py``'s ``mechanism_paired.csv``) and
``design.md`` (all of it, also printed) into the study folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Optional

import pandas as pd

from hddgeo import stats
from hddgeo.distill import DistillConfig
from hddgeo.distill.spec import load_spec
from hddgeo.distill.study import read_long_table, read_runs, write_report
from hddgeo.rundir import read_json, write_csv, write_text
from hddgeo.tables import markdown_table
from hddgeo.verdict import best_of, claims_table

STUDY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fashionmnist_verdict")
SPEC = load_spec("fashionmnist_verdict")
MAIN_STAGES = [name for name in SPEC.stages if name != "pilot"]  # in the spec's order
DM_GRID = next(c.b for c in SPEC.claims if isinstance(c.b, tuple))  # the "best-tuned DM" claim's labels
PILOT_PAIRS = (("dm+hdd/law", "dm"), ("dm+hdd/karcher", "dm+hdd/law"))
TARGET_HALF_WIDTH = 0.005  # 0.5 accuracy points


def rerun(study: str, name: str, out: Optional[str] = None, progress: bool = True) -> dict:
    """Rerun one committed cell from its ``config.json`` (threads, device and data as it says) and compare the
    per-network accuracies with its ``metrics.json``: ``{"committed", "rerun", "identical", "max_abs_diff"}``."""
    from hddgeo.distill import run_distillation
    from hddgeo.distill.study import baseline_cell

    cell = os.path.join(study, "runs", name)
    if not os.path.isfile(os.path.join(cell, "metrics.json")):
        raise ValueError(f"{cell} holds no finished cell (metrics.json); name a folder of {os.path.join(study, 'runs')}")
    cfg = DistillConfig.from_json(read_json(os.path.join(cell, "config.json")), source=os.path.join(cell, "config.json"))
    metrics = read_json(os.path.join(cell, "metrics.json"))
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(out or tmp, name)
        if stats.is_random(metrics["method"]):  # random, or random@TAG (a pruned pool's images)
            got = baseline_cell(cfg, target, progress=progress)["accs"]
        else:
            got = run_distillation(cfg, target, progress=progress)["accs"]
    committed = metrics["accs"]
    diff = max(abs(a - b) for a, b in zip(committed, got)) if len(committed) == len(got) else float("inf")
    return {"committed": committed, "rerun": got, "identical": committed == got, "max_abs_diff": diff}


def pilot_design(table: pd.DataFrame) -> pd.DataFrame:
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
    return pd.DataFrame(rows)


def gradient_ratio(table: pd.DataFrame, study: str) -> pd.DataFrame:
    """Mean over iterations and seeds of each method's image-gradient norm, and its ratio to DM's."""
    rows = []
    for run_dir, group in table.groupby("run_dir"):
        path = os.path.join(study, run_dir, "log.csv")
        log = pd.read_csv(path) if os.path.exists(path) else pd.DataFrame()
        if "grad_norm" in log:
            rows.append({"method": group["method"].iloc[0], "ipc": group["ipc"].iloc[0], "seed": group["seed"].iloc[0],
                         "grad_norm": float(log["grad_norm"].mean())})
    if not rows:
        return pd.DataFrame()
    g = pd.DataFrame(rows).groupby(["ipc", "method"], sort=False)["grad_norm"].mean().reset_index()
    dm = g[g["method"] == "dm"].set_index("ipc")["grad_norm"]
    g["ratio_to_dm"] = [v / dm.get(i, float("nan")) for i, v in zip(g["ipc"], g["grad_norm"])]
    return g


def verdict_table(table: pd.DataFrame, mechanism: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The spec's claims (:func:`hddgeo.verdict.claims_table`: what ``hddgeo compare --claims`` gives), then the
    root-centric bias rows from the mechanism tables when they are there."""
    verdict = claims_table(table, SPEC.claims, SPEC.designs)
    rows = []
    radius = mechanism[mechanism["quantity"] == "synthetic - real radius"] if mechanism is not None else []
    claims = (("HDD's synthetic points lie nearer the root than the real class's", "dm+hdd/law",
               "(syn − real radius) of dm+hdd/law"),
              ("HDD's synthetic points lie nearer the root than DM's", "dm+hdd/law − dm",
               "(syn − real radius) of dm+hdd/law − of dm"))
    for ipc in sorted(int(i) for i in table["ipc"].unique()) if len(radius) else []:
        for claim, of, what in claims:
            m = radius[(radius["ipc"] == ipc) & (radius["of"] == of)]
            if not len(m):
                continue
            r = m.iloc[0]
            word = "not resolvable"
            if r["seeds"] >= 3 and (r["ci_high"] < 0 or r["ci_low"] > 0):
                word = "reproduced" if r["ci_high"] < 0 else "contradicted"
            rows.append({"claim": claim, "IPC": ipc, "paper (points)": "qualitative",
                         "ours (points)": f"{r['mean']:+.3f} (radius)",
                         "95% CI": f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r["seeds"] > 1 else "n/a",
                         "seeds": int(r["seeds"]), "verdict": word, "difference": what})
    return pd.concat([verdict, pd.DataFrame(rows, columns=verdict.columns)], ignore_index=True) if rows else verdict


def report(study: str) -> str:
    """Every table of the study from its long table (see the module's docstring); the markdown of ``design.md``."""
    path = os.path.join(study, "results.csv")
    table = read_long_table(path) if os.path.isfile(path) else read_runs([study])[0].drop(columns=["dataset"])
    pilot_seeds = SPEC.stages["pilot"]["seeds"]
    pilot = table[table["method"].isin([stats.RANDOM] + SPEC.stages["pilot"]["variants"])
                  & table["seed"].isin(pilot_seeds)].reset_index(drop=True)
    design, ratio = pilot_design(pilot), gradient_ratio(pilot, study)
    write_csv(os.path.join(study, "pilot_design.csv"), design)
    text = (f"## Pilot (seeds {', '.join(map(str, pilot_seeds))})\n\nSpread of the paired differences over seeds, and "
            "the seeds a 95 % interval of half-width 0.5 points needs:\n\n" + markdown_table(design)
            + ("\nImage-gradient norm, mean over iterations and seeds, and its ratio to DM's:\n\n"
               + markdown_table(ratio) if len(ratio) else ""))
    text += "\n## Main stage (the spec's stages, in order)\n\n" + "\n".join(
        f"- {name}: {', '.join(SPEC.stages[name]['variants'])} at IPC "
        f"{', '.join(map(str, SPEC.stages[name].get('ipc', SPEC.ipcs)))}, seeds {SPEC.stages[name]['seeds']}"
        for name in MAIN_STAGES) + "\n"
    pairs = stats.default_pairs(table["method"])
    for ipc in sorted(table["ipc"].unique()):
        best = best_of(table, ipc, DM_GRID)
        if best is not None and best != "dm" and ("dm+hdd/law", best) not in pairs:
            pairs.append(("dm+hdd/law", best))
    write_report(table, study, "results", pairs=pairs)
    mechanism = os.path.join(study, "mechanism_paired.csv")
    verdict = verdict_table(table, pd.read_csv(mechanism) if os.path.isfile(mechanism) else None)
    write_csv(os.path.join(study, "verdict.csv"), verdict)
    text += "\n## Verdict\n\n" + markdown_table(verdict) + "\n"
    write_text(os.path.join(study, "design.md"), text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default=STUDY, help="the study folder (default: the committed one)")
    p.add_argument("--rerun", metavar="CELL", default=None,
                   help="rerun the committed cell CELL (a folder of STUDY/runs) from its config.json into a new folder "
                        "and compare its accuracies with the committed metrics.json; nothing else is written")
    p.add_argument("--rerun-out", default=None, help="where --rerun writes (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.rerun:
        res = rerun(args.study, args.rerun, args.rerun_out)
        print(f"{args.rerun}: committed {res['committed']}\n{' ' * len(args.rerun)}  rerun     {res['rerun']}\n"
              + ("identical" if res["identical"] else f"DIFFERENT (largest difference {res['max_abs_diff']:.4g})"))
        return 0 if res["identical"] else 1
    print(report(args.study))
    return 0


if __name__ == "__main__":
    from hddgeo.cli import run_main

    sys.exit(run_main(main))
