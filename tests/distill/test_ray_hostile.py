"""`hddgeo study --executor ray` when the cluster is not there or cannot run the cells: one line and status 2 after
a bounded wait, never a wait for ever; and a relative --out lands in this folder, not in a Ray node's."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from hddgeo.cli import main  # noqa: E402

from test_ray import _free_port, _stop  # noqa: E402

SPEC = """
ipc = [1]
seeds = [0]
baseline = false
[config]
dataset = "digits"
iterations = {iterations}
batch_real = 4
final_eval_nets = 1
final_eval_epochs = 1
checkpoint_every = 1
[[variants]]
matcher = "euclidean"
"""


def _study(tmp_path, *args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "hddgeo.cli", "study", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def _one_line(proc, *words):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for w in words:
        assert w in lines[0], lines[0]


def test_an_address_where_nothing_listens_is_one_line(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(iterations=1))
    port = _free_port()
    proc = _study(tmp_path, str(spec), "--out", str(tmp_path / "out"), "--executor", "ray", "--ray-address",
                  f"127.0.0.1:{port}", "--quiet")
    _one_line(proc, "no Ray cluster answers", f"127.0.0.1:{port}")
    assert not (tmp_path / "out").exists()


def _ray_start(args, log):
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    return subprocess.Popen([ray_bin, "start", *args], env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=log,
                            stderr=log, start_new_session=True)


def _alive_cpus(address) -> float:
    """The CPUs of the live nodes of the cluster (a short-lived driver asks)."""
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive']))")
    out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0.0


def test_a_cluster_that_cannot_run_the_cells(tmp_path, monkeypatch, capsys):
    """No worker node: one line at once.  Then a worker: a relative --out lands beside the driver.  Then the worker
    is lost in the middle of a cell: one line once the cluster has had no node for the cells a while."""
    from hddgeo.distill import executors

    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="hddgeo-ray-", dir="/tmp")
    common = ["--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--block", "--disable-usage-stats"]
    log = open(tmp_path / "ray.log", "w")
    head = _ray_start(["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard=false", *common], log)
    procs = [head]
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(iterations=2))
    try:
        deadline = time.time() + 120
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None and time.time() < deadline, (tmp_path / "ray.log").read_text()[-2000:]
            time.sleep(0.5)
        monkeypatch.setattr(executors, "RAY_STALL_S", 10.0)
        assert main(["study", str(spec), "--out", str(tmp_path / "none"), "--executor", "ray", "--ray-address",
                     address, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no live node" in err[0] and "CPU" in err[0], err
        assert not (tmp_path / "none" / "runs").exists()

        worker = _ray_start(["--address", address, "--num-cpus", "2", *common], log)
        procs.append(worker)
        deadline = time.time() + 180
        while _alive_cpus(address) < 2:
            assert worker.poll() is None and time.time() < deadline, (tmp_path / "ray.log").read_text()[-2000:]
            time.sleep(1)
        here = tmp_path / "driver"
        here.mkdir()
        proc = _study(tmp_path, str(spec), "--out", "rel", "--executor", "ray", "--ray-address", address, "--quiet",
                      cwd=str(here), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        table = pd.read_csv(here / "rel" / "results.csv")
        assert (here / "rel" / table["run_dir"].iloc[0] / "metrics.json").is_file()  # beside the table, not elsewhere

        # the only worker is lost in the middle of a long cell
        spec.write_text(SPEC.format(iterations=100000))
        lock = tmp_path / "lost" / "runs" / "ipc1_dm_seed0" / "run.lock"

        def kill_worker():
            deadline = time.time() + 300
            while not lock.is_file() and time.time() < deadline:
                time.sleep(0.2)
            _stop([worker])

        killer = threading.Thread(target=kill_worker, daemon=True)
        killer.start()
        status = main(["study", str(spec), "--out", str(tmp_path / "lost"), "--executor", "ray", "--ray-address",
                       address, "--quiet"])
        killer.join()
        assert status == 2 and lock.parent.is_dir()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop([p for p in procs if p.poll() is None] or procs[:1])
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
