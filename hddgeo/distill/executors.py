"""Where a study's cells run: here (``local``: one process per GPU, or one-thread processes on the CPU) or on a Ray
cluster (``ray``).

A cell is a run directory and its configuration (:class:`Cell`); running it is :func:`run_cell_task`, which
reuses a finished run directory and resumes an unfinished one.  An executor only decides where and when each
cell runs, never what it computes: the device (``cuda:i`` for the GPU a process is pinned to, or ``cuda`` inside
a Ray task, which sees its one GPU) and the thread count are fields a resume may change
(``RESUMABLE_FIELDS``), so a cell gives the same table whichever executor ran it.

* ``local``: on the CPU, ``jobs`` processes at a time (spawned: a fresh interpreter each), every cell with one
  torch thread; with CUDA cells, one process per GPU (``jobs`` GPUs, default all), each pinned to its GPU
  (``torch.cuda.set_device``) and running one cell at a time with ``device = cuda:i``; cells that ask for
  ``cuda:N`` run only on that GPU.  ``jobs = 1`` on the CPU runs the cells in this process, in turn.
* ``ray``: every cell a Ray task asking for one GPU (CUDA cells) or its threads' CPUs; a task whose worker dies
  is retried (``max_retries``) and resumes from the cell's last checkpoint; the run directories must lie in a
  folder every worker reaches.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Optional, Sequence

import torch

from .runner import DistillConfig

EXECUTORS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of a study: ``kind`` is ``distill`` or ``baseline`` (the random row, :func:`study.baseline_cell`)."""

    kind: str
    cfg: DistillConfig
    run_dir: str

    @property
    def name(self) -> str:
        return os.path.basename(self.run_dir)


def run_cell_task(kind: str, cfg: DistillConfig, run_dir: str, resume: bool = True, progress: bool = False) -> dict:
    """Run (or reuse, or resume) one cell in this process; its metrics."""
    from .study import baseline_cell, run_cell

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if kind == "baseline":
        return baseline_cell(cfg, run_dir)
    return run_cell(cfg, run_dir, resume=resume, progress=progress)


def wants_cuda(device: str) -> bool:
    """Whether a cell with this ``device`` field runs on a GPU here (``auto``: when torch sees one)."""
    if device == "auto":
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    return device.startswith("cuda")


def plan_slots(cells: Sequence[Cell], jobs: Optional[int] = None) -> list[str]:
    """The devices of the local executor's worker processes, one process each: ``cuda:i`` for each GPU used
    (``jobs`` of them, default every GPU, plus any GPU a cell names), ``cpu`` ``jobs`` times (default: the cores) when
    some cell runs on the CPU."""
    cuda = [c for c in cells if wants_cuda(c.cfg.device)]
    slots = []
    if cuda:
        count = torch.cuda.device_count()
        if count < 1:
            raise ValueError(f"{cuda[0].name} asks for device {cuda[0].cfg.device} but torch sees no CUDA GPU")
        if any(c.cfg.device in ("auto", "cuda") for c in cuda):
            used = count if jobs is None else min(jobs, count)
            slots += [f"cuda:{i}" for i in range(used)]
        for c in cuda:
            if c.cfg.device.startswith("cuda:") and c.cfg.device not in slots:
                if int(c.cfg.device.split(":")[1]) >= count:
                    raise ValueError(f"{c.name} asks for device {c.cfg.device}; torch sees cuda:0..cuda:{count - 1}")
                slots.append(c.cfg.device)
    if len(cuda) < len(cells):
        slots += ["cpu"] * (jobs or os.cpu_count() or 1)
    return slots


def fits(cell: Cell, slot: str) -> bool:
    """Whether ``cell`` may run in the worker pinned to ``slot``."""
    if not wants_cuda(cell.cfg.device):
        return slot == "cpu"
    return slot.startswith("cuda") and cell.cfg.device in ("auto", "cuda", slot)


def on_slot(cfg: DistillConfig, slot: str) -> DistillConfig:
    """``cfg`` as run by the worker of ``slot`` (a GPU cell gets that worker's ``cuda:i``)."""
    return dataclasses.replace(cfg, device=slot) if slot.startswith("cuda") else cfg


