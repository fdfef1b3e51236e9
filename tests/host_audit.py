"""A host-read audit that runs on the CPU: what a GPU would wait for, counted without a GPU.

:class:`HostAudit` is a ``TorchFunctionMode`` that follows "device" tensors (those it is told about, what is made
from them and what a copy puts on the device) and counts

* ``reads``: every read of a device tensor's value by the host (``item``, ``tolist``, ``bool``, ``float``,
  ``int``, ``numpy``, ``.cpu()``, ``torch.equal`` / ``allclose`` / ``is_nonzero``): on a GPU each waits for the
  whole queue;
* ``copies``: every copy of a host tensor to the device (``.to(device)``, ``.cuda()``, ``copy_`` into a device
  tensor), and ``blocking`` those of them not made with ``non_blocking=True``.

Host tensors (the CPU generators' draws, a pool's index lists) are read freely: reading them costs a GPU
nothing.  Use it with :func:`hddgeo.device.force_accelerator`, so that the code takes the branches it takes on
a GPU while everything stays on the CPU.  ``where`` lists each event with the code line it came from.
"""
from __future__ import annotations

import traceback
import weakref

import torch
from torch.overrides import TorchFunctionMode

_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__format__",
          "equal", "allclose", "is_nonzero"}


def _tensors(obj, out):
    if torch.is_tensor(obj):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _tensors(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            _tensors(x, out)
    return out


def _names_device(args, kwargs) -> bool:
    for x in list(args) + [kwargs.get("device")]:
        if isinstance(x, torch.device):
            return True
        if isinstance(x, str) and x.split(":")[0] in ("cpu", "cuda"):
            return True
    return False


class HostAudit(TorchFunctionMode):
    def __init__(self, *roots):
        super().__init__()
        self._device = {}
        self.reads, self.copies, self.blocking, self.where = 0, 0, 0, []
        for root in roots:
            self.track(root)

    # -- which tensors are on the device ----------------------------------------------------------------
    def mark(self, t: torch.Tensor) -> None:
        self._device[id(t)] = weakref.ref(t)

    def on_device(self, t) -> bool:
        ref = self._device.get(id(t))
        return ref is not None and ref() is t

    def track(self, obj, seen=None) -> None:
        """Mark every tensor inside ``obj`` (modules, optimisers, containers, hddgeo objects) as on the device,
        except the attributes a class lists in ``_host_tensors``."""
        seen = set() if seen is None else seen
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if torch.is_tensor(obj):
            self.mark(obj)
        elif isinstance(obj, torch.nn.Module):
            for t in list(obj.parameters()) + list(obj.buffers()):
                self.mark(t)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                self.track({k: v for k, v in state.items() if k != "step"}, seen)
            for group in obj.param_groups:
                self.track(group["params"], seen)
        elif isinstance(obj, dict):
            for v in obj.values():
                self.track(v, seen)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                self.track(v, seen)
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("hddgeo"):
            host = getattr(type(obj), "_host_tensors", ())
            for k, v in vars(obj).items():
                if k not in host:
                    self.track(v, seen)

    def _note(self, kind: str, name: str) -> None:
        frame = next((f for f in reversed(traceback.extract_stack()[:-2])
                      if "/hddgeo/" in f.filename or "/experiments/" in f.filename), None)
        self.where.append(f"{kind} {name} at {frame.filename.split('/')[-1]}:{frame.lineno}" if frame else f"{kind} {name}")

    # -- the mode --------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        inputs = _tensors(list(args), []) + _tensors(kwargs, [])
        tainted = any(self.on_device(t) for t in inputs)
        if func is torch.Tensor.backward:  # the engine runs custom backward passes: keep counting inside them
            with self:
                grad = kwargs.pop("gradient", args[1] if len(args) > 1 else None)
                torch.autograd.backward(args[0], grad, **{k: v for k, v in kwargs.items() if k != "inputs"})
            return None
        if name in _READS and tainted:
            self.reads += 1
            self._note("read", name)
        copy = False
        if name in ("to", "cuda") and args and torch.is_tensor(args[0]) and not self.on_device(args[0]):
            copy = name == "cuda" or _names_device(args[1:], kwargs)
        elif name == "copy_" and len(args) > 1 and self.on_device(args[0]) and not self.on_device(args[1]):
            copy = True
        if copy:
            self.copies += 1
            if not kwargs.get("non_blocking", len(args) > 2 and args[2] is True):
                self.blocking += 1
                self._note("blocking copy", name)
        out = func(*args, **kwargs)
        if tainted or copy:
            for t in _tensors(out, []):
                self.mark(t)
        return out
