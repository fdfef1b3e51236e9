"""Coreset baselines: the pure selection rules on toy inputs, selection on (small) digits, evaluation."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import hddgeo.coreset as coreset
from hddgeo.coreset import (CORESET_METHODS, evaluate_coreset, forgetting_counts, herding_order, kcenter_order,
                            select_coreset, train_on_real)
from hddgeo.data import ImageDataset, load_dataset

SMALL = {"width": 8}  # tiny ConvNet wherever a network is built, to keep the tests fast


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: more threads only contend


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits):
    """12 training images per class of digits (class sizes differ by one to catch off-by-ones)."""
    keep = torch.cat([torch.nonzero(digits.train_labels == c).flatten()[: 12 + (c % 2)] for c in range(10)])
    keep = keep.sort().values
    return ImageDataset("digits-small", digits.train_images[keep], digits.train_labels[keep],
                        digits.test_images[:50], digits.test_labels[:50], 10, digits.class_names,
                        digits.mean, digits.std)


def _check_selection(dataset, indices, labels, ipc):
    assert indices.dtype == torch.int64 and labels.dtype == torch.int64
    assert indices.shape == (dataset.num_classes * ipc,)
    assert torch.unique(indices).numel() == indices.numel()
    assert torch.equal(labels, dataset.train_labels[indices])
    assert torch.equal(labels, torch.arange(dataset.num_classes).repeat_interleave(ipc))


# -- pure rules ------------------------------------------------------------------------------------

def test_herding_toy_order():
    # mean 5.25: 4 is closest; then (4 + x)/2 -> 5.25 wants 6.5, 7 is closest; then (11 + x)/3 wants 4.75.
    features = torch.tensor([0.0, 10.0, 4.0, 7.0])
    assert herding_order(features, 3).tolist() == [2, 3, 0]
    assert herding_order(features.unsqueeze(1), 4).tolist() == [2, 3, 0, 1]


def test_herding_recovers_mean_in_2d():
    # Two symmetric pairs: after two picks the selected mean should equal the full mean.
    f = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0], [5.0, 5.0]])
    first, second = herding_order(f, 2).tolist()
    assert torch.allclose((f[first] + f[second]) / 2, f.mean(0), atol=1.0)
    assert 4 not in (first, second)


def test_kcenter_toy_farthest_points():
    # mean 1.6: start at 2; farthest from {2} is 10; then -5 (7 away) beats 0 (2) and 1 (1).
    features = torch.tensor([0.0, 1.0, 2.0, 10.0, -5.0])
    assert kcenter_order(features, 3).tolist() == [2, 3, 4]
    assert sorted(kcenter_order(features, 5).tolist()) == [0, 1, 2, 3, 4]


def test_kcenter_with_duplicates_never_repeats():
    f = torch.tensor([[0.0, 0.0]] * 4 + [[1.0, 1.0]])
    order = kcenter_order(f, 5).tolist()
    assert sorted(order) == [0, 1, 2, 3, 4]


def test_forgetting_counts_hand_made_history():
    history = torch.tensor([
        [1, 1, 0, 0],
        [0, 1, 1, 0],
        [1, 0, 0, 0],
        [0, 1, 1, 0],
    ], dtype=torch.bool)
    # sample 0: 1->0, 1->0 (2); sample 1: 1->0 once; sample 2: 1->0 once; sample 3: never learned.
    assert forgetting_counts(history).tolist() == [2, 1, 1, 0]
    assert forgetting_counts(history[:1]).tolist() == [0, 0, 0, 0]
    assert forgetting_counts(history).dtype == torch.int64


def test_forgetting_counts_rejects_bad_history():
    with pytest.raises(ValueError, match="boolean"):
        forgetting_counts(torch.ones(3, 4))
    with pytest.raises(ValueError, match="presentations"):
        forgetting_counts(torch.ones(3, dtype=torch.bool))


def test_most_forgotten_takes_top_counts_and_breaks_ties_by_seed():
    counts = torch.tensor([0, 3, 1, 1, 1, 0, 1])
    picks = [coreset._most_forgotten(counts, 3, torch.Generator().manual_seed(s)) for s in range(20)]
    for p in picks:
        assert p[0].item() == 1 and set(p[1:].tolist()) <= {2, 3, 4, 6}
    assert len({tuple(p.tolist()) for p in picks}) > 1  # ties really are broken at random
    again = coreset._most_forgotten(counts, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again, picks[0])


# -- selection on data ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_selection_gives_ipc_distinct_images_per_class(small, method):
    indices, labels = select_coreset(method, small, 3, seed=1, **SMALL)
    _check_selection(small, indices, labels, 3)


def test_forgetting_selects_most_forgotten(small, monkeypatch):
    n = len(small.train_labels)
    counts = torch.arange(n) % 5  # images with count 4 are the most forgotten
    history = torch.zeros(9, n, dtype=torch.bool)
    for i, c in enumerate(counts.tolist()):
        history[0:2 * c:2, i] = True  # correct at even presentations, wrong at the odd ones: c events
    assert torch.equal(forgetting_counts(history), counts)
    monkeypatch.setattr(coreset, "train_on_real", lambda *a, **k: (None, history))
    indices, labels = select_coreset("forgetting", small, 1, seed=0)
    _check_selection(small, indices, labels, 1)
    for c, i in enumerate(indices.tolist()):
        in_class = torch.nonzero(small.train_labels == c).flatten()
        assert counts[i] == counts[in_class].max()


def test_forgetting_end_to_end(small):
    indices, labels = select_coreset("forgetting", small, 2, seed=0, forgetting_epochs=2, **SMALL)
    _check_selection(small, indices, labels, 2)


def test_train_on_real_records_history(small):
    net, history = train_on_real(small, epochs=2, seed=3, batch_size=32, **SMALL)
    assert history.shape == (2, len(small.train_labels)) and history.dtype == torch.bool
    _, again = train_on_real(small, epochs=2, seed=3, batch_size=32, **SMALL)
    assert torch.equal(history, again)


def test_explicit_features_drive_herding_and_kcenter(small):
    # A feature that is the image index: herding picks the index nearest the class mean.
    features = torch.arange(len(small.train_labels), dtype=torch.float64)
    indices, _ = select_coreset("herding", small, 1, features=features)
    for c, i in enumerate(indices.tolist()):
        members = torch.nonzero(small.train_labels == c).flatten().double()
        assert abs(i - members.mean()) == (members - members.mean()).abs().min()
    indices, labels = select_coreset("kcenter", small, 3, features=features)
    _check_selection(small, indices, labels, 3)


@pytest.mark.parametrize("method", ["random", "herding", "kcenter", "forgetting"])
def test_selection_is_deterministic_and_leaves_global_rng_alone(small, method):
    kw = dict(forgetting_epochs=2, **SMALL)
    state = torch.random.get_rng_state()
    first = select_coreset(method, small, 2, seed=5, **kw)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = select_coreset(method, small, 2, seed=5, **kw)
    assert torch.equal(first[0], second[0])


def test_seed_changes_random_selection(small):
    a, _ = select_coreset("random", small, 3, seed=0)
    b, _ = select_coreset("random", small, 3, seed=1)
    assert not torch.equal(a, b)


def test_trained_feature_model(small):
    indices, labels = select_coreset("herding", small, 2, feature_model="trained", feature_epochs=1, **SMALL)
    _check_selection(small, indices, labels, 2)


# -- errors ----------------------------------------------------------------------------------------

def test_bad_inputs_raise_value_error(small):
    with pytest.raises(ValueError, match="valid methods: random, herding, kcenter, forgetting"):
        select_coreset("gradmatch", small, 1)
    with pytest.raises(ValueError, match="positive integer"):
        select_coreset("random", small, 0)
    with pytest.raises(ValueError, match="lower ipc to at most 12"):
        select_coreset("random", small, 13)
    with pytest.raises(ValueError, match="one feature row per training image"):
        select_coreset("herding", small, 1, features=torch.zeros(5, 2))
    with pytest.raises(ValueError, match="NaN"):
        select_coreset("kcenter", small, 1, features=torch.full((len(small.train_labels), 2), float("nan")))
    with pytest.raises(ValueError, match="only used by herding and kcenter"):
        select_coreset("random", small, 1, features=torch.zeros(len(small.train_labels), 2))
    with pytest.raises(ValueError, match="forgetting_epochs"):
        select_coreset("forgetting", small, 1, forgetting_epochs=1)
    with pytest.raises(ValueError, match="feature_model"):
        select_coreset("herding", small, 1, feature_model="pretrained")
    with pytest.raises(ValueError, match="forgeting_epochs"):
        select_coreset("random", small, 1, forgeting_epochs=5)  # misspelt: must not be ignored
    with pytest.raises(ValueError, match="cannot select"):
        herding_order(torch.zeros(3, 2), 4)


# -- evaluation ------------------------------------------------------------------------------------

def test_evaluate_coreset_on_digits(digits):
    res = evaluate_coreset("random", digits, 1, num_nets=1, epochs=2, seed=0)
    assert 0.0 <= res["mean"] <= 1.0 and res["std"] == 0.0 and len(res["accs"]) == 1
    assert res["indices"].shape == (10,)


def test_script_writes_csv_and_markdown(tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "experiments" / "coreset_baselines.py"
    spec = importlib.util.spec_from_file_location("coreset_baselines", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = script.main(["--ipc", "1", "--methods", "random", "kcenter", "--nets", "1", "--epochs", "1",
                         "--out", str(tmp_path)])
    assert list(table["method"]) == ["random", "kcenter"]
    csv = (tmp_path / "coreset.csv").read_text().splitlines()
    assert csv[0] == "method,ipc,seed,network,acc" and len(csv) == 3  # one row per (method, network)
    summary = (tmp_path / "coreset_summary.csv").read_text().splitlines()
    assert summary[0].startswith("method,ipc,seeds,evaluations,acc_mean,acc_std") and len(summary) == 3
    out = capsys.readouterr().out
    assert "| method | IPC 1 |" in out and "kcenter" in out and "±" in out


def test_methods_constant():
    assert CORESET_METHODS == ("random", "herding", "kcenter", "forgetting")
