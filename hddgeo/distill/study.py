"""Grids of distillation runs that differ in one switch (matcher / centroid / IPC) over several seeds.

Every cell of one seed uses the same budget, feature networks, real batches, DSA draws, initial images and
evaluation networks, so the switch is the only difference: results are compared *paired by seed* with
:mod:`hddgeo.stats`.  A ``random`` row evaluates the real images each seed's synthetic sets start from.

Tables are long: one row per (method, IPC, seed, evaluation network).  Each cell is a run directory under
``out_dir/runs/``; finished cells are reused and unfinished ones resumed, so a killed study continues.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Iterable, Optional, Sequence

import pandas as pd
import torch

from hddgeo import stats
from hddgeo.device import resolve_device
from hddgeo.seeds import FINAL_EVAL_OFFSET, init_generator
from hddgeo.evaluate import evaluate_synset

from .methods import build_method
from hddgeo.rundir import CONFIG, METRICS, is_temporary, read_json, write_json

from .runner import DistillConfig, config_differences, describe, eval_augment, prepare, run_distillation

DEFAULT_VARIANTS = (
    {"matcher": "euclidean"},
    {"matcher": "hdd", "centroid": "law"},
    {"matcher": "hdd", "centroid": "karcher"},
)


def baseline_row(cfg: DistillConfig, progress: bool = False) -> dict:
    """Accuracy of the initial synthetic set (the seed's random real images) under the final evaluation."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    syn = method.init_synset(init_generator(cfg.seed))
    images, labels = syn.expanded()
    res = evaluate_synset(images.detach(), labels, dataset.test_images, dataset.test_labels, dataset.num_classes,
                          model=cfg.model, num_nets=cfg.final_eval_nets, epochs=cfg.final_eval_epochs,
                          augment=eval_augment(cfg), seed=cfg.seed + FINAL_EVAL_OFFSET, progress=progress,
                          device=method.device, amp=cfg.amp)
    return {"method": stats.RANDOM, "dataset": cfg.dataset, "ipc": cfg.ipc, "acc_mean": res["mean"],
            "acc_std": res["std"], "accs": res["accs"], "seconds_per_iteration": float("nan")}


def baseline_cell(cfg: DistillConfig, run_dir: str, progress: bool = False) -> dict:
    """:func:`baseline_row` kept in ``run_dir`` (``config.json`` + ``metrics.json``), reused when it matches."""
    cfg = dataclasses.replace(cfg, matcher="euclidean", iterations=1)  # fields that do not change the baseline
    if os.path.exists(os.path.join(run_dir, METRICS)):
        check_same_run(cfg, run_dir)
        return read_json(os.path.join(run_dir, METRICS))
    row = baseline_row(cfg, progress=progress)
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, CONFIG), cfg.to_json())
    write_json(os.path.join(run_dir, METRICS), row)
    return row


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
              cfg_for: Optional[callable] = None, name: str = "results", jobs: int = 1) -> pd.DataFrame:
    """Run every ``variant`` (overrides of ``base``) at every IPC and seed; return and save the long table.

    ``cfg_for(cfg)`` may adjust each cell's configuration (e.g. per-IPC settings) before it runs.  Writes
    ``<name>.csv`` (long), ``<name>_summary.csv``, ``<name>_paired.csv`` and ``<name>.md`` into ``out_dir``.

    ``jobs > 1`` runs that many cells at a time, each in its own process with one torch thread: the small
    convolutions of a distillation step scale badly over threads, so on a 2-core machine two one-thread
    cells finish much sooner than two two-thread cells in turn.  Each cell's result depends only on its
    configuration (``threads`` included), so a study repeats itself exactly with the same ``jobs``.
    """
    seeds = [base.seed] if seeds is None else list(seeds)
    variants = list(variants)
    adjust = cfg_for or (lambda c: c)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    one_thread = (lambda c: dataclasses.replace(c, threads=1)) if jobs > 1 else (lambda c: c)
    cells = []  # (kind, cfg, run_dir) in table order
    for ipc in ipcs:
        for seed in seeds:
            cell_base = dataclasses.replace(base, ipc=ipc, seed=seed)
            if baseline:
                cfg = one_thread(adjust(cell_base))
                cells.append(("baseline", cfg, os.path.join(out_dir, "runs", cell_name(cfg, stats.RANDOM))))
            for variant in variants:
                cfg = one_thread(adjust(dataclasses.replace(cell_base, **variant)))
                cells.append(("distill", cfg, os.path.join(out_dir, "runs", cell_name(cfg))))
    for _, cfg, _ in cells:
        cfg.validate()  # every cell's configuration is checked before the first one starts
        resolve_device(cfg.device)  # and its device exists
    if jobs == 1:
        results = [_run_cell_task(kind, cfg, run_dir, resume, progress) for kind, cfg, run_dir in cells]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter per worker, so no torch thread pool or generator state is inherited
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_cell_task, kind, cfg, run_dir, resume, False) for kind, cfg, run_dir in cells]
            results = []
            for n, future in enumerate(futures, 1):
                results.append(future.result())
                if progress:
                    print(f"[{n}/{len(cells)}] {os.path.basename(cells[n - 1][2])}", file=sys.stderr, flush=True)
    rows = []
    for (_, cfg, run_dir), metrics in zip(cells, results):
        rows += long_rows(metrics, cfg.seed, run_dir)
    table = pd.DataFrame(rows)
    write_report(table, out_dir, name)
    return table


