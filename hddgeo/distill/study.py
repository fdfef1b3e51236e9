"""A study: a grid of distillation runs that differ in one switch (matcher / centroid / IPC) over several seeds,
planned as cells (:func:`study_cells`), checked together (:func:`check_study`) and run by an executor
(:func:`run_cells`), which writes the report.

Every cell of one seed uses the same budget, feature networks, real batches, DSA draws, initial images and
evaluation networks, so the switch is the only difference: results are compared *paired by seed* with
:mod:`hddgeo.stats`.  A ``random`` row evaluates the real images each seed's synthetic sets start from.
Each cell is a run directory under ``out_dir/runs/`` (:mod:`hddgeo.distill.cell`); finished cells are reused and
unfinished ones resumed, so a killed study continues.  Tables are long (:mod:`hddgeo.distill.results`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Optional, Sequence

import pandas as pd

from hddgeo import stats
from hddgeo.device import resolve_device
from hddgeo.errors import ConfigTypeError, RunDirError, StudyError
from hddgeo.rundir import CONFIG, METRICS

from . import executors
from .cell import (Cell, baseline_cell, baseline_row, cell_name, check_cell_dir, check_name, check_same_run,  # noqa: F401
                   config_mismatch, initial_images, read_cell, run_cell)
from .config import MAX_SEED, DistillConfig, check_threads, describe
from .results import (cells_table, format_table, read_log, read_long_table, read_run, read_runs,  # noqa: F401
                      table_datasets, write_report)

# (the names imported from .cell and .results beyond those used here are where experiment scripts find them)

DEFAULT_VARIANTS = (
    {"matcher": "euclidean"},
    {"matcher": "hdd", "centroid": "law"},
    {"matcher": "hdd", "centroid": "karcher"},
)


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
    each a :class:`~hddgeo.distill.cell.Cell` under ``out_dir/runs/``; nothing is checked or written."""
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
            check_name(cell.name, "its folder name")
            cell.cfg.validate()
            resolve_device(cell.cfg.device)
        except (ValueError, ConfigTypeError) as err:
            raise type(err)(f"cell {cell.name[:200]!r}: {err}") from None
        if cell.run_dir in seen:
            raise ValueError(f"two cells of the study are both {cell.name} ({seen[cell.run_dir]} and "
                             f"{describe(cell.cfg)}); give one of the variants a tag")
        seen[cell.run_dir] = describe(cell.cfg)


def check_study(cells: Sequence, out_dir: str, name: str = "results", jobs: Optional[int] = 1,
                executor: str = "local", resume: bool = True) -> None:
    """Every check a study makes before its first cell starts, in one place (``hddgeo study --dry-run`` makes
    them too): the executor, every cell (:func:`check_cells`), the report name, the study folder's ``runs``
    and every cell folder (no links, :func:`check_cell_dir`), each existing cell's ``config.json`` (the cell's
    run) and finished cell's ``metrics.json`` (:func:`read_cell`), and for the local executor the devices and
    thread counts.  ``ValueError``, one line, naming the cell and the field."""
    if executor not in executors.EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(executors.EXECUTORS)}")
    check_name(name, "the report name")
    check_cells(cells)  # every cell's configuration is checked before the first one starts
    if os.path.islink(os.path.join(out_dir, "runs")):
        raise RunDirError(f"{os.path.join(out_dir, 'runs')} is a link, not the study's runs folder: a study writes only "
                         f"inside its folder; remove the link (or pass another --out)")
    for cell in cells:
        try:
            check_cell_dir(cell.run_dir)
            if os.path.isfile(os.path.join(cell.run_dir, CONFIG)):
                check_same_run(cell.cfg if cell.kind == "distill" else
                               dataclasses.replace(cell.cfg, matcher="euclidean", iterations=1), cell.run_dir)
            if resume and os.path.isfile(os.path.join(cell.run_dir, METRICS)):
                read_cell(cell.kind, cell.cfg, cell.run_dir)
        except (ValueError, RunDirError, ConfigTypeError) as err:
            raise type(err)(f"cell {cell.name}: {str(err).strip().splitlines()[0]}") from None
    if executor == "local":
        executors.plan_slots(cells, jobs)
        for cell in cells:
            try:
                check_threads(cell.cfg.threads)
            except ValueError as err:
                raise ValueError(f"cell {cell.name}: {err}") from None


def run_cells(cells: Sequence, out_dir: str, name: str = "results", jobs: int = 1, progress: bool = True,
              resume: bool = True, executor: str = "local", ray_address: Optional[str] = None) -> pd.DataFrame:
    """Check every cell (:func:`check_study`), run them with ``executor`` and save the long table of the finished
    ones as :func:`write_report` does; return it.

    A cell that fails with an error of its input (one line: a ``ValueError`` such as a cell another process
    holds, a dataset missing on a node, CUDA out of memory) does not stop the others: when every other cell has
    run, the tables of the finished cells are written and one ``ValueError`` names the failed cells and the
    first one's error.  The cells leave this process with absolute run directories (a Ray node's working folder
    is not this one's)."""
    check_study(cells, out_dir, name, jobs=jobs, executor=executor, resume=resume)
    leaving = [dataclasses.replace(c, run_dir=os.path.abspath(c.run_dir)) for c in cells]
    if executor == "ray":
        results = executors.run_ray(leaving, address=ray_address, resume=resume, progress=progress)
    else:
        results = executors.run_local(leaving, jobs=jobs, resume=resume, progress=progress)
    failed = [(c, r) for c, r in zip(cells, results) if isinstance(r, executors.CellFailed)]
    done = [(c, r) for c, r in zip(cells, results) if not isinstance(r, executors.CellFailed)]
    table = cells_table([c for c, _ in done], [r for _, r in done])
    if not table.empty:
        write_report(table, out_dir, name)
    if failed:
        first = failed[0]
        raise StudyError(f"{len(failed)} of {len(cells)} cells failed ({', '.join(c.name for c, _ in failed)})"
                         + (f"; the tables hold the {len(done)} others" if not table.empty else "")
                         + f"; {first[0].name}: {first[1].message}")
    return table


def check_seeds_and_jobs(seeds: Optional[Sequence[int]] = None, jobs: int = 1) -> None:
    """``ValueError`` (one line, before anything is written) unless ``seeds`` are distinct non-negative integers
    and ``jobs`` lies in 1..os.cpu_count(): a repeated seed would count one run twice, and more one-thread cells
    than cores would slow each cell and write inflated timings into the results."""
    if seeds is not None:
        seeds = list(seeds)
        if not seeds or len(set(seeds)) != len(seeds) or any(type(s) is not int or not 0 <= s <= MAX_SEED
                                                             for s in seeds):
            raise ValueError(f"--seeds must be distinct integers in 0..{MAX_SEED}, got "
                             f"{' '.join(map(str, seeds))[:200] or 'none'}")
    cores = os.cpu_count() or 1
    if type(jobs) is not int or not (1 <= jobs <= cores):
        raise ValueError(f"--jobs must lie in 1..{cores} (the cores of this machine), got {jobs}")
