"""benchmarks/gpu_check.py runs end to end on --quick settings on the CPU, and bench_iterations.bench takes a device."""
import pandas as pd
import pytest
from test_experiments import load_script


def test_gpu_check_quick_cpu(tmp_path, fashionmnist_root, capsys):
    out = tmp_path / "out"
    rc = load_script("gpu_check", "benchmarks").main(["--quick", "--device", "cpu", "--skip-tests", "--out", str(out),
                                        "--fashionmnist-root", str(fashionmnist_root), "--tf32", "off"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    table = pd.read_csv(out / "gpu_check.csv", keep_default_na=False)
    assert list(table.columns) == ["step", "check", "status", "value", "target", "met", "seconds", "max_mem_gib",
                                   "detail"]
    assert (table["max_mem_gib"] == "").all()  # only CUDA has a peak to report
    # the printed table comes last, and is the one written beside the CSV
    tail = printed[printed.rindex("step  check"):]
    assert (out / "table.txt").read_text().split("\n\n")[1].strip() in tail
    assert "no step failed" in printed.splitlines()[-1]
    steps = dict(zip(table["check"], table["status"]))
    assert steps["CUDA tests"] == "skipped: --skip-tests"
    # b: every function's value and gradient, CPU against CPU: the same numbers
    agree = table[table["step"] == "b"]
    names = ["lift", "law_centroid", "karcher_mean", "hdd_loss law", "hdd_loss karcher"]
    assert list(agree["check"]) == [f"{n} {w}" for n in names for w in ("value", "grad")]
    assert (agree["status"] == "ok").all() and (agree["met"] == "yes").all()
    errors = agree["value"].str.extract(r"rel err (\S+)")[0].astype(float)
    assert errors.notna().all() and (errors <= 1e-12).all()
    assert "clipped at max_norm 10" in agree["detail"].iloc[0]
    # c: the three matchers on both shapes, then bf16 for two; ratios against their targets
    timing = table[table["step"] == "c"]
    assert (timing["status"] == "ok").all()
    # fp32 on both shapes and the CIFAR-100 shape, bf16 on both, deterministic on the first
    assert len(timing) == 3 * 3 + 2 * 2 + 2
    det = timing[timing["check"].str.contains("deterministic")]
    assert len(det) == 2 and det["value"].str.contains("x the non-deterministic step").all()
    targeted = timing[~timing["check"].str.contains("deterministic")]
    assert set(targeted[targeted["check"].str.endswith("hdd/law")]["target"]) == {"<= 1.05x"}
    assert set(targeted[targeted["check"].str.endswith("hdd/karcher")]["target"]) == {"<= 1.2x"}
    bench_rows = pd.read_csv(out / "bench_iterations.csv")
    assert set(bench_rows["device"]) == {"cpu"} and set(bench_rows["amp"]) == {"none", "bf16"}
    # every row says what float32 meant: TF32 off, as --tf32 off asked and the settings row says
    assert not bench_rows["tf32_conv"].any() and not bench_rows["tf32_matmul"].any()
    assert "TF32 conv off, TF32 matmul off" in table.set_index("check").loc["settings", "value"]
    # d: both runs on the fake Fashion-MNIST, with accuracies and the 20,000-iteration projection
    distill = table[table["step"] == "d"].set_index("check")
    assert (distill["status"] == "ok").all()
    for name in ("DM", "DM+HDD law"):
        acc = float(distill.loc[f"{name} accuracy", "value"].split()[0])
        assert 0 <= acc <= 1
    assert "projected" in distill.loc["20000 DM iterations", "value"]
    assert (out / "runs" / "dm" / "metrics.json").exists() and (out / "runs" / "dm_hdd_law" / "metrics.json").exists()


def test_gpu_check_skips_what_it_cannot_run(tmp_path, capsys):
    out = tmp_path / "out"
    rc = load_script("gpu_check", "benchmarks").main(["--quick", "--device", "cpu", "--skip-tests", "--out", str(out),
                                        "--fashionmnist-root", str(tmp_path / "nowhere"), "--budget-s", "0"])
    assert rc == 0
    table = pd.read_csv(out / "gpu_check.csv", keep_default_na=False)
    statuses = dict(zip(table["step"], table["status"]))
    assert statuses["b"].startswith("skipped: budget spent") and statuses["d"].startswith("skipped: budget spent")
    assert "step  check" in capsys.readouterr().out


def test_bench_takes_a_device():
    bench = load_script("bench_iterations", "benchmarks")
    data = bench.random_images((1, 8, 8), "tiny", n_per_class=6, classes=2)
    rows = bench.bench(data, ipc=1, iterations=1, batch_real=4, warmup=0, device="cpu")
    assert [r["matcher"] for r in rows] == ["euclidean", "hdd/law", "hdd/karcher"]
    assert all(r["device"] == "cpu" and r["amp"] == "none" and r["seconds_per_iteration"] > 0 for r in rows)
    assert rows[0]["ratio_to_euclidean"] == 1.0
    two = bench.bench(data, ipc=1, iterations=1, batch_real=4, warmup=0, device="cpu", amp="bf16",
                      matchers=bench.MATCHERS[:2])
    assert [r["amp"] for r in two] == ["bf16", "bf16"] and len(two) == 2
    with pytest.raises(ValueError, match="euclidean"):
        bench.bench(data, 1, 1, 4, device="cpu", matchers=bench.MATCHERS[1:])


def test_gpu_check_plans_the_runs_into_the_budget():
    gpu_check = load_script("gpu_check", "benchmarks")
    sizes = gpu_check.Sizes()  # 20,000 iterations, 5 nets x 1000 epochs; runner 1.15x the benchmark, 15 s a run
    eval_cost = lambda epochs: 5 * (1.0 + 0.004 * epochs)  # one run's final evaluation
    spi = [0.010, 0.0105]
    assert gpu_check.plan_runs(2000, spi, eval_cost, sizes) == (20000, 1000, [])
    # a little short: fewer evaluation epochs, all the iterations
    iters, epochs, notes = gpu_check.plan_runs(540, spi, eval_cost, sizes)
    assert iters == 20000 and 300 <= epochs < 1000 and "epochs" in notes[0]
    # far short: fewer iterations (whole hundreds), the full evaluation
    iters, epochs, notes = gpu_check.plan_runs(300, spi, eval_cost, sizes)
    assert epochs == 1000 and iters % 100 == 0 and 500 <= iters < 20000 and "iterations shortened" in notes[-1]
    assert 2 * 15 + iters * sum(spi) * 1.15 + 2 * eval_cost(epochs) <= 300
    assert gpu_check.plan_runs(30, spi, eval_cost, sizes)[:2] == (0, 0)


def test_the_agreement_passes_share_no_tensor_and_leave_their_inputs_alone():
    """Step b's reference (CPU) and device passes each make their own leaves.  Before, ``v.to("cpu")`` handed the
    CPU pass the caller's own tensors: it marked them ``requires_grad`` and its gradients were their ``.grad``,
    so on CUDA the device pass got non-leaf copies without gradients and the step wrote no row.  Here the
    "device" is the CPU too, which is exactly where aliasing happens."""
    import torch

    gpu_check = load_script("gpu_check", "benchmarks")
    from hddgeo.losses import hdd_loss
    import geoopt

    M = geoopt.Lorentz(k=1.0)
    v_real, v_syn = gpu_check.agreement_features(2, 6, 3, 5)
    keep = (v_real.clone(), v_syn.clone())
    fn = lambda vr, vs: hdd_loss(vr, vs, M, scale=4.0, centroid="law", max_norm=10.0)
    ref = gpu_check._evaluate(fn, v_real, v_syn, torch.device("cpu"))
    got = gpu_check._evaluate(fn, v_real, v_syn, torch.device("cpu"))
    for t in (v_real, v_syn):
        assert not t.requires_grad and t.grad is None
    assert torch.equal(v_real, keep[0]) and torch.equal(v_syn, keep[1])
    for a, b in zip(ref, got):
        assert a is not None and b is not None and a.data_ptr() != b.data_ptr()
        assert torch.equal(a, b)
    assert all(t.data_ptr() not in (v_real.data_ptr(), v_syn.data_ptr()) for t in ref + got)


class _FakePytest:
    """Step a's pytest process, answering at once as a GPU machine's would."""

    returncode = 0
    pid = -1

    def __init__(self, cmd, **kwargs):
        assert cmd[-1] == "tests" and "-k" in cmd and "cuda" in cmd
        # step a's subprocess inherits the workspace setting, made before any CUDA work
        import os

        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"

    def communicate(self, timeout=None):
        return "....s.\nFAILED tests/x.py::nothing - never\n5 passed, 1 skipped in 1.00s\n", None


def test_gpu_check_runs_end_to_end_on_an_initialised_gpu(tmp_path, fashionmnist_root, monkeypatch, capsys):
    """The check's whole control flow as on a GPU machine: ``--device cuda`` with CUDA's queries answering as for
    one GPU that earlier work has initialised (tests/cuda_shim.py; the arithmetic runs on the CPU with the
    accelerator branches on).  Every step must reach its rows.  Before, ``configure_process`` refused
    ``deterministic_kernels`` once CUDA was initialised, and ``resolve_device`` had just initialised it: the check
    stopped with a ValueError before step a."""
    from cuda_shim import GPU_NAME, pretend_cuda

    gpu_check = load_script("gpu_check", "benchmarks")
    real_popen = gpu_check.subprocess.Popen
    monkeypatch.setattr(gpu_check.subprocess, "Popen",
                        lambda cmd, **kw: _FakePytest(cmd, **kw) if "pytest" in cmd else real_popen(cmd, **kw))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    import torch

    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    out = tmp_path / "out"
    try:
        with pretend_cuda(monkeypatch) as calls:
            rc = gpu_check.main(["--quick", "--device", "cuda", "--out", str(out),
                                 "--fashionmnist-root", str(fashionmnist_root)])
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "gpu_check.csv", keep_default_na=False)
    failed = table[table["status"].str.startswith("FAILED")]
    assert rc == 0 and failed.empty, (failed[["check", "status", "detail"]].to_string(), printed[-3000:])
    steps = table.groupby("step")["status"].apply(list).to_dict()
    # every step reached its rows, none skipped
    assert set(steps) == {"-", "a", "b", "c", "d"}
    assert all(s == "ok" for step in "abcd" for s in steps[step]), steps
    env = table.set_index("check").loc["environment"]
    assert env["value"] == "cuda:0" and GPU_NAME in env["detail"] and "commit" in env["detail"] and "CPU " in env["detail"]
    assert "TF32 conv on, TF32 matmul off" in table.set_index("check").loc["settings", "value"]  # torch's default
    assert table.set_index("check").loc["pytest -q -k cuda tests", "value"].startswith("5 passed, 0 failed, 1 skipped")
    # c: the CIFAR-100-shaped case is there; every row after the environment records a peak memory
    assert table["check"].str.contains("CIFAR-100 shape").any()
    assert (table[table["step"] != "-"]["max_mem_gib"] != "").all()
    assert calls["max_memory_allocated"] >= len(table) - 2
    # the runs' metrics.json name the GPU and the software; evaluation never forked or reseeded a CUDA generator
    import json

    metrics = json.loads((out / "runs" / "dm" / "metrics.json").read_text())
    assert metrics["device"] == "cuda:0" and metrics["provenance"]["gpu"] == GPU_NAME
    assert calls["get_rng_state"] == 0 and calls["manual_seed_all"] == 0