def _run_cell_task(kind: str, cfg: DistillConfig, run_dir: str, resume: bool, progress: bool) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if kind == "baseline":
        return baseline_cell(cfg, run_dir)
    return run_cell(cfg, run_dir, resume=resume, progress=progress)


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Wide view of a long table: one row per method, one ``mean ± std`` column (in %) per IPC."""
    return stats.summary_wide(stats.summarise(table))


def write_report(table: pd.DataFrame, out_dir: str, name: str = "results", pairs=None,
                 preamble: str = "") -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Save a long table as ``<name>.csv``, its per-method summary and paired differences as
    ``<name>_summary.csv`` / ``<name>_paired.csv``, and both as markdown in ``<name>.md``."""
    summary, diffs, text = stats.report(table, pairs)
    os.makedirs(out_dir, exist_ok=True)
    table.to_csv(os.path.join(out_dir, f"{name}.csv"), index=False)
    summary.to_csv(os.path.join(out_dir, f"{name}_summary.csv"), index=False)
    diffs.to_csv(os.path.join(out_dir, f"{name}_paired.csv"), index=False)
    text = (preamble + "\n\n" if preamble else "") + text
    with open(os.path.join(out_dir, f"{name}.md"), "w") as fh:
        fh.write(text)
    return summary, diffs, text


def load_runs(paths: Iterable[str]) -> pd.DataFrame:
    """The long table of finished run directories; a folder that is not a run directory contributes the
    run directories directly inside it (or inside its ``runs/``), so a study's output folder can be named."""
    rows = []
    for path in paths:
        dirs = _run_dirs(path)
        if not dirs:
            raise ValueError(f"{path} holds no finished run (no metrics.json in it, its subfolders or runs/)")
        for d in dirs:
            metrics, config = read_json(os.path.join(d, METRICS)), read_json(os.path.join(d, CONFIG))
            accs = metrics.get("accs") or []
            if (not {"method", "ipc"} <= set(metrics) or not isinstance(config.get("seed"), int)
                    or not isinstance(accs, list) or not all(isinstance(a, (int, float)) for a in accs)):
                raise ValueError(f"{d}: metrics.json needs 'method', 'ipc' and a list 'accs', config.json an integer "
                                 f"'seed': not a run directory written by hddgeo")
            rows += long_rows(metrics, config["seed"], d)
    table = pd.DataFrame(rows)
    return table.sort_values("method", key=lambda col: col.map(stats.method_rank), kind="stable", ignore_index=True)


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
    (and perhaps temporary files): it is cleared and the run starts afresh.
    """
    import shutil

    cfg.validate()
    if os.path.isdir(run_dir) and os.path.exists(os.path.join(run_dir, "config.json")):
        check_same_run(cfg, run_dir)
    metrics_path = os.path.join(run_dir, METRICS)
    if resume and os.path.exists(metrics_path):
        return read_json(metrics_path)
    has_ckpt = os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    if os.path.isdir(run_dir) and not has_ckpt:
        stale = os.listdir(run_dir)
        if all(name == CONFIG or name == "log.csv" or is_temporary(name) for name in stale):
            shutil.rmtree(run_dir)
    return run_distillation(cfg, run_dir, resume=resume and has_ckpt, progress=progress)


def read_log(run_dir: str) -> pd.DataFrame:
    """A run's ``log.csv`` (one row per iteration; ``gap_*`` / ``eval_acc`` are NaN where not logged)."""
    return pd.read_csv(os.path.join(run_dir, "log.csv"))


def initial_images(cfg: DistillConfig) -> torch.Tensor:
    """The synthetic images a run of ``cfg`` starts from (its seed's real or noise initialisation)."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    return method.init_synset(init_generator(cfg.seed)).images.detach()
