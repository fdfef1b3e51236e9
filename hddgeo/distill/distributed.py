"""Multi-process distillation with ``torchrun`` (gloo on CPU, NCCL on GPU, one GPU per process).

Design: **classes are sharded across ranks.**  Every rank builds the same network and draws the same
random numbers for iteration ``it`` (generators seeded by ``(seed, it)``), embeds only its own
classes, and back-propagates its share of the loss.  The gradient of the synthetic images is then
summed over ranks.  Each synthetic image belongs to one class, so its gradient comes from exactly one
rank and the sum adds only zeros: the update equals the single-process one up to the per-sample
kernels seeing a smaller batch (CPU convolution may pick another algorithm per batch size, so
agreement is to float32 rounding, not bitwise).  Sharding the real batches instead would need an
all-reduce inside every Karcher iteration (a sum of log maps per Newton step and CG product);
sharding classes needs one all-reduce per iteration whatever the centroid, and the Karcher mean of a
class stays on one rank.  Evaluation networks are spread across ranks and their accuracies gathered.
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


_COMM_DEVICE = torch.device("cpu")  # where collectives run: cuda:LOCAL_RANK under NCCL, else the CPU
_STARTED = False  # this process initialised a process group (it stays True after cleanup)


def setup(device: str = "auto") -> tuple:
    """Initialise the process group from torchrun's environment; ``(rank, world)`` (``(0, 1)`` alone).

    A run on CUDA (``device`` resolving to a GPU: ``auto`` or ``cuda`` give ``cuda:LOCAL_RANK``) uses NCCL
    with this process's GPU as the current device; a CPU run, or ``HDDGEO_BACKEND=gloo``, uses gloo.  A
    device name that does not resolve is left for the run's own checks to report (they broadcast it)."""
    global _COMM_DEVICE, _STARTED
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        from hddgeo.device import resolve_device

        try:
            target = resolve_device(device)
        except ValueError:
            target = torch.device("cpu")
        backend = "nccl" if target.type == "cuda" and os.environ.get("HDDGEO_BACKEND") != "gloo" else "gloo"
        extra = {}
        if backend == "nccl":
            torch.cuda.set_device(target)
            _COMM_DEVICE = target
            extra["device_id"] = target  # binds the group to this rank's GPU (NCCL connects eagerly, no guessing)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30), **extra)
        _STARTED = True
    return dist.get_rank(), dist.get_world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def shard(items, r: int, world: int) -> list:
    """Round-robin share of ``items`` for rank ``r``."""
    return [x for i, x in enumerate(items) if i % world == r]


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op alone); a tensor off the backend's device goes there and back."""
    if active():
        if tensor.device == _COMM_DEVICE:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        else:
            moved = tensor.to(_COMM_DEVICE)
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            tensor.copy_(moved)
    return tensor


def gather(obj) -> list:
    """All ranks' objects, in rank order (``[obj]`` alone)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_error(message) -> None:
    """Make every rank raise if any rank failed validation (so no rank waits forever)."""
    messages = [m for m in gather(message) if m]
    if messages:
        raise ValueError(messages[0])


def first_failure(own, seen, world: int):
    """The error every rank raises when an iteration fails (the torchrun failure protocol).  ``own`` is this
    rank's failure in its own step (``None`` when its step went through), ``seen`` what it saw (the non-finite
    images, a :class:`~hddgeo.errors.NonFiniteError`).  Every rank stops at the same point with the same one line:
    the lowest failing rank's own message, else ``seen``.  A rank whose step failed took part in the iteration's
    gradient sum with a NaN gradient, so every rank sees the non-finite images and comes here together."""
    from hddgeo.errors import NonFiniteError

    if world == 1:
        return own or seen
    failures = [f for f in gather(None if own is None else (isinstance(own, NonFiniteError), str(own)))
                if f is not None]
    if not failures:
        return seen
    is_nonfinite, message = failures[0]
    return (NonFiniteError if is_nonfinite else ValueError)(message)


def cleanup() -> None:
    """Destroy the process group (the command line calls it once a distributed run is over)."""
    if active():
        dist.destroy_process_group()


def end_failed_rank(status: int) -> None:
    """End a rank that failed (``status`` non-zero, its error line printed) at once, when this process started a
    process group: flush and ``os._exit(status)``.  Left to the interpreter's normal exit, a gloo rank whose peer
    had already gone sometimes died in its C++ teardown ("terminate called without an active exception", SIGABRT),
    so torchrun reported -6 instead of the command's 2 (2 of 16 failed 2-rank runs under load).  Nothing is left to
    save at that point: the run directory was written before the error was raised.  A process that never started a
    group (one process, or a test calling ``main`` in-process) returns."""
    if status and _STARTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
