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
    return int(value) if value is not None and value.isdigit() and world_size() > 1 else None


def world_size() -> int:
    """``WORLD_SIZE`` of a ``torchrun`` launch (1 alone, or when it is not a positive integer)."""
    value = os.environ.get("WORLD_SIZE", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def resolve_device(name: str = "auto") -> torch.device:
    """The ``torch.device`` that ``name`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``) means here.

    Under ``torchrun`` (``WORLD_SIZE`` > 1), ``cuda`` and ``auto`` mean ``cuda:LOCAL_RANK``, or ``cuda:0`` where
    a rank sees exactly one GPU (a scheduler that sets ``CUDA_VISIBLE_DEVICES`` per task); an explicit
    ``cuda:N`` would put every rank on GPU N and is refused.  ``ValueError`` naming the available devices
    when the device does not exist."""
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
    world, count = world_size(), len(have) - 1
    if name != "cuda" and world > 1:
        raise ValueError(f"--device {name} with {world} processes would put every rank on that GPU; "
                         f"use --device cuda (each rank takes cuda:LOCAL_RANK)")
    if name == "cuda":
        rank = local_rank()
        if rank is None:
            # torch's current device once CUDA has started; before that it is 0, and asking would start CUDA (a study's
            # parent process checking its cells would hold a context on GPU 0 for the whole study)
            index = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
        elif rank < count:
            index = rank
        elif count == 1 and not os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
            raise ValueError(f"LOCAL_RANK {rank} would share cuda:0 with LOCAL_RANK 0: this node has one GPU and "
                             f"every process sees it; start one process per GPU (--nproc_per_node=1 here), or "
                             f"show each process its own GPU with CUDA_VISIBLE_DEVICES")
        elif count == 1:
            index = 0  # this rank sees only its own GPU (a scheduler set CUDA_VISIBLE_DEVICES for it)
        else:
            raise ValueError(f"LOCAL_RANK {rank} has no GPU of its own: this process sees {count} "
                             f"({', '.join(have[1:])}); start at most {count} processes per node")
    else:
        index = int(name.split(":")[1])
    if index >= count:
        raise ValueError(f"device cuda:{index} does not exist; available: {', '.join(have)}")
    return torch.device("cuda", index)


# torch's TF32 defaults as this process found them (convolutions on, matmuls off): what ``tf32`` "auto" restores
_TORCH_TF32 = (bool(torch.backends.cudnn.allow_tf32), bool(torch.backends.cuda.matmul.allow_tf32))

# Tests set this to take the accelerator-only branches (no host reads, packed non-blocking copies, one real
# batch of all classes) on the CPU, where their arithmetic can be checked and their host reads counted.
_FORCE_ACCELERATOR = False


@contextlib.contextmanager
def force_accelerator(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`on_accelerator` is true for the CPU too (tests only)."""
    global _FORCE_ACCELERATOR
    before, _FORCE_ACCELERATOR = _FORCE_ACCELERATOR, bool(enabled)
    try:
        yield
    finally:
        _FORCE_ACCELERATOR = before


def on_accelerator(device) -> bool:
    """Whether ``device`` runs its work in a queue that a host read stalls (not the CPU), or the test switch
    :func:`force_accelerator` is on."""
    return torch.device(device).type != "cpu" or _FORCE_ACCELERATOR


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on ``device`` in one copy; on an accelerator from pinned memory without waiting
    (``non_blocking``; torch's pinned-memory allocator keeps the source alive until the copy is done)."""
    device = torch.device(device)
    if not on_accelerator(device):
        return tensor.to(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def move_module(net: torch.nn.Module, device) -> torch.nn.Module:
    """``net`` (built on the CPU) on ``device``.  On an accelerator its parameters and buffers are packed into
    one host tensor per dtype and copied once (:func:`to_device`) instead of one blocking copy each; they become
    views of that copy.  Elsewhere ``net.to(device)``."""
    device = torch.device(device)
    if not on_accelerator(device):
        return net.to(device)
    slots = [(m, "_parameters", k, t) for m in net.modules() for k, t in m._parameters.items() if t is not None]
    slots += [(m, "_buffers", k, t) for m in net.modules() for k, t in m._buffers.items() if t is not None]
    for dtype in dict.fromkeys(t.dtype for *_, t in slots):
        group = [s for s in slots if s[3].dtype == dtype]
        flat = to_device(torch.cat([t.detach().reshape(-1) for *_, t in group]), device)
        start = 0
        for module, kind, key, t in group:
            view = flat[start:start + t.numel()].view(t.shape)
            start += t.numel()
            if kind == "_parameters":
                t.data = view
            else:
                module._buffers[key] = view
    return net


def configure_process(deterministic_kernels: bool = False, tf32: Optional[bool] = None, device=None) -> None:
    """What a run sets for its whole process before its first cuBLAS call: ``CUBLAS_WORKSPACE_CONFIG`` for
    deterministic cuBLAS, and whether TF32 may stand in for float32.

    torch reads ``CUBLAS_WORKSPACE_CONFIG`` when cuBLAS first allocates its workspace (the first matmul on a
    device), not when CUDA initialises: choosing a device, uploading data and the convolutions before it may have
    happened already (``resolve_device`` itself initialises CUDA), so no check is made here; the run calls this
    before its first matmul.  ``tf32``: ``None`` leaves torch's own defaults (TF32 on for cuDNN convolutions, off
    for matmuls); ``True`` turns it on for both, ``False`` off for both (float32 as on the CPU, for parity checks).
    The CPU ignores all of it."""
    if deterministic_kernels:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if tf32 is None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = _TORCH_TF32
    else:
        torch.backends.cudnn.allow_tf32 = bool(tf32)
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``, else :func:`platform.processor`), or ``unknown``."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git_commit() -> Optional[str]:
    """The commit of the checkout hddgeo is imported from, or ``None`` (an installed copy, no git)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def provenance(device=None) -> dict:
    """What produced a run's numbers: hddgeo's version and git commit, torch, its CUDA and cuDNN builds, the CPU
    model and, on CUDA, the GPU's name (``metrics.json`` and gpu_check's environment row record it; the README's
    table of bitwise-repeatable settings is checked against it).  It reads device properties only: a CPU run does
    not start CUDA."""
    from hddgeo import __version__

    out = {"hddgeo": __version__, "git_commit": _git_commit(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": None, "gpu": None, "cpu": cpu_model()}
    if device is not None and torch.device(device).type == "cuda":
        out["cudnn"] = torch.backends.cudnn.version()
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def tf32_settings() -> dict:
    """``{"tf32_conv": ..., "tf32_matmul": ...}`` as torch has them now."""
    return {"tf32_conv": bool(torch.backends.cudnn.allow_tf32), "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}


def autocast(device: torch.device, amp: str = "none"):
    """Context of the feature and evaluation networks: bf16 autocast when ``amp`` is ``bf16``, else nothing.

    Only the networks run inside it; their outputs are cast back to float32 before any loss, and the
    geometry casts to float64 itself."""
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


# ops of the pipeline without a deterministic CUDA kernel (torch raises under use_deterministic_algorithms)
NONDETERMINISTIC_CUDA = {"factored_synset": "the bilinear upsampling of a factored synthetic set's tiles, "
                                            "F.interpolate's backward"}


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Within the block, torch's deterministic algorithms (and no cuDNN autotuning) when ``enabled``.

    On CUDA this rules out the atomic-add kernels (some convolution backward passes, index
    accumulation) whose summation order varies from run to run, at a cost in speed.  An op without a
    deterministic kernel raises (``warn_only=False``): the default pipeline has none (DSA's scale and rotate
    warp by gathers on CUDA, ResNet18 pools by a mean there); IDM's upsampling is one, and the runner refuses
    ``--deterministic`` for it on CUDA.  cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` before its first call:
    :func:`configure_process` sets it at process start.  On the CPU the kernels are deterministic already and
    the flag changes nothing."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=False)
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


__all__ = ["AMP_MODES", "NONDETERMINISTIC_CUDA", "autocast", "available_devices", "check_device_name",
           "configure_process", "cpu_model", "deterministic", "force_accelerator", "local_rank", "move_module", "on_accelerator",
           "provenance", "resolve_device", "tensors_off_device", "tf32_settings", "to_device", "world_size"]
