"""Paired statistics over seeds (hddgeo.stats) and the compare command."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hddgeo import stats
from hddgeo.cli import main


def _long(per_seed: dict, nets: int = 3, ipc: int = 1, jitter: float = 0.0, seed0: int = 0) -> pd.DataFrame:
    """Long table from {method: [mean acc of seed 0, seed 1, ...]}; network j adds (j - mean) * jitter."""
    rows = []
    for method, values in per_seed.items():
        for s, v in enumerate(values):
            for j in range(nets):
                rows.append({"method": method, "ipc": ipc, "seed": seed0 + s, "network": j,
                             "acc": v + (j - (nets - 1) / 2) * jitter})
    return pd.DataFrame(rows)


def test_paired_difference_matches_a_one_sample_t_test():
    a = [0.80, 0.83, 0.79, 0.85, 0.81]
    b = [0.78, 0.80, 0.80, 0.81, 0.77]
    df = _long({"dm": b, "dm+hdd/law": a}, jitter=0.01)
    d = stats.paired_differences(df, [("dm+hdd/law", "dm")]).iloc[0]
    diff = np.subtract(a, b)
    ref = sps.ttest_1samp(diff, 0.0).confidence_interval(0.95)  # scipy's own test, another code path
    assert d["diff_mean"] == pytest.approx(diff.mean())
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((ref.low, ref.high))
    assert d["positive"] == int((diff > 0).sum()) == 4 and d["seeds"] == 5
    assert d["excludes_zero"] == (ref.low > 0 or ref.high < 0)


def test_the_readable_view_names_the_coverage_it_was_computed_at():
    a, b = [0.80, 0.83, 0.79, 0.85, 0.81], [0.78, 0.80, 0.80, 0.81, 0.77]
    df = _long({"dm": b, "dm+hdd/law": a})
    ref = sps.ttest_1samp(np.subtract(a, b), 0.0).confidence_interval(0.90)
    view = stats.differences_view(stats.paired_differences(df, [("dm+hdd/law", "dm")], confidence=0.90))
    assert "95% CI" not in view and view["90% CI"].iloc[0] == f"[{100 * ref.low:+.2f}, {100 * ref.high:+.2f}]"
    assert "95% CI" in stats.differences_view(stats.paired_differences(df))


def test_network_noise_does_not_enter_the_paired_difference():
    # a constant per-seed gap with large between-network spread: the interval collapses onto the gap
    df = _long({"dm": [0.7, 0.5, 0.9], "dm+hdd/law": [0.72, 0.52, 0.92]}, jitter=0.2)
    d = stats.paired_differences(df, [("dm+hdd/law", "dm")]).iloc[0]
    assert d["ci_low"] == pytest.approx(0.02) and d["ci_high"] == pytest.approx(0.02)
    assert d["excludes_zero"] and d["positive"] == 3
    # unpaired, the same numbers are far from significant: the seeds differ by 0.2 each
    assert sps.ttest_ind([0.7, 0.5, 0.9], [0.72, 0.52, 0.92]).pvalue > 0.5


def test_summary_pools_every_seed_and_network():
    df = _long({"dm": [0.5, 0.7]}, nets=2, jitter=0.1)
    s = stats.summarise(df).iloc[0]
    accs = df["acc"].values
    assert s["acc_mean"] == pytest.approx(accs.mean()) and s["acc_std"] == pytest.approx(accs.std(ddof=1))
    assert s["seeds"] == 2 and s["evaluations"] == 4


def test_only_shared_seeds_are_paired_and_one_seed_has_no_interval():
    df = pd.concat([_long({"dm": [0.5, 0.6, 0.7]}), _long({"dm+hdd/law": [0.9]}, seed0=2)])
    d = stats.paired_differences(df).iloc[0]
    assert d["seeds"] == 1 and d["diff_mean"] == pytest.approx(0.2) and np.isnan(d["ci_low"])
    assert not d["excludes_zero"]
    assert "n/a" in stats.differences_view(stats.paired_differences(df))["95% CI"].iloc[0]


def test_default_pairs():
    methods = ["random", "dm", "dm+hdd/law", "dm+hdd/karcher", "dm+hdd/tangent", "idm"]
    pairs = stats.default_pairs(methods)
    assert ("dm", "random") in pairs and ("idm", "random") in pairs
    assert ("dm+hdd/law", "dm") in pairs and ("dm+hdd/karcher", "dm") in pairs
    assert ("dm+hdd/karcher", "dm+hdd/law") in pairs and ("dm+hdd/karcher", "dm+hdd/tangent") in pairs
    assert ("dm+hdd/law", "dm+hdd/tangent") in pairs
    assert ("dm+hdd/law", "dm+hdd/karcher") not in pairs and len(pairs) == len(set(pairs))
    assert sorted(methods, key=stats.method_rank)[:3] == ["random", "dm", "dm+hdd/law"]


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="network"):
        stats.summarise(pd.DataFrame({"method": ["dm"], "ipc": [1], "seed": [0], "acc": [0.5]}))
    df = _long({"dm": [0.5]})
    with pytest.raises(ValueError, match="each run directory once"):
        stats.summarise(pd.concat([df, df]))


def _fake_run(folder, method, ipc, seed, accs):
    from hddgeo.distill import DistillConfig

    folder.mkdir(parents=True)
    fields = {"dm": {}, "dm+hdd/law": {"matcher": "hdd", "centroid": "law"}}[method]  # config.json names the method too
    cfg = DistillConfig(seed=seed, ipc=ipc, final_eval_nets=len(accs), **fields)
    (folder / "config.json").write_text(json.dumps(cfg.to_json()))
    (folder / "metrics.json").write_text(json.dumps({"method": method, "ipc": ipc, "accs": accs,
                                                     "seconds_per_iteration": 0.1}))


def test_compare_command(tmp_path, capsys):
    for seed, (a, b) in enumerate([(0.60, 0.55), (0.62, 0.60), (0.64, 0.61)]):
        _fake_run(tmp_path / "study" / "runs" / f"law{seed}", "dm+hdd/law", 1, seed, [a, a + 0.01])
        _fake_run(tmp_path / "study" / "runs" / f"dm{seed}", "dm", 1, seed, [b, b + 0.01])
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "study"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dm+hdd/law − dm" in text and "3/3" in text
    paired = pd.read_csv(out / "compare_paired.csv")
    assert paired["diff_mean"].iloc[0] == pytest.approx(np.mean([0.05, 0.02, 0.03]))
    assert len(pd.read_csv(out / "compare.csv")) == 12 and (out / "compare.md").is_file()
    # one run directory named directly works too; a folder with no run is one line, status 2
    assert main(["compare", str(tmp_path / "study" / "runs" / "dm0"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "no finished run" in capsys.readouterr().err
    (tmp_path / "study" / "runs" / "dm0" / "metrics.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err
    assert "dm0" in err and len(err.strip().splitlines()) == 1


def test_compare_reports_the_pairs_it_is_asked_for(tmp_path, capsys):
    """--pair A B adds A - B to the default pairs (the verdict's HDD - best-tuned DM); a label no run has is one
    line naming the labels there are, status 2."""
    for seed, (a, b) in enumerate([(0.60, 0.55), (0.62, 0.60), (0.64, 0.61)]):
        _fake_run(tmp_path / "study" / "runs" / f"law{seed}", "dm+hdd/law", 1, seed, [a, a])
        _fake_run(tmp_path / "study" / "runs" / f"dm{seed}", "dm", 1, seed, [b, b])
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "study"), "--out", str(out), "--pair", "dm", "dm+hdd/law"]) == 0
    paired = pd.read_csv(out / "compare_paired.csv")
    assert list(zip(paired["a"], paired["b"])) == [("dm+hdd/law", "dm"), ("dm", "dm+hdd/law")]
    assert paired["diff_mean"].iloc[1] == pytest.approx(-paired["diff_mean"].iloc[0])
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "study"), "--out", str(out), "--pair", "dm@lr3", "dm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dm@lr3" in err[0] and "the runs are dm, dm+hdd/law" in err[0]


# ----------------------------------------------------------------------------- variance split (study design)
def _two_level(seeds, nets, between, within, rng, shift=0.01):
    """Long table of a and b whose paired difference is shift + seed effect + network noise."""
    rows = []
    for s in range(seeds):
        u = rng.normal(0, np.sqrt(between))
        for j in range(nets):
            base = 0.7 + rng.normal(0, 0.02)  # what a and b share on network j: cancels in the pair
            rows.append({"method": "b", "ipc": 1, "seed": s, "network": j, "acc": base})
            rows.append({"method": "a", "ipc": 1, "seed": s, "network": j,
                         "acc": base + shift + u + rng.normal(0, np.sqrt(within))})
    return pd.DataFrame(rows)


def test_variance_components_are_the_one_way_anova_mean_squares():
    from scipy.stats import f_oneway

    from hddgeo.stats import variance_components

    df = _two_level(5, 6, 4e-5, 9e-5, np.random.default_rng(1))
    c = variance_components(df, "a", "b", 1)
    wide = df.pivot_table(index=["seed", "network"], columns="method", values="acc")
    e = wide["a"] - wide["b"]
    groups = [g.values for _, g in e.groupby(level="seed")]
    f = f_oneway(*groups).statistic  # = MSB / MSW, MSB = J * var(seed means)
    assert c["seeds"] == 5 and c["networks"] == pytest.approx(6)
    assert 6 * c["seed_means_var"] / c["within"] == pytest.approx(f, rel=1e-10)
    assert c["between"] == pytest.approx(max(0.0, c["seed_means_var"] - c["within"] / 6), rel=1e-12)


def test_variance_components_recover_the_generating_values():
    from hddgeo.stats import variance_components

    c = variance_components(_two_level(400, 8, 4e-5, 9e-5, np.random.default_rng(2)), "a", "b", 1)
    assert c["within"] == pytest.approx(9e-5, rel=0.06)
    assert c["between"] == pytest.approx(4e-5, rel=0.2)
    assert c["diff_mean"] == pytest.approx(0.01, abs=5e-4)


def test_half_width_is_the_t_interval_of_seed_means():
    from scipy.stats import t

    from hddgeo.stats import half_width, variance_components

    assert half_width(4e-5, 9e-5, 6, 8) == pytest.approx(t.ppf(0.975, 5) * np.sqrt((4e-5 + 9e-5 / 8) / 6))
    assert half_width(0.0, 9e-5, 6, 16) < half_width(0.0, 9e-5, 6, 8) < half_width(4e-5, 9e-5, 6, 8)
    with pytest.raises(ValueError, match="two shared seeds"):
        variance_components(_two_level(1, 4, 1e-5, 1e-5, np.random.default_rng(3)), "a", "b", 1)
