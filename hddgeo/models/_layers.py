"""Small pieces shared by the network definitions."""
from __future__ import annotations

from typing import Sequence, Union

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
