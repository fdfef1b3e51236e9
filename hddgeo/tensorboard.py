"""TensorBoard event files of a run (``--tensorboard``), in ``RUN_DIR/tensorboard/``.

What a run writes there, all read back by ``tests/test_tensorboard.py``:

* every column of ``log.csv`` as a scalar at its iteration (``loss/total`` for ``loss``, ``loss/<part>`` for the
  parts, ``diagnostics/<name>`` for the image-gradient norm and the ``gap_every`` columns (gap, radii, clipped
  share, weight spread), ``time/seconds`` for a
  step's seconds, ``accuracy/periodic`` for ``eval_acc``), the same numbers as ``log.csv`` (as float32);
* the synthetic images as one grid (``synset``, enlarged like ``synset.png``) at every checkpoint;
* the final accuracy (``accuracy/final``, mean; ``accuracy/final_std``) and the run's configuration as
  hyper-parameters with ``hparam/accuracy`` as their metric (TensorBoard's HParams view).

The writer only reads numbers the loop has already computed, so a run computes bit for bit the same with or
without it.  Events are flushed at every checkpoint, and a resumed run opens its writer with
``purge_step`` = the checkpoint's iteration + 1: TensorBoard discards what the killed process wrote after
its last checkpoint, so the scalars repeat ``log.csv`` exactly after a resume too.

This module imports neither torch's TensorBoard writer nor ``tensorboard`` until a writer is made: both are
optional (``pip install "hddgeo[tensorboard]"``).
"""
from __future__ import annotations

import json
import math
import os

from .extras import MissingExtraError, check

SUBDIR = "tensorboard"
PARTS_PREFIX = "loss/"
# log.csv columns that are diagnostics (gap_every), not parts of the loss
DIAGNOSTICS = ("gap_", "radius_", "clip_", "wstd_")


def check_available() -> None:
    """``ValueError`` (one line naming the extra) when the ``tensorboard`` package is missing: a configuration
    check (``DistillConfig.validate``), whose errors are ValueErrors."""
    try:
        check("tensorboard")
    except MissingExtraError as err:
        raise ValueError(str(err)) from None


def tag_of(column: str) -> str:
    """The scalar's tag of a ``log.csv`` column."""
    if column == "loss":
        return "loss/total"
    if column == "seconds":
        return "time/seconds"
    if column == "eval_acc":
        return "accuracy/periodic"
    if column == "grad_norm" or column.startswith(DIAGNOSTICS):
        return f"diagnostics/{column}"
    return PARTS_PREFIX + column


def _hparam(value):
    if isinstance(value, bool) or isinstance(value, (int, float, str)):
        return value
    if value is None:
        return "none"
    return json.dumps(value, sort_keys=True)


class RunBoard:
    """The event writer of one run directory (rank 0 only)."""

    def __init__(self, run_dir: str, start_iteration: int = 0):
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        log_dir = os.path.join(run_dir, SUBDIR)
        if os.path.islink(log_dir) or (os.path.exists(log_dir) and not os.path.isdir(log_dir)):
            raise ValueError(f"{log_dir} is a link or a file, not a folder of event files; remove it")
        os.makedirs(log_dir, exist_ok=True)
        # purge_step: on a resume, what was written after the checkpoint resumed from is discarded by readers
        self.writer = SummaryWriter(log_dir=log_dir, purge_step=start_iteration + 1, flush_secs=30)

    def row(self, row: dict) -> None:
        """One ``log.csv`` row (``iteration`` and its columns)."""
        step = int(row["iteration"])
        for column, value in row.items():
            if column == "iteration" or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            self.writer.add_scalar(tag_of(column), float(value), step)

    def images(self, grid, step: int) -> None:
        """The synthetic set's grid (``SyntheticSet.grid``) at ``step``."""
        self.writer.add_image("synset", grid, step)

    def flush(self) -> None:
        self.writer.flush()

    def final(self, cfg_json: dict, metrics: dict) -> None:
        """Final accuracy and the hyper-parameters of the run (every configuration field) for the HParams view."""
        step = int(metrics.get("iterations", 0))
        acc = metrics.get("acc_mean")
        if acc is not None:
            self.writer.add_scalar("accuracy/final", float(acc), step)
            self.writer.add_scalar("accuracy/final_std", float(metrics["acc_std"]), step)
        from torch.utils.tensorboard.summary import hparams

        params = {k: _hparam(v) for k, v in cfg_json.items()}
        params["label"] = metrics.get("method", "")
        metric = {"hparam/accuracy": float("nan") if acc is None else float(acc),
                  "hparam/seconds_per_iteration": float(metrics.get("seconds_per_iteration", float("nan")))}
        # written into this run's own file (SummaryWriter.add_hparams would make a sub-run per call)
        for summary in hparams(params, metric):
            self.writer.file_writer.add_summary(summary, step)
        for name, value in metric.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


def read_scalars(run_dir: str) -> dict:
    """``{tag: [(step, value), ...]}`` of a run's event files, as TensorBoard reads them (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_dir, SUBDIR), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_image_steps(run_dir: str, tag: str = "synset") -> list[tuple[int, int, int]]:
    """``[(step, width, height), ...]`` of the image grids a run wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_dir, SUBDIR), size_guidance={"images": 0})
    acc.Reload()
    return [(e.step, e.width, e.height) for e in acc.Images(tag)] if tag in acc.Tags()["images"] else []
