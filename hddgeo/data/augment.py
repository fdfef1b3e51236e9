"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021).

Why it exists: synthetic images are optimised *through* the augmentation, so every operation
must be differentiable with respect to the pixels; and the real and synthetic batches of a
class must be augmented *identically* ("siamese"), otherwise matching their features would
also have to match two different random transformations.

How this version achieves both: one call draws all of its random numbers from a private
``torch.Generator`` seeded with ``seed``. In siamese mode (the default) each parameter is drawn
once and shared by every image, so the draws do not depend on the batch size: calling ``dsa``
with the same seed on 256 real images and on 10 synthetic ones applies the same
transformation to both. The global RNG is never touched, so augmentation does not shift the
random streams that initialise networks or draw batches.

As in the reference implementation (``ParamDiffAug``, single-op mode), each call applies ONE
operation group picked uniformly from the strategy; ``color`` is brightness, saturation and
contrast applied together. The operations work on normalised images of any size and channel
count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DSA_OPS", "DEFAULT_DSA_STRATEGY", "DSAParams", "dsa", "dsa_op", "parse_strategy"]

DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DSAParams:
    """Magnitudes of the DSA operations; the defaults are the reference values.

    ``ratio_scale`` s: independent x/y scale factors in ``[1/s, s]``; ``ratio_rotate``: angle
    in ``[-r, r]`` degrees; ``ratio_crop_pad``: translation by up to this fraction of the side
    (zero fill); ``ratio_cutout``: side of the zeroed square as a fraction of the image side;
    ``brightness`` b: additive shift in ``[-b/2, b/2]``; ``saturation`` s: factor in ``[0, s]``
    on the deviation from the per-pixel channel mean; ``contrast`` c: factor in
    ``[c, c + 1]`` on the deviation from the per-image mean.
    """

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def parse_strategy(strategy: Optional[str]) -> tuple[str, ...]:
    """``"color_crop_flip"`` -> ``("color", "crop", "flip")``; ``""``/``"none"``/None -> ``()``."""
    if strategy is None or strategy.strip().lower() in ("", "none"):
        return ()
    ops = tuple(p for p in strategy.strip().lower().split("_") if p)
    unknown = [p for p in ops if p not in DSA_OPS]
    if unknown:
        raise ValueError(
            f"unknown DSA operation(s) {unknown} in strategy {strategy!r}; valid operations: "
            f"{', '.join(DSA_OPS)}, joined with '_' (e.g. {DEFAULT_DSA_STRATEGY!r})"
        )
    return ops


def dsa(
    x: Tensor,
    seed: int,
    strategy: Optional[str] = DEFAULT_DSA_STRATEGY,
    params: DSAParams = DSAParams(),
    siamese: bool = True,
) -> Tensor:
    """Apply one randomly chosen DSA operation group to a batch ``(N, C, H, W)``.

    Deterministic in ``seed``. ``siamese=True`` shares one draw across the batch (use the same
    seed for the real and the synthetic batch). ``siamese=False`` gives each image its own
    parameters (still one operation group per call), which is how the reference augments
    batches when training evaluation networks; those draws depend on the batch size.
    """
    ops = parse_strategy(strategy)
    _check_input(x)
    if not ops:
        return x
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    op = ops[int(torch.randint(len(ops), (), generator=generator))]
    return dsa_op(x, op, generator, params, siamese=siamese)


def dsa_op(
    x: Tensor,
    op: str,
    generator: torch.Generator,
    params: DSAParams = DSAParams(),
    siamese: bool = True,
) -> Tensor:
    """Apply the named operation group with parameters drawn from ``generator`` (a CPU
    generator; draws are made on the CPU whatever device ``x`` lives on)."""
    _check_input(x)
    if op not in _OPS:
        raise ValueError(f"unknown DSA operation {op!r}; valid operations: {', '.join(DSA_OPS)}")
    n = 1 if siamese else x.shape[0]
    return _OPS[op](x, _Draw(generator, n), params)


