"""How many images a forward pass may take at once on an accelerator: a byte budget for activations.

On an accelerator the real images of all classes go through the feature network together (one launch per layer
instead of one per class), which at paper scale is more than any GPU holds: CIFAR-100 with 256 real images per
class is 25,600 images, whose first ConvNet block alone makes 12.5 GiB per activation; TinyImageNet (200 classes,
64x64) makes four times that per activation.  The synthetic images go through with autograd, which keeps
activations until the backward pass: IDM at CIFAR-100 IPC 50 expands to 20,000 images, twice (its matching and its
cross-entropy forwards).

So every such forward is split into chunks whose activations fit ``memory_budget_gb`` (a run's field):

* without autograd (the real images) a chunk holds its largest layer's input and output at once;
* with autograd a chunk keeps every layer's activations until the backward pass, so a forward that would keep
  more than the budget is run chunk by chunk under activation checkpointing (``torch.utils.checkpoint``): only each
  chunk's input and output are kept, and the backward recomputes one chunk at a time.

:func:`plan_forward` and :func:`plan_step` are pure functions of sizes (tests check a TinyImageNet-shaped step
against the budget); :func:`activation_bytes` measures a network's per-image bytes by one forward of one image.
Every layer of the instance-norm networks treats images independently, so chunks change rounding at most (the
kernels see other batch sizes), never what is computed; networks with batch norm in train mode are never chunked.
The CPU keeps its own cache-sized chunks (``DistillMethod.real_chunk``) and never checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from hddgeo.device import autocast

GIB = 2 ** 30
DEFAULT_BUDGET_GB = 6.0  # activations of one forward; with CIFAR-100's pool and the rest, a step fits a 24 GB card


@dataclass(frozen=True)
class ForwardPlan:
    """``count`` images in chunks of ``chunk``; ``peak_bytes``: the activations the plan holds at once."""

    count: int
    chunk: int
    chunks: int
    checkpoint: bool
    peak_bytes: int


@dataclass(frozen=True)
class ImageBytes:
    """Per-image activation bytes of a network: ``inference`` (largest layer input + output, what a no-grad
    forward holds at once), ``training`` (every layer's input and output: what autograd may keep), ``io`` (the
    input image and the network's output, what a checkpointed chunk keeps)."""

    inference: int
    training: int
    io: int


def plan_forward(count: int, per_image: ImageBytes, budget_bytes: float, grad: bool) -> ForwardPlan:
    """How a forward of ``count`` images fits ``budget_bytes``.

    Without autograd: chunks of ``budget // inference`` images (at least one).  With autograd: the whole batch when
    all its activations fit, else checkpointed chunks of ``(budget - count * io) // training`` images (at least
    one): each chunk's input and output are kept for all chunks, one chunk's activations at a time."""
    if count < 1:
        raise ValueError(f"a forward needs at least one image, got {count}")
    budget = float(budget_bytes)
    if not grad:
        chunk = int(max(1, min(count, budget // max(per_image.inference, 1))))
        return ForwardPlan(count, chunk, -(-count // chunk), False, chunk * per_image.inference)
    if count * per_image.training <= budget:
        return ForwardPlan(count, count, 1, False, count * per_image.training)
    kept = count * per_image.io
    chunk = int(max(1, min(count, (budget - kept) // max(per_image.training, 1))))
    return ForwardPlan(count, chunk, -(-count // chunk), True, kept + chunk * per_image.training)


def plan_step(classes: int, real_per_class: int, syn_images: int, per_image: ImageBytes, budget_bytes: float,
              cross_entropy: bool = False) -> dict:
    """The forwards of one distillation step on an accelerator: ``{"real": plan, "syn": plan[, "ce": plan]}`` for
    ``classes`` x ``real_per_class`` real images (no autograd) and ``syn_images`` synthetic ones (autograd; IDM's
    and DANCE's cross-entropy forward is a second one on the same images)."""
    plans = {"real": plan_forward(classes * real_per_class, per_image, budget_bytes, grad=False),
             "syn": plan_forward(syn_images, per_image, budget_bytes, grad=True)}
    if cross_entropy:
        plans["ce"] = plan_forward(syn_images, per_image, budget_bytes, grad=True)
    return plans


def activation_bytes(fn: Callable, image: torch.Tensor, amp: str = "none", device=None) -> ImageBytes:
    """:class:`ImageBytes` of ``fn`` (a module or a module's bound method such as ``net.embed``) on one image
    ``(1, C, H, W)``, measured by a no-grad forward with hooks on every leaf module (their inputs and outputs, in
    the dtypes autocast gives them)."""
    module = getattr(fn, "__self__", fn)
    sizes = []

    def hook(mod, inputs, output):
        size_in = sum(t.numel() * t.element_size() for t in inputs if torch.is_tensor(t))
        size_out = output.numel() * output.element_size() if torch.is_tensor(output) else 0
        sizes.append((size_in, size_out))

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad(), autocast(image.device if device is None else device, amp):
            out = fn(image)
    finally:
        for h in handles:
            h.remove()
    io = image.numel() * image.element_size() + out.numel() * 4  # features are cast to float32
    if not sizes:
        return ImageBytes(io, io, io)
    return ImageBytes(inference=max(a + b for a, b in sizes), training=sum(a + b for a, b in sizes), io=io)


def checkpointed(fn: Callable, images: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn(images)`` chunk by chunk under activation checkpointing (each chunk's activations are recomputed in the
    backward pass instead of kept); the chunks' outputs concatenated."""
    from torch.utils.checkpoint import checkpoint

    return torch.cat([checkpoint(fn, part, use_reentrant=False, preserve_rng_state=False)
                      for part in images.split(chunk)])


def budget_bytes(cfg) -> Optional[float]:
    """A run's activation budget in bytes (``memory_budget_gb``)."""
    return float(getattr(cfg, "memory_budget_gb", DEFAULT_BUDGET_GB)) * GIB


__all__ = ["DEFAULT_BUDGET_GB", "ForwardPlan", "ImageBytes", "activation_bytes", "budget_bytes", "checkpointed",
           "plan_forward", "plan_step"]
