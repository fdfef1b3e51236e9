"""Finished runs read back, checked, as long tables, and the reports written from them.

A long table has one row per (method, IPC, seed, evaluation network): :func:`read_runs` builds it from run
directories (every ``config.json`` and ``metrics.json`` checked, :func:`read_run`) or reads a study's ``.csv``
(:func:`read_long_table`); :func:`write_report` writes it with its per-method summary and paired-by-seed
differences (:mod:`hddgeo.stats`).  ``hddgeo compare`` and every study use these, so a table means one thing.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from typing import Iterable, Sequence

import pandas as pd

from hddgeo import stats
from hddgeo.rundir import CONFIG, LOG, METRICS, csv_text, read_json, write_csv, write_text

from .config import RESUMABLE_FIELDS, DistillConfig, describe, describe_baseline


# Fields that make two runs of one dataset and IPC incomparable: how their synthetic sets were evaluated
# (every run, the random baseline too) and the distillation budget (distilled runs).  Runs pooled into one row
# (same method) must further agree in every field but the seed and those that do not change what a run computes.
EVAL_FIELDS = ("model", "final_eval_nets", "final_eval_epochs", "eval_test_per_class", "dsa", "dsa_strategy")
# what pairs two labels: the evaluation protocol.  The number of networks is its sample size, not the protocol: a
# run's networks are the first of its seed's stream (hddgeo.seeds), so a 4-network cell evaluates with the first 4
# networks of an 8-network cell of its seed, and their per-seed means estimate the same accuracy
PAIRED_EVAL_FIELDS = tuple(f for f in EVAL_FIELDS if f != "final_eval_nets")
BUDGET_FIELDS = ("iterations", "batch_real")
NEUTRAL_FIELDS = ("seed", "checkpoint_every", "eval_every", "eval_nets", "eval_epochs", "gap_every")


def read_run(run_dir: str) -> tuple[DistillConfig, dict]:
    """``(configuration, metrics)`` of a finished run directory, both checked: ``config.json`` is a valid
    configuration, and ``metrics.json`` names the same method (its label, tag included), dataset, IPC and
    evaluation, with ``accs`` a list of finite accuracies in [0, 1], one per final evaluation network, or empty
    (no evaluation; ``metrics["accs"]`` is then ``[]``).  ``ValueError`` naming the file and the field."""
    config_path, metrics_path = os.path.join(run_dir, CONFIG), os.path.join(run_dir, METRICS)
    metrics = read_json(metrics_path)
    cfg = DistillConfig.from_json(read_json(config_path), source=config_path)

    def bad(field, why):
        raise ValueError(f"{metrics_path}: '{field}' {why}")

    method = metrics.get("method")
    if not isinstance(method, str):
        bad("method", f"must be a string, got {method!r}"[:200])
    baseline = method == describe_baseline(cfg) and cfg.iterations == 1 and cfg.matcher == "euclidean"  # a baseline_cell
    if method != describe(cfg) and not baseline:
        bad("method", f"is {method!r} but {config_path} describes {describe(cfg)!r} (method, matcher, centroid, tag)")
    ipc = metrics.get("ipc")
    if type(ipc) is not int or not 0 < ipc < 2**63:
        bad("ipc", f"must be a positive integer below 2**63, got {ipc!r}"[:200])
    spi = metrics.get("seconds_per_iteration")
    if spi is not None and (type(spi) not in (int, float) or not (spi != spi or 0 <= spi <= sys.float_info.max)):
        bad("seconds_per_iteration", f"must be a non-negative number, got {spi!r}"[:200])  # compared: no float()
    for field, want in (("ipc", cfg.ipc), ("dataset", cfg.dataset), ("eval_model", cfg.model),
                        ("eval_epochs", cfg.final_eval_epochs)):
        if field in metrics and metrics[field] != want:
            bad(field, f"is {metrics[field]!r} but {config_path} says {want!r}")
    accs = metrics.get("accs")
    accs = [] if accs is None else accs
    if not isinstance(accs, list):
        bad("accs", f"must be a list of accuracies, got {accs!r}"[:200])
    for a in accs:
        if type(a) not in (int, float) or not (math.isfinite(a) and 0 <= a <= 1):
            bad("accs", f"holds {a!r}: accuracies are finite numbers in [0, 1]")
    if accs and len(accs) != cfg.final_eval_nets:
        bad("accs", f"holds {len(accs)} accuracies but {config_path} evaluates {cfg.final_eval_nets} networks")
    return cfg, {**metrics, "accs": accs}


def read_runs(paths: Iterable[str]) -> tuple[pd.DataFrame, list[str]]:
    """``(long table, run directories without evaluation)`` of finished run directories; a folder that is not a
    run directory contributes the run directories directly inside it (or inside its ``runs/``), so a study's
    output folder can be named.

    Every ``metrics.json`` and ``config.json`` is checked (:func:`read_run`), and runs are refused, in one
    ``ValueError`` naming the field and two runs, when they would be paired or pooled although they differ in
    the dataset's evaluation protocol or budget (``PAIRED_EVAL_FIELDS``, ``BUDGET_FIELDS``: two labels may differ
    in their number of evaluation networks, one label may not), or pooled although their configurations differ in
    more than the seed.  A run without evaluation (``final_eval_epochs`` 0) is left
    out of the table and listed.

    A ``.csv`` file (a study's long table, e.g. a committed ``results.csv``) is read as it is
    (:func:`read_long_table`), alone: its runs were checked when the study wrote it."""
    paths = list(paths)
    tables = [p for p in paths if p.endswith(".csv")]
    if tables:
        if len(paths) > 1:
            raise ValueError(f"{tables[0]} is a long table: compare it alone, not with other tables or run directories")
        return read_long_table(tables[0]), []
    rows, unevaluated, seen, runs = [], [], {}, []
    for path in paths:
        dirs = _run_dirs(path)
        if not dirs:
            raise ValueError(f"{path} holds no finished run (no metrics.json in it, its subfolders or runs/)")
        for d in dirs:
            cfg, metrics = read_run(d)
            if not metrics["accs"]:
                unevaluated.append(d)
                continue
            key = (cfg.dataset, metrics["method"], cfg.ipc, cfg.seed)
            if key in seen:
                raise ValueError(f"{seen[key]} and {d} are both {metrics['method']} IPC {cfg.ipc} seed {cfg.seed} on "
                                 f"{cfg.dataset}" + (" (the same run named twice)" if os.path.realpath(seen[key]) ==
                                                     os.path.realpath(d) else "") + ": pass each run once")
            seen[key] = d
            runs.append((d, cfg, metrics["method"]))
            rows += [{"dataset": cfg.dataset, **row} for row in long_rows(metrics, cfg.seed, d)]
    _check_comparable(runs)
    if not rows:
        raise ValueError(f"no evaluated run to compare: {', '.join(unevaluated)} "
                         f"{'was' if len(unevaluated) == 1 else 'were'} distilled without a final evaluation "
                         f"(--final-eval-epochs 0)")
    table = pd.DataFrame(rows)
    table = table.sort_values("method", key=lambda col: col.map(stats.method_rank), kind="stable", ignore_index=True)
    return table, unevaluated


def _check_comparable(runs: list) -> None:
    """``ValueError`` naming the field and two of ``runs`` (``(dir, cfg, method)``) that differ where they
    would be paired (one dataset and IPC) or pooled (one method too)."""
    def value(cfg, field):
        if field == "tf32":  # auto (None) and off (False) are one run, as config_differences says
            return bool(cfg.tf32)
        return getattr(cfg, field) if field != "dsa_strategy" or cfg.dsa else None  # no DSA: no strategy

    pooled_fields = [f.name for f in dataclasses.fields(DistillConfig)
                     if f.name not in NEUTRAL_FIELDS + RESUMABLE_FIELDS]
    first_pair, first_pool = {}, {}
    for d, cfg, method in runs:
        random = stats.is_random(method)
        checks = [(first_pair, (cfg.dataset, cfg.ipc, "eval"), PAIRED_EVAL_FIELDS, "paired"),
                  (first_pool, (cfg.dataset, cfg.ipc, method),
                   EVAL_FIELDS + ("init", "method") if random else pooled_fields, "pooled")]
        if not random:
            checks.append((first_pair, (cfg.dataset, cfg.ipc, "budget"), BUDGET_FIELDS, "paired"))
        for first, key, fields, how in checks:
            ref_dir, ref = first.setdefault(key, (d, cfg))
            for field in fields:
                if value(ref, field) != value(cfg, field):
                    raise ValueError(f"{ref_dir} and {d} differ in {field} ({value(ref, field)!r} against "
                                     f"{value(cfg, field)!r}): runs of {cfg.dataset} IPC {cfg.ipc} are {how} only when "
                                     f"they agree in it; compare them separately")


def _run_dirs(path: str) -> list[str]:
    if os.path.isfile(os.path.join(path, "metrics.json")):
        return [path]
    found = []
    for folder in (path, os.path.join(path, "runs")):
        if os.path.isdir(folder):
            found += sorted(os.path.join(folder, d) for d in os.listdir(folder)
                            if os.path.isfile(os.path.join(folder, d, "metrics.json")))
    return found


def read_long_table(path: str) -> pd.DataFrame:
    """A long accuracy table written by :func:`write_report` (``method, ipc, seed, network, acc``, optionally
    ``dataset``, ``run_dir`` ...), checked as data: ``ValueError`` naming the file, the row and the column for a
    missing column, a seed, IPC or network that is not a non-negative integer, or an accuracy outside [0, 1]."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist")
    try:  # every cell as text: numbers are parsed below, strictly (no wrap-around, no True as 1)
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a CSV table: {str(err).splitlines()[0]}") from None
    table = table.rename(columns=csv_text)
    missing = [c for c in stats.REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}: a long table has "
                         f"{', '.join(stats.REQUIRED_COLUMNS)}")
    if table.empty:
        raise ValueError(f"{path} has no rows")
    for col in ("ipc", "seed", "network"):
        values = []
        for i, text in enumerate(table[col]):
            if not _INTEGER.fullmatch(text.strip()) or int(text.strip().split(".")[0]) > 2**63 - 1:
                raise ValueError(f"{path} row {i + 2}: {col} is {text[:40]!r}, not a non-negative integer below 2**63")
            values.append(int(text.strip().split(".")[0]))
        table[col] = pd.Series(values, dtype="int64", index=table.index)
    accs = []
    for i, text in enumerate(table["acc"]):
        value = float(text) if _DECIMAL.fullmatch(text.strip()) else math.nan
        if not 0 <= value <= 1:
            raise ValueError(f"{path} row {i + 2}: acc is {text[:40]!r}; accuracies are numbers (fractions) in [0, 1]")
        accs.append(value)
    table["acc"] = pd.Series(accs, dtype="float64", index=table.index)
    for col in [c for c in ("method", "dataset") if c in table.columns]:
        if (table[col].str.strip() == "").any():
            raise ValueError(f"{path} row {int((table[col].str.strip() == '').idxmax()) + 2}: {col} is empty")
        padded = table[col] != table[col].str.strip()
        if padded.any():
            row = int(padded.idxmax())
            raise ValueError(f"{path} row {row + 2}: {col} is {table[col][row][:40]!r}, with spaces at an end; write it "
                             f"as {table[col][row].strip()[:40]!r} (a label with spaces would be a label of its own)")
        table[col] = [csv_text(v) for v in table[col]]
    for col in table.columns:
        if col in stats.REQUIRED_COLUMNS or col in ("dataset", "method"):
            continue
        numbers = pd.to_numeric(table[col].replace("", math.nan), errors="coerce")
        if col == "seconds_per_iteration" or numbers.notna().sum() == (table[col] != "").sum():
            table[col] = numbers  # a numeric column (NaN where empty)
        else:
            table[col] = [csv_text(v) for v in table[col]]
    return stats.check_long(table)


