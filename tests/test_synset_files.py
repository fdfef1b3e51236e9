"""Distilled sets in and out: the four layouts hddgeo evaluates, the image-folder export and its round trip, and
hostile files (one line naming the file, nothing evaluated)."""
import json
import os

import pandas as pd
import pytest
import torch
from conftest import tiny_config

from hddgeo.cli import main
from hddgeo.data import load_dataset
from hddgeo.distill import run_distillation
from hddgeo.evaluate import Protocol, evaluate_sets
from hddgeo.synset_files import export_run, load_sets


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    metrics = run_distillation(tiny_config(seed=3, iterations=2, final_eval_nets=2, final_eval_epochs=2, threads=1),
                               str(out), progress=False)
    return out, metrics


def _random_set(digits, n_per_class=2, gen=0):
    g = torch.Generator().manual_seed(gen)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    return torch.randn(len(labels), *digits.train_images.shape[1:], generator=g), labels


def test_a_run_directory_reads_as_its_synthetic_set(run, digits):
    out, _ = run
    [s] = load_sets(str(out), digits)
    saved = torch.load(out / "synset.pt", weights_only=True)
    assert s.layout == "run" and torch.equal(s.images, saved["images"]) and torch.equal(s.labels, saved["train_labels"])
    assert s.meta["seed"] == 3 and s.meta["method"] == "dm"


def test_the_reference_layout_gives_one_set_per_experiment(tmp_path, digits):
    sets = [_random_set(digits, gen=i) for i in range(2)]
    path = tmp_path / "res_DM_digits_ConvNet_2ipc.pt"
    torch.save({"data": [[x, y] for x, y in sets], "accs_all_exps": {"ConvNet": [0.5, 0.6]}}, path)
    loaded = load_sets(str(path), digits)
    assert [s.name for s in loaded] == ["res_DM_digits_ConvNet_2ipc.pt#0", "res_DM_digits_ConvNet_2ipc.pt#1"]
    for s, (x, y) in zip(loaded, sets):
        assert s.layout == "reference" and torch.equal(s.images, x) and torch.equal(s.labels, y)


def test_a_plain_tensor_file_reads(tmp_path, digits):
    x, y = _random_set(digits)
    torch.save({"images": x.double(), "labels": y.int()}, tmp_path / "set.pt")
    [s] = load_sets(str(tmp_path / "set.pt"), digits)
    assert s.images.dtype == torch.float32 and s.labels.dtype == torch.int64 and torch.equal(s.images, x)


def test_export_round_trips_through_hddgeo_and_torchvision_and_evaluates_as_the_run(run, digits, tmp_path,
                                                                                     monkeypatch):
    from hddgeo._torchvision import torchvision

    out, metrics = run
    folder = tmp_path / "export"
    info = export_run(str(out), str(folder))
    saved = torch.load(out / "synset.pt", weights_only=True)
    assert info["images"] == len(saved["images"])
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\ntask_categories:\n- image-classification")
    assert "source_datasets:\n- digits" in card and "seed (scheme): 3 (2)" in card and "95 % interval" in card
    # torchvision reads the classes in class order
    tv = torchvision.datasets.ImageFolder(str(folder))
    assert [y for _, y in tv.samples] == saved["train_labels"].tolist()
    # hddgeo reads the exact float images back (synset.pt beside the PNGs)
    [s] = load_sets(str(folder), digits)
    assert s.layout == "imagefolder" and torch.equal(s.images, saved["images"])
    cfg = json.loads((out / "config.json").read_text())
    protocol = Protocol(networks=cfg["final_eval_nets"], epochs=cfg["final_eval_epochs"], seed=cfg["seed"])
    rows = evaluate_sets([s], digits, protocol)
    assert [r["acc"] for r in rows] == metrics["accs"]
    assert [r["net_seed"] for r in rows] == metrics["eval_seeds"]
    # the card's command, as a user types it (one folder, no --out): the same networks, the same accuracies
    [line] = [x for x in card.splitlines() if x.startswith("- the same networks again: ")]
    flags = line.split("`")[1].split()[3:]
    assert flags == ["--dataset", "digits", "--nets", "2", "--epochs", "2", "--seed", "3"]
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(folder), *flags, "--quiet"]) == 0
    table = pd.read_csv(tmp_path / "evaluation" / "evaluation.csv")
    assert table["acc"].tolist() == metrics["accs"]
    # the PNGs alone: 8-bit pixels, within half a grey level of the clipped images
    os.remove(folder / "synset.pt")
    [png] = load_sets(str(folder), digits)
    pixels = digits.denormalise(saved["images"]).clamp(0, 1)
    assert (digits.denormalise(png.images) - pixels).abs().max() <= 0.5 / 255 + 1e-6


