"""Small pieces shared by the network definitions."""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

ImageSize = Union[int, Sequence[int]]

NORMS = ("instancenorm", "batchnorm", "none")


def as_hw(image_size: ImageSize) -> tuple[int, int]:
    """``32`` or ``(32, 32)`` -> ``(32, 32)``."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(s) for s in image_size)
    return h, w


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Normalisation after a convolution.

    ``instancenorm`` is ``GroupNorm(C, C, affine=True)`` as in the reference code bases: it keeps
    no running statistics, so a network trained on a handful of synthetic images behaves the
    same in train and eval mode.
    """
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use one of {NORMS}")


class AvgPool2x2(nn.Module):
    """``nn.AvgPool2d(2)``, bitwise, with a faster CPU path.

    On the CPU, torch's pooling kernel for NCHW tensors ran at a few GB/s here and took a quarter of a DM
    step; the same sum ``((x00 + x01) + x10) + x11`` divided by 4, taken over four strided views, is 3.5x
    faster and gives the same bits (the same additions in the same order, and an exact division by 4).  Its
    backward writes ``g / 4`` into each 2x2 block at once, as the kernel's backward does.  Elsewhere the
    kernel is used.  No parameters, so a network's state dict is that of ``nn.AvgPool2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4:
            return F.avg_pool2d(x, 2)
        if x.requires_grad and torch.is_grad_enabled():
            return _Pool2x2.apply(x)
        return _pool2x2(x)  # no graph to record (the real batch under inference mode): no Function's overhead


def _pool2x2(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # floor, as AvgPool2d(2) drops an odd last row
    x = x[..., :h, :w]
    return (((x[..., 0::2, 0::2] + x[..., 0::2, 1::2]) + x[..., 1::2, 0::2]) + x[..., 1::2, 1::2]) / 4


class _Pool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.in_hw = x.shape[-2:]
        return _pool2x2(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        q = g / 4
        *lead, h, w = q.shape
        blocks = q.unsqueeze(-1).unsqueeze(-3).expand(*lead, h, 2, w, 2).reshape(*lead, 2 * h, 2 * w)
        H, W = ctx.in_hw
        return F.pad(blocks, (0, W - 2 * w, 0, H - 2 * h)) if (H, W) != (2 * h, 2 * w) else blocks
