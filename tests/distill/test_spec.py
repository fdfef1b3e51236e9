"""Study specs (``hddgeo study SPEC``): the demo spec gives the cells of the code it replaced and the verdict spec
those of its committed run directories (names and configurations), bad specs are one line before anything is
written, axes, and the local executor's placement of cells on GPUs (torch's CUDA queries monkeypatched; the workers
are real spawned processes)."""
import dataclasses
import os
import time

import pytest
import torch

from hddgeo.cli import main
from hddgeo.distill import DistillConfig
from hddgeo.distill import executors
from hddgeo.distill.executors import Cell
from hddgeo.distill.runner import config_differences
from hddgeo.distill.spec import load_spec, shipped_specs
from hddgeo.distill.study import DEFAULT_VARIANTS, check_cells, study_cells

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _same(spec_cells, ref_cells):
    assert [c.run_dir for c in spec_cells] == [c.run_dir for c in ref_cells]
    assert [c.kind for c in spec_cells] == [c.kind for c in ref_cells]
    for a, b in zip(spec_cells, ref_cells):
        assert a.cfg.to_json() == b.cfg.to_json(), a.name


def test_demo_spec_is_the_demo():
    # the cells `hddgeo demo` ran before it became a spec (its base, DEFAULT_VARIANTS, --jobs 2 one-thread cells)
    base = DistillConfig(dataset="digits", method="dm", iterations=100, batch_real=64, scale=1.0, final_eval_nets=3,
                         final_eval_epochs=200, checkpoint_every=50, device="auto")
    ref = study_cells(base, "results/demo", [1, 10], DEFAULT_VARIANTS, [0, 1, 2], True, None, one_thread=True)
    cells = load_spec("demo").cells(overrides={"device": "auto"})
    _same(cells, ref)
    assert len(cells) == 24 and cells[0].name == "ipc1_random_seed0" and cells[3].name == "ipc1_dm_hdd-karcher_seed0"


def test_verdict_spec_reuses_the_committed_cells():
    """Every run directory the script has written (read, not touched) is the spec's cell of that name."""
    runs = os.path.join(REPO, "experiments", "results", "fashionmnist_verdict", "runs")
    if not os.path.isdir(runs):
        pytest.skip("no verdict cells in this checkout")
    import json

    cells = {c.name: c for c in load_spec("fashionmnist_verdict").cells(seeds=list(range(10)))}
    checked = 0
    for name in sorted(os.listdir(runs)):
        path = os.path.join(runs, name, "config.json")
        if not os.path.isfile(path):
            continue
        assert name in cells, name
        with open(path) as fh:
            cfg = cells[name].cfg
            if cells[name].kind == "baseline":  # as baseline_cell keeps it
                cfg = dataclasses.replace(cfg, matcher="euclidean", iterations=1)
            assert config_differences(cfg, json.load(fh)) == {}, name
        checked += 1
    assert checked


def test_every_shipped_spec_loads_and_validates():
    for path in shipped_specs():
        spec = load_spec(path)
        check_cells(spec.cells(out_dir="/nonexistent/study", profile="quick" if "quick" in spec.profiles else None))