_INTEGER = re.compile(r"\+?\d{1,25}(\.0*)?")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def table_datasets(table: pd.DataFrame, source: str) -> list:
    """The datasets of a long table: its ``dataset`` column, or (a study's ``results.csv`` has none) the
    ``config.json`` of each run its ``run_dir`` column names (relative to the table's folder); ``ValueError`` when
    neither tells."""
    if "dataset" in table.columns:
        return sorted(set(table["dataset"]))
    if "run_dir" not in table.columns or not source.endswith(".csv"):
        raise ValueError(f"{source} names no dataset (no dataset or run_dir column); compare the run folders instead")
    found = set()
    for run_dir in dict.fromkeys(table["run_dir"]):
        path = os.path.join(os.path.dirname(os.path.abspath(source)), str(run_dir), CONFIG)
        try:
            found.add(DistillConfig.from_json(read_json(path), source=path).dataset)
        except ValueError as err:
            raise ValueError(f"{source} names no dataset and its run {run_dir} cannot tell: "
                             f"{str(err).strip().splitlines()[0]}") from None
    return sorted(found)


def _seconds(value) -> float:
    """A metrics file's seconds per iteration as a float: NaN where it has none (``null``, or NaN written by
    hddgeo before 0.2's baselines wrote ``null``)."""
    return float("nan") if value is None else float(value)


