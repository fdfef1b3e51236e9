"""Claims and their verdicts: one row per claim of a paper, read from a long accuracy table (:mod:`hddgeo.stats`).

A claim is a paired difference ``a - b`` of two method labels at an IPC, with the paper's number for it (accuracy
points) where the paper gives one, and a kind:

* ``gain``: the paper says ``a`` beats ``b``;
* ``same``: the paper says ``a`` does as well as ``b`` (pruning keeps accuracy, the approximation is enough),
  read as "within the equivalence margin" (:data:`SAME_MARGIN` points unless a spec sets ``margin``).

A claim's ``group`` says whose it is: ``paper`` (the paper's claims, with its numbers) or ``project`` (this
project's own questions, hypotheses judged *supported* / *refuted* / *not supported*, never *reproduced*: see
:func:`verdict_word`); reports print the two groups as separate tables.

``b`` may be a list of labels: the claim is then against the best of them at that IPC, on the seeds all of them ran
(chosen after the fact, so in ``b``'s favour; the row names the one chosen). With ``tune_seeds`` both ``a`` and
``b`` may be lists (a grid of settings): each side's best is chosen on the tuning seeds alone, and the difference is
reported on the other seeds (held out), so that tuning cannot flatter either side; with ``common`` the two grids
are paired by position (the same setting under two methods) and one position is chosen for both, the one whose
mean of the two accuracies is highest on the tuning seeds. Claims live in a study spec
(``[[claims]]``, :mod:`hddgeo.distill.spec`), so ``hddgeo compare STUDY --claims SPEC`` and the study script give
the same table from the same files.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import stats

SAME_MARGIN = 1.0  # points: "keeps accuracy" / "the approximation is enough" read as within one point (v1)
KINDS = ("gain", "same")
GROUPS = ("paper", "project")
COLUMNS = ["claim", "IPC", "paper (points)", "ours (points)", "95% CI", "seeds", "verdict", "difference"]
# with the paper's absolute numbers (a spec's [paper] table)
PAPER_COLUMNS = ["group", "paper a / b (%)", "paper's 95% CI", "ours a / b (%)", "budget"]


@dataclasses.dataclass(frozen=True)
class Claim:
    claim: str
    a: Union[str, tuple]  # a label, or (with tune_seeds) the labels of which the best is taken
    b: Union[str, tuple]  # a label, or the labels of which the best is taken
    paper: Optional[dict] = None  # {ipc: points}
    kind: str = "gain"
    group: str = "paper"
    tune_seeds: Optional[tuple] = None  # seeds that choose each list's best; the others report the difference
    common: bool = False  # a and b are grids paired by position: one position (setting) is chosen for both

    def __post_init__(self):
        for key in ("a", "b", "tune_seeds"):  # lists read as the tuples they mean
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        sides = [self.a if isinstance(self.a, tuple) else (self.a,), self.b if isinstance(self.b, tuple) else (self.b,)]
        for side in sides:
            twice = [m for m in dict.fromkeys(side) if side.count(m) > 1]
            if twice:
                raise ValueError(f"claim {self.claim!r} names {twice[0]!r} twice in one side")
        shared = [m for m in sides[0] if m in sides[1]]
        if shared:
            raise ValueError(f"claim {self.claim!r}: {shared[0]!r} is on both sides; a claim compares two different "
                             f"labels")
        if self.tune_seeds is not None and len(set(self.tune_seeds)) != len(self.tune_seeds):
            raise ValueError(f"claim {self.claim!r}: tune_seeds repeats a seed ({list(self.tune_seeds)})")
        if self.common and not (isinstance(self.a, tuple) and isinstance(self.b, tuple)
                                and len(self.a) == len(self.b) and self.tune_seeds):
            raise ValueError(f"claim {self.claim!r}: common needs a and b as lists of the same length, paired by "
                             f"position, and tune_seeds")
        if isinstance(self.a, tuple) and not self.tune_seeds:
            raise ValueError(f"claim {self.claim!r}: a as a list of labels needs tune_seeds (choosing a's best on the "
                             f"seeds that report it would flatter a)")
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.claim!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.group not in GROUPS:
            raise ValueError(f"claim {self.claim!r}: group must be one of {', '.join(GROUPS)}, got {self.group!r}")


def verdict_word(low: float, high: float, seeds: int, paper: Optional[float], kind: str = "gain",
                 margin: float = SAME_MARGIN, group: str = "paper") -> str:
    """One word for a claim from its 95 % interval ``[low, high]`` (accuracy points) over ``seeds`` seeds.

    A paper's claim (``group="paper"``), ``gain`` (the paper reports ``paper`` points, or only a direction when
    ``None``): *reproduced* when the interval lies above 0 (*in sign, smaller than the paper's* when its upper end
    also lies below ``paper``; *larger* when its lower end lies above it), *not reproduced* when it contains 0 and
    its upper end lies below ``paper``, *contradicted* when it lies below 0.  ``same``: *reproduced* when the
    interval lies within ±``margin``, *contradicted* when it lies wholly outside.

    The project's own question (``group="project"``) is a hypothesis, nobody's result to reproduce: ``gain`` is
    *supported* when the interval lies above 0, *refuted (the opposite)* below 0, *not supported (no difference
    beyond ±margin)* when it contains 0 and lies within ±``margin``; ``same`` is *supported* within ±``margin``,
    *refuted* wholly outside.  Otherwise, and always with fewer than 3 seeds, *not resolvable*."""
    if seeds < 3 or not np.isfinite(low):
        return "not resolvable"
    if group == "project":
        within = -margin <= low and high <= margin
        if kind == "same":
            return "supported" if within else "refuted" if (high < -margin or low > margin) else "not resolvable"
        if low > 0:
            return "supported"
        if high < 0:
            return "refuted (the opposite)"
        return f"not supported (no difference beyond ±{margin:g})" if within else "not resolvable"
    if kind == "same":
        if -margin <= low and high <= margin:
            return "reproduced"
        return "contradicted" if (high < -margin or low > margin) else "not resolvable"
    if low > 0:
        if paper is not None and high < paper:
            return "reproduced in sign, smaller than the paper's"
        return "reproduced" if paper is None or low <= paper else "reproduced, larger than the paper's"
    if high < 0:
        return "contradicted"
    if paper is not None and high < paper:
        return "not reproduced"
    return "not resolvable"


def seeds_to_resolve(mean: float, sd: float, paper: Optional[float], kind: str = "gain", most: int = 50,
                     margin: float = SAME_MARGIN, group: str = "paper") -> int:
    """Seeds a claim would need, were its mean and spread over seeds to stay ``mean`` and ``sd`` (points), for
    :func:`verdict_word` to say something other than *not resolvable*: the interval must exclude 0 or the paper's
    number (``gain``; a project's also lie within ±``margin``), or lie within or wholly outside ±``margin``
    (``same``).  ``most + 1`` when even ``most`` seeds would not do (a mean at the boundary needs any number)."""
    if kind == "same":
        target = abs(abs(mean) - margin)
    else:
        target = max(abs(mean), abs(mean - paper) if paper is not None else 0.0,
                     margin - abs(mean) if group == "project" else 0.0)
    return stats.seeds_needed(sd, target, most) if target > 0 else most + 1


def _to_resolve(diff: np.ndarray, paper: Optional[float], kind: str, most: int = 50,
                margin: float = SAME_MARGIN, group: str = "paper") -> str:
    """What a *not resolvable* row would take: "~N seeds at this spread" (two or more seeds give a spread)."""
    if len(diff) < 2:
        return ""
    n = seeds_to_resolve(float(np.mean(diff)), float(np.std(diff, ddof=1)), paper, kind, most, margin, group)
    return f"over {most} seeds at this spread" if n > most else f"~{n} seeds at this spread"


def _first_best(means: Sequence[float]) -> int:
    """The position of the highest of ``means``; a tie (to 12 decimals, so that rounding decides nothing) goes to
    the first listed."""
    rounded = np.round(np.asarray(means, dtype=float), 12)
    return int(np.flatnonzero(rounded == rounded.max())[0])


def _tuning_table(table: pd.DataFrame, ipc: int, labels: Sequence[str], seeds: Sequence[int]) -> Optional[pd.DataFrame]:
    """Accuracy per tuning seed (rows) and label (columns) at ``ipc``; ``None`` unless every label ran every one of
    ``seeds`` (a choice made on fewer seeds than a claim names would be reported as made on all of them)."""
    at = stats.per_seed(table[table["ipc"] == ipc])
    wide = at[at["method"].isin(list(labels))].pivot(index="seed", columns="method", values="acc")
    if not set(labels) <= set(wide.columns) or not set(seeds) <= set(wide.index):
        return None
    wide = wide.loc[list(seeds), list(labels)]
    return None if wide.isna().any().any() else wide


def best_of(table: pd.DataFrame, ipc: int, labels: Sequence[str], seeds: Optional[Sequence[int]] = None) -> Optional[str]:
    """The label among ``labels`` with the highest mean accuracy at ``ipc``: over ``seeds`` if given (``None``
    unless every label ran every one of them), else over the seeds every label present ran (``None`` when fewer
    than two are present or they share no seed).  A tie goes to the first listed."""
    if seeds is not None:
        wide = _tuning_table(table, ipc, labels, seeds)
        return None if wide is None else labels[_first_best(wide.mean().values)]
    at = stats.per_seed(table[table["ipc"] == ipc])
    present = [m for m in labels if m in set(at["method"])]
    wide = at[at["method"].isin(present)].pivot(index="seed", columns="method", values="acc").dropna()
    if wide.empty or len(present) < 2:
        return None
    return present[_first_best(wide[present].mean().values)]


def best_common(table: pd.DataFrame, ipc: int, pairs: Sequence[tuple], seeds: Sequence[int]) -> Optional[tuple]:
    """The pair ``(a, b)`` among ``pairs`` (one setting under two methods) whose mean of the two accuracies at
    ``ipc`` over ``seeds`` is highest (``None`` unless every label ran every one of them).  A tie goes to the first
    listed."""
    wide = _tuning_table(table, ipc, [m for pair in pairs for m in pair], seeds)
    if wide is None:
        return None
    return tuple(pairs[_first_best([float((wide[a] + wide[b]).mean()) / 2 for a, b in pairs])])


def _points(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:+.1f}"


def _paper_cells(a: str, b: str, ipc: int, paper: dict) -> dict:
    """The paper's absolute accuracies of ``a`` and ``b`` (``paper["accuracy"][label][ipc] = (mean, sd)``, over
    ``paper["runs"]`` runs) and Welch's interval of their difference."""
    acc = paper.get("accuracy", {})
    pa, pb = acc.get(a, {}).get(ipc), acc.get(b, {}).get(ipc)
    shown = " / ".join("—" if p is None else f"{p[0]:.1f} ± {p[1]:.1f}" for p in (pa, pb))
    ci = ""
    if pa is not None and pb is not None:
        runs = int(paper.get("runs", 3))
        low, high = stats.welch_interval(pa[0], pa[1], runs, pb[0], pb[1], runs)
        ci = f"[{low:+.2f}, {high:+.2f}]"
    return {"paper a / b (%)": shown, "paper's 95% CI": ci}


