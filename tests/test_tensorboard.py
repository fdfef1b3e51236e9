"""``--tensorboard``: event files that repeat log.csv (also across a kill and resume), the image grid at every
checkpoint, final accuracy and hyper-parameters; the run computes bit for bit what it computes without them."""
import json
import struct

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import interrupted_run

pytest.importorskip("tensorboard")

from hddgeo.distill import DistillConfig
from hddgeo.distill.runner import run_distillation
from hddgeo.distill.study import run_cell
from hddgeo.tensorboard import SUBDIR, read_image_steps, read_scalars, tag_of

CFG = dict(dataset="digits", ipc=2, iterations=6, batch_real=8, matcher="hdd", centroid="karcher", scale=1.0,
           final_eval_nets=2, final_eval_epochs=2, checkpoint_every=2, gap_every=2, eval_every=3, eval_epochs=2,
           threads=1)


def test_events_repeat_log_csv_across_a_resume_and_change_nothing(tmp_path):
    plain = tmp_path / "plain"
    run_distillation(DistillConfig(**CFG), str(plain), progress=False)
    board = tmp_path / "board"
    cfg = DistillConfig(**CFG, tensorboard=True)
    interrupted_run(cfg, board, 3)
    # what a killed process wrote after its last checkpoint (iteration 3) is discarded by the resumed run's purge
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(board / SUBDIR)) as w:
        w.add_scalar("loss/total", 999.0, 4)
    metrics = run_distillation(cfg, str(board), resume=True, progress=False)
    assert metrics["resumed_from_iteration"] == 3

    # numerics unchanged: the same synthetic set and accuracies as without TensorBoard
    a = torch.load(plain / "synset.pt", weights_only=True)["images"]
    b = torch.load(board / "synset.pt", weights_only=True)["images"]
    assert torch.equal(a, b)
    assert json.loads((plain / "metrics.json").read_text())["accs"] == metrics["accs"]

    scalars = read_scalars(str(board))
    log = pd.read_csv(board / "log.csv")
    columns = [c for c in log.columns if c != "iteration"]
    assert {"hdd", "grad_norm", "gap_real", "radius_syn", "seconds", "eval_acc"} <= set(columns)
    for column in columns:
        want = [(int(i), np.float32(v)) for i, v in zip(log["iteration"], log[column]) if np.isfinite(v)]
        got = [(s, np.float32(v)) for s, v in scalars[tag_of(column)]]
        assert got == want, column
    assert tag_of("gap_real").startswith("diagnostics/") and tag_of("hdd") == "loss/hdd"
    assert scalars["accuracy/final"] == [(6, np.float32(metrics["acc_mean"]))]
    steps = read_image_steps(str(board))
    assert [s for s, _, _ in steps] == [2, 3, 4, 6]  # every checkpoint (3: the interrupted run's last)
    assert all(w >= 2 * 48 and h >= 10 * 48 for _, w, h in steps)  # 8x8 digits enlarged to 48x48

    # the hyper-parameters of the HParams view, with the final accuracy as their metric
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(board / SUBDIR))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["centroid"].string_value == "karcher" and hp["ipc"].number_value == 2
    assert hp["label"].string_value == "dm+hdd/karcher"
    assert scalars["hparam/accuracy"] == [(6, np.float32(metrics["acc_mean"]))]

    # tensorboard is not part of what a run is: the finished cell is reused without it
    assert run_cell(DistillConfig(**CFG), str(board), progress=False)["accs"] == metrics["accs"]


def test_synset_png_is_readable(tmp_path):
    run_distillation(DistillConfig(**{**CFG, "iterations": 1, "final_eval_epochs": 0, "gap_every": 0,
                                      "eval_every": 0}), str(tmp_path / "r"), progress=False)
    with open(tmp_path / "r" / "synset.png", "rb") as fh:
        head = fh.read(24)
    width, height = struct.unpack(">II", head[16:24])
    assert width >= 2 * 48 and height >= 10 * 48  # was 2 x 9 + 1 = 19 px wide for IPC 2


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    from hddgeo.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "r"
    assert main(["distill", "--iterations", "1", "--tensorboard", "--out", str(out)]) == 2
    assert "hddgeo[tensorboard]" in capsys.readouterr().err and not out.exists()
