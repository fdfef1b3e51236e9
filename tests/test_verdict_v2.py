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


def test_the_pilot_runs_every_variant_on_independent_replicates(pilot):
    table = pd.read_csv(pilot / "pilot1.csv")
    assert set(table["method"]) == {"random", "dm", "dm+clipped_euclidean", "dm+hdd/law", "dm+hdd/karcher"}
    assert sorted(table["seed"].unique()) == [0, 1, 2, 3]
    for run in (pilot / "runs").iterdir():
        cfg = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert cfg["seed_scheme"] == 2
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


def test_the_figures_draw_every_claim_with_seeds(pilot):
    script = load_script("verdict_v2")
    assert script.main(["figures", "--study", str(pilot), "--table", "pilot1"]) == 0
    assert (pilot / "figures" / "forest.png").stat().st_size > 10_000
    from hddgeo.distill.spec import load_spec

    rows = script.forest_rows(pd.read_csv(pilot / "pilot1.csv"), load_spec("fashionmnist_verdict_v2"))
    assert {r["label"] for r in rows} >= {"HDD beats DM (IPC 1)", "Karcher = Law, paper's setting (k 1, clip 10) (IPC 1)"}
    hdd = next(r for r in rows if r["label"] == "HDD beats DM (IPC 1)")
    assert len(hdd["seeds"]) == 4 and hdd["paper"] == 1.4 and round(hdd["paper_low"], 2) == 0.07
