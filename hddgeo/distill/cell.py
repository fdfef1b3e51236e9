"""One cell of a study: a run directory and its configuration (:class:`Cell`), and running it in this process
(:func:`run_cell_task`): a distillation (:func:`run_cell`) or the ``random`` baseline (:func:`baseline_cell`).

A finished cell is reused and an unfinished one resumed, always after checking that its ``config.json`` describes
the cell's run; a cell another process is running is :class:`~hddgeo.errors.RunDirBusy`, never reused or cleared.
Executors (:mod:`hddgeo.distill.executors`) decide only where and when each cell runs.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Optional

import torch

from hddgeo.device import provenance
from hddgeo.errors import RunDirError
from hddgeo.evaluate import evaluate_synset
from hddgeo.rundir import CONFIG, LOCK, LOG, METRICS, RunLock, is_temporary, read_json, write_json
from hddgeo.seeds import RunSeeds

from .config import DistillConfig, check_threads, config_differences, describe, describe_baseline
from .methods import build_method
from .results import read_run
from .runner import eval_augment, prepare, run_distillation


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of a study: ``kind`` is ``distill`` or ``baseline`` (the random row, :func:`baseline_cell`)."""

    kind: str
    cfg: DistillConfig
    run_dir: str

    @property
    def name(self) -> str:
        return os.path.basename(self.run_dir)


def cell_name(cfg: DistillConfig, label: Optional[str] = None) -> str:
    label = label or describe(cfg)
    return f"ipc{cfg.ipc}_{label.replace('/', '-').replace('+', '_')}_seed{cfg.seed}"


def check_name(value, where: str) -> str:
    """``value`` if it can be one file or folder name (one path component): a non-empty text without ``/``,
    ``\\``, control characters or NUL, not ``.`` or ``..``, at most 200 bytes; ``ValueError`` naming ``where``."""
    if not isinstance(value, str) or not value or value in (".", "..") or len(value.encode()) > 200 \
            or any(c in value for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{where} must be a file name (one path component: no /, not .., no control characters, "
                         f"at most 200 bytes), got {value!r}"[:300])
    return value


def run_cell_task(kind: str, cfg: DistillConfig, run_dir: str, resume: bool = True, progress: bool = False) -> dict:
    """Run (or reuse, or resume) one cell in this process; its metrics."""
    check_threads(cfg.threads)  # this machine's cores (a Ray node's may differ from the driver's)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if kind == "baseline":
        return baseline_cell(cfg, run_dir)
    return run_cell(cfg, run_dir, resume=resume, progress=progress)


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
    check_cell_dir(run_dir)  # before the lock: a linked cell would have its lock file made elsewhere
    if os.path.isdir(run_dir):
        with RunLock(run_dir):
            check_cell_dir(run_dir)
            has_config = os.path.exists(os.path.join(run_dir, CONFIG))
            if has_config:
                check_same_run(cfg, run_dir)
            metrics_path = os.path.join(run_dir, METRICS)
            if resume and os.path.exists(metrics_path):
                return read_cell("distill", cfg, run_dir)
            has_ckpt = os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
            stale = set(os.listdir(run_dir)) - {LOCK}
            killed = all(name in (CONFIG, LOG, "tensorboard") or is_temporary(name) for name in stale)
            if not has_ckpt and killed and (has_config or all(is_temporary(name) for name in stale)):
                # a cell this study created (its config.json is the cell's) that died before its first checkpoint
                for name in stale:
                    path = os.path.join(run_dir, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)  # a link itself, never what it points to
    return run_distillation(cfg, run_dir, resume=resume and has_ckpt, progress=progress)


def check_cell_dir(run_dir: str) -> None:
    """``ValueError`` (one line) unless ``run_dir`` and the ``runs`` folder holding it are real folders (or do not
    exist yet) and nothing inside the cell is a link: a link would make a cell read, clear or write files
    outside the study folder.  Links under temporary names (a killed write's, removed by the run) are let be."""
    runs = os.path.dirname(os.path.abspath(run_dir))
    for path, what in ((runs, "the study's runs folder"), (run_dir, "a cell")):
        if os.path.islink(path):
            raise RunDirError(f"{path} is a link, not {what}: a study writes only inside its folder; remove the link "
                             f"(or pass another --out)")
        if os.path.lexists(path) and not os.path.isdir(path):
            raise RunDirError(f"{path} is a file, not {what}; move it away (or pass another --out)")
    if not os.path.isdir(run_dir):
        return
    for folder, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path) and not (folder == run_dir and (is_temporary(name) or name == LOCK)):
                raise RunDirError(f"{path} is a link: a study cell holds only its own files; remove the link")


