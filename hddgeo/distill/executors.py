"""Where a study's cells run: here (``local``: one process per GPU, or one-thread processes on the CPU) or on a Ray
cluster (``ray``).

A cell is a run directory and its configuration (:class:`~hddgeo.distill.cell.Cell`); running it is
:func:`~hddgeo.distill.cell.run_cell_task`, which reuses a finished run directory and resumes an unfinished one. An
executor only decides where and when each cell runs, never what it computes: the device (``cuda:i`` for the GPU a
process is pinned to, or ``cuda`` inside a Ray task, which sees its one GPU) and the thread count are fields a
resume may change (``RESUMABLE_FIELDS``), so a cell gives the same table whichever executor ran it.

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

from hddgeo.errors import EXPECTED, StudyError

from .cell import Cell, run_cell_task
from .config import DistillConfig

EXECUTORS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class CellFailed:
    """What an executor returns for a cell that failed with an error of its input (a ``ValueError`` or a
    :class:`~hddgeo.errors.HddgeoError`: one line),
    in place of its metrics; the study goes on with the other cells and names the failed ones at the end."""

    message: str


def _failure(err: BaseException) -> Optional[CellFailed]:
    """``CellFailed`` for an error a cell may fail with while the others go on (hddgeo's one-line errors, and CUDA
    running out of memory), ``None`` for anything else (a bug: it stops the study)."""
    if isinstance(err, EXPECTED) or "out of memory" in str(err).lower()[:200] \
            and isinstance(err, (RuntimeError, MemoryError)):
        text = str(err).strip()
        return CellFailed(text.splitlines()[0] if text else type(err).__name__)
    return None


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


def die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` does, however it ends (SIGKILL too): Linux's ``PR_SET_PDEATHSIG``
    where there is one, and everywhere a daemon thread that watches the parent's pid.  A worker left behind would
    hold its cell's lock (a rerun would fail with "in use by process N") and keep multiprocessing's resource
    tracker alive (it ends when the last process holding its pipe does)."""
    import signal

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass

    def watch():
        import time

        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="hddgeo-parent-watch").start()


def _pin(slot: str, workers: int = 1, parent: Optional[int] = None) -> None:
    """Initialiser of a local worker process: it ends with the study's process (:func:`die_with_parent`), leaves
    Ctrl-C to it (the study stops its workers and says so in one line), its GPU becomes the current device, and a GPU
    worker takes its share of the CPU threads (``workers`` processes side by side; a cell's own ``threads`` still
    wins)."""
    import signal

    if parent is not None:
        die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
        return [_here(task, c, resume, progress) for c in cells]
    results: list = [None] * len(cells)
    errors: list = []
    pending = list(range(len(cells)))
    lock = threading.Lock()
    done = [0]
    # spawn: a fresh interpreter per worker, so no torch thread pool, CUDA context or generator state is inherited
    context = multiprocessing.get_context("spawn")
    pools = [ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_pin,
                                 initargs=(slot, len(slots), os.getpid()))
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
                status = ""
            except BaseException as err:  # noqa: BLE001 - handed to the caller below
                failed = _failure(err)
                if failed is None:
                    with lock:
                        errors.append((index, err))
                    return
                results[index], status = failed, f" failed: {failed.message}"
            with lock:
                done[0] += 1
                if progress:
                    print(f"[{done[0]}/{len(cells)}] {cell.name} ({slot}){status}", file=sys.stderr, flush=True)

    # the workers start here, from this thread (PR_SET_PDEATHSIG follows the thread that started a process)
    for pool in pools:
        pool.submit(os.getpid).result()
    threads = [threading.Thread(target=worker, args=(slot, pool), daemon=True) for slot, pool in zip(slots, pools)]
    interrupted = False
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except KeyboardInterrupt:  # Ctrl-C: the workers (which ignore it) are stopped; the caller says so in one line
        interrupted = True
        _STOPPED.append(True)
        _stop_pools(pools)
        raise
    finally:
        for pool in pools:
            # after killed workers, waiting for a pool's manager thread can hang (it may be joining a queue feeder
            # blocked on a dead worker's pipe); the processes are already gone
            pool.shutdown(wait=not interrupted, cancel_futures=True)
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
    return results


def _here(task: Callable, cell: Cell, resume: bool, progress: bool):
    """``task`` on ``cell`` in this process: its metrics, or :class:`CellFailed`."""
    try:
        return task(cell.kind, cell.cfg, cell.run_dir, resume, progress)
    except EXPECTED + (RuntimeError, MemoryError) as err:
        failed = _failure(err)
        if failed is None:
            raise
        if progress:
            print(f"{cell.name} failed: {failed.message}", file=sys.stderr, flush=True)
        return failed


_STOPPED: list = []  # set when Ctrl-C stopped a local pool: the process then leaves without joining its threads


def stopped_by_interrupt() -> bool:
    """Whether Ctrl-C stopped a local pool of this process (the command then leaves at once, see ``cli.main``)."""
    return bool(_STOPPED)


def _stop_pools(pools) -> None:
    """Kill every worker process of ``pools`` (their cells resume from their last checkpoint next time)."""
    for pool in pools:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                proc.kill()
            except (OSError, ValueError):
                pass
    for pool in pools:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                proc.join(timeout=10)
            except (OSError, ValueError, AssertionError):
                pass


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


RAY_CONNECT_TIMEOUT_S = 30.0  # how long to wait for a cluster's head to answer
RAY_STALL_S = 120.0  # how long cells may wait while no live node of the cluster could run them


