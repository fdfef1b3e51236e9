"""The experiment scripts run end to end on --quick settings and write the tables and figures they promise."""
import importlib.util
import json
import os

import pandas as pd
import pytest

from hddgeo.distill import DistillConfig
from hddgeo.distill.study import config_mismatch, run_cell
from hddgeo.errors import RunDirError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", os.path.join(ROOT, "experiments", f"{name}.py"))
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
    out = str(tmp_path_factory.mktemp("eva"))
    assert load_script("exact_vs_approximate").main(["--quick", "--out", out, "--quiet"]) == 0
    return out


def test_exact_vs_approximate_outputs(eva):
    table = pd.read_csv(os.path.join(eva, "results.csv"))
    assert list(table["method"]) == ["real init (no distillation)", "DM", "HDD law", "HDD karcher", "HDD tangent"]
    assert table["acc_mean"].between(0, 1).all()
    table = table.iloc[1:]  # the distilled cells
    for col in ("ipc", "k", "max_norm", "acc_mean", "acc_std", "sec_per_it", "gap_real_final", "gap_syn_final",
                "shift_vs_karcher"):
        assert col in table.columns
    assert (table["sec_per_it"] > 0).all()
    kar = table[table["method"] == "HDD karcher"].iloc[0]
    assert kar["shift_vs_karcher"] == 0.0
    # the real batch's Law-Karcher gap is shared by every cell (same networks and batches); IPC 1: one
    # synthetic image per class, whose centroids coincide
    assert table["gap_real_final"].nunique() == 1 and table["gap_real_final"].iloc[0] > 0
    assert (table["gap_syn_final"].abs() < 1e-9).all()
    runs = pd.read_csv(os.path.join(eva, "runs.csv"))
    assert len(runs) == 4
    for run_dir in runs["run_dir"]:
        log = pd.read_csv(os.path.join(run_dir, "log.csv"))
        assert {"gap_real", "gap_syn", "loss", "seconds"} <= set(log.columns) and len(log) == 2
    md = open(os.path.join(eva, "results.md")).read()
    assert "real init (no distillation)" in md and "HDD karcher" in md
    assert_pngs(eva, ["accuracy.png", "seconds_per_iteration.png", "loss_curves.png", "centroid_gap.png"])


def test_exact_vs_approximate_refuses_to_reuse_a_different_budget(eva):
    with pytest.raises(RunDirError, match="iterations=2"):
        load_script("exact_vs_approximate").main(["--quick", "--out", eva, "--quiet", "--iterations", "3"])


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
    assert load_script("hierarchical_weights").main(["--quick", "--out", out, "--quiet"]) == 0
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


def test_hierarchical_pruning_outputs(tmp_path):
    out = str(tmp_path)
    assert load_script("hierarchical_pruning").main(["--quick", "--out", out, "--quiet"]) == 0
    table = pd.read_csv(os.path.join(out, "results.csv"))
    # (real init from the pruned pool, DM, DM+HDD law) x keep {20%, 100%}
    assert list(table["method"]) == ["real init (pruned pool)"] * 2 + ["DM"] * 2 + ["DM+HDD law"] * 2
    assert {"method", "level", "prune_fraction", "kept_per_class_min", "acc_mean", "acc_std", "stability_std",
            "curve_final", "status"} <= set(table.columns)
    assert (table["status"] == "ok").all()
    assert sorted(table["kept_per_class_min"].unique()) == [28, 139]  # digits' smallest class has 139 images
    assert table["acc_mean"].between(0, 1).all()
    curves = pd.read_csv(os.path.join(out, "curves.csv"))
    assert len(curves) == 4 * 2 and curves["eval_acc"].between(0, 1).all()
    assert "Stability" in open(os.path.join(out, "results.md")).read()
    assert_pngs(out, ["accuracy_curves.png", "accuracy_vs_fraction.png"])


def test_hierarchical_pruning_skips_infeasible_cells():
    mod = load_script("hierarchical_pruning")
    args = mod.build_parser().parse_args(["--ipc", "10", "--fractions", "0.05", "1.0", "--no-dm", "--out", "x"])
    args.scale = 1.0
    cells = mod.build_cells(args, [143] * 9 + [139])
    status = {c["prune_fraction"]: c["status"] for c, _ in cells}
    assert status[1.0] == "ok" and status[0.05].startswith("skipped: IPC 10 > 7")


def test_cross_architecture_outputs(tmp_path):
    out = str(tmp_path)
    assert load_script("cross_architecture").main(["--quick", "--out", out, "--quiet"]) == 0
    table = pd.read_csv(os.path.join(out, "results.csv"))
    assert len(table) == 2 * 4
    assert list(table["model"].unique()) == ["convnet", "alexnet", "vgg11", "resnet18"]
    assert {"run", "acc_mean", "acc_std", "nets", "epochs"} <= set(table.columns)
    for run_dir in table["run_dir"].unique():
        assert os.path.exists(os.path.join(run_dir, "eval_resnet18.json"))
    assert "resnet18" in open(os.path.join(out, "results.md")).read()
    assert_pngs(out, ["cross_architecture.png"])


def test_compare_official_names_what_it_needs(tmp_path):
    with pytest.raises(SystemExit, match="DM-HDD"):
        load_script("compare_official").main(["--official", str(tmp_path)])