def long_rows(metrics: dict, seed: int, run_dir: str = "") -> list[dict]:
    """One row per evaluation network of a finished cell (nothing if it was not evaluated)."""
    return [{"method": metrics["method"], "ipc": metrics["ipc"], "seed": seed, "network": j, "acc": acc,
             "seconds_per_iteration": _seconds(metrics.get("seconds_per_iteration")), "run_dir": run_dir}
            for j, acc in enumerate(metrics.get("accs") or [])]


def cells_table(cells: Sequence, results: Sequence[dict]) -> pd.DataFrame:
    """The long table of finished cells: one row per evaluation network, in the cells' order."""
    rows = []
    for cell, metrics in zip(cells, results):
        rows += long_rows(metrics, cell.cfg.seed, cell.run_dir)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Wide view of a long table: one row per method, one ``mean ± std`` column (in %) per IPC."""
    return stats.summary_wide(stats.summarise(table))


def write_report(table: pd.DataFrame, out_dir: str, name: str = "results", pairs=None,
                 preamble: str = "") -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Save a long table as ``<name>.csv`` (run directories inside ``out_dir`` named relative to it), its per-method
    summary and paired differences as
    ``<name>_summary.csv`` / ``<name>_paired.csv``, and both as markdown in ``<name>.md``."""
    summary, diffs, text = _report_by_dataset(table, pairs)
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, f"{name}.csv"), _portable(table, out_dir))
    write_csv(os.path.join(out_dir, f"{name}_summary.csv"), summary)
    write_csv(os.path.join(out_dir, f"{name}_paired.csv"), diffs)
    text = (preamble + "\n\n" if preamble else "") + text
    write_text(os.path.join(out_dir, f"{name}.md"), text)
    return summary, diffs, text