def _sides(table: pd.DataFrame, c: Claim, ipc: int, wide: pd.DataFrame, designed: Callable) -> Optional[list]:
    """``[(a, shown), (b, shown)]``: each side's label (a list's best, chosen on ``c.tune_seeds`` if given), ``None``
    while some of its cells are missing, and what a row shows for it; ``None`` when the claim has no row at ``ipc``
    (a label not designed there)."""
    if c.common:
        pairs = [(a, b) for a, b in zip(c.a, c.b) if all(designed(m, ipc) or m in wide for m in (a, b))]
        if len(pairs) < 2:
            return None
        chosen = best_common(table, ipc, pairs, c.tune_seeds)  # None while a cell of the tuning seeds is missing
        if chosen is None:
            return [(None, f"best common setting of {', '.join(a for a, _ in pairs)}"),
                    (None, f"the same setting of {', '.join(b for _, b in pairs)}")]
        return [(chosen[0], chosen[0]), (chosen[1], chosen[1])]
    sides = []
    for side in (c.a, c.b):
        if isinstance(side, (tuple, list)):
            candidates = [m for m in side if designed(m, ipc) or m in wide]
            if len(candidates) < 2:
                return None
            chosen = None if any(m not in wide for m in candidates) else best_of(table, ipc, candidates, c.tune_seeds)
            sides.append((chosen, chosen or f"best of {', '.join(candidates)}"))
        else:
            if not (designed(side, ipc) or side in wide):
                return None
            sides.append((side if side in wide else None, side))
    return sides