def test_axes_are_a_product_with_tags(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('ipc = [1]\nseeds = [0, 1]\nbaseline = true\n[config]\nk = [0.5, 2.0]\nmax_norm = [10.0, "none"]\n'
                    '[[variants]]\nmatcher = "hdd"\ncentroid = "karcher"\ntag = "x"\n')
    cells = load_spec(str(path)).cells(out_dir=str(tmp_path / "out"))
    names = [c.name for c in cells]
    assert names[:5] == ["ipc1_random_seed0", "ipc1_dm_hdd-karcher@x-k0.5-max_norm10_seed0",
                         "ipc1_dm_hdd-karcher@x-k0.5-max_normnone_seed0", "ipc1_dm_hdd-karcher@x-k2-max_norm10_seed0",
                         "ipc1_dm_hdd-karcher@x-k2-max_normnone_seed0"]
    assert len(cells) == 2 * 5 and cells[2].cfg.max_norm is None and cells[3].cfg.k == 2.0
    assert all(c.cfg.threads == 1 for c in cells)
    check_cells(cells)


@pytest.mark.parametrize("text, message", [
    ("[config]\niterationz = 3\n", "unknown field 'iterationz'"),
    ("[config]\niterations = -1\n", "iterations must be at least 1"),
    ("[ipc_config.1]\nk = [1.0, 2.0]\n", "grid axes"),
    ("[[variants]]\nmatcher = \"hdd\"\n[[variants]]\nmatcher = \"hdd\"\n", "give one of the variants a tag"),
    ("[config]\nmodel = [\"convnet\", \"alexnet\"]\n", "changes the random baseline"),
    ("seeds = [0, 0]\n", "--seeds"),
    ("[stages.a]\nvariants = [\"dm+hdd/law\"]\n", "no variant's label"),
    ("iterations = 3\n", "unknown key 'iterations'"),
    ("[config\n", "not valid TOML"),
])
def test_bad_specs_are_one_line_and_write_nothing(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out), "--stage", "a"] if "stages" in text
                else ["study", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


# ------------------------------------------------------------------------- the local executor's placement
def record_device(kind, cfg, run_dir, resume, progress):
    """A stand-in cell (runs in the spawned worker): who ran it, on which device, when."""
    start = time.time()
    time.sleep(0.3)
    return {"pid": os.getpid(), "device": cfg.device, "pinned": os.environ.get("HDDGEO_WORKER_DEVICE"),
            "start": start, "end": time.time()}


def _fake_gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_local_executor_puts_one_cell_per_gpu_at_a_time(monkeypatch, tmp_path):
    _fake_gpus(monkeypatch, 2)
    cells = [Cell("distill", DistillConfig(seed=s, device="auto"), str(tmp_path / f"c{s}")) for s in range(5)]
    cells.append(Cell("distill", DistillConfig(seed=9, device="cuda:1"), str(tmp_path / "c9")))
    assert executors.plan_slots(cells) == ["cuda:0", "cuda:1"]
    assert executors.plan_slots(cells, jobs=1) == ["cuda:0", "cuda:1"]  # cuda:1 is named by a cell
    results = executors.run_local(cells, progress=False, task=record_device)
    assert {r["device"] for r in results} == {"cuda:0", "cuda:1"}
    assert all(r["device"] == r["pinned"] for r in results)  # each process pinned to the device of its cells
    assert results[-1]["device"] == "cuda:1"
    by_pid = {}
    for r in results:
        by_pid.setdefault(r["pid"], set()).add(r["device"])
    assert len(by_pid) == 2 and all(len(d) == 1 for d in by_pid.values())  # one process per GPU
    for gpu in ("cuda:0", "cuda:1"):  # never two cells on one GPU at a time
        spans = sorted((r["start"], r["end"]) for r in results if r["device"] == gpu)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), gpu


def test_local_executor_mixes_cpu_and_gpu_cells(monkeypatch, tmp_path):
    _fake_gpus(monkeypatch, 1)
    cells = [Cell("distill", DistillConfig(seed=s, device=d), str(tmp_path / f"c{s}"))
             for s, d in enumerate(["cpu", "cuda", "cpu"])]
    assert executors.plan_slots(cells, jobs=2) == ["cuda:0", "cpu", "cpu"]
    results = executors.run_local(cells, jobs=2, progress=False, task=record_device)
    assert [r["device"] for r in results] == ["cpu", "cuda:0", "cpu"]
    assert [r["pinned"] for r in results][1] == "cuda:0" and {results[0]["pinned"], results[2]["pinned"]} == {"cpu"}


