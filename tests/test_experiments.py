"""The studies of experiments/: their grids are shipped specs (run by hddgeo study on quick settings here), and the
scripts that read a study folder write the tables and figures they promise."""
import importlib.util
import json
import os

import pandas as pd
import pytest

from hddgeo.cli import main
from hddgeo.distill import DistillConfig
from hddgeo.distill.spec import load_spec
from hddgeo.distill.study import config_mismatch, run_cell
from hddgeo.hierarchy import kept_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name, folder="experiments"):
    """A script of ``experiments/`` (or ``benchmarks/``) as a module (neither folder is a package)."""
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", os.path.join(ROOT, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_pngs(out, names):
    for name in names:
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 5000, f"{name} missing or empty"
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def eva(tmp_path_factory):
    """The exact-vs-approximate study's paper-geometry stage, quick, IPC 1, two seeds, and its measurements."""
    out = str(tmp_path_factory.mktemp("eva"))
    assert main(["study", "exact_vs_approximate", "--stage", "paper_geometry", "--quick", "--ipc", "1", "--seeds", "0",
                 "1", "--out", out, "--jobs", "1", "--quiet"]) == 0
    assert load_script("exact_vs_approximate").main([out]) == 0
    return out


def test_the_exact_vs_approximate_grid_is_a_spec_of_tagged_geometries():
    spec = load_spec("exact_vs_approximate")
    cells = {c.name: c.cfg for c in spec.cells() if c.kind == "distill"}
    assert len(spec.cells()) == 2 * 3 * (1 + 13)  # IPC x seeds x (random, DM, 3 centroids x 4 geometries)
    for centroid in ("law", "karcher", "tangent"):
        for tag, k, clip in (("", 1.0, 10.0), ("@k1-noclip", 1.0, None), ("@k0.15", 0.15, 10.0),
                             ("@k0.15-noclip", 0.15, None)):
            cfg = cells[f"ipc10_dm_hdd-{centroid}{tag}_seed2"]
            assert (cfg.centroid, cfg.k, cfg.max_norm, cfg.scale, cfg.gap_every) == (centroid, k, clip, 1.0, 5)
    assert {c.claim for c in spec.claims} >= {"Karcher = Law (k 0.15, no clip: radii spread)", "HDD beats DM"}


def test_exact_vs_approximate_measures_every_cell(eva):
    table = pd.read_csv(os.path.join(eva, "centroids.csv"))
    assert list(table["method"]) == ["dm", "dm", "dm+hdd/law", "dm+hdd/law", "dm+hdd/karcher", "dm+hdd/karcher",
                                     "dm+hdd/tangent", "dm+hdd/tangent"]
    assert (table["sec_per_it"] > 0).all()
    assert (table.loc[table["method"] == "dm+hdd/karcher", "shift_vs_karcher"] == 0).all()
    assert (table.loc[table["method"] != "dm+hdd/karcher", "shift_vs_karcher"] > 0).all()
    # the real batch's Law-Karcher gap is shared by every cell of a seed (same networks and batches); IPC 1: one
    # synthetic image per class, whose centroids coincide
    assert (table.groupby("seed")["gap_real"].nunique() == 1).all() and (table["gap_real"] > 0).all()
    assert (table["gap_syn"].abs() < 1e-9).all()
    assert "shift_vs_karcher" in open(os.path.join(eva, "centroids.md")).read()
    assert_pngs(eva, ["centroid_gap.png"])
    # the accuracy is the study's: paired by seed, one row per (method, seed, network)
    paired = pd.read_csv(os.path.join(eva, "results_paired.csv"))
    assert {("dm+hdd/law", "dm"), ("dm+hdd/karcher", "dm+hdd/law")} <= set(zip(paired["a"], paired["b"]))
    assert len(pd.read_csv(os.path.join(eva, "results.csv"))) == 5 * 2  # random, DM, 3 centroids x 2 seeds x 1 net


