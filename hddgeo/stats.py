"""Paired comparisons of distillation methods over seeds: the one place results become claims.

Input is a *long* table with one row per trained evaluation network: columns ``method``, ``ipc``,
``seed`` (the distillation seed), ``network`` (index of the evaluation network) and ``acc`` (a fraction).

Why paired: runs that share a distillation seed see the same feature networks, real batches, DSA draws
and initial images, and their evaluation networks share seeds too, so the matcher (or centroid) is the
only difference between them.  Runs of different seeds share nothing random (seed scheme 2,
:mod:`hddgeo.seeds`; scheme 1 runs shared evaluation networks between adjacent seeds). The difference of two
methods is therefore taken *within* each seed, and the seed is the unit of replication: a 95 % interval over ``n``
seeds uses Student's t with ``n - 1`` degrees of freedom (``scipy.stats.t``). Networks of one seed are averaged
first; they are not independent replicates of the distillation.

A single run of either method is an anecdote: CPUs of different models round differently and a
distillation amplifies that, so the same command moves single accuracies by a few points between
machines.  The interval is the claim.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from .labels import CENTROID_MATCHERS, RANDOM, base_method, is_random, method_label, method_rank  # noqa: F401  (re-exported)
from .tables import markdown_table

REQUIRED_COLUMNS = ("method", "ipc", "seed", "network", "acc")


def check_long(df: pd.DataFrame) -> pd.DataFrame:
    """The long accuracy table ``df``, checked: the required columns, at least one row, one row per
    (method, IPC, seed, network).

    Raises
    ------
    ValueError
        A column is missing, the table is empty, or a result appears twice (a run directory passed twice).

    Examples
    --------
    >>> import pandas as pd
    >>> from hddgeo import stats
    >>> df = pd.DataFrame({"method": ["dm", "dm+hdd/law"] * 4, "ipc": 1, "network": 0,
    ...                    "seed": [0, 0, 1, 1, 2, 2, 3, 3], "acc": [0.60, 0.62, 0.58, 0.61, 0.61, 0.62, 0.59, 0.60]})
    >>> stats.check_long(df) is df
    True
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"accuracy table lacks column(s) {', '.join(missing)}; it needs {', '.join(REQUIRED_COLUMNS)}")
    if df.empty:
        raise ValueError("accuracy table is empty: no finished run with evaluated networks")
    dup = df.duplicated(["method", "ipc", "seed", "network"])
    if dup.any():
        row = df[dup].iloc[0]
        raise ValueError(f"two results for method {row['method']!r}, IPC {row['ipc']}, seed {row['seed']}, network "
                         f"{row['network']}: pass each run directory once")
    return df


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per (method, IPC): the mean and sample standard deviation (ddof 1) of every (seed, network) accuracy.

    Parameters
    ----------
    df : pandas.DataFrame
        A long table: ``method``, ``ipc``, ``seed``, ``network``, ``acc`` (a fraction), one row per evaluation network.

    Returns
    -------
    pandas.DataFrame
        Columns ``method``, ``ipc``, ``seeds``, ``evaluations``, ``acc_mean``, ``acc_std``.

    Raises
    ------
    ValueError
        The table is not a valid long table (:func:`check_long`).

    Examples
    --------
    >>> import pandas as pd
    >>> from hddgeo import stats
    >>> df = pd.DataFrame({"method": ["dm", "dm+hdd/law"] * 4, "ipc": 1, "network": 0,
    ...                    "seed": [0, 0, 1, 1, 2, 2, 3, 3], "acc": [0.60, 0.62, 0.58, 0.61, 0.61, 0.62, 0.59, 0.60]})
    >>> stats.summarise(df).round(4)
           method  ipc  seeds  evaluations  acc_mean  acc_std
    0          dm    1      4            4    0.5950   0.0129
    1  dm+hdd/law    1      4            4    0.6125   0.0096
    """
    df = check_long(df)
    g = df.groupby(["method", "ipc"], sort=False)
    out = g["acc"].agg(acc_mean="mean", acc_std=lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0,
                       evaluations="count").reset_index()
    out["seeds"] = g["seed"].nunique().values
    return out[["method", "ipc", "seeds", "evaluations", "acc_mean", "acc_std"]]


def per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """The mean accuracy of each (method, IPC, seed) over its evaluation networks: the unit of replication.

    Examples
    --------
    >>> import pandas as pd
    >>> from hddgeo import stats
    >>> df = pd.DataFrame({"method": ["dm", "dm+hdd/law"] * 4, "ipc": 1, "network": 0,
    ...                    "seed": [0, 0, 1, 1, 2, 2, 3, 3], "acc": [0.60, 0.62, 0.58, 0.61, 0.61, 0.62, 0.59, 0.60]})
    >>> len(stats.per_seed(df))
    8
    """
    return check_long(df).groupby(["method", "ipc", "seed"], sort=False)["acc"].mean().reset_index()


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval for the mean of ``values``, with ``n - 1`` degrees of freedom.

    Parameters
    ----------
    values : sequence of float
        Independent replicates (one per seed).
    confidence : float, optional
        The interval's coverage (0.95).

    Returns
    -------
    tuple of float
        ``(low, high)``; NaNs for fewer than two values, ``(mean, mean)`` when every value is the same.

    Examples
    --------
    >>> from hddgeo.stats import t_interval
    >>> [round(x, 4) for x in t_interval([0.02, 0.03, 0.01, 0.01])]
    [0.0023, 0.0327]
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    mean, sem = float(x.mean()), float(stats.sem(x))
    if sem == 0.0:  # every seed gave the same difference; scipy returns NaNs for a zero scale
        return mean, mean
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def seeds_needed(sd: float, half_width: float, most: int = 50) -> int:
    """The smallest number of seeds ``n >= 3`` whose 95 % t interval half-width ``t(n-1) sd / sqrt(n)`` is at most
    ``half_width`` (same units as ``sd``); ``most + 1`` when even ``most`` seeds would not do.

    Examples
    --------
    >>> from hddgeo.stats import seeds_needed
    >>> seeds_needed(sd=0.01, half_width=0.005)
    18
    """
    from scipy import stats

    for n in range(3, most + 1):
        if stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n) <= half_width:
            return n
    return most + 1


def default_pairs(methods: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(a, b)`` pairs worth reading as ``a - b``, among ``methods`` (labels like ``dm+hdd/karcher``).

    Every distilled method against the random real images; every matcher variant against its plain
    method (``dm+hdd/law - dm``); among the centroids of one method, matcher and tag, Karcher against each
    approximation and Law against the tangent centroid; and a tagged variant against its untagged label
    (``dm@lr10 - dm``).

    Examples
    --------
    >>> from hddgeo.stats import default_pairs
    >>> default_pairs(["dm", "dm+hdd/law", "dm+hdd/karcher"])
    [('dm+hdd/law', 'dm'), ('dm+hdd/karcher', 'dm'), ('dm+hdd/karcher', 'dm+hdd/law')]
    """
    methods = list(dict.fromkeys(methods))
    present = set(methods)
    pairs = []
    for m in methods:
        if m == RANDOM:
            continue
        label, at, tag = m.partition("@")
        base = base_method(m)
        if m == base and RANDOM in present:
            pairs.append((m, RANDOM))
        if label != base and base + at + tag in present:
            pairs.append((m, base + at + tag))
        if tag and label in present:
            pairs.append((m, label))
        if tag and label != RANDOM and f"{RANDOM}@{tag}" in present:  # a pruned pool's run against its own images
            pairs.append((m, f"{RANDOM}@{tag}"))
    for m in methods:
        label, at, tag = m.partition("@")
        if "/" not in label:
            continue
        prefix, centroid = label.rsplit("/", 1)
        others = {"karcher": ("law", "tangent"), "law": ("tangent",)}.get(centroid, ())
        pairs += [(m, f"{prefix}/{o}{at}{tag}") for o in others if f"{prefix}/{o}{at}{tag}" in present]
    return pairs