def claim_difference(table: pd.DataFrame, c: Claim, ipc: int) -> Optional[tuple]:
    """``(a, b, differences)``: the labels a claim compares at ``ipc`` (a list's best chosen as
    :func:`claims_table` chooses it) and their per-seed differences in points on the seeds that report it (the
    held-out ones with ``tune_seeds``); ``None`` while cells are missing."""
    seeds_table = stats.per_seed(table[table["ipc"] == ipc])
    wide = seeds_table.pivot(index="seed", columns="method", values="acc")
    sides = _sides(table, c, ipc, wide, lambda label, i: label in wide)
    if sides is None or sides[0][0] is None or sides[1][0] is None:
        return None
    (a, _), (b, _) = sides
    diff = _reported(wide, c, a, b)
    return None if diff is None else (a, b, diff)


def _reported(wide: pd.DataFrame, c: Claim, a: str, b: str) -> Optional[pd.Series]:
    """``a - b`` per seed in points (``wide``: accuracy per seed and label) on the seeds that report ``c``: every
    seed that ran both, less ``c.tune_seeds``; ``None`` when there is none."""
    held = wide if not c.tune_seeds else wide[~wide.index.isin(list(c.tune_seeds))]
    pair = held[[a, b]].dropna()
    return 100 * (pair[a] - pair[b]) if len(pair) else None