def _portable(table: pd.DataFrame, out_dir: str) -> pd.DataFrame:
    """``table`` with its ``run_dir`` column relative to ``out_dir`` where a run lies inside it (a study folder is
    then readable wherever it is copied or checked out)."""
    if "run_dir" not in table.columns or table.empty:
        return table
    root = os.path.realpath(out_dir)

    def rel(path):
        full = os.path.realpath(path)
        return os.path.relpath(full, root) if full.startswith(root + os.sep) else path

    return table.assign(run_dir=[rel(p) for p in table["run_dir"]])


def _report_by_dataset(table: pd.DataFrame, pairs=None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """:func:`stats.report`, once per dataset when the table has a ``dataset`` column (a section each, and a
    ``dataset`` column in the summary and the paired differences): runs of two datasets are never pooled."""
    if "dataset" not in table.columns:
        return stats.report(table, pairs)
    parts = []
    for dataset in dict.fromkeys(table["dataset"]):
        summary, diffs, text = stats.report(table[table["dataset"] == dataset].reset_index(drop=True), pairs)
        summary.insert(0, "dataset", dataset)
        diffs.insert(0, "dataset", dataset)
        parts.append((summary, diffs, f"## {dataset}\n\n{text}"))
    return (pd.concat([p[0] for p in parts], ignore_index=True), pd.concat([p[1] for p in parts], ignore_index=True),
            "\n".join(p[2] for p in parts))


def read_log(run_dir: str) -> pd.DataFrame:
    """A run's ``log.csv`` (one row per iteration; ``gap_*`` / ``eval_acc`` are NaN where not logged)."""
    return pd.read_csv(os.path.join(run_dir, LOG))


__all__ = ["BUDGET_FIELDS", "EVAL_FIELDS", "NEUTRAL_FIELDS", "PAIRED_EVAL_FIELDS", "cells_table", "format_table", "long_rows", "read_log",
           "read_long_table", "read_run", "read_runs", "table_datasets", "write_report"]
