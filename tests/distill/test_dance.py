"""DANCE: middle-encoder interpolation, the expert cache, an end-to-end run with HDD, resume exactness."""
import pytest
import torch
from conftest import assert_resume_reproduces

import hddgeo.distill.dance as dance
from hddgeo.data import load_dataset
from hddgeo.distill import DistillConfig, build_method, prepare, run_distillation
from hddgeo.distill.methods import fresh_network

# small enough for a shared 2-core CPU: two experts, one epoch each, trained once per module
EXPERT_OPTS = {"expert_epochs": 1, "num_experts": 2}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def expert_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("experts"))


def dance_cfg(cache, **kw):
    base = dict(dataset="digits", method="dance", ipc=1, iterations=3, batch_real=16, final_eval_nets=1,
                final_eval_epochs=1, matcher="hdd", centroid="karcher", threads=2,
                options={**EXPERT_OPTS, "expert_cache": cache})
    base.update(kw)
    return DistillConfig(**base)


def dance_method(cfg):
    dataset, pool, matcher = prepare(cfg)
    return build_method("dance", cfg, dataset, pool, matcher)


def hand_made_expert(digits):
    """An expert whose 'trained' weights are a seeded perturbation of its init (no training needed)."""
    net = fresh_network("convnet", digits, 3)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(4)
    trained = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in init.items()}
    net.load_state_dict(trained)
    return dance.Expert(seed=3, init=init, trained=trained, network=net.eval()), init, trained


def test_interpolated_encoder_equals_init_and_trained_networks_at_the_endpoints(digits):
    expert, init, trained = hand_made_expert(digits)
    x = digits.train_images[:16]
    init_net = fresh_network("convnet", digits, 3)
    init_net.load_state_dict(init)
    trained_net = fresh_network("convnet", digits, 3)
    trained_net.load_state_dict(trained)
    with torch.no_grad():
        assert torch.equal(dance.middle_encoder(expert, 1.0)(x), init_net(x))
        assert torch.equal(dance.middle_encoder(expert, 0.0)(x), trained_net(x))
        assert torch.equal(dance.middle_encoder(expert, 1.0).embed(x), init_net.embed(x))
        assert not torch.equal(dance.middle_encoder(expert, 0.5)(x), init_net(x))
    mid = dance.interpolate_state(init, trained, 0.5)
    for k in init:
        assert torch.allclose(mid[k], (init[k] + trained[k]) / 2, rtol=0, atol=1e-7)
    # pure: inputs untouched, the encoder is a new frozen module
    assert all(torch.equal(init[k], expert.init[k]) for k in init)
    enc = dance.middle_encoder(expert, 0.3)
    assert enc is not expert.network and not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dance.interpolate_state(init, trained, 1.5)


def test_interpolation_covers_buffers_and_keeps_integer_counters():
    a = torch.nn.BatchNorm1d(3)
    b = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        b.weight.fill_(3.0)
        b.running_mean.fill_(2.0)
    b.num_batches_tracked.fill_(7)
    out = dance.interpolate_state(a.state_dict(), b.state_dict(), 0.25)
    assert torch.allclose(out["weight"], torch.full((3,), 0.25 * 1 + 0.75 * 3))
    assert torch.allclose(out["running_mean"], torch.full((3,), 1.5))
    assert out["num_batches_tracked"].dtype == torch.int64 and int(out["num_batches_tracked"]) == 7
    assert int(dance.interpolate_state(a.state_dict(), b.state_dict(), 1.0)["num_batches_tracked"]) == 0


def test_unknown_option_lists_valid_keys(tmp_path):
    with pytest.raises(TypeError, match="valid keys: num_experts, expert_epochs"):
        dance_cfg(str(tmp_path), options={"num_expert": 2})  # an unknown key: the configuration refuses it
    with pytest.raises(TypeError, match="unknown dance option.*valid keys: num_experts"):
        DistillConfig.from_json({"method": "dance", "options": {"num_expert": 2}})  # a config.json of before
    with pytest.raises(ValueError, match="num_experts"):
        dance.parse_options({"num_experts": 0})
    with pytest.raises(ValueError, match="dance option num_experts must be an integer >= 1"):
        prepare(dance_cfg(str(tmp_path), options={**EXPERT_OPTS, "num_experts": 0}))  # a bad value, before any data is loaded
    assert not list(tmp_path.iterdir())  # nothing trained or written