def variance_components(df: pd.DataFrame, a: str, b: str, ipc: int) -> dict:
    """How the spread of the paired difference ``a - b`` at ``ipc`` splits into a between-seed part and an
    evaluation-network part (accuracy fractions squared).

    Network ``j`` of a seed evaluates ``a``'s and ``b``'s sets with the same initialisation and batches, so the
    per-network differences ``e_sj`` of seed ``s`` scatter around the seed's own difference with variance
    ``within`` (pooled over seeds, ``J_s - 1`` degrees of freedom each), and the seed means ``mean_j e_sj`` with
    variance ``between + within / J``: ``between`` (method of moments, floored at 0) is what more networks per
    seed cannot remove.  Returns ``{"seeds", "networks" (harmonic mean of J_s), "within", "between",
    "seed_means_var", "diff_mean"}``; ``ValueError`` without two shared seeds with two networks each."""
    at = check_long(df)
    at = at[at["ipc"] == ipc]
    wide = at[at["method"].isin([a, b])].pivot_table(index=["seed", "network"], columns="method", values="acc")
    if a not in wide or b not in wide:
        raise ValueError(f"{a} and {b} are not both in the table at IPC {ipc}")
    e = (wide[a] - wide[b]).dropna()
    groups = [g.values for _, g in e.groupby(level="seed")]
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        raise ValueError(f"{a} - {b} at IPC {ipc}: splitting its variance needs two shared seeds with two "
                         f"evaluation networks each")
    within = float(sum(((g - g.mean()) ** 2).sum() for g in groups) / sum(len(g) - 1 for g in groups))
    means = np.array([g.mean() for g in groups])
    networks = float(len(groups) / sum(1.0 / len(g) for g in groups))
    seed_var = float(np.var(means, ddof=1))
    return {"seeds": len(groups), "networks": networks, "within": within,
            "between": max(0.0, seed_var - within / networks), "seed_means_var": seed_var,
            "diff_mean": float(means.mean())}


