"""Two processes on 127.0.0.1 (torchrun, gloo) reproduce the single-process synthetic set."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from hddgeo.distill import DistillConfig, run_distillation

ARGS = ["--ipc", "2", "--iterations", "3", "--batch-real", "16", "--matcher", "hdd", "--centroid", "karcher",
        "--final-eval-nets", "2", "--final-eval-epochs", "2", "--checkpoint-every", "2", "--quiet"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    single = tmp_path / "single"
    cfg = DistillConfig(ipc=2, iterations=3, batch_real=16, matcher="hdd", centroid="karcher", final_eval_nets=2,
                        final_eval_epochs=2, checkpoint_every=2)
    one = run_distillation(cfg, str(single), progress=False)

    multi = tmp_path / "multi"
    env = {**os.environ, "HDDGEO_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "hddgeo", "distill", "--out", str(multi)] + ARGS
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    a = torch.load(single / "synset.pt", weights_only=True)["params"]
    b = torch.load(multi / "synset.pt", weights_only=True)["params"]
    # per-sample kernels see half the batch in each process: agreement to float32 rounding
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    two = json.loads((multi / "metrics.json").read_text())
    assert two["processes"] == 2 and len(two["accs"]) == 2
    assert abs(two["acc_mean"] - one["acc_mean"]) < 0.05
    logs = [(p / "log.csv").read_text().splitlines() for p in (single, multi)]
    assert len(logs[0]) == len(logs[1]) == 4
    loss = [float(line.split(",")[1]) for line in logs[1][1:]]
    ref = [float(line.split(",")[1]) for line in logs[0][1:]]
    assert all(abs(x - y) <= 1e-3 * max(1.0, abs(y)) for x, y in zip(loss, ref))


# Launched by torchrun: rank 1's real features of iteration FAIL_AT turn NaN (as features of images that ran away
# do), then the command line runs as `python -m hddgeo distill ...` would.
FAULTY_RANK = '''
import os, sys
import pytest
import torch
from hddgeo.distill.methods import DistillMethod
from hddgeo.cli import main

fail_at, calls = int(os.environ["FAIL_AT"]), []
original = DistillMethod.features

def features(self, net, syn, gen):
    f_real, f_syn = original(self, net, syn, gen)
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == fail_at + 1:
        f_real = f_real.clone()
        f_real[0, 0, 0] = float("nan")
    return f_real, f_syn

DistillMethod.features = features
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.parametrize("fail_at", [0, 1])
def test_a_failure_on_one_rank_ends_every_rank_with_its_line(tmp_path, fail_at):
    """Rank 1 alone meets a non-finite feature; rank 0 would otherwise wait in the gradient all-reduce for the
    process group's 30-minute timeout.  Both exit 2 within seconds, with rank 1's one-line error."""
    import time

    script = tmp_path / "faulty.py"
    script.write_text(FAULTY_RANK)
    out = tmp_path / "run"
    env = {**os.environ, "HDDGEO_BACKEND": "gloo", "OMP_NUM_THREADS": "1", "FAIL_AT": str(fail_at)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "--tee=2", "--log-dir", str(tmp_path / "logs"), str(script), "distill",
           "--out", str(out), "--ipc", "1", "--iterations", "4", "--batch-real", "8", "--matcher", "hdd",
           "--final-eval-epochs", "0", "--checkpoint-every", "0", "--quiet"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    assert res.returncode != 0 and elapsed < 120, (elapsed, res.stderr[-2000:])
    errors = {}
    for rank in (0, 1):
        files = list((tmp_path / "logs").rglob(f"attempt_0/{rank}/stderr.log"))
        assert len(files) == 1, list((tmp_path / "logs").rglob("*"))
        lines = [line for line in files[0].read_text().splitlines() if line.strip()]
        errors[rank] = [line for line in lines if line.startswith("hddgeo: error:")]
        assert len(errors[rank]) == 1 and not any("Traceback" in line for line in lines), lines
    assert errors[0] == errors[1]
    assert ("must be finite" in errors[0][0] or "NaN" in errors[0][0]), errors
    if fail_at:
        assert errors[0][0].startswith("hddgeo: error: iteration 2: the features of the synthetic images"), errors
    # torchrun's summary names each failed rank with its exit status: 2, or, for a rank that had printed its line and
    # was still shutting down when torchrun saw the other one exit, the SIGTERM torchrun then sends it (seen under load)
    import re

    codes = re.findall(r"exitcode  : (-?\d+)", res.stderr)
    assert len(codes) == 2 and "2" in codes and set(codes) <= {"2", "-15"}, res.stderr[-2000:]


def test_a_failed_rank_leaves_at_once_only_when_it_started_a_process_group(monkeypatch, capsys):
    """The repeated 2-rank run above met this only sometimes (a gloo rank aborting in the interpreter's exit after
    its line: SIGABRT, not 2); here the rule itself: a non-zero status ends a process that started a group with
    that status, flushed, and nothing else is ended (one process, a success, a test calling ``main``)."""
    from hddgeo.distill import distributed

    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(distributed.os, "_exit", fake_exit)
    monkeypatch.setattr(distributed, "_STARTED", False)
    distributed.end_failed_rank(2)
    assert exits == []
    monkeypatch.setattr(distributed, "_STARTED", True)
    distributed.end_failed_rank(0)
    assert exits == []
    with pytest.raises(SystemExit):
        distributed.end_failed_rank(2)
    assert exits == [2]
    # and the command line goes through it with its own status: a bad flag value under a started group
    from hddgeo.cli import main

    with pytest.raises(SystemExit):
        main(["distill", "--out", "/nonexistent/x", "--ipc", "0"])
    assert exits == [2, 2] and "hddgeo: error:" in capsys.readouterr().err
