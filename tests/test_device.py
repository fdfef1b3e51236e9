"""One device for a whole run: resolution, placement of every tensor, portable files, autocast, determinism.

Tests that build tensors take the ``device`` fixture (tests/conftest.py): on a CPU-only machine the CUDA
cases skip with a reason; ``pytest -k cuda`` runs them where a GPU is (benchmarks/gpu_check.py does).
"""
import geoopt
import pytest
import torch
from conftest import interrupted_run, tiny_config

from hddgeo import device as devices
from hddgeo.cli import main
from hddgeo.device import deterministic, resolve_device, tensors_off_device
from hddgeo.distill import DistillConfig, build_method, prepare, run_distillation
from hddgeo.distill.runner import read_back
from hddgeo.evaluate import train_and_test
from hddgeo.geometry import karcher_mean, law_centroid, lift
from hddgeo.geometry._math import maybe_any
from hddgeo.losses import hdd_loss
from hddgeo.rundir import load_tensors

HAS_CUDA = torch.cuda.is_available()


def tiny(**kw):
    return tiny_config(**{"iterations": 3, **kw})


# ----------------------------------------------------------------------------- resolving a device name
def test_auto_and_cpu_resolve_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", torch.cuda.current_device()) if HAS_CUDA
                                      else torch.device("cpu"))


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cpu:1", "cuda:x", "CUDA", ""])
def test_malformed_device_names_are_refused(name):
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_a_device_that_does_not_exist_names_the_ones_that_do():
    missing = f"cuda:{torch.cuda.device_count() + 3}"
    with pytest.raises(ValueError, match="available: cpu") as err:
        resolve_device(missing)
    assert "cuda" in str(err.value)
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="sees no CUDA GPU.*use --device cpu"):
            resolve_device("cuda")


def test_cuda_under_torchrun_is_the_local_rank(monkeypatch):
    """Without a GPU here, torch's CUDA queries are replaced: the rule is what is tested."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("cuda") == torch.device("cuda", 2)
    assert resolve_device("auto") == torch.device("cuda", 2)
    # an explicit GPU would put all four ranks on it (NCCL refuses duplicate GPUs): one line, what to pass instead
    with pytest.raises(ValueError, match=r"--device cuda:1 with 4 processes would put every rank on that GPU; use --device cuda"):
        resolve_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"cuda:4 does not exist; available: cpu, cuda:0, cuda:1, cuda:2, cuda:3"):
        resolve_device("cuda:4")


@pytest.mark.parametrize("args", [["--device", "cuda:97"], ["--device", "tpu"]] + ([] if HAS_CUDA else [["--device", "cuda"]]))
def test_distill_with_a_bad_device_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args):
    out = tmp_path / "run"
    code = main(["distill", "--iterations", "1", "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("hddgeo: error:")
    assert "cpu" in err[0] or "use auto, cpu, cuda or cuda:N" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("command", ["demo", "centroids"])
def test_other_commands_refuse_a_missing_device_before_writing(tmp_path, capsys, command):
    out = tmp_path / "x"
    args = {"demo": ["demo", "--out", str(out), "--quiet"], "centroids": ["centroids", "--out", str(out / "c.csv")]}
    code = main(args[command] + ["--device", "cuda:97"])
    err = capsys.readouterr().err
    assert code == 2 and "cuda:97" in err and "available: cpu" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- where every tensor lives
def _walk_run(cfg, iterations=2):
    """The runner's loop by hand for a few iterations; returns everything a run holds."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    syn = method.init_synset(torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.SGD([syn.images], lr=cfg.lr_img, momentum=cfg.momentum)
    steps = []
    for it in range(iterations):
        loss, parts, step = method.step(it, syn)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(step)
        steps.append(step)
    return {"pool": pool, "syn": syn, "optimizer": opt, "method": method, "steps": steps}


METHOD_CASES = [
    dict(method="dm", matcher="hdd", centroid="karcher"),
    dict(method="idm", matcher="both", centroid="law", idm_net_age=1),  # renews a network within the test
    dict(method="geodm", matcher="euclidean", options={"proj_dim": 8, "ot_max_iter": 20}),
    dict(method="dm", matcher="hdd", centroid="law", prune_fraction=0.5),
]


@pytest.mark.parametrize("case", METHOD_CASES, ids=lambda c: f"{c['method']}-{c['matcher']}")
def test_every_tensor_of_a_run_is_on_the_configured_device(device, case):
    if case["method"] == "geodm":
        pytest.importorskip("ot")
    held = _walk_run(tiny(device=device.type, **case))
    off = tensors_off_device(held, device)
    assert off == [], off[:5]
    # what the method keeps must be found by the walk: its networks, optimisers and parameters
    found = tensors_off_device(held, "meta")
    assert any(".net" in where or "nets" in where for where, _ in found)
    assert any("optimizer" in where for where, _ in found)


