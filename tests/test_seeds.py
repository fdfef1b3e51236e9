"""Random streams (hddgeo.seeds): scheme 2 makes seeds independent replicates, scheme 1 keeps old runs' draws."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_resume_reproduces, interrupted_run, synset_params, tiny_config

from hddgeo.distill import DistillConfig, run_distillation
from hddgeo.seeds import IDM_TRAIN, SCHEMES, STEP, RunSeeds, derive, network_seeds

COMMITTED = Path(__file__).resolve().parents[1] / "experiments" / "results" / "fashionmnist_verdict" / "runs"


def _seed_of(gen: torch.Generator) -> int:
    return gen.initial_seed()


def test_scheme_1_is_the_derivation_of_the_runs_written_before_it():
    """The formulas of hddgeo before scheme 2, restated here: the committed v1 cells reproduce only with these."""
    for seed in (0, 1, 7, 123):
        s = RunSeeds(seed, 1)
        for it in (0, 1, 199):
            for stream in (STEP, IDM_TRAIN):
                assert _seed_of(s.iteration(it, stream)) == (seed * 1_000_003 + it) * 7 + stream
        assert _seed_of(s.init()) == seed
        assert s.eval_networks("final", 5) == [seed + 20_000 + j for j in range(5)]
        assert s.eval_networks("periodic", 2) == [seed + 10_000, seed + 10_001]
        assert s.prune_network() == seed + 777
        assert s.idm_queue(3) == seed * 7919 + 3
        assert s.expert(4) == (seed * 10_007 + 5_003 + 4) % (2**31 - 1)
        assert _seed_of(s.geodm_projection()) == seed * 1_000_003 + 271_828
        assert s.coreset(2) == (seed + 1) * 1_000_003 + 2
        gen = torch.Generator().manual_seed(5)
        expected = int(torch.randint(0, 2**31 - 1, (), generator=torch.Generator().manual_seed(5)))
        assert s.draw(gen) == expected


def test_scheme_1_overlaps_that_scheme_2_removes():
    """What the issue found: adjacent seeds shared 4 of 5 evaluation networks, and seed 0's first iteration was
    its initial-image generator."""
    one, two = RunSeeds(0, 1), RunSeeds(1, 1)
    assert len(set(one.eval_networks("final", 5)) & set(two.eval_networks("final", 5))) == 4
    assert _seed_of(one.iteration(0)) == _seed_of(one.init())
    one, two = RunSeeds(0, 2), RunSeeds(1, 2)
    assert not set(one.eval_networks("final", 5)) & set(two.eval_networks("final", 5))
    assert _seed_of(one.iteration(0)) != _seed_of(one.init())


def _streams(seed: int, iterations: int) -> list:
    s = RunSeeds(seed, 2)
    out = [_seed_of(s.iteration(it, stream)) for it in range(iterations) for stream in (STEP, IDM_TRAIN)]
    out += s.eval_networks("final", 20) + s.eval_networks("periodic", 20)
    out += [_seed_of(s.init()), s.prune_network(), _seed_of(s.prune_random()), _seed_of(s.geodm_projection()),
            s.coreset(1), s.coreset(2)]
    out += [s.idm_queue(i) for i in range(10)] + [s.expert(i) for i in range(20)]
    return out


def test_scheme_2_streams_of_seeds_0_to_999_are_pairwise_distinct():
    """Every stream a run uses (200 iterations of the step and of IDM's training, 20 final and 20 periodic
    evaluation networks, the initial images, pruning and its random control, GeoDM, coresets, a 10-network IDM queue, 20 DANCE experts)
    for seeds 0-999, and 2,000 iterations for seeds 0-19: no seed value occurs twice."""
    values = [v for seed in range(1000) for v in _streams(seed, 200)]
    values += [_seed_of(RunSeeds(seed, 2).iteration(it)) for seed in range(20) for it in range(200, 2000)]
    assert len(values) == 1000 * (400 + 40 + 6 + 30) + 20 * 1800
    assert len(set(values)) == len(values)
    assert all(0 <= v < 2**63 for v in values)  # what torch's manual_seed and JSON's signed integers take


def test_scheme_2_is_a_seed_sequence_hash_that_does_not_change():
    """The derivation is numpy's SeedSequence (a fixed, documented algorithm); a change here changes every run."""
    words = np.random.SeedSequence(3, spawn_key=(4, 0)).generate_state(2, np.uint32)
    assert RunSeeds(3, 2).eval_networks("final", 1) == [((int(words[0]) << 32) | int(words[1])) & (2**63 - 1)]
    assert derive(3, 4, 0) == RunSeeds(3, 2).eval_networks("final", 1)[0]
    assert derive(3, 4, 0) != derive(3, 3, 0) != derive(4, 4, 0)