def test_a_study_refuses_to_reuse_cells_of_another_budget(eva, capsys):
    assert main(["study", "exact_vs_approximate", "--stage", "paper_geometry", "--ipc", "1", "--seeds", "0", "1",
                 "--out", eva, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "holds a different run" in err and "final_eval_epochs=1 (requested 200)" in err


def test_run_cell_reuses_and_checks_config(tmp_path):
    cfg = DistillConfig(dataset="digits", ipc=1, iterations=1, batch_real=4, final_eval_nets=1, final_eval_epochs=1)
    run_dir = str(tmp_path / "r")
    first = run_cell(cfg, run_dir, progress=False)
    assert config_mismatch(cfg, run_dir) == {}
    assert run_cell(cfg, run_dir, progress=False) == json.load(open(os.path.join(run_dir, "metrics.json"))) == first
    assert set(config_mismatch(DistillConfig(**{**cfg.to_json(), "seed": 1}), run_dir)) == {"seed"}
    # a directory killed before its first checkpoint is started afresh
    os.makedirs(tmp_path / "killed")
    with open(tmp_path / "killed" / "config.json", "w") as fh:
        json.dump(cfg.to_json(), fh)
    assert "acc_mean" in run_cell(cfg, str(tmp_path / "killed"), progress=False)


def test_hierarchical_weights_outputs(tmp_path):
    out = str(tmp_path)
    assert load_script("hierarchical_weights").main(["--quick", "--out", out]) == 0
    spread = pd.read_csv(os.path.join(out, "spread_table.csv"))
    assert len(spread) == 6  # max_norm {10, none} x feature_scale {1, 3, 10}
    assert {"clip", "feature_scale", "radius_std", "weight_ratio", "clipped_fraction"} <= set(spread.columns)
    clipped = spread[(spread["clip"] == "10") & (spread["feature_scale"] > 1)]
    assert (clipped["clipped_fraction"] == 1).all() and (clipped["radius_std"] < 1e-9).all()
    assert ((clipped["weight_ratio"] - 1).abs() < 1e-9).all()
    free = spread[spread["clip"] == "none"]
    assert (free["radius_std"] > 0).all() and free["weight_ratio"].is_monotonic_increasing
    classes = pd.read_csv(os.path.join(out, "class_table.csv"))
    assert len(classes) == 6 * 10
    assert {"class", "radius_mean", "radius_std", "weight_min", "weight_max", "share_x_n_min", "share_x_n_max",
            "spearman_radius_vs_dist_karcher"} <= set(classes.columns)
    samples = pd.read_csv(os.path.join(out, "samples.csv"))
    assert len(samples) == 6 * 10 * 20
    # tangent shares sum to one within each class and setting
    sums = samples.groupby(["max_norm", "feature_scale", "class"], dropna=False)["tangent_share"].sum()
    assert ((sums - 1).abs() < 1e-9).all()
    assert_pngs(out, ["weight_spread.png", "root_leaf.png", "root_leaf_centroid.png"])


def test_hierarchical_pruning_curves(tmp_path):
    out = str(tmp_path)
    assert main(["study", "hierarchical_pruning", "--quick", "--seeds", "0", "1", "--out", out, "--jobs", "1",
                 "--quiet"]) == 0
    assert load_script("hierarchical_pruning").main([out]) == 0
    stability = pd.read_csv(os.path.join(out, "stability.csv"))
    assert len(stability) == 9 * 2 and stability["final"].between(0, 100).all()
    assert (stability["last_half_std"] >= 0).all()
    curves = pd.read_csv(os.path.join(out, "curves.csv"))
    assert len(curves) == 9 * 2 * 2 and curves["eval_acc"].between(0, 1).all()  # 2 iterations, each evaluated
    for keep, kept in (("@keep5", 7), ("@keep20", 28), ("", 139)):  # digits' smallest class has 139 images
        cfg = json.load(open(os.path.join(out, "runs", f"ipc1_dm_hdd-law{keep}_seed1", "config.json")))
        assert kept_count(139, cfg["prune_fraction"]) == kept
    assert_pngs(out, ["accuracy_curves.png"])


def test_the_pruning_stages_hold_only_cells_a_pruned_pool_can_start():
    from hddgeo.data import load_dataset

    smallest = int(load_dataset("digits").train_labels.bincount().min())
    spec = load_spec("hierarchical_pruning")
    cells = spec.cells() + spec.cells(stage="ipc10")
    assert {c.cfg.ipc for c in cells} == {1, 10}
    assert all(c.cfg.ipc <= kept_count(smallest, c.cfg.prune_fraction) for c in cells)
    assert any(c.cfg.prune_fraction == 0.05 for c in cells)


def test_cross_architecture_evaluates_a_studys_sets(eva):
    assert load_script("cross_architecture").main([eva, "--models", "convnet", "resnet18", "--nets", "1",
                                                    "--epochs", "1"]) == 0
    table = pd.read_csv(os.path.join(eva, "cross_architecture.csv"))
    assert len(table) == 2 * 4 * 2  # models x distilled methods x seeds, one network each
    assert list(table["model"].unique()) == ["convnet", "resnet18"]
    assert os.path.exists(os.path.join(eva, "runs", "ipc1_dm_hdd-law_seed1", "eval_resnet18.json"))
    text = open(os.path.join(eva, "cross_architecture.md")).read()
    assert "## resnet18" in text and "dm+hdd/karcher − dm+hdd/law" in text


def test_fashionmnist_table1_is_a_spec_beside_the_papers_numbers(tmp_path, fashionmnist_root, capsys):
    out = tmp_path / "t1"
    assert main(["study", "fashionmnist_table1", "--quick", "--ipc", "1", "--seeds", "0", "1", "--data-root",
                 str(fashionmnist_root), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"random", "dm", "dm+hdd/law", "dm+hdd/karcher", "dm+hdd/tangent"}
    assert len(table) == 5 * 2 * 2
    cfg = json.load(open(out / "runs" / "ipc1_dm_hdd-law_seed0" / "config.json"))
    assert cfg["scale"] == 20.0 and cfg["k"] == 1.0 and cfg["lr_img"] == 1.0  # the paper's Table 5 at IPC 1
    assert main(["compare", str(out / "results.csv"), "--claims", "fashionmnist_table1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    md = (tmp_path / "compare.md").read_text()
    assert "72.1 ± 0.2" in md and "70.7 ± 0.6" in md and "51.4 ± 3.8" in md  # the paper's numbers beside ours
    assert "dm+hdd/karcher − dm+hdd/law" in md


def test_every_grid_is_a_shipped_spec():
    spec = load_spec("methods")
    assert spec.labels() == ["dance", "dance+hdd/law", "dance+hdd/karcher", "geodm", "geodm+hdd/law"]
    assert len(spec.cells()) == 5 * 3 and not spec.baseline
    scripts = os.listdir(os.path.join(ROOT, "experiments"))
    assert "fashionmnist_table1.py" not in scripts and "methods_table.py" not in scripts
    lines = sum(len(open(os.path.join(ROOT, "experiments", f)).readlines()) for f in scripts if f.endswith(".py"))
    # readers of study folders stay thin: v1's report, v2's design, figures and k / lambda map among them
    assert lines <= 1300, lines


def test_compare_official_names_what_it_needs(tmp_path):
    with pytest.raises(SystemExit, match="DM-HDD"):
        load_script("compare_official", "benchmarks").main(["--official", str(tmp_path)])