def test_dance_experts_and_middle_encoders_are_on_the_device(device, tmp_path):
    cfg = tiny(method="dance", device=device.type,
               options={"num_experts": 2, "expert_epochs": 1, "expert_cache": str(tmp_path / "experts")})
    held = _walk_run(cfg)
    assert tensors_off_device(held, device) == []
    # the cache on disk holds CPU tensors, so it loads on any device
    (cache,) = list((tmp_path / "experts").iterdir())
    assert tensors_off_device(load_tensors(str(cache)), "cpu") == []


def test_the_walk_finds_a_forgotten_tensor():
    """On this CPU every tensor is on the CPU; a planted one elsewhere (``meta``) shows that the walk looks
    into methods, networks, optimisers and nested containers."""
    held = _walk_run(tiny(method="idm", matcher="euclidean"), iterations=1)
    method = held["method"]
    method.cache = {"deep": [torch.zeros(2, device="meta")]}
    method.nets[1].register_buffer("stray", torch.zeros(1, device="meta"))
    off = tensors_off_device(held, "cpu")
    assert sorted(w for w, _ in off) == ["dict['method'].cache['deep'][0]", "dict['method'].nets[1].stray"]


# ----------------------------------------------------------------------------- portable files
def test_checkpoints_and_synsets_hold_cpu_tensors(device, tmp_path):
    cfg = tiny(method="idm", matcher="hdd", device=device.type)
    interrupted_run(cfg, tmp_path / "run", 2, final_eval=False)
    state = load_tensors(str(tmp_path / "run" / "checkpoint.pt"))
    assert tensors_off_device(state, "cpu") == []
    run_distillation(cfg, str(tmp_path / "run"), resume=True, progress=False, final_eval=False)
    assert tensors_off_device(load_tensors(str(tmp_path / "run" / "synset.pt")), "cpu") == []


@pytest.mark.skipif(not HAS_CUDA, reason="torch sees no CUDA GPU")
def test_a_cuda_run_resumes_on_the_cpu_and_back(tmp_path):
    cfg = tiny(matcher="hdd", centroid="karcher", iterations=6, checkpoint_every=2, device="cuda")
    whole = tmp_path / "whole"
    run_distillation(cfg, str(whole), progress=False, final_eval=False)
    part = tmp_path / "part"
    interrupted_run(cfg, part, 2, final_eval=False)
    interrupted_run(DistillConfig(device="cpu"), part, 4, resume=True, final_eval=False)
    run_distillation(DistillConfig(device="cuda"), str(part), resume=True, progress=False, final_eval=False)
    a = load_tensors(str(whole / "synset.pt"))["params"]
    b = load_tensors(str(part / "synset.pt"))["params"]
    assert torch.allclose(a, b, atol=1e-3), float((a - b).abs().max())  # rounding differs between devices


