"""``hddgeo.compare.compare``: the library's compare, which ``hddgeo compare`` only parses for and prints."""
import os

import pandas as pd
import pytest

from hddgeo.cli import main
from hddgeo.compare import Comparison, compare

STUDY = os.path.join(os.path.dirname(__file__), "..", "experiments", "results", "fashionmnist_verdict")


def test_compare_writes_the_contract_files_from_committed_runs(tmp_path):
    result = compare([STUDY], str(tmp_path))
    assert isinstance(result, Comparison)
    assert [os.path.basename(f) for f in result.files] == ["compare.csv", "compare_summary.csv", "compare_paired.csv",
                                                           "compare.md"]
    assert all(os.path.isfile(f) for f in result.files)
    paired = pd.read_csv(tmp_path / "compare_paired.csv")
    assert {"ipc", "a", "b", "ci_low", "ci_high"} <= set(paired.columns)
    assert (paired["ci_low"] <= paired["ci_high"]).all()
    long = pd.read_csv(tmp_path / "compare.csv")
    assert {"method", "ipc", "seed", "network", "acc", "dataset"} <= set(long.columns)
    assert set(long["dataset"]) == {"fashionmnist"}
    assert result.text == (tmp_path / "compare.md").read_text()


def test_the_command_prints_what_the_library_computed(tmp_path, capsys):
    lib = compare([STUDY], str(tmp_path / "lib"))
    assert main(["compare", STUDY, "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(lib.text)
    assert out.rstrip().endswith(f"wrote {tmp_path / 'cli' / 'compare.csv'}, compare_summary.csv, compare_paired.csv "
                                 f"and compare.md")
    for name in ("compare.csv", "compare_paired.csv", "compare_summary.csv"):
        assert (tmp_path / "lib" / name).read_text() == (tmp_path / "cli" / name).read_text()


def test_compare_checks_before_it_writes(tmp_path):
    with pytest.raises(ValueError, match="--pair names nope"):
        compare([STUDY], str(tmp_path / "x"), pairs=[("nope", "dm")])
    with pytest.raises(ValueError, match="holds no finished run"):
        compare([str(tmp_path)], str(tmp_path / "y"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