def test_experts_are_cached_and_reused(tmp_path, digits, monkeypatch):
    calls = []

    def fake_train(model, dataset, seed, epochs, **kw):
        calls.append(seed)
        net = fresh_network(model, dataset, seed)
        sd = {k: v.clone() for k, v in net.state_dict().items()}
        return {"seed": seed, "init": sd, "trained": {k: v + 1.0 for k, v in sd.items()}, "train_loss": 0.0,
                "train_acc": 1.0}

    monkeypatch.setattr(dance, "train_expert", fake_train)
    opts = dance.parse_options({"num_experts": 2, "expert_epochs": 1})
    experts, path = dance.load_or_train_experts(digits, "convnet", opts, 0, None, cache_dir=str(tmp_path))
    assert len(calls) == 2 and len(experts) == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.rsplit("/", 1)[-1]]  # no temporary file left

    def must_not_train(*a, **k):
        raise AssertionError("experts retrained although cached")

    monkeypatch.setattr(dance, "train_expert", must_not_train)
    again, path2 = dance.load_or_train_experts(digits, "convnet", opts, 0, None, cache_dir=str(tmp_path))
    assert path2 == path
    for e, f in zip(experts, again):
        assert all(torch.equal(e.trained[k], f.trained[k]) and torch.equal(e.init[k], f.init[k]) for k in e.init)
    # another setting is another key
    monkeypatch.setattr(dance, "train_expert", fake_train)
    _, path3 = dance.load_or_train_experts(digits, "convnet", {**opts, "expert_epochs": 2}, 0, None,
                                           cache_dir=str(tmp_path))
    assert path3 != path and len(calls) == 4
    # a truncated cache file is retrained and rewritten, not trusted
    with open(path, "wb") as fh:
        fh.write(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        dance.load_or_train_experts(digits, "convnet", opts, 0, None, cache_dir=str(tmp_path))
    assert len(calls) == 6
    dance.load_or_train_experts(digits, "convnet", opts, 0, None, cache_dir=str(tmp_path))
    assert len(calls) == 6


def test_dance_with_hdd_karcher_runs_end_to_end(tmp_path, expert_cache, monkeypatch):
    cfg = dance_cfg(expert_cache)
    metrics = run_distillation(cfg, str(tmp_path / "run"), progress=False)
    assert metrics["method"] == "dance+hdd/karcher" and 0.0 <= metrics["acc_mean"] <= 1.0
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,loss,hdd,ce") and len(log) == cfg.iterations + 1
    syn = torch.load(tmp_path / "run" / "synset.pt", weights_only=True)
    assert torch.isfinite(syn["params"]).all()
    assert all(float(row.split(",")[3]) > 0 for row in log[1:])  # the calibration cross-entropy

    # the next run loads the cached experts instead of training them
    monkeypatch.setattr(dance, "train_expert", lambda *a, **k: pytest.fail("experts retrained although cached"))
    method = dance_method(cfg)
    assert len(method.experts) == 2 and method.cache_file.startswith(expert_cache)
    assert all(not p.requires_grad for e in method.experts for p in e.network.parameters())
    init = method.init_synset(torch.Generator().manual_seed(cfg.seed)).images.detach()
    assert not torch.equal(syn["params"], init)  # the images moved


def test_resume_reproduces_an_uninterrupted_run(tmp_path, expert_cache):
    cfg = dance_cfg(expert_cache, iterations=4, checkpoint_every=2, matcher="hdd", centroid="law")
    assert_resume_reproduces(cfg, tmp_path, final_eval=False)
