"""Distillation pipeline: shared step, centroid switch, resume exactness, run directory, CLI errors."""
import json

import pytest
import torch
from conftest import tiny_config

from hddgeo.cli import main
from hddgeo.distill import (
    build_method,
    paper_preset,
    partition_expand,
    partition_pack,
    prepare,
    run_distillation,
)
from hddgeo.distill._hooks import RunInterrupted, stop_after
from hddgeo.losses import Matcher


tiny = tiny_config


def test_partition_expand_and_pack_roundtrip_layout():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    tiles = partition_expand(x, 2)
    assert tiles.shape == (8, 1, 4, 4)
    # tile 1 of image 0 is its top-right 2x2 block, upsampled: its mean equals the block's mean
    assert torch.allclose(tiles[1].mean(), x[0, 0, :2, 2:].mean(), atol=1e-5)
    # packing four constant images puts each constant into its own quadrant
    consts = torch.stack([torch.full((1, 4, 4), float(v)) for v in range(4)])
    packed = partition_pack(consts, 2)
    assert packed.shape == (1, 1, 4, 4)
    assert packed[0, 0, 0, 0] == 0 and packed[0, 0, 0, 3] == 1 and packed[0, 0, 3, 0] == 2 and packed[0, 0, 3, 3] == 3
    assert torch.allclose(partition_expand(packed, 2), consts, atol=1e-6)


def test_matcher_switch_changes_only_the_loss():
    torch.manual_seed(0)
    fr, fs = torch.randn(3, 20, 16), torch.randn(3, 5, 16)
    e, parts_e = Matcher("euclidean")(fr, fs)
    assert torch.allclose(e, ((fr.mean(1) - fs.mean(1)) ** 2).sum())
    law, _ = Matcher("hdd", "law", max_norm=None)(fr, fs)
    kar, _ = Matcher("hdd", "karcher", max_norm=None)(fr, fs)
    assert law > 0 and kar > 0 and not torch.isclose(law, kar)
    both, parts = Matcher("both", "law", max_norm=None, euclidean_weight=0.5, hdd_weight=2.0)(fr, fs)
    assert torch.allclose(both, 0.5 * e + 2.0 * law, rtol=1e-5)
    assert set(parts) == {"euclidean", "hdd"}


@pytest.mark.parametrize("centroid", ["law", "karcher", "tangent"])
def test_dm_step_gives_finite_gradients_to_synthetic_images(centroid):
    cfg = tiny(matcher="hdd", centroid=centroid, max_norm=None)
    dataset, pool, matcher = prepare(cfg)
    method = build_method("dm", cfg, dataset, pool, matcher)
    syn = method.init_synset(torch.Generator().manual_seed(0))
    loss, parts, _ = method.step(0, syn)
    loss.backward()
    assert torch.isfinite(syn.images.grad).all() and syn.images.grad.abs().sum() > 0
    assert parts["hdd"] > 0


def test_same_iteration_draws_the_same_batch_for_every_centroid():
    """The centroid is a switch: with the same seed the network and real batch are identical."""
    feats = []
    for centroid in ("law", "karcher"):
        cfg = tiny(matcher="hdd", centroid=centroid)
        dataset, pool, matcher = prepare(cfg)
        method = build_method("dm", cfg, dataset, pool, matcher)
        syn = method.init_synset(torch.Generator().manual_seed(0))
        gen = torch.Generator().manual_seed(123)
        net = method.network(5, gen)
        feats.append(method.features(net, syn, gen))
    assert torch.equal(feats[0][0], feats[1][0]) and torch.equal(feats[0][1].detach(), feats[1][1].detach())


@pytest.mark.parametrize("method,matcher", [("dm", "hdd"), ("idm", "both")])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, method, matcher):
    cfg = tiny(method=method, matcher=matcher, centroid="karcher" if method == "dm" else "law", iterations=5,
               checkpoint_every=2)
    full = tmp_path / "full"
    run_distillation(cfg, str(full), progress=False, final_eval=False)
    part = tmp_path / "part"
    with pytest.raises(RunInterrupted), stop_after(3):
        run_distillation(cfg, str(part), progress=False, final_eval=False)
    assert not (part / "synset.pt").exists()
    run_distillation(cfg, str(part), resume=True, progress=False, final_eval=False)
    a = torch.load(full / "synset.pt", weights_only=True)
    b = torch.load(part / "synset.pt", weights_only=True)
    assert torch.equal(a["params"], b["params"])
    log_full = (full / "log.csv").read_text().splitlines()
    log_part = (part / "log.csv").read_text().splitlines()
    assert len(log_full) == len(log_part) == cfg.iterations + 1
    strip = lambda lines: [",".join(line.split(",")[:-1]) for line in lines]  # drop the seconds column
    assert strip(log_full) == strip(log_part)