def test_no_gpu_asked_for_cuda_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        executors.plan_slots([Cell("distill", DistillConfig(device="cuda"), str(tmp_path / "c"))])


def test_the_estimate_counts_what_is_left_of_final_and_periodic_evaluations(tmp_path):
    """Cells that evaluate every 250 of 2,000 iterations owe 8 periodic evaluations; one resumed at iteration 500
    owes 6 (its log says where it stands)."""
    from hddgeo.distill.spec import estimate, load_spec

    spec = load_spec("fashionmnist_verdict_v2")
    cells = [c for c in spec.cells(out_dir=str(tmp_path), stage="budget1") if c.kind == "distill"][:2]
    est = estimate(cells)
    per_cell = 8 * 2 * 300 + cells[0].cfg.final_eval_nets * cells[0].cfg.final_eval_epochs
    assert est["network_epochs"] == 2 * per_cell and est["iterations"] == 4000
    run = tmp_path / "runs" / cells[0].name
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "log.csv").write_text("iteration,loss\n" + "".join(f"{i},1\n" for i in range(1, 501)))
    est = estimate(cells)
    assert est["resume"] == 1 and est["iterations"] == 4000 - 500
    assert est["network_epochs"] == 2 * per_cell - 2 * 2 * 300


def test_the_estimate_prices_steps_and_evaluations_at_the_finished_cells_rates(tmp_path):
    import json

    from hddgeo.distill.spec import estimate, load_spec

    spec = load_spec("fashionmnist_verdict_v2")
    cells = [c for c in spec.cells(out_dir=str(tmp_path), stage="pilot1") if c.kind == "distill"][:3]
    done = tmp_path / "runs" / cells[0].name
    done.mkdir(parents=True)
    (done / "metrics.json").write_text(json.dumps({"seconds_per_iteration": 0.9, "final_eval_seconds": 480.0,
                                                   "accs": [0.7] * 8, "eval_epochs": 300}))
    est = estimate(cells)
    per_cell = 200 * 0.9 + 8 * 300 * (480.0 / (8 * 300))
    assert est["finished"] == 1 and est["hours"] == pytest.approx(2 * per_cell / 3600)


