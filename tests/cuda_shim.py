"""A GPU that is not there: CUDA's queries answer as on a machine with one initialised GPU, and work sent to
``cuda`` runs on the CPU.

:func:`pretend_cuda` patches what hddgeo and its scripts ask ``torch.cuda`` (``is_available``, ``is_initialized``,
``device_count``, ``current_device``, ``get_device_name``, ``synchronize``, the memory statistics, ``set_device``,
``manual_seed_all``, ``is_bf16_supported``) and enters :class:`CudaOnCpu`, a ``TorchFunctionMode`` that rewrites a
``cuda`` device in any torch call to the CPU (``pin_memory`` and ``.cuda()`` hand the tensor back), with
:func:`hddgeo.device.force_accelerator` on so that the accelerator branches run.  Code that decides on
``torch.device(...).type == "cuda"`` (the workspace and TF32 settings, provenance, the check's memory column) sees a
GPU, and the control flow of a first GPU run is exercised on the CPU: a crash in it fails a test here.

``calls`` records which of the patched functions were called (tests assert, e.g., that no CUDA generator is
reseeded and that ``get_rng_state`` is never asked for).
"""
from __future__ import annotations

import contextlib
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

from hddgeo.device import force_accelerator

GPU_NAME = "Shim GPU (CPU underneath)"


def _cpu(x):
    if isinstance(x, torch.device) and x.type == "cuda":
        return torch.device("cpu")
    if isinstance(x, str) and x.split(":")[0] == "cuda":
        return "cpu"
    return x


class CudaOnCpu(TorchFunctionMode):
    """Every ``cuda`` device named in a torch call becomes the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if func is torch.device:  # the name of a device stays what it is; the work done on it moves
            return func(*args, **kwargs)
        if name in ("pin_memory", "cuda"):
            return args[0]
        args = tuple(_cpu(a) for a in args)
        kwargs = {k: _cpu(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


@contextlib.contextmanager
def pretend_cuda(monkeypatch, devices: int = 1, initialised: bool = True):
    """Within the block, torch sees ``devices`` GPUs (already initialised, as earlier CUDA work leaves them) and
    CUDA work runs on the CPU.  Yields a ``Counter`` of the patched calls."""
    calls = Counter()

    def fake(name, value):
        def f(*args, **kwargs):
            calls[name] += 1
            return value(*args, **kwargs) if callable(value) else value
        monkeypatch.setattr(torch.cuda, name, f)

    fake("is_available", True)
    fake("is_initialized", initialised)
    fake("device_count", devices)
    fake("current_device", 0)
    fake("get_device_name", GPU_NAME)
    fake("synchronize", None)
    fake("max_memory_allocated", 0)
    fake("memory_allocated", 0)
    fake("reset_peak_memory_stats", None)
    fake("set_device", None)
    fake("manual_seed_all", None)
    fake("manual_seed", None)
    fake("is_bf16_supported", True)

    def no_rng_state(*args, **kwargs):
        raise AssertionError("torch.cuda.get_rng_state called: a CUDA generator was forked")

    fake("get_rng_state", no_rng_state)
    with force_accelerator(True), CudaOnCpu():
        yield calls