def test_resume_may_move_to_another_device_but_not_change_amp(tmp_path, capsys):
    out = tmp_path / "run"
    interrupted_run(tiny(iterations=3, device="auto"), out, 2, final_eval=False)
    assert main(["distill", "--out", str(out), "--resume", "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["distill", "--out", str(out), "--resume", "--amp", "bf16", "--quiet"]) == 2
    assert "drop --amp" in capsys.readouterr().err


# ----------------------------------------------------------------------------- geometry agrees across devices
def _features(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(3, 64, 48, generator=g, dtype=torch.float64)
    real[0] *= 3.0  # |v| ~ 21 > 10: these lifts are clipped at max_norm 10; the others are not
    syn = torch.randn(3, 5, 48, generator=g, dtype=torch.float64) * 0.7
    return real.to(device).requires_grad_(True), syn.to(device).requires_grad_(True)


def _rel(a, b) -> float:
    """``|a - b| / |b|`` in the Frobenius norm (element-wise tolerances fail on small entries of a gradient
    whose error is set by its largest ones)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize("centroid", ["law", "karcher"])
def test_hdd_loss_and_its_gradients_agree_with_the_cpu(device, centroid):
    M = geoopt.Lorentz(k=1.0)
    out = {}
    for where in ("cpu", device):
        real, syn = _features(where)
        loss = hdd_loss(real, syn, M, scale=20.0, centroid=centroid, max_norm=10.0)
        loss.backward()
        out[str(where)] = (loss.detach().cpu(), real.grad.cpu(), syn.grad.cpu())
    for a, b in zip(out["cpu"], out[str(device)]):
        assert _rel(b, a) <= 1e-10


def test_lift_and_centroids_stay_on_the_device_and_agree(device):
    M = geoopt.Lorentz(k=1.0)
    real, _ = _features(device)
    cpu_real, _ = _features("cpu")
    z, zc = lift(real, M, max_norm=10.0), lift(cpu_real, M, max_norm=10.0)
    assert _rel(z, zc) <= 1e-12
    for f in (law_centroid, karcher_mean):
        c, cc = f(z, M), f(zc, M)
        assert tensors_off_device(c, device) == []
        assert _rel(c, cc) <= 1e-10


# ----------------------------------------------------------------------------- autocast, determinism, syncs
def test_bf16_autocast_runs_the_networks_in_bf16_and_the_losses_in_float(device):
    if device.type == "cpu" and not hasattr(torch, "autocast"):
        pytest.skip("no autocast")
    full, half = [tiny(device=device.type, matcher="hdd", amp=amp) for amp in ("none", "bf16")]
    losses = {}
    for cfg in (full, half):
        dataset, pool, matcher = prepare(cfg)
        method = build_method("dm", cfg, dataset, pool, matcher)
        syn = method.init_synset(torch.Generator().manual_seed(0))
        net = method.network(0, torch.Generator().manual_seed(0))
        f_real, f_syn = method.features(net, syn, torch.Generator().manual_seed(1))
        assert f_real.dtype == f_syn.dtype == torch.float32
        loss, _, _ = method.step(0, syn)
        loss.backward()
        assert torch.isfinite(syn.images.grad).all()
        losses[cfg.amp] = float(loss.detach())
    assert losses["bf16"] != losses["none"]  # bf16 really ran ...
    assert abs(losses["bf16"] - losses["none"]) < 0.05 * abs(losses["none"])  # ... and is close


def test_bf16_evaluation_trains_and_tests(device):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 4
    res = train_and_test(x, y, x, y, epochs=3, batch_size=16, device=device, amp="bf16")
    assert 0 <= res["acc"] <= 1 and res["train_loss"] == res["train_loss"]


def test_deterministic_mode_is_scoped_and_changes_nothing_on_the_cpu(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic(True):
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() == before
    a, b = tmp_path / "a", tmp_path / "b"
    run_distillation(tiny(matcher="hdd", device="cpu"), str(a), progress=False, final_eval=False)
    run_distillation(tiny(matcher="hdd", device="cpu", deterministic=True), str(b), progress=False, final_eval=False)
    assert torch.equal(load_tensors(str(a / "synset.pt"))["params"], load_tensors(str(b / "synset.pt"))["params"])
    assert torch.are_deterministic_algorithms_enabled() == before


def test_read_back_returns_every_value_and_the_flag_in_one_go():
    flag, values = read_back(torch.tensor(True), {"loss": torch.tensor(2.5), "ce": 0.25, "gap": torch.tensor([1.5])})
    assert flag is True and values == {"loss": 2.5, "ce": 0.25, "gap": 1.5}
    assert read_back(torch.tensor(True), {"iters": 12})[1]["iters"] == 12  # a number is left as it is
    assert read_back(torch.tensor(False), {"loss": torch.tensor(float("nan"))})[0] is False


def test_maybe_any_reads_the_cpu_and_does_not_read_an_accelerator():
    assert maybe_any(torch.tensor([False, True])) and not maybe_any(torch.tensor([False, False]))
    # a tensor without data (meta) cannot be read: True comes back without looking
    assert maybe_any(torch.zeros(3, dtype=torch.bool, device="meta"))


def test_available_devices_lists_the_cpu_first():
    have = devices.available_devices()
    assert have[0] == "cpu" and len(have) == 1 + (torch.cuda.device_count() if HAS_CUDA else 0)


def test_a_pool_built_on_the_cpu_is_uploaded_once(device):
    cfg = tiny(device=device.type)
    dataset, pool, matcher = prepare(tiny(device="cpu"))
    method = build_method("dm", cfg, dataset, pool, matcher)
    assert tensors_off_device(method.pool, device) == []
    assert method.pool.indices is pool.indices  # the index lists are shared, not copied
    assert (method.pool is pool) == (device.type == "cpu")


def test_run_directories_written_before_the_device_fields_are_still_reused_and_resumed(tmp_path):
    """config.json and checkpoints of an older hddgeo lack device/amp/deterministic: they mean the defaults."""
    import json

    from hddgeo.rundir import save_tensors

    out = tmp_path / "run"
    interrupted_run(tiny(iterations=3), out, 2, final_eval=False)
    for name in ("config.json",):
        cfg = json.loads((out / name).read_text())
        for key in ("device", "amp", "deterministic"):
            cfg.pop(key)
        (out / name).write_text(json.dumps(cfg))
    state = load_tensors(str(out / "checkpoint.pt"))
    for key in ("device", "amp", "deterministic"):
        state["config"].pop(key)
    save_tensors(state, str(out / "checkpoint.pt"))
    metrics = run_distillation(tiny(iterations=3), str(out), resume=True, progress=False, final_eval=False)
    assert metrics["iterations"] == 3


# ----------------------------------------------------------------------------- torchrun, process settings
def _fake_gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_a_rank_that_sees_one_gpu_takes_it_and_one_without_a_gpu_is_refused(monkeypatch):
    """A scheduler that sets CUDA_VISIBLE_DEVICES per task shows each rank one GPU, cuda:0, whatever its
    LOCAL_RANK; several GPUs but fewer than the ranks is a launch error, said in one line."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-3")  # the scheduler's: this rank's own GPU
    _fake_gpus(monkeypatch, 1)
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 0)
    _fake_gpus(monkeypatch, 2)
    with pytest.raises(ValueError, match=r"LOCAL_RANK 3 has no GPU of its own: this process sees 2 \(cuda:0, cuda:1\)"):
        resolve_device("cuda")
    monkeypatch.setenv("WORLD_SIZE", "x")  # not torchrun's: a single process
    assert resolve_device("cuda") == torch.device("cuda", 0)


def _no_cublas_setting(monkeypatch):
    """CUBLAS_WORKSPACE_CONFIG unset for the test, and as it was afterwards (whatever the test sets)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")


def test_configure_process_sets_cublas_whether_or_not_cuda_has_started(monkeypatch):
    """torch reads CUBLAS_WORKSPACE_CONFIG when cuBLAS first allocates its workspace, not when CUDA starts; every
    path starts CUDA before (resolve_device, torchrun's set_device, a worker's pin), so an initialised CUDA is no
    reason to refuse.  Before, this raised a ValueError and stopped gpu_check.py before its first step."""
    _no_cublas_setting(monkeypatch)
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        devices.configure_process(deterministic_kernels=True, tf32=True, device=torch.device("cuda", 0))
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert devices.tf32_settings() == {"tf32_conv": True, "tf32_matmul": True}
        devices.configure_process(deterministic_kernels=True, tf32=False, device=torch.device("cuda", 0))
        assert devices.tf32_settings() == {"tf32_conv": False, "tf32_matmul": False}
        # auto (None): torch's own defaults, convolutions in TF32 and matmuls not
        devices.configure_process(tf32=None, device=torch.device("cuda", 0))
        assert devices.tf32_settings() == {"tf32_conv": True, "tf32_matmul": False}
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own setting is kept
        devices.configure_process(deterministic_kernels=True, device=torch.device("cuda", 0))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def test_a_run_configures_the_process_before_its_first_device_work(tmp_path, monkeypatch):
    """CUBLAS_WORKSPACE_CONFIG and the TF32 flags are in place when the run loads its data onto the device (the
    first CUDA work of a run; DANCE's experts train right after); metrics.json records what held."""
    import json
    import os

    from hddgeo.distill import runner

    _no_cublas_setting(monkeypatch)
    seen, original = [], runner.prepare

    def prepare(cfg):
        seen.append((os.environ.get("CUBLAS_WORKSPACE_CONFIG"), devices.tf32_settings()))
        return original(cfg)

    monkeypatch.setattr(runner, "prepare", prepare)
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        run_distillation(tiny(deterministic=True, tf32=True, device="cpu"), str(tmp_path / "a"), progress=False,
                         final_eval=False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert seen == [(":4096:8", {"tf32_conv": True, "tf32_matmul": True})]
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["deterministic"] is True and metrics["tf32_conv"] is True and metrics["tf32_matmul"] is True
    assert json.loads((tmp_path / "a" / "config.json").read_text())["tf32"] is True


def test_tf32_is_part_of_a_run(tmp_path, capsys):
    """TF32 changes what a CUDA run computes: a resume may not switch it (as --amp), and it is a study axis."""
    out = tmp_path / "run"
    assert main(["distill", "--iterations", "2", "--checkpoint-every", "1", "--final-eval-epochs", "0", "--quiet",
                 "--device", "cpu", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["distill", "--out", str(out), "--resume", "--tf32", "--quiet"]) == 2
    assert "tf32" in capsys.readouterr().err


@pytest.mark.parametrize("initialised", [False, True])
def test_deterministic_idm_on_cuda_is_refused_naming_the_op(tmp_path, monkeypatch, capsys, initialised):
    """IDM's factored synthetic set is upsampled by F.interpolate, whose CUDA backward has no deterministic
    kernel: --deterministic refuses it in one line before anything is written (torch would raise mid-run).  Also
    when CUDA has already started in this process, as earlier CUDA tests leave it (then the workspace check of
    configure_process used to answer first, with another message)."""
    _fake_gpus(monkeypatch, 1)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialised)
    _no_cublas_setting(monkeypatch)
    out = tmp_path / "run"
    code = main(["distill", "--method", "idm", "--deterministic", "--device", "cuda", "--iterations", "1",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "F.interpolate" in err[0] and "--deterministic" in err[0], err
    assert not out.exists()


def test_two_ranks_on_a_node_with_one_gpu_are_refused(monkeypatch):
    """torchrun --nproc_per_node=2 on a one-GPU node: both ranks see the same GPU (CUDA_VISIBLE_DEVICES unset), and
    putting both on cuda:0 makes NCCL fail or hang; rank 1 is refused in one line saying what to do."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _fake_gpus(monkeypatch, 1)
    with pytest.raises(ValueError, match=r"LOCAL_RANK 1 would share cuda:0 with LOCAL_RANK 0.*--nproc_per_node=1") as e:
        resolve_device("cuda")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("cuda") == torch.device("cuda", 0)  # rank 0 has the GPU


def test_the_nccl_process_group_is_bound_to_the_ranks_gpu(monkeypatch):
    """init_process_group gets device_id (the rank's GPU), after set_device."""
    from hddgeo.distill import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("HDDGEO_BACKEND", raising=False)
    _fake_gpus(monkeypatch, 2)
    seen = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.setdefault("set_device", d))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: seen.setdefault("init", kw))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed, "_COMM_DEVICE", torch.device("cpu"))
    monkeypatch.setattr(distributed, "_STARTED", False)
    assert distributed.setup("cuda") == (1, 2)
    assert seen["set_device"] == torch.device("cuda", 1)
    assert seen["init"]["backend"] == "nccl" and seen["init"]["device_id"] == torch.device("cuda", 1)


def test_resolving_cuda_does_not_start_cuda(monkeypatch):
    """A study's parent checks every cell's device (study.check_cells -> resolve_device): that must not start CUDA
    (torch.cuda.current_device would, and the parent would hold a context on GPU 0 for the whole study)."""
    _fake_gpus(monkeypatch, 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)

    def starts_cuda():
        raise AssertionError("torch.cuda.current_device called before CUDA started")

    monkeypatch.setattr(torch.cuda, "current_device", starts_cuda)
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # started: torch's current device
    assert resolve_device("cuda") == torch.device("cuda", 1)


def test_a_gpu_worker_takes_its_share_of_the_cpu_threads(monkeypatch):
    import os

    from hddgeo.distill import executors

    monkeypatch.setenv("HDDGEO_WORKER_DEVICE", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    executors._pin("cuda:0", 4)
    assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 4)
    assert os.environ["HDDGEO_WORKER_DEVICE"] == "cuda:0"


def test_an_evaluation_network_leaves_the_cuda_generators_alone(monkeypatch):
    """No CUDA generator is used by an evaluation (networks are drawn on the CPU): none is forked (fork_rng(devices=
    all) read every GPU's state, starting a context on each) or reseeded (torch.manual_seed reseeds all of them)."""
    from cuda_shim import pretend_cuda

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.arange(8) % 2
    ref = train_and_test(x, y, x, y, num_classes=2, epochs=2, seed=3)
    with pretend_cuda(monkeypatch, devices=2) as calls:
        got = train_and_test(x, y, x, y, num_classes=2, epochs=2, seed=3, device="cuda:1")
    assert calls["get_rng_state"] == 0 and calls["manual_seed_all"] == 0 and calls["manual_seed"] == 0
    assert got == ref  # the same seeded network and batches


def test_tf32_auto_and_off_are_one_run_to_a_study(tmp_path):
    """Run directories written before --tf32 auto existed say tf32 false (then the default, and computed on the
    CPU): a study asking for the default now reuses them; on is another run."""
    from hddgeo.distill.runner import config_differences

    cfg = tiny_config()
    assert cfg.tf32 is None
    saved = {**cfg.to_json(), "tf32": False}
    assert config_differences(cfg, saved) == {}
    assert set(config_differences(cfg, {**saved, "tf32": True})) == {"tf32"}
