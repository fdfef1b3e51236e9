"""Grids of distillation runs that differ in one switch (matcher / centroid / IPC) over several seeds.

Every cell of one seed uses the same budget, feature networks, real batches, DSA draws, initial images and
evaluation networks, so the switch is the only difference: results are compared *paired by seed* with
:mod:`hddgeo.stats`.  A ``random`` row evaluates the real images each seed's synthetic sets start from.

Tables are long: one row per (method, IPC, seed, evaluation network).  Each cell is a run directory under
``out_dir/runs/``; finished cells are reused and unfinished ones resumed, so a killed study continues.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
from typing import Iterable, Optional, Sequence

import pandas as pd
import torch

from hddgeo import stats
from hddgeo.device import resolve_device
from hddgeo.seeds import RunSeeds
from hddgeo.evaluate import evaluate_synset

from .methods import build_method
from hddgeo.rundir import (CONFIG, LOCK, LOG, METRICS, RunLock, is_temporary, read_json, write_csv, write_json,
                           write_text)

from .runner import (RESUMABLE_FIELDS, DistillConfig, config_differences, describe, eval_augment, prepare,
                     run_distillation)

DEFAULT_VARIANTS = (
    {"matcher": "euclidean"},
    {"matcher": "hdd", "centroid": "law"},
    {"matcher": "hdd", "centroid": "karcher"},
)


def baseline_row(cfg: DistillConfig, progress: bool = False) -> dict:
    """Accuracy of the initial synthetic set (the seed's random real images) under the final evaluation."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    run_seeds = RunSeeds.of(cfg)
    syn = method.init_synset(run_seeds.init())
    images, labels = syn.expanded()
    res = evaluate_synset(images.detach(), labels, dataset.test_images, dataset.test_labels, dataset.num_classes,
                          model=cfg.model, num_nets=cfg.final_eval_nets, epochs=cfg.final_eval_epochs,
                          augment=eval_augment(cfg), seed=run_seeds.eval_networks("final", cfg.final_eval_nets),
                          progress=progress, device=method.device, amp=cfg.amp)
    return {"method": stats.RANDOM, "dataset": cfg.dataset, "ipc": cfg.ipc, "acc_mean": res["mean"],
            "acc_std": res["std"], "accs": res["accs"], "eval_seeds": res["seeds"], "seconds_per_iteration": float("nan")}


def baseline_cell(cfg: DistillConfig, run_dir: str, progress: bool = False) -> dict:
    """:func:`baseline_row` kept in ``run_dir`` (``config.json`` + ``metrics.json``), reused when it matches."""
    cfg = dataclasses.replace(cfg, matcher="euclidean", iterations=1)  # fields that do not change the baseline
    if os.path.isdir(run_dir):
        with RunLock(run_dir):  # a cell one process owns at a time, like a distillation's run directory
            done = _finished_baseline(cfg, run_dir)
        if done is not None:
            return done
    row = baseline_row(cfg, progress=progress)  # checks every input before anything is written
    os.makedirs(run_dir, exist_ok=True)
    with RunLock(run_dir):
        done = _finished_baseline(cfg, run_dir)  # another process may have finished it meanwhile
        if done is None:
            write_json(os.path.join(run_dir, CONFIG), cfg.to_json())
            write_json(os.path.join(run_dir, METRICS), row)
    return row if done is None else done


def _finished_baseline(cfg: DistillConfig, run_dir: str) -> Optional[dict]:
    """The metrics of a finished baseline cell of ``cfg`` in ``run_dir``, ``None`` if there is none;
    ``ValueError`` if it holds another run."""
    if not os.path.isfile(os.path.join(run_dir, METRICS)):
        return None
    check_same_run(cfg, run_dir)
    return read_json(os.path.join(run_dir, METRICS))


def cell_name(cfg: DistillConfig, label: Optional[str] = None) -> str:
    label = label or describe(cfg)
    return f"ipc{cfg.ipc}_{label.replace('/', '-').replace('+', '_')}_seed{cfg.seed}"


def long_rows(metrics: dict, seed: int, run_dir: str = "") -> list[dict]:
    """One row per evaluation network of a finished cell (nothing if it was not evaluated)."""
    return [{"method": metrics["method"], "ipc": metrics["ipc"], "seed": seed, "network": j, "acc": acc,
             "seconds_per_iteration": metrics.get("seconds_per_iteration", float("nan")), "run_dir": run_dir}
            for j, acc in enumerate(metrics.get("accs") or [])]


def run_study(base: DistillConfig, out_dir: str, ipcs: Iterable[int] = (1, 10),
              variants: Iterable[dict] = DEFAULT_VARIANTS, seeds: Optional[Sequence[int]] = None,
              baseline: bool = True, progress: bool = True, resume: bool = True,
              cfg_for: Optional[callable] = None, name: str = "results", jobs: int = 1,
              executor: str = "local", ray_address: Optional[str] = None) -> pd.DataFrame:
    """Run every ``variant`` (overrides of ``base``) at every IPC and seed; return and save the long table.

    ``cfg_for(cfg)`` may adjust each cell's configuration (e.g. per-IPC settings) before it runs.  Writes
    ``<name>.csv`` (long), ``<name>_summary.csv``, ``<name>_paired.csv`` and ``<name>.md`` into ``out_dir``.

    ``jobs > 1`` runs that many cells at a time, each in its own process with one torch thread: the small
    convolutions of a distillation step scale badly over threads, so on a 2-core machine two one-thread
    cells finish much sooner than two two-thread cells in turn.  Each cell's result depends only on its
    configuration (``threads`` included), so a study repeats itself exactly with the same ``jobs``.  Where the
    cells run is ``executor`` (:mod:`hddgeo.distill.executors`: ``local`` or ``ray``).
    """
    check_seeds_and_jobs(seeds, jobs)
    cells = study_cells(base, out_dir, ipcs, variants, seeds, baseline, cfg_for, one_thread=jobs > 1)
    return run_cells(cells, out_dir, name, jobs=jobs, progress=progress, resume=resume, executor=executor,
                     ray_address=ray_address)


def study_cells(base: DistillConfig, out_dir: str, ipcs: Iterable[int] = (1, 10),
                variants: Iterable[dict] = DEFAULT_VARIANTS, seeds: Optional[Sequence[int]] = None,
                baseline: bool = True, cfg_for: Optional[callable] = None, one_thread: bool = False) -> list:
    """The cells :func:`run_study` runs, in table order (per IPC, per seed: the baseline, then each variant),
    each an :class:`~hddgeo.distill.executors.Cell` under ``out_dir/runs/``; nothing is checked or written."""
    from .executors import Cell

    seeds = [base.seed] if seeds is None else list(seeds)
    variants = list(variants)
    adjust = cfg_for or (lambda c: c)
    threads = (lambda c: dataclasses.replace(c, threads=1)) if one_thread else (lambda c: c)
    cells = []
    for ipc in ipcs:
        for seed in seeds:
            cell_base = dataclasses.replace(base, ipc=ipc, seed=seed)
            if baseline:
                cfg = threads(adjust(cell_base))
                cells.append(Cell("baseline", cfg, os.path.join(out_dir, "runs", cell_name(cfg, stats.RANDOM))))
            for variant in variants:
                cfg = threads(adjust(dataclasses.replace(cell_base, **variant)))
                cells.append(Cell("distill", cfg, os.path.join(out_dir, "runs", cell_name(cfg))))
    return cells


def check_cells(cells: Sequence) -> None:
    """``ValueError`` (one line) unless every cell's configuration is valid, its device exists and no two cells
    share a run directory; called before the first cell starts."""
    seen = {}
    for cell in cells:
        try:
            cell.cfg.validate()
            resolve_device(cell.cfg.device)
        except ValueError as err:
            raise ValueError(f"cell {cell.name}: {err}") from None
        if cell.run_dir in seen:
            raise ValueError(f"two cells of the study are both {cell.name} ({seen[cell.run_dir]} and "
                             f"{describe(cell.cfg)}); give one of the variants a tag")
        seen[cell.run_dir] = describe(cell.cfg)


def run_cells(cells: Sequence, out_dir: str, name: str = "results", jobs: int = 1, progress: bool = True,
              resume: bool = True, executor: str = "local", ray_address: Optional[str] = None) -> pd.DataFrame:
    """Check every cell (:func:`check_cells`), run them with ``executor`` and save their long table as
    :func:`write_report` does; return it."""
    from . import executors

    if executor not in executors.EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(executors.EXECUTORS)}")
    check_cells(cells)  # every cell's configuration is checked before the first one starts
    if executor == "ray":
        results = executors.run_ray(cells, address=ray_address, resume=resume, progress=progress)
    else:
        results = executors.run_local(cells, jobs=jobs, resume=resume, progress=progress)
    table = cells_table(cells, results)
    write_report(table, out_dir, name)
    return table


