"""W&B logging (--wandb) in offline mode: what a run logs, read back from the offline transaction log and compared
with log.csv; a resumed run continues the same W&B run; without the package, one line."""
import pandas as pd
import pytest
from conftest import interrupted_run, tiny_config

pytest.importorskip("wandb")

from hddgeo.cli import main  # noqa: E402
from hddgeo.distill import run_distillation  # noqa: E402
from hddgeo.tensorboard import tag_of  # noqa: E402
from hddgeo.wandb_log import read_offline  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def _check_against_log(run_dir, metrics, cfg):
    logged = read_offline(str(run_dir))
    log = pd.read_csv(run_dir / "log.csv")
    for column in log.columns:
        if column in ("iteration", "seconds"):
            continue
        got = logged["scalars"][tag_of(column)]
        want = {int(i): float(v) for i, v in zip(log["iteration"], log[column]) if v == v}
        assert got == pytest.approx(want, rel=1e-12, abs=0), column
    assert sorted(logged["images"]) == [2, 4]  # a grid at every checkpoint
    assert logged["config"]["seed"] == cfg.seed and logged["config"]["matcher"] == cfg.matcher
    assert logged["summary"]["accuracy/final"] == pytest.approx(metrics["acc_mean"])
    return logged


def test_a_run_logs_what_log_csv_holds(tmp_path):
    cfg = tiny_config(matcher="hdd", iterations=4, checkpoint_every=2, wandb=True, threads=1)
    metrics = run_distillation(cfg, str(tmp_path / "run"), progress=False)
    logged = _check_against_log(tmp_path / "run", metrics, cfg)
    assert len(logged["ids"]) == 1
    assert logged["ids"][0] == (tmp_path / "run" / "wandb_id").read_text().strip()


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path):
    cfg = tiny_config(matcher="hdd", iterations=4, checkpoint_every=2, wandb=True, threads=1)
    interrupted_run(cfg, tmp_path / "run", 2)
    metrics = run_distillation(cfg, str(tmp_path / "run"), resume=True, progress=False)
    logged = _check_against_log(tmp_path / "run", metrics, cfg)
    assert len(logged["ids"]) == 2 and len(set(logged["ids"])) == 1


def test_without_the_package_wandb_is_one_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["distill", "--dataset", "digits", "--wandb", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'hddgeo[wandb]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