def half_width(between: float, within: float, seeds: int, networks: int, confidence: float = 0.95) -> float:
    """The expected half-width of the t interval of a paired difference over ``seeds`` seeds with ``networks``
    evaluation networks each, for the variance components of :func:`variance_components`.

    Examples
    --------
    >>> from hddgeo.stats import half_width
    >>> round(half_width(between=1e-4, within=4e-4, seeds=5, networks=4), 4)
    0.0176
    """
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, seeds - 1) * np.sqrt((between + within / networks) / seeds))


def welch_interval(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int,
                   confidence: float = 0.95) -> tuple[float, float]:
    """Welch's interval for ``mean_a - mean_b`` from two reported ``mean ± sd`` over ``n_a`` and ``n_b`` runs (sample
    standard deviations): what a paper's "72.1 ± 0.2 vs 70.7 ± 0.6 over 3 runs" says about its difference, unpaired
    because the paper gives no pairing.

    Examples
    --------
    >>> from hddgeo.stats import welch_interval
    >>> [round(x, 2) for x in welch_interval(72.1, 0.2, 3, 70.7, 0.6, 3)]
    [0.07, 2.73]
    """
    from scipy import stats

    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    se = float(np.sqrt(va + vb))
    diff = mean_a - mean_b
    if se == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return diff - half, diff + half


def paired_differences(df: pd.DataFrame, pairs: Optional[Iterable[tuple[str, str]]] = None,
                       confidence: float = 0.95) -> pd.DataFrame:
    """For each pair ``(a, b)`` and IPC: the mean over seeds of ``acc(a) - acc(b)``, its t interval, and on how many of
    the shared seeds the difference is positive.

    Networks of one seed are averaged first (:func:`per_seed`); only seeds that both methods ran are used
    (``seeds`` says how many); pairs with no shared seed are left out.

    Parameters
    ----------
    df : pandas.DataFrame
        A long accuracy table (:func:`check_long`).
    pairs : iterable of (str, str), optional
        The differences ``a - b`` to take; :func:`default_pairs` of the table's methods by default.
    confidence : float, optional
        The intervals' coverage (0.95).

    Returns
    -------
    pandas.DataFrame
        Columns ``ipc``, ``a``, ``b``, ``seeds``, ``diff_mean``, ``ci_low``, ``ci_high``, ``positive``,
        ``excludes_zero``; ``attrs["confidence"]`` is ``confidence``.

    Raises
    ------
    ValueError
        The table is not a valid long table.

    Examples
    --------
    >>> import pandas as pd
    >>> from hddgeo import stats
    >>> df = pd.DataFrame({"method": ["dm", "dm+hdd/law"] * 4, "ipc": 1, "network": 0,
    ...                    "seed": [0, 0, 1, 1, 2, 2, 3, 3], "acc": [0.60, 0.62, 0.58, 0.61, 0.61, 0.62, 0.59, 0.60]})
    >>> d = stats.paired_differences(df)
    >>> d[["a", "b", "seeds", "positive", "excludes_zero"]].to_dict("records")
    [{'a': 'dm+hdd/law', 'b': 'dm', 'seeds': 4, 'positive': 4, 'excludes_zero': True}]
    >>> round(float(d.diff_mean[0]), 4), round(float(d.ci_low[0]), 4), round(float(d.ci_high[0]), 4)
    (0.0175, 0.0023, 0.0327)
    """
    seeds = per_seed(df)
    pairs = default_pairs(seeds["method"]) if pairs is None else list(pairs)
    rows = []
    for ipc in dict.fromkeys(seeds["ipc"]):
        at = seeds[seeds["ipc"] == ipc].pivot(index="seed", columns="method", values="acc")
        for a, b in pairs:
            if a not in at or b not in at:
                continue
            diff = (at[a] - at[b]).dropna()
            if diff.empty:
                continue
            low, high = t_interval(diff.values, confidence)
            rows.append({"ipc": ipc, "a": a, "b": b, "seeds": len(diff), "diff_mean": float(diff.mean()),
                         "ci_low": low, "ci_high": high, "positive": int((diff > 0).sum()),
                         "excludes_zero": bool(low > 0 or high < 0)})
    out = pd.DataFrame(rows, columns=["ipc", "a", "b", "seeds", "diff_mean", "ci_low", "ci_high", "positive",
                                      "excludes_zero"])
    out.attrs["confidence"] = confidence  # for the views' column name
    return out