def test_a_stage_before_it_starts_is_priced_at_the_folders_other_cells_median_rates(tmp_path):
    """No cell of stage prune1 is finished: its hours come from the earlier stages' cells in the same folder, at the
    medians (a cell that shared its core ran 10x slower and must not set the price); files that are not a finished
    cell's metrics (garbage, a directory, a baseline's null rate) add nothing; IPC 10 borrows IPC 1's rates."""
    import json
    import os

    from hddgeo.distill.spec import describe_estimate, estimate, load_spec

    spec = load_spec("fashionmnist_verdict_v2")
    runs = tmp_path / "runs"
    for name, spi, spent in (("a", 1.0, 240.0), ("b", 1.0, 240.0), ("c", 10.0, 2400.0)):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps({"ipc": 1, "seconds_per_iteration": spi, "accs": [0.7] * 4,
                                                               "final_eval_seconds": spent, "eval_epochs": 300}))
    (runs / "random").mkdir()
    (runs / "random" / "metrics.json").write_text(json.dumps({"ipc": 1, "seconds_per_iteration": None, "accs": [0.5],
                                                              "final_eval_seconds": 1e6, "eval_epochs": 300}))
    (runs / "garbage").mkdir()
    (runs / "garbage" / "metrics.json").write_text("{not json")
    (runs / "dir" / "metrics.json").mkdir(parents=True)
    if hasattr(os, "mkfifo"):
        (runs / "fifo").mkdir()
        os.mkfifo(runs / "fifo" / "metrics.json")  # would block a plain open()
    # numbers no cell wrote: a rate too large for a float, 1e308 (whose median overflows), JSON nested too deeply for
    # the parser, a link to a file outside the folder: none may crash the study or set its price
    for name, text in (("huge", '{"ipc": 1, "seconds_per_iteration": 1' + "0" * 400 + "}"),
                       ("big1", '{"ipc": 1, "seconds_per_iteration": 1e308, "final_eval_seconds": 1e308, '
                                '"accs": [1], "eval_epochs": 1}'),
                       ("big2", '{"ipc": 1, "seconds_per_iteration": 1e308, "accs": [1], "eval_epochs": 1' + "0" * 400
                        + ', "final_eval_seconds": 1}'),
                       ("deep", "[" * 100_000 + "]" * 100_000)):
        (runs / name).mkdir()
        (runs / name / "metrics.json").write_text(text)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"ipc": 1, "seconds_per_iteration": 999.0, "accs": [1], "eval_epochs": 1,
                                   "final_eval_seconds": 999.0}))
    (runs / "link").mkdir()
    (runs / "link" / "metrics.json").symlink_to(outside)
    cells = spec.cells(out_dir=str(tmp_path), stage="prune1")
    assert estimate(cells).get("hours") is None  # without the folder: nothing finished to time
    est = estimate(cells, str(tmp_path))
    left_epochs = sum(c.cfg.final_eval_nets * c.cfg.final_eval_epochs for c in cells)
    assert est["rates_from"] == "the folder's other finished cells" and est["borrowed_ipcs"] == []
    # medians: 1 s per iteration, 240 / (4 * 300) s per network-epoch (the random row's 1e6 s: a third value of 4)
    evals = sorted([0.2, 0.2, 2.0, 1e6 / 300])
    assert est["hours"] == pytest.approx((est["iterations"] * 1.0 + left_epochs * (evals[1] + evals[2]) / 2) / 3600)
    ten = estimate(spec.cells(out_dir=str(tmp_path), stage="pilot10"), str(tmp_path))
    assert ten["borrowed_ipcs"] == [10] and "other IPCs' rates" in describe_estimate(ten)



def test_a_stage_prices_each_methods_steps_at_that_methods_rate(tmp_path):
    """An IDM step costs about 2.5 DM steps: idm1 is priced at IDM's rate once an IDM cell of the folder has finished,
    and says which methods it priced at other methods' steps until then."""
    import json

    from hddgeo.distill.spec import describe_estimate, estimate, load_spec

    spec = load_spec("fashionmnist_verdict_v2")
    runs = tmp_path / "runs"

    def cell(name, method, spi):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps({"ipc": 1, "method": method, "seconds_per_iteration": spi,
                                                               "accs": [0.7] * 4, "final_eval_seconds": 120.0,
                                                               "eval_epochs": 300}))

    for i in range(3):
        cell(f"dm{i}", "dm+hdd/law", 1.0)
    cells = spec.cells(out_dir=str(tmp_path), stage="idm1")
    before = estimate(cells, str(tmp_path))
    assert before["borrowed_methods"] == ["idm"] and "idm: no finished cell to time its steps" in describe_estimate(before)
    cell("idm0", "idm+hdd/karcher@k2", 3.0)
    after = estimate(cells, str(tmp_path))
    assert after["borrowed_methods"] == [] and "no finished cell to time" not in describe_estimate(after)
    assert after["hours"] - before["hours"] == pytest.approx(after["iterations"] * (3.0 - 1.0) / 3600)
    # a stage of DM cells keeps DM's rate beside it
    dm = estimate(spec.cells(out_dir=str(tmp_path), stage="prune1"), str(tmp_path))
    left_epochs = dm["network_epochs"]
    assert dm["hours"] == pytest.approx((dm["iterations"] * 1.0 + left_epochs * 120.0 / 1200) / 3600)