def cells_table(cells: Sequence, results: Sequence[dict]) -> pd.DataFrame:
    """The long table of finished cells: one row per evaluation network, in the cells' order."""
    rows = []
    for cell, metrics in zip(cells, results):
        rows += long_rows(metrics, cell.cfg.seed, cell.run_dir)
    return pd.DataFrame(rows)


def _run_cell_task(kind: str, cfg: DistillConfig, run_dir: str, resume: bool, progress: bool) -> dict:
    from .executors import run_cell_task

    return run_cell_task(kind, cfg, run_dir, resume, progress)


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


def load_runs(paths: Iterable[str]) -> pd.DataFrame:
    """The long table (with a ``dataset`` column) of the evaluated runs among :func:`read_runs`'s."""
    return read_runs(paths)[0]


# Fields that make two runs of one dataset and IPC incomparable: how their synthetic sets were evaluated
# (every run, the random baseline too) and the distillation budget (distilled runs).  Runs pooled into one row
# (same method) must further agree in every field but the seed and those that do not change what a run computes.
EVAL_FIELDS = ("model", "final_eval_nets", "final_eval_epochs", "eval_test_per_class", "dsa", "dsa_strategy")
BUDGET_FIELDS = ("iterations", "batch_real")
NEUTRAL_FIELDS = ("seed", "checkpoint_every", "eval_every", "eval_nets", "eval_epochs", "gap_every")


