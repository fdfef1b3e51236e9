"""Verdict v2: the pilot stage of the shipped spec on quick settings and generated Fashion-MNIST files, and the
design read from it (experiments/verdict_v2.py)."""
import json

import numpy as np
import pandas as pd
import pytest
from test_experiments import load_script

from hddgeo import stats
from hddgeo.cli import main
from hddgeo.seeds import RunSeeds


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    from conftest import make_fashionmnist

    root = tmp_path_factory.mktemp("data") / "fashion-mnist"
    make_fashionmnist(root, np.random.default_rng(0), per_class=(12, 3), compress=(True, True))
    out = tmp_path_factory.mktemp("v2") / "study"
    assert main(["study", "fashionmnist_verdict_v2", "--stage", "pilot1", "--quick", "--data-root", str(root),
                 "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    return out


def _no_constant(name):
    raise AssertionError(f"{name} in a JSON file: not strict JSON (jq and JavaScript refuse it)")


def test_the_pilot_runs_every_variant_on_independent_replicates(pilot):
    table = pd.read_csv(pilot / "pilot1.csv")
    assert set(table["method"]) == {"random", "dm", "dm+clipped_euclidean", "dm+hdd/law", "dm+hdd/karcher"}
    assert sorted(table["seed"].unique()) == [0, 1, 2, 3]
    for run in (pilot / "runs").iterdir():
        cfg = json.loads((run / "config.json").read_text(), parse_constant=_no_constant)  # strict JSON: no NaN
        metrics = json.loads((run / "metrics.json").read_text(), parse_constant=_no_constant)
        assert cfg["seed_scheme"] == 2
        assert metrics["final_eval_seconds"] > 0 and metrics["eval_epochs"] == cfg["final_eval_epochs"]
        assert metrics["provenance"]["cpu"] and metrics["provenance"]["torch"]  # the random rows' too
        assert metrics["eval_seeds"] == RunSeeds(cfg["seed"], 2).eval_networks("final", cfg["final_eval_nets"])
    # no evaluation network is shared between two seeds; within a seed every method has the same ones
    seeds = {}
    for run in (pilot / "runs").iterdir():
        cfg = json.loads((run / "config.json").read_text())
        seeds.setdefault(cfg["seed"], set()).add(tuple(json.loads((run / "metrics.json").read_text())["eval_seeds"]))
    assert all(len(v) == 1 for v in seeds.values())
    flat = [s for v in seeds.values() for t in v for s in t]
    assert len(flat) == len(set(flat))


def test_the_design_splits_the_pilot_and_meets_its_targets_where_it_can(pilot):
    script = load_script("verdict_v2")
    assert script.main(["design", "--study", str(pilot)]) == 0
    comps = pd.read_csv(pilot / "design1_components.csv")
    table = pd.read_csv(pilot / "pilot1.csv")
    for row in comps.itertuples():
        c = stats.variance_components(table, row.a, row.b, 1)
        assert row.sd_seed == pytest.approx(100 * np.sqrt(c["between"]))
        assert row.sd_network == pytest.approx(100 * np.sqrt(c["within"]))
    grid = pd.read_csv(pilot / "design1_grid.csv")
    key = "dm+hdd/law − dm"
    # more seeds or more networks never widen the expected interval, and cost grows with both
    for s in (3, 10):
        col = grid[grid["seeds"] == s].sort_values("networks")
        assert (np.diff(col[key].values) <= 1e-12).all() and (np.diff(col["core_hours"].values) > 0).all()
    # the pilot's seeds are paid for where a design keeps its number of networks, and only there
    pilot_seeds, pilot_nets = table["seed"].nunique(), table.groupby(["method", "seed"]).size().max()
    assert (pilot_seeds, pilot_nets) == (4, 2)  # the quick profile's
    per_seed = grid["core_hours"] / grid["seeds"]
    reused = np.where(grid["networks"] == pilot_nets, np.minimum(grid["seeds"], pilot_seeds), 0)
    assert np.allclose(grid["core_hours_left"], (grid["seeds"] - reused) * per_seed)
    assert grid["meets"].equals((grid[["dm+hdd/law − dm", "dm+hdd/karcher − dm+hdd/law"]] <= 0.3).all(axis=1))
    text = (pilot / "design.md").read_text()
    assert "IPC 1" in text and ("Cheapest design" in text or "No design" in text)


def test_the_figures_draw_every_claim_with_seeds(pilot, tmp_path):
    script = load_script("verdict_v2")
    assert script.main(["figures", "--study", str(pilot), "--table", "pilot1", "--curves", "pilot1"]) == 0
    assert (pilot / "figures" / "forest.png").stat().st_size > 10_000
    # no pilot cell evaluated periodically: the curves are the loss alone, and an accuracy figure is refused
    assert (pilot / "figures" / "curves.png").stat().st_size > 10_000
    curves = script.logs(script.finished_cells(str(pilot), baselines=False))
    assert "eval_acc" not in curves and not script.curves_plot(curves, str(tmp_path / "acc.png"))
    assert not (tmp_path / "acc.png").exists()
    from hddgeo.distill.spec import load_spec

    rows = script.forest_rows(pd.read_csv(pilot / "pilot1.csv"), load_spec("fashionmnist_verdict_v2"))
    assert {r["label"] for r in rows} >= {"HDD beats DM, IPC 1", "Karcher = Law, paper's setting (k 1, clip 10), IPC 1"}
    hdd = next(r for r in rows if r["label"] == "HDD beats DM, IPC 1")
    assert len(hdd["seeds"]) == 4 and hdd["paper"] == 1.4 and round(hdd["paper_low"], 2) == 0.07


def _minus(text):
    return text.replace("-", "−")


def test_the_readme_and_results_page_show_what_core1s_committed_table_gives(tmp_path):
    """The verdict's rows in README.md and docs/results.md are what ``hddgeo compare --claims`` computes from the
    committed ``core1.csv``: a rerun or an edit that changes a number fails here until the text is regenerated."""
    from pathlib import Path

    from hddgeo.compare import compare

    root = Path(__file__).resolve().parents[1]
    study = root / "experiments" / "results" / "fashionmnist_verdict_v2"
    compare([str(study / "core1.csv")], str(tmp_path), claims="fashionmnist_verdict_v2")
    rows = pd.read_csv(tmp_path / "compare_verdict.csv", dtype=str).replace(r"^'", "", regex=True)  # CSV-safe quote
    rows = rows.set_index("claim")
    shown = {  # the claim in the spec: how the two pages name its row
        "HDD beats DM": "| HDD beats DM |",
        "DM beats its random initial images": "| DM beats its random images |",
        "HDD beats DM on the same clipped features": "| HDD beats DM on the same clipped features",
        "Karcher = Law, paper's setting (k 1, clip 10)": "| Karcher = Law at the paper's setting",
    }
    for page in (root / "README.md", root / "docs" / "results.md"):
        lines = page.read_text(encoding="utf-8").splitlines()
        for claim, start in shown.items():
            row = rows.loc[claim]
            assert row["seeds"] == "12"
            line = next(x for x in lines if x.startswith(start))
            cells = [c.strip() for c in line.split("|")]
            ours = _minus(f"{row['ours (points)']} {row['95% CI']}")
            assert any(c.endswith(ours) for c in cells), (page.name, claim, ours, line)
            assert _minus(row["ours a / b (%)"]) in line and "| 12 |" in line
            assert any(c.startswith(row["verdict"].split(" (")[0]) for c in cells), (page.name, claim, line)


def test_the_readme_and_results_page_show_the_k_lambda_rows_the_committed_cells_give(tmp_path):
    """The rows at tuned settings (k 9 and 25, lambda chosen on seeds 0-2) on both pages are what ``hddgeo compare
    --claims`` computes from the committed cells (the held-out seeds 3-5); the results page shows every one of them,
    the README every one but the common-lambda rows (the same cells here: it says so)."""
    from pathlib import Path

    from hddgeo.compare import compare
    from hddgeo.distill.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    compare([str(root / "experiments" / "results" / "fashionmnist_verdict_v2" / "runs")], str(tmp_path),
            claims="fashionmnist_verdict_v2")
    rows = pd.read_csv(tmp_path / "compare_verdict.csv", dtype=str).replace(r"^'", "", regex=True).set_index("claim")
    tuned = [c.claim for c in load_spec("fashionmnist_verdict_v2").claims if c.tune_seeds]
    assert len(tuned) == 12  # per k: Law and Karcher against random and DM, Karcher = Law at best and common lambda
    for page in (root / "README.md", root / "docs" / "results.md"):
        lines = page.read_text(encoding="utf-8").splitlines()
        for claim in tuned:
            if page.name == "README.md" and "common lambda" in claim:
                continue
            row = rows.loc[claim]
            assert row["seeds"] == "3" and "reported on the others" in row["verdict"]
            line = next(x for x in lines if x.startswith(f"| {claim} |"))
            assert _minus(f"{row['ours (points)']} {row['95% CI']}") in line, (page.name, claim, line)
            assert _minus(row["ours a / b (%)"]) in line and "| 3 |" in line
            assert f"| {row['verdict'].split(' (')[0]} (" in line, (page.name, claim, line)


def test_tuned_rows_get_a_panel_of_their_own_reported_on_the_held_out_seeds(tmp_path):
    """A k / lambda grid failing by points must not squash the paper's-setting rows (tenths of a point) onto its
    scale: the figure puts tuned claims in a third panel; their differences are over the seeds not tuned on."""
    from hddgeo.distill.spec import load_spec

    script = load_script("verdict_v2")
    spec = load_spec("fashionmnist_verdict_v2")
    rows = [{"method": m, "dataset": "fashionmnist", "ipc": 1, "seed": s, "network": n, "acc": acc + 0.001 * n + 0.002 * s}
            for s in range(6) for n in range(2)
            for m, acc in [("random", 0.5), ("dm", 0.7)] + [(f"dm+hdd/{c}@k{k}-l{lam}", 0.6 + 0.01 * i)
                                                          for k in (9, 25) for c in ("law", "karcher")
                                                          for i, lam in enumerate(("0.6", "2", "6", "20"))]]
    found = script.forest_rows(pd.DataFrame(rows), spec)
    tuned = [r for r in found if r["tuned"]]
    assert len(tuned) == len([c for c in spec.claims if c.tune_seeds]) and all(len(r["seeds"]) == 3 for r in tuned)
    assert not any(r["tuned"] for r in found if "paper's setting" in r["label"] or r["label"].startswith("DM beats"))
    best = next(r for r in tuned if r["label"] == "HDD Law at its best lambda beats DM (k 9), IPC 1")
    assert best["mean"] == pytest.approx(100 * (0.63 - 0.7))  # lambda 20 chosen: the best on seeds 0-2
    script.forest_plot(found, str(tmp_path / "forest.png"), spec.margin)
    assert (tmp_path / "forest.png").stat().st_size > 10_000


def test_the_tuning_map_shows_every_cell_of_the_grid_and_the_claims_choice(tmp_path):
    """``verdict_v2.py map``: one row per (k, centroid), one column per lambda, the mean over the tuning seeds of the
    per-seed accuracy, the best lambda of each row marked as the claims choose it, a missing cell shown as such."""
    script = load_script("verdict_v2")
    lams = ("0.2", "0.6", "2", "6", "20")
    acc = {f"dm+hdd/{c}@k{k}-l{lam}": 0.5 + 0.01 * j + (0.02 if c == "karcher" else 0) + (0.05 if k == 25 else 0)
           - 0.004 * (j - 2) ** 2 for k in (9, 25) for c in ("law", "karcher") for j, lam in enumerate(lams)}
    def long(labels, seeds):
        return pd.DataFrame([{"method": m, "dataset": "fashionmnist", "ipc": 1, "seed": s, "network": n,
                              "acc": a + 0.003 * s + 0.001 * n, "run_dir": f"runs/{m}_seed{s}"}
                             for m, a in labels.items() for s in seeds for n in range(2)])
    long({"random": 0.45, "dm": 0.7}, range(6)).to_csv(tmp_path / "core1.csv", index=False)
    grid = long(acc, range(3))
    grid = grid[~((grid["method"] == "dm+hdd/law@k25-l20") & (grid["seed"] == 2))]  # a cell not finished yet
    grid.to_csv(tmp_path / "regime1.csv", index=False)
    assert script.main(["map", "--study", str(tmp_path)]) == 0
    out = pd.read_csv(tmp_path / "regime1_map.csv")
    for label, value in acc.items():
        row = out[out["label"] == label].iloc[0]
        seeds = [0, 1] if label == "dm+hdd/law@k25-l20" else [0, 1, 2]
        assert row["acc_mean"] == pytest.approx(100 * (value + 0.003 * np.mean(seeds) + 0.0005))
        assert row["seeds"] == len(seeds)
    chosen = out[out["chosen"]]
    assert sorted(chosen["label"]) == sorted(f"dm+hdd/{c}@k{k}-l6" for k in (9, 25) for c in ("law", "karcher")
                                             if (k, c) != (25, "law"))  # a row missing a tuning cell chooses nothing
    assert out.loc[out["label"] == "random", "acc_mean"].item() == pytest.approx(100 * (0.45 + 0.003 + 0.0005))
    md = (tmp_path / "regime1_map.md").read_text()
    assert md.count("(chosen)") == 3 and "(2 of 3 seeds)" in md and "| 9 | karcher |" in md
    assert (tmp_path / "figures" / "regime1_map.png").stat().st_size > 10_000