@pytest.mark.parametrize("centroid", ["law", "karcher"])
def test_distillation_lowers_the_matching_loss_on_fixed_probe_networks(centroid):
    """Probe iterations (fixed networks and real batches) score the set before and after training."""
    cfg = tiny(matcher="hdd", centroid=centroid, ipc=2, dsa=False, batch_real=64, lr_img=1.0, scale=1.0)
    dataset, pool, matcher = prepare(cfg)
    method = build_method("dm", cfg, dataset, pool, matcher)
    syn = method.init_synset(torch.Generator().manual_seed(0))
    opt = torch.optim.SGD([syn.images], lr=cfg.lr_img, momentum=cfg.momentum)

    def probe():
        with torch.no_grad():
            return sum(float(method.step(10_000 + j, syn)[0]) for j in range(4)) / 4

    before = probe()
    for it in range(40):
        loss, _, _ = method.step(it, syn)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = probe()
    assert after < 0.93 * before, (before, after)


def test_run_directory_contents_and_periodic_evaluation(tmp_path):
    cfg = tiny(matcher="hdd", centroid="law", iterations=6, eval_every=3, eval_epochs=2)
    out = tmp_path / "run"
    metrics = run_distillation(cfg, str(out), progress=False)
    for name in ("config.json", "log.csv", "checkpoint.pt", "synset.pt", "synset.png", "metrics.json"):
        assert (out / name).exists(), name
    import pandas as pd

    log = pd.read_csv(out / "log.csv")
    assert len(log) == 6 and log["eval_acc"].notna().sum() == 2
    assert {"loss", "hdd", "seconds"} <= set(log.columns)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["acc_mean"] == metrics["acc_mean"] and 0 <= saved["acc_mean"] <= 1
    assert json.loads((out / "config.json").read_text())["centroid"] == "law"
    syn = torch.load(out / "synset.pt", weights_only=True)
    assert syn["images"].shape == (20, 1, 8, 8) and syn["train_labels"].tolist() == sorted(syn["train_labels"].tolist())


def test_idm_expands_each_stored_image_into_four(tmp_path):
    cfg = tiny(method="idm", matcher="euclidean", iterations=2)
    run_distillation(cfg, str(tmp_path / "idm"), progress=False, final_eval=False)
    syn = torch.load(tmp_path / "idm" / "synset.pt", weights_only=True)
    assert syn["params"].shape[0] == 20 and syn["images"].shape[0] == 80 and syn["factor"] == 2


def test_paper_preset_values_and_unknown_combination():
    p = paper_preset("dm", "fashionmnist", 10)
    assert (p["k"], p["scale"], p["lr_img"], p["iterations"]) == (1.0, 40.0, 1.0, 20000)
    assert paper_preset("idm", "cifar10", 1)["k"] == 3.0
    with pytest.raises(ValueError, match="lists no settings"):
        paper_preset("dm", "digits", 10)