def read_runs(paths: Iterable[str]) -> tuple[pd.DataFrame, list[str]]:
    """``(long table, run directories without evaluation)`` of finished run directories; a folder that is not a
    run directory contributes the run directories directly inside it (or inside its ``runs/``), so a study's
    output folder can be named.

    Every ``metrics.json`` and ``config.json`` is checked (:func:`read_run`), and runs are refused, in one
    ``ValueError`` naming the field and two runs, when they would be paired or pooled although they differ in
    the dataset's evaluation protocol or budget (``EVAL_FIELDS``, ``BUDGET_FIELDS``), or pooled although their
    configurations differ in more than the seed.  A run without evaluation (``final_eval_epochs`` 0) is left
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


def read_long_table(path: str) -> pd.DataFrame:
    """A long accuracy table written by :func:`write_report` (``method, ipc, seed, network, acc``, optionally
    ``dataset``, ``run_dir`` ...), checked as data: ``ValueError`` naming the file, the row and the column for a
    missing column, a seed, IPC or network that is not a non-negative integer, or an accuracy outside [0, 1]."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist")
    try:
        table = pd.read_csv(path, dtype={"method": str, "dataset": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a CSV table: {str(err).splitlines()[0]}") from None
    missing = [c for c in stats.REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}: a long table has "
                         f"{', '.join(stats.REQUIRED_COLUMNS)}")
    if table.empty:
        raise ValueError(f"{path} has no rows")
    for col in ("ipc", "seed", "network"):
        values = pd.to_numeric(table[col], errors="coerce")
        bad = ~(values.notna() & (values >= 0) & (values == values.round()))
        if bad.any():
            i = int(bad.idxmax())
            raise ValueError(f"{path} row {i + 2}: {col} is {table[col].iloc[i]!r}, not a non-negative integer")
        table[col] = values.astype(int)
    acc = pd.to_numeric(table["acc"], errors="coerce")
    bad = ~acc.between(0, 1)
    if bad.any():
        i = int(bad.idxmax())
        raise ValueError(f"{path} row {i + 2}: acc is {table['acc'].iloc[i]!r}; accuracies are fractions in [0, 1]")
    table["acc"] = acc.astype(float)
    if table["method"].isna().any():
        raise ValueError(f"{path} row {int(table['method'].isna().idxmax()) + 2}: method is empty")
    return stats.check_long(table)


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
        bad("method", f"must be a string, got {method!r}")
    baseline = method == stats.RANDOM and cfg.iterations == 1 and cfg.matcher == "euclidean"  # a baseline_cell
    if method != describe(cfg) and not baseline:
        bad("method", f"is {method!r} but {config_path} describes {describe(cfg)!r} (method, matcher, centroid, tag)")
    ipc = metrics.get("ipc")
    if type(ipc) is not int:
        bad("ipc", f"must be an integer, got {ipc!r}")
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


def _check_comparable(runs: list) -> None:
    """``ValueError`` naming the field and two of ``runs`` (``(dir, cfg, method)``) that differ where they
    would be paired (one dataset and IPC) or pooled (one method too)."""
    def value(cfg, field):
        return getattr(cfg, field) if field != "dsa_strategy" or cfg.dsa else None  # no DSA: no strategy

    pooled_fields = [f.name for f in dataclasses.fields(DistillConfig)
                     if f.name not in NEUTRAL_FIELDS + RESUMABLE_FIELDS]
    first_pair, first_pool = {}, {}
    for d, cfg, method in runs:
        random = method == stats.RANDOM
        checks = [(first_pair, (cfg.dataset, cfg.ipc, "eval"), EVAL_FIELDS, "paired"),
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


# ----------------------------------------------------------------------------- helpers for experiment scripts
def check_seeds_and_jobs(seeds: Optional[Sequence[int]] = None, jobs: int = 1) -> None:
    """``ValueError`` (one line, before anything is written) unless ``seeds`` are distinct non-negative integers
    and ``jobs`` lies in 1..os.cpu_count(): a repeated seed would count one run twice, and more one-thread cells
    than cores would slow each cell and write inflated timings into the results."""
    if seeds is not None:
        seeds = list(seeds)
        if not seeds or len(set(seeds)) != len(seeds) or any(type(s) is not int or s < 0 for s in seeds):
            raise ValueError(f"--seeds must be distinct non-negative integers, got {' '.join(map(str, seeds)) or 'none'}")
    cores = os.cpu_count() or 1
    if type(jobs) is not int or not (1 <= jobs <= cores):
        raise ValueError(f"--jobs must lie in 1..{cores} (the cores of this machine), got {jobs}")


def config_mismatch(cfg: DistillConfig, run_dir: str) -> dict:
    """``{field: (in run_dir/config.json, requested)}`` for every field that differs (empty: same run);
    fields that do not change what a run computes (``RESUMABLE_FIELDS``) are not compared."""
    return config_differences(cfg, read_json(os.path.join(run_dir, CONFIG)))


def check_same_run(cfg: DistillConfig, run_dir: str) -> None:
    """``ValueError`` naming the fields in which ``run_dir/config.json`` differs from ``cfg``."""
    diff = config_mismatch(cfg, run_dir)
    if diff:
        shown = ", ".join(f"{k}={old!r} (requested {new!r})" for k, (old, new) in sorted(diff.items()))
        raise ValueError(f"{run_dir} holds a different run: {shown}; use another output folder or delete it")


def run_cell(cfg: DistillConfig, run_dir: str, resume: bool = True, progress: bool = True) -> dict:
    """Distil one cell of a study into ``run_dir`` and return its metrics, reusing what is there.

    A finished run (``metrics.json``) is reused and an unfinished one (``checkpoint.pt``) resumed, when
    ``resume`` is true; either way its ``config.json`` must describe the same run as ``cfg``
    (``ValueError`` naming the differing fields otherwise, so that a changed budget never silently
    reuses an old result).  A directory killed before its first checkpoint holds only ``config.json``
    (and perhaps ``log.csv`` and temporary files): it is cleared and the run starts afresh.  The directory is
    inspected under its lock: a cell another process is running is ``RunDirBusy``, never reused or cleared.
    """
    cfg.validate()
    has_ckpt = False
    if os.path.isdir(run_dir):
        with RunLock(run_dir):
            if os.path.exists(os.path.join(run_dir, CONFIG)):
                check_same_run(cfg, run_dir)
            metrics_path = os.path.join(run_dir, METRICS)
            if resume and os.path.exists(metrics_path):
                return read_json(metrics_path)
            has_ckpt = os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
            stale = set(os.listdir(run_dir)) - {LOCK}
            if not has_ckpt and all(name in (CONFIG, LOG, "tensorboard") or is_temporary(name) for name in stale):
                for name in stale:
                    path = os.path.join(run_dir, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)  # a link itself, never what it points to
    return run_distillation(cfg, run_dir, resume=resume and has_ckpt, progress=progress)


def read_log(run_dir: str) -> pd.DataFrame:
    """A run's ``log.csv`` (one row per iteration; ``gap_*`` / ``eval_acc`` are NaN where not logged)."""
    return pd.read_csv(os.path.join(run_dir, "log.csv"))


def initial_images(cfg: DistillConfig) -> torch.Tensor:
    """The synthetic images a run of ``cfg`` starts from (its seed's real or noise initialisation)."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    return method.init_synset(RunSeeds.of(cfg).init()).images.detach()