def claims_table(table: pd.DataFrame, claims: Sequence[Claim],
                 designed: Optional[Callable[[str, int], bool]] = None, margin: float = SAME_MARGIN,
                 paper: Optional[dict] = None, budget: str = "") -> pd.DataFrame:
    """One row per claim and IPC of ``table`` (a long accuracy table, one dataset): the paper's number, ours (mean
    of the per-seed differences, in points), its 95 % t interval, the seeds and the word of :func:`verdict_word`.

    ``designed(label, ipc)`` says whether a study's design runs a label at an IPC: a claim whose labels are all
    designed there but not all in ``table`` gets a *pending* row; one whose labels are not designed there gets
    none.  Without ``designed``, a label counts as designed at the IPCs where ``table`` has it.  ``margin`` is the
    equivalence margin of ``same`` claims.  With ``paper`` (a spec's ``[paper]`` table: ``accuracy`` per label and
    IPC, ``runs``) each row also gets its group, the paper's absolute numbers of ``a`` and ``b`` with Welch's
    interval of their difference, ours (means over the seeds, %), and ``budget`` (ours against the paper's)."""
    paper_table = paper
    seeds_table = stats.per_seed(table)
    present = {ipc: set(g["method"]) for ipc, g in seeds_table.groupby("ipc")}
    designed = designed or (lambda label, ipc: label in present[ipc])
    rows = []
    for ipc in sorted(int(i) for i in seeds_table["ipc"].unique()):
        at = seeds_table[seeds_table["ipc"] == ipc]
        wide = at.pivot(index="seed", columns="method", values="acc")
        for c in claims:
            paper = (c.paper or {}).get(ipc)
            row = {"claim": c.claim, "IPC": ipc, "paper (points)": _points(paper)}
            sides = _sides(table, c, ipc, wide, designed)
            if sides is None:
                continue
            (a, shown_a), (b, shown_b) = sides
            if paper_table is not None:
                row.update({"group": c.group, **_paper_cells(a or shown_a, b or shown_b, ipc, paper_table),
                            "budget": budget})
            diff = None if a is None or b is None else _reported(wide, c, a, b)
            if diff is None:
                rows.append({**row, "ours (points)": "pending", "95% CI": "", "seeds": 0,
                             "verdict": "not resolvable (cells not run yet)", "difference": f"{shown_a} − {shown_b}",
                             **({"ours a / b (%)": "pending"} if paper_table is not None else {})})
                continue
            pair = wide.loc[diff.index, [a, b]]
            low, high = stats.t_interval(diff.values)
            word = verdict_word(low, high, len(diff), paper, c.kind, margin, c.group)
            if paper_table is not None:
                row["ours a / b (%)"] = f"{100 * pair[a].mean():.1f} / {100 * pair[b].mean():.1f}"
            extra = [x for x, side in ((a, c.a), (b, c.b)) if isinstance(side, (tuple, list))]  # the best chosen
            if c.tune_seeds:
                extra += [f"chosen on seeds {', '.join(map(str, c.tune_seeds))}, reported on the others"]
            if word == "not resolvable":
                extra += [_to_resolve(diff.values, paper, c.kind, margin=margin, group=c.group)]
            elif c.kind == "same" and -margin <= low and high <= margin and (low > 0 or high < 0):  # same, not equal
                extra += [f"{a} {'higher' if low > 0 else 'lower'} by {min(abs(low), abs(high)):.2f}-"
                          f"{max(abs(low), abs(high)):.2f}: the interval excludes 0"]
            extra = [x for x in extra if x]
            rows.append({**row, "ours (points)": f"{diff.mean():+.2f}" if len(diff) else "pending",
                         "95% CI": f"[{low:+.2f}, {high:+.2f}]" if np.isfinite(low) else "n/a",
                         "seeds": len(diff), "verdict": word + (f" ({'; '.join(extra)})" if extra else ""),
                         "difference": f"{a} − {b}"})
    return pd.DataFrame(rows, columns=COLUMNS + (PAPER_COLUMNS if paper_table is not None else []))