def _pin(slot: str, workers: int = 1) -> None:
    """Initialiser of a local worker process: its GPU becomes the current device, and a GPU worker takes its share
    of the CPU threads (``workers`` processes side by side; a cell's own ``threads`` still wins)."""
    os.environ["HDDGEO_WORKER_DEVICE"] = slot
    if slot.startswith("cuda"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, workers)))
    if slot.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(int(slot.split(":")[1]))


def run_local(cells: Sequence[Cell], jobs: Optional[int] = None, resume: bool = True, progress: bool = True,
              task: Callable = run_cell_task) -> list[dict]:
    """Metrics of every cell (in order), run by the local executor (see the module's docstring)."""
    slots = plan_slots(cells, jobs)
    if len(slots) == 1 and (jobs or 1) == 1:  # one cell at a time, here (its device as the cell says)
        return [task(c.kind, c.cfg, c.run_dir, resume, progress) for c in cells]
    results: list = [None] * len(cells)
    errors: list = []
    pending = list(range(len(cells)))
    lock = threading.Lock()
    done = [0]
    # spawn: a fresh interpreter per worker, so no torch thread pool, CUDA context or generator state is inherited
    context = multiprocessing.get_context("spawn")
    pools = [ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_pin, initargs=(slot, len(slots)))
             for slot in slots]

    def worker(slot: str, pool: ProcessPoolExecutor) -> None:
        while True:
            with lock:
                if errors:
                    return
                index = next((i for i in pending if fits(cells[i], slot)), None)
                if index is None:
                    return
                pending.remove(index)
            cell = cells[index]
            try:
                results[index] = pool.submit(task, cell.kind, on_slot(cell.cfg, slot), cell.run_dir, resume,
                                             False).result()
            except BaseException as err:  # noqa: BLE001 - handed to the caller below
                with lock:
                    errors.append((index, err))
                return
            with lock:
                done[0] += 1
                if progress:
                    print(f"[{done[0]}/{len(cells)}] {cell.name} ({slot})", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=worker, args=(slot, pool), daemon=True) for slot, pool in zip(slots, pools)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
    return results


# ----------------------------------------------------------------------------------------------------------- Ray
def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install \"hddgeo[ray]\"") from None
    return ray


def _ray_cell(kind: str, cfg: DistillConfig, run_dir: str, resume: bool) -> dict:
    """A Ray task: one cell, in a Ray worker (which sees only the GPU Ray gave it, as cuda:0)."""
    return run_cell_task(kind, cfg, run_dir, resume, False)


def run_ray(cells: Sequence[Cell], address: Optional[str] = None, resume: bool = True, progress: bool = True,
            max_retries: int = 3, task: Callable = _ray_cell) -> list[dict]:
    """Metrics of every cell (in order), each run as a Ray task on the cluster at ``address`` (default: Ray's own
    choice, ``RAY_ADDRESS`` or a new local instance without a dashboard)."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {"include_dashboard": False}
        ray.init(log_to_driver=False, **kwargs)
    try:
        remote = ray.remote(task)
        refs = []
        for cell in cells:
            cuda = wants_cuda(cell.cfg.device)
            threads = cell.cfg.threads or 1
            cfg = dataclasses.replace(cell.cfg, threads=threads, device="cuda" if cuda else cell.cfg.device)
            options = dict(num_gpus=1 if cuda else 0, num_cpus=threads, max_retries=max_retries,
                           retry_exceptions=False, name=cell.name)
            refs.append(remote.options(**options).remote(cell.kind, cfg, cell.run_dir, resume))
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(cells)
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            i = index[ready[0]]
            try:
                results[i] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as err:
                cause = err.cause if isinstance(getattr(err, "cause", None), Exception) else err
                for ref in waiting:
                    ray.cancel(ref)
                if isinstance(cause, (ValueError, FileNotFoundError)):
                    raise ValueError(f"{cells[i].name}: {str(cause).strip().splitlines()[0]}") from None
                raise
            if progress:
                print(f"[{len(cells) - len(waiting)}/{len(cells)}] {cells[i].name} (ray)", file=sys.stderr, flush=True)
        return results
    finally:
        if started:
            ray.shutdown()
