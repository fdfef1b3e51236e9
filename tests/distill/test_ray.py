"""``hddgeo study --executor ray`` on a real local Ray cluster (a head node and a worker node on 127.0.0.1 started by
``ray start``, no dashboard): the long table equals the local executor's bit for bit, also when the worker process running a cell
is killed in the middle of it (the task is retried and the cell resumes from its checkpoint)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from hddgeo.cli import main

SPEC = """
report = "results"
ipc = [1]
seeds = [0]
baseline = true

[config]
dataset = "digits"
iterations = {iterations}
batch_real = 8
scale = 1.0
final_eval_nets = 2
final_eval_epochs = 2
checkpoint_every = 2

[[variants]]
matcher = "euclidean"

[[variants]]
matcher = "hdd"
centroid = "law"
iterations = 3
"""
KILLED = "ipc1_dm_seed0"  # the cell whose worker is killed (the long one)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(procs) -> None:
    """SIGTERM, then SIGKILL, to every process of the sessions these ``ray start --block`` processes lead (each was
    started in a session of its own: GCS, raylets and Ray's workers are theirs), found by session id."""
    sessions = {p.pid for p in procs}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        members = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) in sessions:
                        members.append(int(entry))
                except OSError:
                    pass
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        time.sleep(1)
    for p in procs:
        p.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path):
    """``ray start``: a head (no CPUs, so it runs no cell) and a worker node with 2 CPUs, both on 127.0.0.1,
    without a dashboard; every process they started is stopped at the end."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="hddgeo-ray-", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--block", "--disable-usage-stats"]
    log = open(tmp_path / "ray.log", "w")
    procs = [subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "0",
                               "--include-dashboard=false", *common], env=env, stdout=log, stderr=log,
                              start_new_session=True)]
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:  # the head answers once its GCS is up
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert procs[0].poll() is None and time.time() < deadline, (tmp_path / "ray.log").read_text()[-2000:]
            time.sleep(0.5)
        procs.append(subprocess.Popen([ray_bin, "start", "--address", address, "--num-cpus", "2", *common], env=env,
                                      stdout=log, stderr=log, start_new_session=True))
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(procs)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _table(folder):
    t = pd.read_csv(os.path.join(folder, "results.csv"))
    return t.drop(columns=["run_dir", "seconds_per_iteration"])


def _kill_when_checkpointed(run_dir, killed: list, stop: threading.Event):
    """SIGKILL the process that holds ``run_dir``'s lock (the Ray worker running it) once it has checkpointed
    and before it has finished."""
    while not stop.is_set():
        ckpt, lock = os.path.join(run_dir, "checkpoint.pt"), os.path.join(run_dir, "run.lock")
        if os.path.isfile(os.path.join(run_dir, "metrics.json")):
            return
        if os.path.isfile(ckpt) and os.path.isfile(lock):
            try:
                pid = int(open(lock).read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


def test_ray_table_equals_local_also_after_a_killed_worker(tmp_path, cluster, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(iterations=30))
    local, remote = str(tmp_path / "local"), str(tmp_path / "ray")
    assert main(["study", str(spec), "--out", local, "--jobs", "1", "--quiet"]) == 0

    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=_kill_when_checkpointed,
                               args=(os.path.join(remote, "runs", KILLED), killed, stop), daemon=True)
    watcher.start()
    try:
        assert main(["study", str(spec), "--out", remote, "--executor", "ray", "--ray-address", cluster]) == 0
    finally:
        stop.set()
        watcher.join()
    err = capsys.readouterr().err
    assert "[3/3]" in err  # progress: finished cells
    assert killed, "the worker was not killed (the cell finished first)"
    pd.testing.assert_frame_equal(_table(local), _table(remote))  # accuracies bit for bit
    with open(os.path.join(remote, "runs", KILLED, "metrics.json")) as fh:
        metrics = json.load(fh)
    assert metrics["resumed_from_iteration"] > 0  # the retried task resumed from the checkpoint
    log = pd.read_csv(os.path.join(remote, "runs", KILLED, "log.csv"))
    assert log["iteration"].tolist() == list(range(1, 31))
    # the synthetic set itself is the local executor's, bit for bit
    import torch

    a = torch.load(os.path.join(local, "runs", KILLED, "synset.pt"), weights_only=True)["images"]
    b = torch.load(os.path.join(remote, "runs", KILLED, "synset.pt"), weights_only=True)["images"]
    assert torch.equal(a, b)