def test_scheme_2_draws_from_a_stream_are_63_bit():
    """Network and DSA seeds drawn inside a stream: 2**31 values would meet by chance across ~10^5 draws (the
    birthday bound); 63 bits do not."""
    s = RunSeeds(0, 2)
    draws = [s.draw(s.iteration(it), 8) for it in range(2000)]
    flat = [v for d in draws for v in d]
    assert len(set(flat)) == len(flat) and max(flat) >= 2**40


def test_bad_seeds_and_schemes_are_refused():
    with pytest.raises(ValueError, match="seed scheme"):
        RunSeeds(0, 3)
    with pytest.raises(ValueError, match="non-negative"):
        RunSeeds(-1, 2)
    with pytest.raises(ValueError, match="seed-scheme"):
        tiny_config(seed_scheme=0).validate()
    with pytest.raises(ValueError, match="non-negative"):
        tiny_config(seed=-3).validate()
    assert network_seeds(5, 3) == [5, 6, 7] and network_seeds([9, 2], 2) == [9, 2]
    with pytest.raises(ValueError, match="3 networks need 3 seeds"):
        network_seeds([1, 2], 3)
    assert SCHEMES == (1, 2)


def test_a_configuration_without_a_scheme_is_scheme_1_and_a_new_one_scheme_2():
    cfg = json.loads((COMMITTED / "ipc1_dm_seed0" / "config.json").read_text())
    assert "seed_scheme" not in cfg
    assert DistillConfig.from_json(cfg).seed_scheme == 1
    assert DistillConfig().seed_scheme == 2
    assert DistillConfig.from_json({**cfg, "seed_scheme": 2}).seed_scheme == 2


def test_a_run_records_its_evaluation_networks_and_seeds_do_not_share_them(tmp_path):
    runs = {}
    for seed in (0, 1):
        cfg = tiny_config(seed=seed, iterations=2, final_eval_nets=3, final_eval_epochs=1)
        runs[seed] = run_distillation(cfg, str(tmp_path / f"s{seed}"), progress=False)
        assert runs[seed]["eval_seeds"] == RunSeeds(seed, 2).eval_networks("final", 3)
        saved = json.loads((tmp_path / f"s{seed}" / "metrics.json").read_text())
        assert saved["eval_seeds"] == runs[seed]["eval_seeds"]
    assert not set(runs[0]["eval_seeds"]) & set(runs[1]["eval_seeds"])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_schemes_differ_and_each_resumes_to_its_uninterrupted_run(tmp_path, scheme):
    cfg = tiny_config(seed_scheme=scheme, iterations=4, checkpoint_every=2, matcher="hdd")
    full, _ = assert_resume_reproduces(cfg, tmp_path, final_eval=False)
    other = tiny_config(seed_scheme=3 - scheme, iterations=4, checkpoint_every=2, matcher="hdd")
    run_distillation(other, str(tmp_path / "other"), progress=False, final_eval=False)
    assert not torch.equal(synset_params(full), synset_params(tmp_path / "other"))


def test_resume_keeps_the_saved_scheme(tmp_path):
    """A v1 run directory (no seed_scheme in its files) resumes as scheme 1, not as today's default."""
    cfg = tiny_config(seed_scheme=1, iterations=4, checkpoint_every=2)
    run_distillation(cfg, str(tmp_path / "full"), progress=False, final_eval=False)
    interrupted_run(cfg, tmp_path / "old", 2, final_eval=False)
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    del saved["seed_scheme"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    from hddgeo.rundir import load_tensors, save_tensors

    state = load_tensors(str(tmp_path / "old" / "checkpoint.pt"))
    del state["config"]["seed_scheme"]
    save_tensors(state, str(tmp_path / "old" / "checkpoint.pt"))
    run_distillation(tiny_config(iterations=4, checkpoint_every=2), str(tmp_path / "old"), resume=True,
                     progress=False, final_eval=False)
    assert torch.equal(synset_params(tmp_path / "full"), synset_params(tmp_path / "old"))
