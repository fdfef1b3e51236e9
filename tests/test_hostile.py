"""Bad input and files received from others: every case ends in status 2 and one line (or ValueError), nothing
already written is lost, and no file is ever executed as code."""
import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import interrupted_run

from hddgeo.cli import main
from hddgeo.data.datasets import _unpickle

SMALL = ["--dataset", "digits", "--ipc", "1", "--batch-real", "4", "--final-eval-epochs", "0", "--quiet"]


class _Planted:
    """A pickle payload that creates a file when (and only when) it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


# ----------------------------------------------------------------------------- flags, before anything is written
@pytest.mark.parametrize("args, words", [
    (["--scale", "-1"], ["scale", "positive"]),
    (["--scale", "nan"], ["scale"]),
    (["--hdd-weight", "-1"], ["hdd-weight", "gradient ascent"]),
    (["--euclidean-weight", "inf"], ["euclidean-weight"]),
    (["--lr-img", "inf"], ["lr-img"]),
    (["--threads", "0"], ["threads"]),
    (["--threads", "-1"], ["threads"]),
    (["--eval-nets", "0"], ["eval-nets"]),
    (["--opt", "ot_weight=1"], ["--opt", "ot_weight"]),
    (["--matcher", "both", "--euclidean-weight", "0", "--hdd-weight", "0"], ["matches nothing"]),
])
def test_bad_flags(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert main(["distill", *SMALL, "--out", str(out), *args]) == 2
    _one_line(capsys, *words)
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "under-file", "sys"])
def test_out_that_cannot_be_a_directory(tmp_path, capsys, where):
    (tmp_path / "f").write_text("keep me")
    out = {"file": tmp_path / "f", "under-file": tmp_path / "f" / "run", "sys": "/sys/hddgeo-run"}[where]
    assert main(["distill", *SMALL, "--iterations", "1", "--out", str(out)]) == 2
    _one_line(capsys, "--out")
    assert (tmp_path / "f").read_text() == "keep me" and not os.path.exists("/sys/hddgeo-run")


def test_abbreviated_flag_beats_the_preset(tmp_path, fashionmnist_root, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--dataset", "fashionmnist", "--data-root", str(fashionmnist_root), "--ipc", "1",
                 "--batch-real", "4", "--final-eval-epochs", "0", "--quiet", "--iter", "3", "--preset", "paper",
                 "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["iterations"] == 3 and cfg["scale"] == 20.0 and cfg["matcher"] == "hdd"  # the rest from the preset


def test_centroids_out_directory(tmp_path, capsys):
    assert main(["centroids", "--out", str(tmp_path)]) == 2
    _one_line(capsys, "directory")


# ----------------------------------------------------------------------------- resume
def test_resume_refuses_flags_that_change_the_run(run, capsys):
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["distill", "--out", str(run), "--resume", "--iterations", "25", "--ipc", "3"]) == 2
    _one_line(capsys, "--iterations", "--ipc")
    assert (run / "checkpoint.pt").read_bytes() == before


def test_resume_honours_the_saved_thread_count(tmp_path, capsys):
    from hddgeo.distill import DistillConfig

    out = tmp_path / "run"
    cfg = DistillConfig(dataset="digits", ipc=1, batch_real=4, iterations=3, final_eval_epochs=0, threads=1)
    before = torch.get_num_threads()
    try:
        interrupted_run(cfg, out, 1)
        torch.set_num_threads(2)
        assert main(["distill", "--out", str(out), "--resume", "--quiet"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_run_that_died_before_its_first_checkpoint_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    from hddgeo.distill import DistillConfig

    cfg = DistillConfig(dataset="digits", ipc=1, batch_real=4, iterations=2, final_eval_epochs=0)
    (out / "config.json").write_text(json.dumps(cfg.to_json()))
    assert main(["distill", "--out", str(out), "--resume", "--quiet"]) == 0
    assert (out / "synset.pt").is_file() and (out / "metrics.json").is_file()


def test_planted_pickle_in_checkpoint_is_inert(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"images": _Planted(marker)}, run / "checkpoint.pt")  # torch.save pickles the payload
    assert main(["distill", "--out", str(run), "--resume"]) == 2
    _one_line(capsys, "checkpoint.pt")
    assert not marker.exists() and (run / "checkpoint.pt").exists()


@pytest.mark.parametrize("damage, words", [
    ("truncate-checkpoint", ["checkpoint.pt", "truncated or corrupt"]),
    ("config-wrong-type", ["ipc", "config.json"]),
    ("config-invalid-json", ["config.json", "not valid JSON"]),
    ("config-deleted", ["config.json", "missing"]),
    ("config-unknown-key", ["colour"]),
    ("config-ipc-changed", ["differs from the checkpoint", "ipc"]),
    ("config-method-changed", ["differs from the checkpoint", "method"]),
])
def test_damaged_run_directory_on_resume(run, capsys, damage, words):
    cfg_path, ckpt = run / "config.json", run / "checkpoint.pt"
    cfg = json.loads(cfg_path.read_text())
    if damage == "truncate-checkpoint":
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif damage == "config-wrong-type":
        cfg_path.write_text(json.dumps({**cfg, "ipc": "ten"}))
    elif damage == "config-invalid-json":
        cfg_path.write_text("{ not json")
    elif damage == "config-deleted":
        cfg_path.unlink()
    elif damage == "config-unknown-key":
        cfg_path.write_text(json.dumps({**cfg, "colour": "red"}))
    elif damage == "config-ipc-changed":
        cfg_path.write_text(json.dumps({**cfg, "ipc": 3}))
    else:
        cfg_path.write_text(json.dumps({**cfg, "method": "idm"}))
    listing = sorted(os.listdir(run))
    assert main(["distill", "--out", str(run), "--resume"]) == 2
    _one_line(capsys, *words)
    assert sorted(os.listdir(run)) == listing  # nothing added, nothing removed


def test_non_finite_images_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", *SMALL, "--iterations", "6", "--checkpoint-every", "1", "--lr-img", "1e30",
                 "--out", str(out)]) == 2
    _one_line(capsys, "NaN or infinite", "lr-img")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert torch.isfinite(state["images"]).all() and state["iteration"] >= 1


# ----------------------------------------------------------------------------- received run directories
def _evil_cifar(folder, marker):
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": _Planted(marker), "labels": [0], "label_names": ["a"] * 10}, fh)


@pytest.mark.parametrize("command", [["evaluate"], ["plot", "poincare"]])
def test_received_directory_pointing_at_a_planted_cifar_batch_is_inert(run, tmp_path, capsys, command):
    marker = tmp_path / "pwned"
    _evil_cifar(run / "data" / "cifar-10-batches-py", marker)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "dataset": "cifar10", "data_root": str(run / "data")}))
    assert main([*command, str(run)]) == 2
    _one_line(capsys, "data_batch_1", "refusing")
    assert not marker.exists()


def test_evaluate_takes_data_root(run, tmp_path, capsys):
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "data_root": "/nowhere"}))  # digits ignores it
    assert main(["evaluate", str(run), "--nets", "1", "--epochs", "1", "--quiet", "--data-root", str(tmp_path)]) == 0
    assert (run / "eval_convnet.json").is_file()


@pytest.mark.parametrize("command", [["evaluate"], ["plot", "poincare"]])
def test_truncated_synset(run, capsys, command):
    (run / "synset.pt").write_bytes((run / "synset.pt").read_bytes()[:100])
    assert main([*command, str(run)]) == 2
    _one_line(capsys, "synset.pt")


def test_cifar_reader_reads_python2_style_pickles(tmp_path):
    # the official batches name numpy.core.multiarray (numpy 1), pickled with protocol 2
    data = np.arange(12, dtype=np.uint8).reshape(2, 6)
    blob = pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2).replace(b"numpy._core.multiarray",
                                                                                b"numpy.core.multiarray")
    (tmp_path / "b").write_bytes(blob)
    entry = _unpickle(tmp_path / "b")
    assert np.array_equal(entry["data"], data) and entry["labels"] == [1, 2]
    (tmp_path / "o").write_bytes(pickle.dumps({"data": np.array([1, "x"], dtype=object)}))
    with pytest.raises(ValueError, match="objects"):
        _unpickle(tmp_path / "o")


def test_resume_takes_a_new_data_root(tmp_path, fashionmnist_root, capsys):
    from hddgeo.distill import DistillConfig

    out = tmp_path / "run"
    cfg = DistillConfig(dataset="fashionmnist", data_root=str(fashionmnist_root), ipc=1, batch_real=4, iterations=2,
                        final_eval_epochs=0)
    interrupted_run(cfg, out, 1)
    moved = tmp_path / "moved"
    fashionmnist_root.rename(moved)
    assert main(["distill", "--out", str(out), "--resume", "--quiet"]) == 2
    _one_line(capsys, "Fashion-MNIST not found")
    assert main(["distill", "--out", str(out), "--resume", "--quiet", "--data-root", str(moved)]) == 0
    assert (out / "synset.pt").is_file()


def test_every_config_field_is_a_flag_and_round_trips():
    import dataclasses

    from hddgeo.cli import _config_from_args, _given, build_parser
    from hddgeo.distill import DistillConfig

    parser = build_parser()
    sub = parser.commands["distill"]
    dests = {a.dest for a in sub._actions}
    assert {f.name for f in dataclasses.fields(DistillConfig)} <= dests
    argv = ["distill", "--out", "x", "--momentum", "0.9", "--dsa-strategy", "flip_crop", "--idm-net-lr", "0.05",
            "--no-dsa", "--max-norm", "none", "--opt", "num_experts=1", "--method", "dance", "--threads", "1"]
    args = parser.parse_args(argv)
    cfg = _config_from_args(args, _given(sub, args))
    assert (cfg.momentum, cfg.dsa_strategy, cfg.idm_net_lr, cfg.dsa, cfg.max_norm, cfg.dance_num_experts,
            cfg.threads) == (0.9, "flip_crop", 0.05, False, None, 1, 1)
    default = _config_from_args(*(lambda a: (a, _given(sub, a)))(parser.parse_args(["distill", "--out", "x"])))
    assert default == DistillConfig()


# ----------------------------------------------------------------------------- compare: received runs that must not mix
def _received(root, name, metrics=None, raw=None, **fields):
    """A finished run directory as someone else might send it: config.json of ``fields`` (then ``raw`` written over
    it as it is), metrics.json naming the same run with two accuracies (then ``metrics`` written over it)."""
    from hddgeo.distill import DistillConfig, describe

    cfg = DistillConfig(**{"dataset": "digits", "ipc": 1, "iterations": 10, "final_eval_nets": 2,
                           "final_eval_epochs": 5, **fields})
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({**cfg.to_json(), **(raw or {})}))
    (d / "metrics.json").write_text(json.dumps({"method": describe(cfg), "dataset": cfg.dataset, "ipc": cfg.ipc,
                                                "accs": [0.5 + 0.01 * cfg.seed, 0.6], "seconds_per_iteration": 0.1,
                                                **(metrics or {})}))
    return d


HDD = {"matcher": "hdd", "centroid": "law"}
COMPARE_CASES = {  # name: (runs as (fields, metrics, raw config), words of the one-line refusal)
    "eval-epochs-differ": ([({}, {}, {}), ({**HDD, "final_eval_epochs": 50}, {}, {})], ["final_eval_epochs", "paired"]),
    "eval-model-differs": ([({}, {}, {}), ({**HDD, "model": "alexnet"}, {}, {})], ["model"]),
    "test-subset-differs": ([({}, {}, {}), ({**HDD, "eval_test_per_class": 10}, {}, {})], ["eval_test_per_class"]),
    "pooled-eval-nets-differ": ([({}, {}, {}), ({"seed": 1, "final_eval_nets": 3}, {"accs": [0.5, 0.5, 0.5]}, {})],
                                ["final_eval_nets", "pooled"]),
    "dsa-differs": ([({}, {}, {}), ({**HDD, "dsa": False}, {}, {})], ["dsa"]),
    "budget-differs": ([({}, {}, {}), ({**HDD, "iterations": 20}, {}, {})], ["iterations"]),
    "pooled-lr-differs": ([({}, {}, {}), ({"seed": 1, "lr_img": 10.0}, {}, {})], ["lr_img", "pooled"]),
    "nan-accuracy": ([({}, {"accs": [float("nan"), 0.5]}, {})], ["metrics.json", "accs", "finite"]),
    "inf-accuracy": ([({}, {"accs": [float("inf"), 0.5]}, {})], ["metrics.json", "accs"]),
    "accuracy-500-percent": ([({}, {"accs": [5.0, 0.5]}, {})], ["metrics.json", "accs", "[0, 1]"]),
    "accuracy-bool": ([({}, {"accs": [True, 0.5]}, {})], ["metrics.json", "accs"]),
    "accuracy-count": ([({}, {"accs": [0.5]}, {})], ["metrics.json", "accs", "2 networks"]),
    "seed-true": ([({}, {}, {"seed": True})], ["config.json", "seed"]),
    "config-ipc-ten": ([({}, {}, {"ipc": "ten"})], ["config.json", "ipc"]),
    "metrics-ipc-ten": ([({}, {"ipc": "ten"}, {})], ["metrics.json", "ipc", "integer"]),
    "metrics-ipc-other": ([({}, {"ipc": 10}, {})], ["metrics.json", "ipc"]),
    "method-list": ([({}, {"method": [1, 2]}, {})], ["metrics.json", "method", "string"]),
    "method-other-than-config": ([({}, {}, {"method": "idm"})], ["metrics.json", "method", "describes 'idm'"]),
    "matcher-other-than-config": ([({}, {"method": "dm+hdd/karcher"}, {})], ["metrics.json", "method"]),
    "tag-missing": ([({"tag": "lr10"}, {"method": "dm"}, {})], ["metrics.json", "method", "dm@lr10"]),
    "dataset-other-than-config": ([({}, {"dataset": "fashionmnist"}, {})], ["metrics.json", "dataset"]),
    "same-seed-twice": ([({}, {}, {}), ({"lr_img": 2.0}, {}, {})], ["seed 0", "pass each run once"]),
    "rate-too-large-for-a-float": ([({}, {"seconds_per_iteration": 10**400}, {})],
                                   ["metrics.json", "seconds_per_iteration"]),
}


def test_compare_pairs_labels_evaluated_with_different_numbers_of_networks(tmp_path):
    # the number of networks is a cell's sample size, not its protocol: DM on 2 networks against HDD on 3
    import pandas as pd

    dirs = [str(_received(tmp_path / "in", f"dm{s}", seed=s)) for s in (0, 1, 2)]
    dirs += [str(_received(tmp_path / "in", f"hdd{s}", {"accs": [0.55 + 0.01 * s, 0.62, 0.60]}, seed=s, **HDD,
                           final_eval_nets=3)) for s in (0, 1, 2)]
    assert main(["compare", *dirs, "--out", str(tmp_path / "out")]) == 0
    paired = pd.read_csv(tmp_path / "out" / "compare_paired.csv")
    row = paired[(paired["a"] == "dm+hdd/law") & (paired["b"] == "dm")].iloc[0]
    # per seed: HDD's 3-network mean minus DM's 2-network mean ((0.5 + 0.01 s + 0.6) / 2)
    want = [(0.55 + 0.01 * s + 0.62 + 0.60) / 3 - (0.5 + 0.01 * s + 0.6) / 2 for s in (0, 1, 2)]
    assert row["seeds"] == 3 and row["diff_mean"] == pytest.approx(sum(want) / 3, abs=1e-12)


@pytest.mark.parametrize("case", sorted(COMPARE_CASES))
def test_compare_refuses_runs_that_cannot_be_compared(tmp_path, capsys, case):
    runs, words = COMPARE_CASES[case]
    dirs = [str(_received(tmp_path / "in", f"run{i}", metrics, raw, **fields))
            for i, (fields, metrics, raw) in enumerate(runs)]
    out = tmp_path / "out"
    assert main(["compare", *dirs, "--out", str(out)]) == 2
    _one_line(capsys, *words)
    assert not out.exists()  # every file checked before anything is written


def test_compare_refuses_the_same_run_named_twice(tmp_path, capsys):
    d = str(_received(tmp_path / "study" / "runs", "run0"))
    assert main(["compare", str(tmp_path / "study"), d, "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys, "named twice")


def test_compare_groups_by_dataset(tmp_path, capsys):
    # digits seeds 0-2 and Fashion-MNIST seeds 3-5, same method and IPC: two rows of 3 seeds, never one of 6;
    # with the same seeds on both datasets, no "pass each run once"
    for seeds in ([0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2]):
        root = tmp_path / "".join(map(str, seeds))
        dirs = [str(_received(root, f"{dataset}{seed}", dataset=dataset, seed=seed))
                for dataset, seed in zip(["digits"] * 3 + ["fashionmnist"] * 3, seeds)]
        assert main(["compare", *dirs, "--out", str(root / "out")]) == 0
        summary = pd.read_csv(root / "out" / "compare_summary.csv")
        assert summary[["dataset", "seeds"]].values.tolist() == [["digits", 3], ["fashionmnist", 3]]
        assert set(pd.read_csv(root / "out" / "compare.csv")["dataset"]) == {"digits", "fashionmnist"}
        text = capsys.readouterr().out
        assert "## digits" in text and "## fashionmnist" in text


@pytest.mark.parametrize("unevaluated", ["no-accs", "empty-accs"])
def test_compare_lists_a_run_without_evaluation(tmp_path, capsys, unevaluated):
    from hddgeo.distill import DistillConfig

    evaluated = [str(_received(tmp_path, f"dm{s}", seed=s)) for s in (0, 1)]
    bare = _received(tmp_path, "bare", seed=2, final_eval_epochs=0)
    metrics = json.loads((bare / "metrics.json").read_text())
    if unevaluated == "no-accs":
        del metrics["accs"]
    else:
        metrics["accs"] = []
    (bare / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "out"
    assert main(["compare", *evaluated, str(bare), "--out", str(out)]) == 0
    assert "Not evaluated" in capsys.readouterr().out and "bare" in (out / "compare.md").read_text()
    assert set(pd.read_csv(out / "compare.csv")["seed"]) == {0, 1}
    assert DistillConfig.from_json(json.loads((bare / "config.json").read_text())).final_eval_epochs == 0
    assert main(["compare", str(bare), "--out", str(tmp_path / "only")]) == 2  # nothing to compare: one line
    _one_line(capsys, "no evaluated run", "final-eval-epochs 0")


def test_compare_takes_a_distilled_run_without_evaluation(run, tmp_path, capsys):
    # the template run was distilled with --final-eval-epochs 0: its metrics.json has no accs at all
    assert "accs" not in json.loads((run / "metrics.json").read_text())
    assert main(["compare", str(run), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys, "no evaluated run")


# ----------------------------------------------------------------------------- one process per run directory
def _hold(run_dir):
    from hddgeo.rundir import RunLock

    return RunLock(str(run_dir))


def test_a_second_resume_of_a_running_directory_is_refused(run, capsys):
    listing = {name: (run / name).read_bytes() for name in os.listdir(run)}
    with _hold(run):
        assert main(["distill", "--out", str(run), "--resume", "--quiet"]) == 2
        _one_line(capsys, f"in use by process {os.getpid()}")
        assert {name: (run / name).read_bytes() for name in os.listdir(run) if name != "run.lock"} == listing
    assert sorted(os.listdir(run)) == sorted(listing)  # the lock file goes with its holder


def test_a_second_distill_into_a_directory_being_created_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with _hold(out):
        assert main(["distill", *SMALL, "--iterations", "1", "--out", str(out)]) == 2
        _one_line(capsys, f"in use by process {os.getpid()}")
        assert os.listdir(out) == ["run.lock"]


@pytest.mark.parametrize("kind", ["distill", "baseline"])
def test_a_study_cell_another_process_runs_is_refused(run, kind):
    from hddgeo.distill import DistillConfig
    from hddgeo.distill.study import baseline_cell, run_cell
    from hddgeo.rundir import RunDirBusy

    cfg = DistillConfig.from_json(json.loads((run / "config.json").read_text()))
    before = (run / "metrics.json").read_bytes()
    with _hold(run), pytest.raises(RunDirBusy, match=f"in use by process {os.getpid()}"):
        (run_cell if kind == "distill" else baseline_cell)(cfg, str(run), progress=False)
    assert (run / "metrics.json").read_bytes() == before


def test_a_lock_left_by_a_killed_process_does_not_block_a_resume(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    from hddgeo.distill import DistillConfig

    out = tmp_path / "run"
    cfg = DistillConfig(dataset="digits", ipc=1, batch_real=4, iterations=3, final_eval_epochs=0)
    interrupted_run(cfg, out, 1)
    code = ("import fcntl, os, signal, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(out / "run.lock")])
    assert proc.returncode == -signal.SIGKILL and (out / "run.lock").is_file()
    assert main(["distill", "--out", str(out), "--resume", "--quiet"]) == 0
    assert (out / "synset.pt").is_file() and not (out / "run.lock").exists()


def test_two_distills_on_one_directory_do_not_interleave(tmp_path, capsys):
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = ["distill", "--dataset", "digits", "--ipc", "1", "--batch-real", "4", "--final-eval-epochs", "0", "--quiet",
            "--iterations", "400", "--checkpoint-every", "1", "--threads", "1", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "hddgeo.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (out / "config.json").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        assert main([*args[:-2], "--out", str(out)]) == 2  # a second new run: the directory is taken
        _one_line(capsys, "already exists")
        assert main(["distill", "--out", str(out), "--resume", "--quiet"]) == 2  # a resume while it runs
        _one_line(capsys, f"in use by process {first.pid}")
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    log = pd.read_csv(out / "log.csv")
    assert log["iteration"].tolist() == list(range(1, 401))  # one run's rows, in order


# ----------------------------------------------------------------------------- planted links are never followed
def _outside(tmp_path):
    target = tmp_path / "outside.txt"
    target.write_text("not yours")
    return target


def _no_links_and_untouched(folder, target):
    links = [n for n in os.listdir(folder) if os.path.islink(os.path.join(folder, n))]
    assert not links, links
    assert target.read_text() == "not yours"


def test_resume_with_links_planted_under_temporary_names(tmp_path, capsys):
    from hddgeo.distill import DistillConfig

    out, target = tmp_path / "run", _outside(tmp_path)
    cfg = DistillConfig(dataset="digits", ipc=1, batch_real=4, iterations=3, final_eval_epochs=0)
    interrupted_run(cfg, out, 1)
    for name in ("config.json", "log.csv", "checkpoint.pt", "synset.pt", "synset.png", "metrics.json", "run.lock"):
        os.symlink(target, out / f"{name}.tmp-{os.getpid()}")  # the names hddgeo used to write through
    os.symlink(target, out / "synset.pt")  # and one under a final name
    assert main(["distill", "--out", str(out), "--resume", "--quiet"]) == 0
    _no_links_and_untouched(out, target)
    assert torch.load(out / "synset.pt", weights_only=True)["images"].shape[0] == 10
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json", "log.csv", "metrics.json", "synset.png",
                                       "synset.pt"]  # nothing left under a temporary name


def test_a_planted_lock_link_is_not_followed(run, tmp_path, capsys):
    target = _outside(tmp_path)
    os.symlink(target, run / "run.lock")
    assert main(["distill", "--out", str(run), "--resume", "--quiet"]) == 0
    _no_links_and_untouched(run, target)


def test_log_appends_never_go_through_a_link(tmp_path):
    from hddgeo.rundir import LogWriter

    path, target = tmp_path / "log.csv", _outside(tmp_path)
    writer = LogWriter(str(path))
    writer.write([{"iteration": 1, "loss": 1.0}])
    path.unlink()
    os.symlink(target, path)  # swapped for a link between two writes
    writer.write([{"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 0.5}])
    _no_links_and_untouched(tmp_path, target)
    assert pd.read_csv(path)["iteration"].tolist() == [1, 2]


@pytest.mark.parametrize("name", ["compare.md", "compare.csv", "compare_summary.csv", "compare_paired.csv"])
def test_compare_outputs_replace_planted_links(tmp_path, capsys, name):
    out, target = tmp_path / "out", _outside(tmp_path)
    out.mkdir()
    os.symlink(target, out / name)
    dirs = [str(_received(tmp_path / "in", f"run{s}", seed=s)) for s in (0, 1)]
    assert main(["compare", *dirs, "--out", str(out)]) == 0
    _no_links_and_untouched(out, target)


def test_study_report_replaces_planted_links(tmp_path):
    from hddgeo.distill.study import write_report

    out, target = tmp_path / "out", _outside(tmp_path)
    out.mkdir()
    for name in ("results.csv", "results_summary.csv", "results_paired.csv", "results.md"):
        os.symlink(target, out / name)
    table = pd.DataFrame({"method": ["dm", "dm"], "ipc": [1, 1], "seed": [0, 1], "network": [0, 0], "acc": [0.5, 0.6]})
    write_report(table, str(out), "results")
    _no_links_and_untouched(out, target)


def test_plots_and_centroids_replace_planted_links(tmp_path, capsys):
    import matplotlib.pyplot as plt

    from hddgeo.plots import save_figure
    from hddgeo.tables import markdown_table

    target = _outside(tmp_path)
    for name in ("fig.png", "table.md", "centroids.csv"):
        os.symlink(target, tmp_path / name)
    save_figure(plt.figure(), str(tmp_path / "fig.png"))
    markdown_table(pd.DataFrame({"a": [1]}), str(tmp_path / "table.md"))
    assert main(["centroids", "--out", str(tmp_path / "centroids.csv")]) == 0
    _no_links_and_untouched(tmp_path, target)
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- inputs checked before anything is written
def test_fashionmnist_of_1x1_images_is_refused_before_the_run_directory(tmp_path, capsys):
    from conftest import write_idx

    root = tmp_path / "fm"
    root.mkdir()
    for split, n in (("train", 20), ("t10k", 10)):
        write_idx(root / f"{split}-images-idx3-ubyte", np.zeros((n, 1, 1), dtype=np.uint8), compress=False)
        write_idx(root / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, compress=False)
    out = tmp_path / "run"
    assert main(["distill", "--dataset", "fashionmnist", "--data-root", str(root), "--ipc", "1", "--batch-real", "2",
                 "--iterations", "1", "--final-eval-epochs", "0", "--quiet", "--out", str(out)]) == 2
    err = _one_line(capsys, "train-images-idx3-ubyte", "28x28")
    assert "depth" not in err and not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--jobs", "100"], ["--jobs", "100"]),
    (["--jobs", "0"], ["--jobs"]),
])
def test_demo_refuses_bad_jobs(tmp_path, capsys, args, words):
    out = tmp_path / "d"
    assert main(["demo", "--iterations", "1", "--epochs", "1", "--nets", "1", "--ipc", "1", "--seeds", "0",
                 "--out", str(out), "--quiet", *args]) == 2
    _one_line(capsys, *words)
    assert not out.exists()


STUDY_CASES = [  # (spec, arguments, words): the grids of experiments/ are specs
    ("exact_vs_approximate", ["--seeds", "0", "0"], ["--seeds"]),
    ("exact_vs_approximate", ["--seeds", "-1"], ["--seeds"]),
    ("fashionmnist_table1", ["--seeds", "1", "1"], ["--seeds"]),
    ("fashionmnist_table1", ["--jobs", "100"], ["--jobs"]),
    ("fashionmnist_table1", ["--jobs", "0"], ["--jobs"]),
    ("fashionmnist_verdict", ["--stage", "controls", "--seeds", "3", "3"], ["--seeds"]),
    ("fashionmnist_verdict", ["--jobs", "100"], ["--jobs"]),
    ("hierarchical_pruning", ["--seeds", "-1"], ["--seeds"]),
]


@pytest.mark.parametrize("spec, args, words", STUDY_CASES, ids=[f"{s}{'_'.join(a)}" for s, a, _ in STUDY_CASES])
def test_studies_refuse_bad_seeds_and_jobs(tmp_path, capsys, spec, args, words):
    out = tmp_path / "study"
    assert main(["study", spec, "--quick", *args, "--out", str(out), "--quiet"]) == 2
    _one_line(capsys, *words)
    assert not out.exists()


def test_a_study_cell_whose_config_was_edited_is_one_line(tmp_path, capsys):
    import subprocess
    import sys

    out = tmp_path / "study"
    args = ["study", "exact_vs_approximate", "--stage", "paper_geometry", "--quick", "--ipc", "1", "--seeds", "0",
            "--out", str(out), "--jobs", "1", "--quiet"]
    assert main(args) == 0
    cell = next(p for p in sorted((out / "runs").iterdir()) if "law" in p.name)
    cfg = json.loads((cell / "config.json").read_text())
    (cell / "config.json").write_text(json.dumps({**cfg, "iterations": 7}))
    proc = subprocess.run([sys.executable, "-m", "hddgeo", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "iterations=7" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_points_on_the_lower_sheet_are_named_so():
    import geoopt

    from hddgeo.geometry.poincare import to_poincare

    M = geoopt.Lorentz(k=1.0)
    z = -M.projx(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="lower sheet"):
        to_poincare(z, M)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_a_config_that_is_no_file_or_huge_is_refused(run, capsys, monkeypatch, kind):
    from hddgeo import rundir

    path = run / "config.json"
    cfg = json.loads(path.read_text())
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block for ever
    elif kind == "dev-zero":
        os.symlink("/dev/zero", path)  # reading it would never end
    else:
        monkeypatch.setattr(rundir, "MAX_JSON_BYTES", 2000)
        path.write_text(json.dumps(cfg) + " " * 2000)
    listing = sorted(os.listdir(run))
    assert main(["distill", "--out", str(run), "--resume", "--quiet"]) == 2
    _one_line(capsys, "config.json", "not a regular file" if kind != "huge" else "bytes")
    assert sorted(os.listdir(run)) == listing


def test_plot_never_writes_through_a_planted_plots_link(run, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, run / "plots")
    assert main(["plot", "poincare", str(run), "--per-class", "5"]) == 2
    _one_line(capsys, "plots", "link")
    assert os.listdir(elsewhere) == []
