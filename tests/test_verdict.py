"""The verdict study (v1) on quick settings and generated Fashion-MNIST files: its stages run by ``hddgeo study``,
the report script's tables and verdict, the mechanism measures, a committed cell rerun from its config.json, and the
committed tables regenerated from the committed long table."""
import json
import os
import shutil

import pandas as pd
import pytest
from test_experiments import ROOT, load_script

from hddgeo.cli import main
from hddgeo.distill.study import read_long_table
from hddgeo.verdict import best_of

COMMITTED = os.path.join(ROOT, "experiments", "results", "fashionmnist_verdict")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A quick verdict study at IPC 1 (the pilot and the controls, seeds 0-2), its report, then its mechanism."""
    import numpy as np
    from conftest import make_fashionmnist

    root = tmp_path_factory.mktemp("data") / "fashion-mnist"
    make_fashionmnist(root, np.random.default_rng(0), per_class=(12, 3), compress=(True, True))
    out = tmp_path_factory.mktemp("verdict") / "study"
    for stage in ("pilot", "controls"):
        assert main(["study", "fashionmnist_verdict", "--stage", stage, "--quick", "--ipc", "1", "--data-root",
                     str(root), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    script = load_script("fashionmnist_verdict")
    assert script.main(["--study", str(out)]) == 0
    table = read_long_table(str(out / "results.csv"))
    load_script("verdict_mechanism").main(["--study", str(out), "--nets", "1", "--real-per-class", "4",
                                           "--difficulty", "2"])
    return script, out, table, root


def test_the_main_stage_runs_every_control_paired_by_seed(study):
    script, out, table, _ = study
    methods = set(table["method"])
    assert {"random", "dm", "dm+hdd/law", "dm+hdd/karcher", "dm@lr0.1", "dm@lr0.3", "dm@lr3", "dm+hdd/tangent",
            "dm+hdd/law@k9", "dm+hdd/karcher@k9", "dm+hdd/law@prune20"} <= methods
    assert set(table["ipc"]) == {1}
    per = table.groupby("method")["seed"].nunique()
    assert (per == 3).all(), per
    # the report pairs HDD with the best DM of the learning-rate grid too, and the verdict has a row per claim
    paired = pd.read_csv(out / "results_paired.csv")
    best = best_of(table, 1, script.DM_GRID)
    assert best in {"dm", "dm@lr0.1", "dm@lr0.3", "dm@lr3"}
    if best != "dm":
        assert ((paired["a"] == "dm+hdd/law") & (paired["b"] == best)).any()
    verdict = pd.read_csv(out / "verdict.csv")
    assert "HDD beats DM" in set(verdict["claim"]) and "Karcher = Law, radii spread (k 9, clip not reached)" in set(verdict["claim"])
    assert set(verdict["verdict"].str.split().str[0]) <= {"reproduced", "not", "contradicted"}
    design = (out / "design.md").read_text()
    assert "seeds for ±0.5" in design and "## Verdict" in design and "controls:" in design


def test_the_mechanism_measures_every_cell(study):
    _, out, _, _ = study
    cells = pd.read_csv(out / "mechanism_cells.csv")
    assert len(cells) == 30 and cells["root_bias"].notna().all()
    assert (cells["radius_real"] > 0).all() and (cells["radius_syn"] > 0).all()
    # the Karcher mean lies no farther from the root than its points on average (the radius is convex on a
    # CAT(-1) space, and Jensen's inequality holds at the barycentre); Law's centroid is a point of the same class
    assert (cells["radius_real_karcher"] <= cells["radius_real"] + 1e-9).all() and (cells["radius_real_law"] > 0).all()
    assert "Where the synthetic features lie" in (out / "mechanism.md").read_text()
    # k 9 (the regime control) lifts to a ninth of k 1's squared radius: the clip reaches no more of it
    k9, k1 = cells[cells["k"] == 9], cells[cells["k"] == 1]
    assert len(k9) == 6 and k9["clip_share_real"].max() <= k1["clip_share_real"].min()
    # the weights r / sinh r: equal wherever the clip puts every feature at one radius, and their relative spread is
    # the radius spread's (sinh is near exp out here): a class's weights differ wherever its radii do
    weights = pd.read_csv(out / "mechanism_weights.csv")
    assert set(weights["clip"].astype(str)) == {"10.0", "none"} and len(weights) == 2 * 10
    assert weights["clip_share"].between(0, 1).all() and (weights["weight_cv"] >= 0).all()
    all_clipped = weights[weights["clip_share"] == 1]
    assert len(all_clipped) and (all_clipped["weight_cv"] < 1e-9).all() and (all_clipped["radius_std"] < 1e-9).all()
    free = weights[weights["clip"].astype(str) == "none"]
    assert (free["weight_cv"] > 0.5 * free["radius_std"]).all()
    difficulty = pd.read_csv(out / "mechanism_difficulty.csv")
    assert len(difficulty) == 10 and (difficulty["networks"] == 2).all() and (difficulty["ipc"] == 1).all()
    assert difficulty["difficulty_mean"].between(0, 1).all() and (difficulty["test_images"] == 3).all()
    assert "Radius against test difficulty" in (out / "mechanism.md").read_text()
    paired = pd.read_csv(out / "mechanism_paired.csv")
    row = paired[(paired["quantity"] == "synthetic - real radius") & (paired["of"] == "dm+hdd/law − dm")]
    assert len(row) == 1 and row["seeds"].iloc[0] == 3


def test_the_mechanism_refuses_a_checkout_without_synthetic_sets_and_keeps_its_files(study, tmp_path):
    """A checkout commits no ``synset.pt``: measuring there would overwrite the committed radii with none."""
    _, out, _, _ = study
    copy = tmp_path / "study"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.pt"))
    before = {f: (copy / f).read_bytes() for f in ("mechanism.md", "mechanism_cells.csv", "mechanism_paired.csv")}
    with pytest.raises(ValueError, match="synset.pt"):
        load_script("verdict_mechanism").main(["--study", str(copy), "--nets", "1", "--real-per-class", "4"])
    assert {f: (copy / f).read_bytes() for f in before} == before


def test_a_committed_cell_reruns_to_the_same_accuracies(study, tmp_path):
    script, out, _, _ = study
    for name in ("ipc1_dm_hdd-law_seed1", "ipc1_random_seed2"):
        res = script.rerun(str(out), name, str(tmp_path), progress=False)
        assert res["identical"] and res["max_abs_diff"] == 0, res
    # a cell whose committed accuracies were changed is reported as different, exit status 1
    metrics = out / "runs" / "ipc1_dm_seed0" / "metrics.json"
    original = metrics.read_text()
    data = json.loads(original)
    data["accs"][0] += 0.01
    metrics.write_text(json.dumps(data))
    try:
        assert script.main(["--rerun", "ipc1_dm_seed0", "--study", str(out)]) == 1
    finally:
        metrics.write_text(original)  # the study is shared by the other tests
    with pytest.raises(ValueError, match="holds no finished cell"):
        script.rerun(str(out), "ipc1_nothing_seed0")


def test_the_tables_are_recomputed_from_the_cells_files_alone(study, tmp_path):
    """Without a long table the script reads the finished cells (config.json, metrics.json, log.csv: what a checkout
    holds) and gives the verdict and paired tables it wrote before."""
    script, out, _, _ = study
    read = {"verdict.csv": lambda p: pd.read_csv(p, dtype=str), "results_paired.csv": pd.read_csv}
    before = {name: read[name](out / name) for name in read}
    copy = tmp_path / "checkout"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.pt", "*.png", "results*", "verdict*", "design.md"))
    assert script.main(["--study", str(copy)]) == 0
    for name, table in before.items():
        again = read[name](copy / name)
        if name == "verdict.csv":  # the study wrote its verdict before the mechanism tables existed: now one row more
            root = again["claim"].str.startswith("HDD's synthetic points lie nearer the root")
            assert root.sum() == 2
            again = again[~root].reset_index(drop=True)
        key = ["ipc", "a", "b"] if name == "results_paired.csv" else ["IPC", "claim"]  # rows in another order
        pd.testing.assert_frame_equal(again.sort_values(key, ignore_index=True), table.sort_values(key, ignore_index=True),
                                      check_exact=False, rtol=1e-12)


def test_the_committed_tables_are_regenerated_from_the_committed_long_table(tmp_path):
    """Every table of the committed study folder, again from its committed results.csv and log.csv files: the same
    bytes (verdict.csv: the same cells; CSV text cells that open with + or - now carry a leading quote)."""
    if not os.path.isfile(os.path.join(COMMITTED, "results.csv")):
        pytest.skip("no committed verdict study in this checkout")
    copy = tmp_path / "study"
    shutil.copytree(COMMITTED, copy)
    assert load_script("fashionmnist_verdict").main(["--study", str(copy)]) == 0
    for name in ("results.csv", "results.md", "results_paired.csv", "results_summary.csv", "pilot_design.csv",
                 "design.md"):
        assert (copy / name).read_bytes() == open(os.path.join(COMMITTED, name), "rb").read(), name
    again = pd.read_csv(copy / "verdict.csv", dtype=str).replace(r"^'", "", regex=True)
    pd.testing.assert_frame_equal(again, pd.read_csv(os.path.join(COMMITTED, "verdict.csv"), dtype=str))


def test_compare_recomputes_the_verdict_from_the_committed_long_table(study, tmp_path, capsys):
    """`hddgeo compare STUDY/results.csv --claims fashionmnist_verdict` gives the study's verdict rows (all but the
    root-centric bias rows, which come from the mechanism script's tables)."""
    _, out, _, _ = study
    assert main(["compare", str(out / "results.csv"), "--claims", "fashionmnist_verdict", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    ours = pd.read_csv(tmp_path / "compare_verdict.csv", dtype=str)
    study_rows = pd.read_csv(out / "verdict.csv", dtype=str)
    study_rows = study_rows[~study_rows["claim"].str.startswith("HDD's synthetic points")].reset_index(drop=True)
    assert len(ours) >= 7
    pd.testing.assert_frame_equal(ours, study_rows)