# ----------------------------------------------------------------------------- presentation (percent)
def _pct(x: float, digits: int = 1) -> str:
    return "" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def summary_wide(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per method, one ``mean ± std`` column (%) per IPC, from :func:`summarise`.

    Examples
    --------
    >>> import pandas as pd
    >>> from hddgeo import stats
    >>> df = pd.DataFrame({"method": ["dm", "dm+hdd/law"] * 4, "ipc": 1, "network": 0,
    ...                    "seed": [0, 0, 1, 1, 2, 2, 3, 3], "acc": [0.60, 0.62, 0.58, 0.61, 0.61, 0.62, 0.59, 0.60]})
    >>> stats.summary_wide(stats.summarise(df))["IPC 1"].tolist()
    ['59.5 ± 1.3', '61.3 ± 1.0']
    """
    t = summary.assign(cell=[f"{_pct(m)} ± {_pct(s)}" for m, s in zip(summary.acc_mean, summary.acc_std)])
    wide = t.pivot_table(index="method", columns="ipc", values="cell", aggfunc="first", sort=False)
    wide.columns = [f"IPC {c}" for c in wide.columns]
    return wide.reset_index()


def differences_view(diffs: pd.DataFrame) -> pd.DataFrame:
    """Readable paired differences, from :func:`paired_differences`: ``a - b``, the mean and the interval in
    accuracy points (its column named by the interval's coverage), the seeds with a positive difference.

    Examples
    --------
    >>> import pandas as pd
    >>> from hddgeo import stats
    >>> df = pd.DataFrame({"method": ["dm", "dm+hdd/law"] * 4, "ipc": 1, "network": 0,
    ...                    "seed": [0, 0, 1, 1, 2, 2, 3, 3], "acc": [0.60, 0.62, 0.58, 0.61, 0.61, 0.62, 0.59, 0.60]})
    >>> stats.differences_view(stats.paired_differences(df))["95% CI"].tolist()
    ['[+0.23, +3.27]']
    """
    return pd.DataFrame({
        "IPC": diffs["ipc"],
        "difference": [f"{a} − {b}" for a, b in zip(diffs["a"], diffs["b"])],
        "mean (points)": [f"{100 * m:+.2f}" for m in diffs["diff_mean"]],
        f"{100 * diffs.attrs.get('confidence', 0.95):g}% CI": [
            f"[{100 * lo:+.2f}, {100 * hi:+.2f}]" if np.isfinite(lo) else "n/a (1 seed)"
                   for lo, hi in zip(diffs["ci_low"], diffs["ci_high"])],
        "seeds > 0": [f"{p}/{n}" for p, n in zip(diffs["positive"], diffs["seeds"])],
        "excludes 0": ["yes" if e else "no" for e in diffs["excludes_zero"]],
    })


def report(df: pd.DataFrame, pairs=None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """``(summary, paired differences, markdown of both)`` for a long accuracy table.

    Examples
    --------
    >>> import pandas as pd
    >>> from hddgeo import stats
    >>> df = pd.DataFrame({"method": ["dm", "dm+hdd/law"] * 4, "ipc": 1, "network": 0,
    ...                    "seed": [0, 0, 1, 1, 2, 2, 3, 3], "acc": [0.60, 0.62, 0.58, 0.61, 0.61, 0.62, 0.59, 0.60]})
    >>> summary, diffs, text = stats.report(df)
    >>> text.splitlines()[0]
    'Accuracy (%), mean ± std over every (seed, evaluation network):'
    """
    summary = summarise(df)
    diffs = paired_differences(df, pairs)
    text = ("Accuracy (%), mean ± std over every (seed, evaluation network):\n\n" + markdown_table(summary_wide(summary))
            + "\nPaired differences (accuracy points), mean over seeds with a 95% t interval:\n\n"
            + markdown_table(differences_view(diffs)))
    return summary, diffs, text