# ------------------------------------------------------------------------- a pruned pool's own random row
PRUNED = ('ipc = [1]\nseeds = [0, 1]\nbaseline = true\n[config]\ndataset = "digits"\niterations = 1\nbatch_real = 8\n'
          'final_eval_nets = 1\nfinal_eval_epochs = 1\n[[variants]]\nmatcher = "euclidean"\n'
          '[[variants]]\nmatcher = "euclidean"\nprune_fraction = 0.2\ntag = "keep20"\n'
          '[[variants]]\nmatcher = "hdd"\ncentroid = "law"\nprune_fraction = 0.2\ntag = "keep20"\n'
          '[[variants]]\nmatcher = "euclidean"\nprune_fraction = 0.2\nprune_level = "random"\ntag = "keep20-random"\n'
          '[[claims]]\nclaim = "pruning helps DM beyond its pool"\na = "dm@keep20"\nb = "random@keep20"\n')


def test_a_pruned_variant_brings_its_pools_random_row(tmp_path):
    from hddgeo.distill.cell import initial_images
    from hddgeo.distill.config import describe_baseline

    path = tmp_path / "pruned.toml"
    path.write_text(PRUNED)
    spec = load_spec(str(path))
    assert spec.random_labels() == ["random", "random@keep20", "random@keep20-random"]
    assert spec.designs("random@keep20", 1) and not spec.designs("random@keep50", 1)
    cells = spec.cells(out_dir=str(tmp_path / "out"))
    names = [c.name for c in cells]
    # one random row per pool and seed, before the seed's distilled cells (the two keep20 variants share theirs)
    assert names[:7] == ["ipc1_random_seed0", "ipc1_random@keep20_seed0", "ipc1_random@keep20-random_seed0",
                         "ipc1_dm_seed0", "ipc1_dm@keep20_seed0", "ipc1_dm_hdd-law@keep20_seed0",
                         "ipc1_dm@keep20-random_seed0"]
    assert len(cells) == 2 * 7
    by_name = {c.name: c.cfg for c in cells}
    pruned, control, full = (by_name[f"ipc1_{n}_seed0"] for n in ("random@keep20", "random@keep20-random", "random"))
    assert describe_baseline(pruned) == "random@keep20" and describe_baseline(full) == "random"
    # the pruned row's images are the ones its distilled cells start from, and not the full pool's
    start = initial_images(pruned)
    assert torch.equal(start, initial_images(by_name["ipc1_dm@keep20_seed0"]))
    assert torch.equal(start, initial_images(by_name["ipc1_dm_hdd-law@keep20_seed0"]))
    assert not torch.equal(start, initial_images(full)) and not torch.equal(start, initial_images(control))

    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    import json

    import pandas as pd

    metrics = json.load(open(out / "runs" / "ipc1_random@keep20_seed1" / "metrics.json"))
    assert metrics["method"] == "random@keep20"
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["method"].unique()) == sorted(["random", "random@keep20", "random@keep20-random", "dm",
                                                       "dm@keep20", "dm+hdd/law@keep20", "dm@keep20-random"])
    paired = pd.read_csv(out / "results_paired.csv")
    pairs = set(zip(paired["a"], paired["b"]))
    assert ("dm@keep20", "random@keep20") in pairs and ("dm@keep20-random", "random@keep20-random") in pairs
    assert main(["compare", str(out), "--claims", str(path), "--out", str(tmp_path / "cmp")]) == 0
    assert "pruning helps DM beyond its pool" in (tmp_path / "cmp" / "compare.md").read_text()
    from test_experiments import load_script  # a committed random@TAG cell reruns as a random row, identically

    res = load_script("fashionmnist_verdict").rerun(str(out), "ipc1_random@keep20_seed1", str(tmp_path / "re"), False)
    assert res["identical"] and len(res["rerun"]) == 1


def test_pruned_variants_sharing_a_tag_must_prune_alike(tmp_path, capsys):
    path = tmp_path / "clash.toml"
    path.write_text(PRUNED.replace('centroid = "law"\nprune_fraction = 0.2', 'centroid = "law"\nprune_fraction = 0.5'))
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "share the random row random@keep20" in err and len(err.splitlines()) == 1