def test_two_sets_under_one_protocol_meet_the_same_networks(digits):
    a, b = _random_set(digits, gen=1), _random_set(digits, gen=2)
    from hddgeo.synset_files import LoadedSet

    sets = [LoadedSet("a", *a, "a", "tensors"), LoadedSet("b", *b, "b", "tensors")]
    rows = evaluate_sets(sets, digits, Protocol(networks=2, epochs=1, seed=7))
    seeds = {r["set"]: [x["net_seed"] for x in rows if x["set"] == r["set"]] for r in rows}
    assert seeds["a"] == seeds["b"] == Protocol(networks=2, seed=7).network_seeds()


class Planted:
    def __reduce__(self):
        return (os.system, ("echo planted",))


@pytest.mark.parametrize("case,message", [
    ("pickle", "objects other than tensors"),
    ("shape", r"images are \(4, 3, 8, 8\); digits needs \(N, 1, 8, 8\)"),
    ("nan", "NaN or infinite"),
    ("labels", r"labels span \[0, 12\]"),
    ("float_labels", "labels must be integers"),
    ("keys", "lacks 'images', 'labels'"),
    ("data", "data\\[0\\] must be an \\[images, labels\\] pair"),
])
def test_hostile_tensor_files_are_one_line_naming_the_file(tmp_path, digits, case, message):
    x, y = _random_set(digits)
    path = tmp_path / f"{case}.pt"
    if case == "pickle":
        torch.save({"images": x, "labels": y, "evil": Planted()}, path)
    elif case == "shape":
        torch.save({"images": torch.zeros(4, 3, 8, 8), "labels": torch.zeros(4, dtype=torch.long)}, path)
    elif case == "nan":
        x[3, 0, 1, 1] = float("nan")
        torch.save({"images": x, "labels": y}, path)
    elif case == "labels":
        y[-1] = 12
        torch.save({"images": x, "labels": y}, path)
    elif case == "float_labels":
        torch.save({"images": x, "labels": y.float()}, path)
    elif case == "keys":
        torch.save({"pixels": x}, path)
    else:
        torch.save({"data": [[x]]}, path)
    with pytest.raises(ValueError, match=message) as err:
        load_sets(str(path), digits)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _folder(tmp_path, digits, name="set"):
    from hddgeo.synset_files import dataset_card, export_imagefolder

    x, y = _random_set(digits)
    folder = tmp_path / name
    export_imagefolder(x, y, digits, str(folder), dataset_card(name="t", dataset=digits, source_dataset="digits",
                                                               images=len(x), ipc=2, details={}))
    os.remove(folder / "synset.pt")
    return folder


@pytest.mark.parametrize("case,message", [
    ("not_image", "is not an image file"),
    ("broken_image", "is not a readable image"),
    ("symlink", "is a symbolic link"),
    ("mixed_sizes", "is 9x8 pixels"),
    ("bad_folder_name", "name class folders by"),
    ("loose_file", "holds one sub-folder per class"),
    ("many_files", "more than 5 (files|entries)"),
])
def test_hostile_image_folders_are_one_line_naming_the_file(tmp_path, digits, monkeypatch, case, message):
    from PIL import Image

    folder = _folder(tmp_path, digits)
    first = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    if case == "not_image":
        (first / "notes.txt").write_text("hello")
    elif case == "broken_image":
        (first / "x.png").write_bytes(b"\x89PNG not really")
    elif case == "symlink":
        outside = tmp_path / "outside.png"
        Image.new("L", (8, 8)).save(outside)
        os.symlink(outside, first / "link.png")
    elif case == "mixed_sizes":
        Image.new("L", (9, 8)).save(first / "wide.png")
    elif case == "bad_folder_name":
        (folder / "shirts").mkdir()
    elif case == "loose_file":
        Image.new("L", (8, 8)).save(folder / "stray.png")
    else:
        import hddgeo.synset_files as sf

        monkeypatch.setattr(sf, "MAX_FILES", 5)
    with pytest.raises(ValueError, match=message) as err:
        load_sets(str(folder), digits)
    assert "\n" not in str(err.value)