@pytest.mark.parametrize("args,word", [
    (["--dataset", "nope"], "unknown dataset"),
    (["--method", "nope"], "unknown method"),
    (["--centroid", "median", "--matcher", "hdd"], "unknown centroid"),
    (["--ipc", "1000"], "IPC 1000"),
    (["--dataset", "cifar10", "--data-root", "/definitely/missing"], "not found"),
    (["--dataset", "cifar10"], "--data-root"),
    (["--k", "0"], "k must be positive"),
    (["--k", "-2"], "k must be positive"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, word):
    out = tmp_path / "run"
    code = main(["distill", "--out", str(out), "--iterations", "1", "--quiet"] + args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and word in err
    assert not out.exists()


def test_cli_refuses_to_overwrite_and_resume_needs_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["distill", "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert main(["distill", "--out", str(tmp_path / "none"), "--resume", "--quiet"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_cli_distill_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["distill", "--out", str(out), "--ipc", "1", "--iterations", "2", "--batch-real", "8",
                 "--matcher", "hdd", "--centroid", "karcher", "--final-eval-nets", "1", "--final-eval-epochs", "2",
                 "--quiet"])
    assert code == 0
    assert "dm+hdd/karcher" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--model", "alexnet", "--nets", "1", "--epochs", "1", "--quiet"]) == 0
    res = json.loads((out / "eval_alexnet.json").read_text())
    assert res["model"] == "alexnet" and len(res["accs"]) == 1


# ----------------------------------------------------------------------------- the exception family
def test_expected_failures_are_one_family_apart_from_value_errors(tmp_path, capsys):
    from hddgeo import errors

    for cls in (errors.RunDirBusy, errors.RunDirError, errors.NonFiniteError, errors.OutOfMemory, errors.StudyError,
                errors.ConfigTypeError):
        assert issubclass(cls, errors.HddgeoError) and not issubclass(cls, ValueError)
    assert issubclass(errors.ConfigTypeError, TypeError)  # a wrong type is a TypeError, as in Python
    with pytest.raises(errors.NonFiniteError, match="NaN or infinite"):
        run_distillation(tiny_config(lr_img=1e30, final_eval_epochs=0), str(tmp_path / "nan"), progress=False)
    with pytest.raises(errors.RunDirError, match="already exists"):
        run_distillation(tiny_config(), str(tmp_path / "nan"), progress=False)
    with pytest.raises(errors.RunDirError, match="cannot resume"):
        run_distillation(tiny_config(), str(tmp_path / "none"), resume=True, progress=False)
    with pytest.raises(errors.ConfigTypeError, match="ipc must be int"):
        tiny_config(ipc="2").validate()
    assert main(["distill", "--dataset", "digits", "--out", str(tmp_path / "nan"), "--quiet"]) == 2  # the family: 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err


def test_a_bug_is_not_mistaken_for_bad_input(monkeypatch):
    """A TypeError that is no ConfigTypeError (a bug) keeps its traceback: the command line does not turn it into
    status 2."""
    import hddgeo.cli as cli

    monkeypatch.setitem(cli.COMMANDS, "export", lambda args, given: None + 1)
    with pytest.raises(TypeError):
        cli.main(["export", "run", "out"])


# ----------------------------------------------------------------------------- method options
def test_each_method_options_are_typed_fields():
    from hddgeo.distill import DistillConfig
    from hddgeo.distill.dance import OPTION_DEFAULTS as DANCE
    from hddgeo.distill.geodm import OPTION_DEFAULTS as GEODM

    assert DistillConfig(method="dm").method_options() == {}
    assert DistillConfig(method="idm", idm_queue=3).method_options()["queue"] == 3
    dance = DistillConfig(method="dance").method_options()
    assert dance == DANCE  # one definition of the defaults: the method's
    geodm = DistillConfig(method="geodm").method_options()
    assert geodm == {**GEODM, "components": ",".join(GEODM["components"])}
    # --opt KEY=VALUE is the field METHOD_KEY, for every method
    assert DistillConfig(method="dance", options={"num_experts": 2}).dance_num_experts == 2
    assert DistillConfig(method="idm", options={"queue": 4}).idm_queue == 4
    with pytest.raises(TypeError, match="dm takes no --opt options"):
        DistillConfig(method="dm", options={"ot_weight": 1.0})
    with pytest.raises(TypeError, match="geodm_proj_dim must be int"):
        DistillConfig(method="geodm", geodm_proj_dim=1.5).validate()


def test_a_config_json_of_before_maps_its_options_to_the_fields():
    """Runs written while DANCE's and GeoDM's options were a dict load as the same runs (and reproduce)."""
    import glob
    import os

    from hddgeo.distill import DistillConfig
    from hddgeo.distill.config import config_differences

    old = {**DistillConfig(method="dance").to_json(), "options": {"num_experts": 2, "expert_epochs": 1}}
    for name in DistillConfig(method="dance").method_options():
        del old["dance_" + name]
    cfg = DistillConfig.from_json(old)
    assert (cfg.dance_num_experts, cfg.dance_expert_epochs, cfg.dance_expert_lr) == (2, 1, 0.01)
    assert config_differences(cfg, old) == {}
    assert config_differences(DistillConfig(method="dance"), old) == {
        "dance_num_experts": (2, 3), "dance_expert_epochs": (1, 5)}
    geodm = DistillConfig.from_json({"method": "geodm", "options": {"components": ["spherical", "euclidean"]}})
    assert geodm.geodm_components == "spherical,euclidean"
    root = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "results")
    committed = sorted(glob.glob(os.path.join(root, "**", "config.json"), recursive=True))[:12]
    for path in committed:  # every committed run directory still describes the run it holds
        with open(path) as fh:
            saved = json.load(fh)
        assert config_differences(DistillConfig.from_json(saved, source=path), saved) == {}, path


def test_cli_opt_sets_the_methods_field(tmp_path, capsys):
    assert main(["distill", "--method", "geodm", "--opt", "ot_lambda=1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown geodm option(s) 'ot_lambda'; valid keys: proj_dim" in err
    assert not (tmp_path / "x").exists()
