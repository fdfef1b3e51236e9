"""Where a run computes: the ``--device`` name, bf16 autocast (``--amp``) and deterministic kernels.

``auto`` is CUDA when torch sees a GPU, else the CPU; under ``torchrun`` a CUDA run uses
``cuda:LOCAL_RANK`` (one GPU per process).  A device that does not exist is a ``ValueError`` naming the
devices that do, raised before anything is written (the command line turns it into exit status 2).

Everything random is drawn on the CPU (``torch.Generator()`` streams of :mod:`hddgeo.seeds`) and then
moved, and networks are initialised on the CPU and moved, so a run draws the same numbers on every
device; what differs between devices is rounding (and, on CUDA, the order of atomic additions unless
:func:`deterministic` is on).
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Optional

import torch

AMP_MODES = ("none", "bf16")
_PATTERN = re.compile(r"^(auto|cpu|cuda)(:\d+)?$")


def check_device_name(name: str) -> None:
    """``ValueError`` unless ``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether it exists is
    :func:`resolve_device`'s question)."""
    m = _PATTERN.match(str(name))
    if not m or (m.group(2) and m.group(1) != "cuda"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def available_devices() -> list:
    """Names of the devices this process can use, e.g. ``['cpu', 'cuda:0', 'cuda:1']``."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(count)]


def local_rank() -> Optional[int]:
    """The process's GPU index under ``torchrun`` (``LOCAL_RANK``), else ``None``."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None


def resolve_device(name: str = "auto") -> torch.device:
    """The ``torch.device`` that ``name`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``) means here.

    ``ValueError`` naming the available devices when it does not exist."""
    check_device_name(name)
    name = str(name)
    have = available_devices()
    cuda = len(have) > 1
    if name == "auto":
        name = "cuda" if cuda else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not cuda:
        raise ValueError(f"device {name} requested but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                         f"available: {', '.join(have)}; use --device cpu")
    if name == "cuda":
        rank = local_rank()
        index = torch.cuda.current_device() if rank is None else rank
    else:
        index = int(name.split(":")[1])
    if index >= len(have) - 1:
        raise ValueError(f"device cuda:{index} does not exist; available: {', '.join(have)}")
    return torch.device("cuda", index)


def autocast(device: torch.device, amp: str = "none"):
    """Context of the feature and evaluation networks: bf16 autocast when ``amp`` is ``bf16``, else nothing.

    Only the networks run inside it; their outputs are cast back to float32 before any loss, and the
    geometry casts to float64 itself."""
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Within the block, torch's deterministic algorithms (and no cuDNN autotuning) when ``enabled``.

    On CUDA this rules out the atomic-add kernels (some convolution backward passes, index
    accumulation) whose summation order varies from run to run, at a cost in speed; cuBLAS needs
    ``CUBLAS_WORKSPACE_CONFIG`` set before its first call, which is done here when it is unset.  On the
    CPU the kernels are deterministic already and the flag changes nothing.  Ops without a
    deterministic version warn instead of failing (``warn_only``)."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def tensors_off_device(obj, device: torch.device, path: str = "") -> list:
    """``[(path, device)]`` of every tensor inside ``obj`` (modules, optimisers, containers, hddgeo objects
    with a ``__dict__``) that is not on ``device``: what a forgotten ``.to(device)`` leaves behind.

    Two kinds of tensor stay on the host by design and are skipped: the attributes a class lists in
    ``_host_tensors`` (a dataset as loaded, a class pool's index lists), and optimiser ``step`` counters
    (torch keeps them on the CPU unless an optimiser is ``capturable``)."""
    device = torch.device(device)
    seen, out = set(), []

    def same(d):
        return d.type == device.type and (device.index is None or d.index in (None, device.index))

    def walk(x, where):
        if id(x) in seen:
            return
        if torch.is_tensor(x):
            seen.add(id(x))
            if not same(x.device):
                out.append((where, str(x.device)))
            return
        if isinstance(x, (str, bytes, int, float, bool, type(None), torch.device, torch.dtype, torch.Generator)):
            return
        seen.add(id(x))
        if isinstance(x, torch.nn.Module):
            for name, t in list(x.named_parameters()) + list(x.named_buffers()):
                walk(t, f"{where}.{name}")
            return
        if isinstance(x, torch.optim.Optimizer):
            for i, state in enumerate(x.state.values()):
                walk({k: v for k, v in state.items() if k != "step"}, f"{where}.state[{i}]")
            for i, group in enumerate(x.param_groups):
                walk(group["params"], f"{where}.param_groups[{i}]")
            return
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{where}[{k!r}]")
        elif isinstance(x, (list, tuple, set)):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")
        elif hasattr(x, "__dict__") and type(x).__module__.startswith("hddgeo"):
            host = getattr(type(x), "_host_tensors", ())
            for k, v in vars(x).items():
                if k not in host:
                    walk(v, f"{where}.{k}")

    walk(obj, path or type(obj).__name__)
    return out


__all__ = ["AMP_MODES", "autocast", "available_devices", "check_device_name", "deterministic", "local_rank",
           "resolve_device", "tensors_off_device"]