def test_export_refuses_a_folder_that_holds_something(run, tmp_path):
    out, _ = run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        export_run(str(out), str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_the_worked_example_distil_then_evaluate_a_reference_file_under_one_protocol(run, tmp_path, capsys):
    """hddgeo's set and two experiments saved in the official DM-HDD layout, one protocol, one command."""

    out, _ = run
    saved = torch.load(out / "synset.pt", weights_only=True)
    g = torch.Generator().manual_seed(0)
    ref = tmp_path / "res_DM_digits_ConvNet_2ipc.pt"
    torch.save({"data": [[saved["images"] + 0.1 * torch.randn(saved["images"].shape, generator=g),
                          saved["train_labels"]] for _ in range(2)], "accs_all_exps": {"ConvNet": [0.1, 0.2]}}, ref)
    dest = tmp_path / "eval"
    assert main(["evaluate", str(out), str(ref), "--dataset", "digits", "--protocol", "paper", "--nets", "2",
                 "--epochs", "1", "--out", str(dest), "--quiet"]) == 0
    table = __import__("pandas").read_csv(dest / "evaluation.csv")
    assert len(table) == 3 * 2 and set(table["method"]) == {"dm", "res_DM_digits_ConvNet_2ipc.pt"}
    assert table.groupby("set")["net_seed"].apply(tuple).nunique() == 1  # the same networks for every set
    protocol = json.loads((dest / "protocol.json").read_text())
    assert protocol["networks"] == 2 and protocol["epochs"] == 1 and protocol["dsa"] and protocol["dataset"] == "digits"
    text = (dest / "evaluation.md").read_text()
    assert "paired by evaluation network" in text and "evaluation noise only" in text
    assert "paired by evaluation network" in capsys.readouterr().out


def test_evaluate_writes_nothing_when_a_set_is_bad_and_refuses_a_busy_out(run, tmp_path, capsys):

    out, _ = run
    bad = tmp_path / "bad.pt"
    torch.save({"images": torch.full((2, 1, 8, 8), float("nan")), "labels": torch.zeros(2, dtype=torch.long)}, bad)
    assert main(["evaluate", str(out), str(bad), "--out", str(tmp_path / "e"), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "NaN" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    assert main(["evaluate", str(out), "--protocol", "default", "--out", str(tmp_path / "busy")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["evaluate", str(bad), "--protocol", "default", "--out", str(tmp_path / "e2")]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_export_command(run, tmp_path, capsys):

    out, _ = run
    assert main(["export", str(out), str(tmp_path / "x")]) == 0
    assert "PNG class folders" in capsys.readouterr().out
    assert len(list((tmp_path / "x").glob("*/*.png"))) == len(torch.load(out / "synset.pt", weights_only=True)["images"])


def test_a_run_reevaluated_under_its_own_protocol_repeats_its_accuracies(run, tmp_path):
    """The same networks, epochs and torch thread count (the run's, by default) give the run's own numbers."""

    out, metrics = run
    assert main(["evaluate", str(out), "--protocol", "default", "--nets", "2", "--epochs", "2", "--seed", "3",
                 "--out", str(tmp_path / "e"), "--quiet"]) == 0
    table = __import__("pandas").read_csv(tmp_path / "e" / "evaluation.csv")
    assert table["acc"].tolist() == metrics["accs"]
    assert json.loads((tmp_path / "e" / "protocol.json").read_text())["threads"] == 1


def test_compare_pairs_evaluation_folders_of_one_protocol_by_network(run, tmp_path, capsys):
    """Two `hddgeo evaluate` folders under one protocol: `hddgeo compare` pairs their sets network by network; under
    two protocols it refuses in one line."""
    import pandas as pd


    out, _ = run
    saved = torch.load(out / "synset.pt", weights_only=True)
    torch.save({"images": saved["images"].flip(-1), "labels": saved["train_labels"]}, tmp_path / "=flipped.pt")
    for name, path, nets in (("e1", out, "2"), ("e2", tmp_path / "=flipped.pt", "2"), ("e3", out, "3")):
        assert main(["evaluate", str(path), "--dataset", "digits", "--protocol", "default", "--nets", nets,
                     "--epochs", "1", "--out", str(tmp_path / name), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "e1"), str(tmp_path / "e2"), "--out", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert "paired by evaluation network" in text and "=flipped.pt" in text
    diffs = pd.read_csv(tmp_path / "c" / "compare_evaluation.csv")
    e1, e2 = (pd.read_csv(tmp_path / n / "evaluation.csv") for n in ("e1", "e2"))
    want = 100 * (e1["acc"] - e2["acc"]).mean()
    assert len(diffs) == 1 and diffs["networks"].iloc[0] == 2 and diffs["diff_mean"].iloc[0] == pytest.approx(want)
    assert diffs["b"].iloc[0] == "'=flipped.pt"  # written neutralised for spreadsheets
    assert main(["compare", str(tmp_path / "e1"), str(tmp_path / "e3")]) == 2
    assert "different protocols (networks)" in capsys.readouterr().err