def config_mismatch(cfg: DistillConfig, run_dir: str) -> dict:
    """``{field: (in run_dir/config.json, requested)}`` for every field that differs (empty: same run);
    fields that do not change what a run computes (``RESUMABLE_FIELDS``) are not compared."""
    return config_differences(cfg, read_json(os.path.join(run_dir, CONFIG)))


def check_same_run(cfg: DistillConfig, run_dir: str) -> None:
    """``ValueError`` naming the fields in which ``run_dir/config.json`` differs from ``cfg``."""
    diff = config_mismatch(cfg, run_dir)
    if diff:
        shown = ", ".join(f"{k}={old!r} (requested {new!r})" for k, (old, new) in sorted(diff.items()))
        raise RunDirError(f"{run_dir} holds a different run: {shown}; use another output folder or delete it")


def read_cell(kind: str, cfg: DistillConfig, run_dir: str) -> dict:
    """The metrics of the finished cell in ``run_dir``, read through :func:`read_run`'s checks (the ones
    ``hddgeo compare`` makes) and those of the cell: the method is the cell's (``random`` for a baseline).
    ``ValueError`` naming the file and the field."""
    _, metrics = read_run(run_dir)
    want = describe_baseline(cfg) if kind == "baseline" else describe(cfg)
    if metrics["method"] != want:
        raise ValueError(f"{os.path.join(run_dir, METRICS)}: 'method' is {metrics['method']!r} but the cell runs "
                         f"{want!r}; delete the cell to run it again")
    return metrics


def baseline_cell(cfg: DistillConfig, run_dir: str, progress: bool = False) -> dict:
    """:func:`baseline_row` kept in ``run_dir`` (``config.json`` + ``metrics.json``), reused when it matches."""
    cfg = dataclasses.replace(cfg, matcher="euclidean", iterations=1)  # fields that do not change the baseline
    check_cell_dir(run_dir)
    if os.path.isdir(run_dir):
        with RunLock(run_dir):  # a cell one process owns at a time, like a distillation's run directory
            done = _finished_baseline(cfg, run_dir)
        if done is not None:
            return done
    row = baseline_row(cfg, progress=progress)  # checks every input before anything is written
    check_cell_dir(run_dir)
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
    return read_cell("baseline", cfg, run_dir)


def baseline_row(cfg: DistillConfig, progress: bool = False) -> dict:
    """Accuracy of the initial synthetic set (the seed's random real images) under the final evaluation."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    run_seeds = RunSeeds.of(cfg)
    syn = method.init_synset(run_seeds.init())
    images, labels = syn.expanded()
    started = time.perf_counter()
    res = evaluate_synset(images.detach(), labels, dataset.test_images, dataset.test_labels, dataset.num_classes,
                          model=cfg.model, num_nets=cfg.final_eval_nets, epochs=cfg.final_eval_epochs,
                          augment=eval_augment(cfg), seed=run_seeds.eval_networks("final", cfg.final_eval_nets),
                          progress=progress, device=method.device, amp=cfg.amp)
    return {"method": describe_baseline(cfg), "dataset": cfg.dataset, "ipc": cfg.ipc, "acc_mean": res["mean"],
            "acc_std": res["std"], "accs": res["accs"], "eval_seeds": res["seeds"], "eval_model": cfg.model,
            "eval_epochs": cfg.final_eval_epochs, "final_eval_seconds": time.perf_counter() - started,
            "seconds_per_iteration": None,  # null, not NaN: strict JSON (no iterations to time)
            "provenance": provenance(method.device)}  # what ran it, as a distilled cell's metrics.json says


def initial_images(cfg: DistillConfig) -> torch.Tensor:
    """The synthetic images a run of ``cfg`` starts from (its seed's real or noise initialisation)."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    return method.init_synset(RunSeeds.of(cfg).init()).images.detach()


__all__ = ["Cell", "baseline_cell", "baseline_row", "cell_name", "check_cell_dir", "check_name", "check_same_run",
           "config_mismatch", "initial_images", "read_cell", "run_cell", "run_cell_task"]