def _ray_target(address: Optional[str]) -> Optional[tuple]:
    """``(host, port)`` of a Ray address (``HOST:PORT`` or ``ray://HOST:PORT``, else ``RAY_ADDRESS``); ``None`` for
    ``auto``/``local`` or no address (Ray finds or starts the cluster itself)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return None
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.1:6379)")
    return host.strip("[]"), int(port)


def _check_reachable(address: Optional[str]) -> None:
    """``ValueError`` (one line) when nothing answers at the cluster's address within :data:`RAY_CONNECT_TIMEOUT_S`:
    Ray itself would retry for ever.  (A TCP answer is enough: a Ray head is what listens there in practice.)"""
    import socket

    target = _ray_target(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        shown = address or os.environ.get("RAY_ADDRESS")
        raise StudyError(f"no Ray cluster answers at {shown} ({err.strerror or type(err).__name__}); start its head "
                         f"(ray start --head --port PORT) or pass the head's address with --ray-address") from None


def _ray_init(ray, address: Optional[str]) -> None:
    """``ray.init`` (Ray's informational lines left out); an error joining the cluster is one line."""
    import logging

    kwargs = {"address": address} if address else {"include_dashboard": False}
    try:
        ray.init(log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StudyError(f"cannot join the Ray cluster at {address or 'this machine'}: {text[:200]}") from None


def _ray_nodes(ray) -> list:
    """The resources of every live node of the cluster."""
    return [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]


def _fits_a_node(nodes: list, cpus: float, gpus: float) -> bool:
    return any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes)


def run_ray(cells: Sequence[Cell], address: Optional[str] = None, resume: bool = True, progress: bool = True,
            max_retries: int = 3, task: Callable = _ray_cell) -> list:
    """Metrics of every cell (in order), each run as a Ray task on the cluster at ``address`` (default: Ray's own
    choice, ``RAY_ADDRESS`` or a new local instance without a dashboard); :class:`CellFailed` for a cell that failed
    with an error of its input (the others go on).

    One line (``ValueError``) instead of waiting for ever: nothing answers at ``address``
    (:data:`RAY_CONNECT_TIMEOUT_S`), no live node of the cluster has had the CPUs (and GPU) a cell asks for within
    :data:`RAY_STALL_S` (worker nodes may still be joining when the study starts), or the
    cluster has lost the nodes that could run the cells left for :data:`RAY_STALL_S` (their finished cells are
    kept; a rerun reuses them)."""
    import time

    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        _check_reachable(address)
        _ray_init(ray, address)
    try:
        remote = ray.remote(task)
        refs, needs = [], []
        for cell in cells:
            cuda = wants_cuda(cell.cfg.device)
            threads = cell.cfg.threads or 1
            needs.append((threads, 1 if cuda else 0))
        nodes, deadline = _ray_nodes(ray), time.monotonic() + RAY_STALL_S
        for cell, (cpus, gpus) in zip(cells, needs):
            while not _fits_a_node(nodes, cpus, gpus) and time.monotonic() < deadline:  # workers may still be joining
                time.sleep(2.0)
                nodes = _ray_nodes(ray)
            if not _fits_a_node(nodes, cpus, gpus):
                raise StudyError(f"no live node of the Ray cluster has the {cpus} CPU(s){' and a GPU' if gpus else ''} "
                                 f"cell {cell.name} asks for (nodes: {_describe_nodes(nodes)}); start a worker node "
                                 f"(ray start --address HEAD:PORT) or give the cells fewer threads")
        for cell, (cpus, gpus) in zip(cells, needs):
            cfg = dataclasses.replace(cell.cfg, threads=cpus, device="cuda" if gpus else cell.cfg.device)
            options = dict(num_gpus=gpus, num_cpus=cpus, max_retries=max_retries, retry_exceptions=False,
                           name=cell.name)
            refs.append(remote.options(**options).remote(cell.kind, cfg, cell.run_dir, resume))
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(cells)
        waiting = list(refs)
        stalled_since = None
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=5.0)
            if not ready:
                nodes = _ray_nodes(ray)
                if any(_fits_a_node(nodes, *needs[index[ref]]) for ref in waiting):
                    stalled_since = None
                    continue
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since < RAY_STALL_S:
                    continue
                for ref in waiting:
                    ray.cancel(ref, force=True)
                raise StudyError(f"the Ray cluster has had no live node able to run the {len(waiting)} cells left for "
                                 f"{RAY_STALL_S:.0f} s (its worker nodes were lost?); {len(cells) - len(waiting)} "
                                 f"finished and are kept: rerun the study once the cluster has workers again")
            stalled_since = None
            i = index[ready[0]]
            status = ""
            try:
                results[i] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as err:
                cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
                failed = _failure(cause)
                if failed is None:
                    for ref in waiting:
                        ray.cancel(ref)
                    raise
                results[i], status = failed, f" failed: {failed.message}"
            except ray.exceptions.RayError as err:  # its worker died on every retry, or the task was lost
                text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                results[i] = CellFailed(f"Ray lost the task ({type(err).__name__}: {text[:160]})")
                status = f" failed: {results[i].message}"
            if progress:
                print(f"[{len(cells) - len(waiting)}/{len(cells)}] {cells[i].name} (ray){status}", file=sys.stderr,
                      flush=True)
        return results
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def _describe_nodes(nodes: list) -> str:
    if not nodes:
        return "none alive"
    return ", ".join(f"{r.get('CPU', 0):g} CPU" + (f" {r.get('GPU', 0):g} GPU" if r.get("GPU") else "")
                     for r in nodes)