def _check_input(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"DSA expects a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"DSA expects floating-point images, got {x.dtype}")


class _Draw:
    """Random parameters from one generator, ``n`` at a time (1 = shared by the batch)."""

    def __init__(self, generator: torch.Generator, n: int):
        self.generator = generator
        self.n = n

    def uniform(self, low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(self.n, generator=self.generator, dtype=torch.float64)

    def integers(self, low: int, high: int) -> Tensor:
        """Integers in ``[low, high)``."""
        return torch.randint(low, high, (self.n,), generator=self.generator)


def _per_image(values: Tensor, x: Tensor) -> Tensor:
    """Shape ``(n,)`` parameters as ``(n, 1, 1, 1)`` on ``x``'s device and dtype."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _color(x: Tensor, draw: _Draw, p: DSAParams) -> Tensor:
    brightness = _per_image(draw.uniform(-0.5, 0.5) * p.brightness, x)
    saturation = _per_image(draw.uniform(0.0, p.saturation), x)
    contrast = _per_image(draw.uniform(p.contrast, p.contrast + 1.0), x)
    x = x + brightness
    # With one channel the deviation from the channel mean is zero: saturation is a no-op.
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * saturation + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


def _crop(x: Tensor, draw: _Draw, p: DSAParams) -> Tensor:
    """Translate by whole pixels, filling with zeros: the reference's pad-and-crop."""
    n, c, h, w = x.shape
    # capped below the side so that the negative pad never removes the whole image
    shift_h = min(int(h * p.ratio_crop_pad + 0.5), h - 1)
    shift_w = min(int(w * p.ratio_crop_pad + 0.5), w - 1)
    ty = draw.integers(-shift_h, shift_h + 1)
    tx = draw.integers(-shift_w, shift_w + 1)
    if ty.numel() == 1:
        # One shift for the batch: a single pad, negative on one side (i.e. a crop), is much
        # cheaper than the gather below. Output pixel (i, j) reads input (i + ty, j + tx).
        dy, dx = int(ty), int(tx)
        return F.pad(x, (-dx, dx, -dy, dy))
    ty, tx = ty.to(x.device), tx.to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h) + ty.view(-1, 1)  # (n, H): source row
    cols = torch.arange(w, device=x.device).view(1, w) + tx.view(-1, 1)
    inside = ((rows >= 0) & (rows < h)).view(-1, 1, h, 1) & ((cols >= 0) & (cols < w)).view(-1, 1, 1, w)
    source = (rows.clamp(0, h - 1).view(-1, h, 1) * w + cols.clamp(0, w - 1).view(-1, 1, w)).view(n, 1, h * w)
    shifted = torch.gather(x.reshape(n, c, h * w), 2, source.expand(n, c, h * w)).view(n, c, h, w)
    return shifted * inside.to(x.dtype)


def _cutout(x: Tensor, draw: _Draw, p: DSAParams) -> Tensor:
    """Zero a square of side ``ratio_cutout`` x side whose centre may lie anywhere in the image
    (the square is clipped at the border, as in the reference)."""
    _, _, h, w = x.shape
    size_h, size_w = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    # The reference draws the centre in [0, side + 1 - size % 2).
    top = (draw.integers(0, h + (1 - size_h % 2)) - size_h // 2).to(x.device)
    left = (draw.integers(0, w + (1 - size_w % 2)) - size_w // 2).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + size_h).view(-1, 1))
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + size_w).view(-1, 1))
    hole = in_rows.view(-1, 1, h, 1) & in_cols.view(-1, 1, 1, w)
    return x * (~hole).to(x.dtype)


def _flip(x: Tensor, draw: _Draw, p: DSAParams) -> Tensor:
    # An exact mirror (no resampling), chosen per draw with probability prob_flip.
    flip = (draw.uniform(0.0, 1.0) < p.prob_flip).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    """Resample ``x`` through the affine maps ``theta`` ``(n, 2, 3)`` (output -> input, in
    normalised coordinates), bilinear with zero fill: linear in ``x``, hence differentiable."""
    theta = theta.to(device=x.device, dtype=x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _scale(x: Tensor, draw: _Draw, p: DSAParams) -> Tensor:
    sx = draw.uniform(1.0 / p.ratio_scale, p.ratio_scale)
    sy = draw.uniform(1.0 / p.ratio_scale, p.ratio_scale)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1)
    return _warp(x, theta)


def _rotate(x: Tensor, draw: _Draw, p: DSAParams) -> Tensor:
    angle = draw.uniform(-p.ratio_rotate, p.ratio_rotate) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid works in coordinates normalised to [-1, 1] per axis; conjugating by the
    # half-sides makes this a true rotation on non-square images too (identical to the
    # reference's matrix on square ones).
    _, _, h, w = x.shape
    half_w, half_h = max(w - 1, 1) / 2.0, max(h - 1, 1) / 2.0
    zero = torch.zeros_like(angle)
    theta = torch.stack(
        [torch.stack([cos, sin * half_h / half_w, zero], -1),
         torch.stack([-sin * half_w / half_h, cos, zero], -1)],
        1,
    )
    return _warp(x, theta)


_OPS = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}
