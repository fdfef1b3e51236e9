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

from hddgeo.device import on_accelerator, to_device

__all__ = ["DSA_OPS", "DEFAULT_DSA_STRATEGY", "DSAParams", "dsa", "dsa_apply", "dsa_apply_blocks", "dsa_draw", "dsa_op", "parse_strategy",
           "upload"]

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
    draw = dsa_draw(seed, strategy, x.shape, params, siamese)
    return dsa_apply(x, draw, upload([draw], x.device)[0], params)


def dsa_draw(seed: int, strategy: Optional[str], shape, params: DSAParams = DSAParams(), siamese: bool = True):
    """The operation and parameters (CPU tensors) that ``dsa(x, seed, strategy, params, siamese)`` applies to a
    batch of ``shape`` ``(N, C, H, W)``: drawing is separate from applying so that a caller can copy the draws
    of many calls to the device at once (:func:`upload`).  ``None`` for an empty strategy."""
    ops = parse_strategy(strategy)
    if not ops:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    op = ops[int(torch.randint(len(ops), (), generator=generator))]
    return _draw_op(op, generator, shape, params, siamese)


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
    draw = _draw_op(op, generator, x.shape, params, siamese)
    return dsa_apply(x, draw, upload([draw], x.device)[0], params)


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


def _draw_op(op: str, generator: torch.Generator, shape, params: DSAParams, siamese: bool) -> tuple:
    """``(op, {name: CPU tensor})``: the parameters of ``op``, drawn in the order the reference draws them."""
    if op not in _OPS:
        raise ValueError(f"unknown DSA operation {op!r}; valid operations: {', '.join(DSA_OPS)}")
    n, (h, w) = (1 if siamese else shape[0]), tuple(shape[-2:])
    return op, _DRAWS[op](_Draw(generator, n), params, h, w)


def upload(draws: list, device) -> list:
    """The parameters of every draw of ``draws`` on ``device``, copied in one transfer (float64 holds every
    value exactly: the integers are pixel offsets), as ``[{name: tensor}]`` in their own dtypes."""
    draws = [d for d in draws if d is not None]
    if not draws:
        return []
    items = [(i, k, t) for i, (_, values) in enumerate(draws) for k, t in values.items()]
    packed = to_device(torch.cat([t.reshape(-1).to(torch.float64) for _, _, t in items]), device)
    out, start = [{} for _ in draws], 0
    for i, k, t in items:
        part = packed[start:start + t.numel()].view(t.shape)
        start += t.numel()
        out[i][k] = part if t.dtype == torch.float64 else (part > 0.5 if t.dtype == torch.bool else part.to(t.dtype))
    return out


def dsa_apply(x: Tensor, draw, on_device: dict, params: DSAParams = DSAParams()) -> Tensor:
    """Apply a :func:`dsa_draw` to ``x``; ``on_device`` is its parameters on ``x``'s device (:func:`upload`)."""
    if draw is None:
        return x
    op, host = draw
    return _OPS[op](x, host, on_device, params)


def dsa_apply_blocks(x: Tensor, sizes: list, draws: list, on_device: list, params: DSAParams = DSAParams()) -> Tensor:
    """:func:`dsa_apply` of ``draws[i]`` to the ``i``-th block of ``sizes[i]`` consecutive images of ``x`` (a class
    each), with all blocks that drew the same operation in one call: their parameters repeated per image.  One
    call per operation (at most six) instead of one per class: an accelerator's launches for DSA no longer grow
    with the class count.  Every operation treats images independently, so each block gets what its own call would
    give it (``tests/data/test_augment.py`` holds them equal)."""
    if len(sizes) != len(draws) or len(draws) != len(on_device) or sum(sizes) != len(x):
        raise ValueError(f"{len(draws)} draws with {len(on_device)} parameter sets for blocks {list(sizes)} of "
                         f"{len(x)} images: one draw per block, and the blocks must cover the batch")
    if not draws or draws[0] is None:
        return x
    blocks = x.split(list(sizes))
    groups = {}
    for i, (op, _) in enumerate(draws):
        groups.setdefault(op, []).append(i)
    pieces = [None] * len(blocks)
    for op, members in groups.items():
        counts = [sizes[i] for i in members]

        def per_image(block_params, k):  # the blocks' parameters, one per image
            return torch.cat([t.expand(c, *t.shape[1:]) if t.shape[0] == 1 else t
                              for t, c in ((block_params[i][k], c) for i, c in zip(members, counts))])

        host = {k: per_image([d[1] for d in draws], k) for k in draws[members[0]][1]}
        dev = {k: per_image(on_device, k) for k in on_device[members[0]]}
        group = blocks[members[0]] if len(members) == 1 else torch.cat([blocks[i] for i in members])
        out = _OPS[op](group, host, dev, params)
        for i, part in zip(members, out.split(counts)):
            pieces[i] = part
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _per_image(values: Tensor, x: Tensor) -> Tensor:
    """Shape ``(n,)`` parameters (already on ``x``'s device) as ``(n, 1, 1, 1)`` in ``x``'s dtype."""
    return values.to(dtype=x.dtype).view(-1, 1, 1, 1)


def _draw_color(draw: _Draw, p: DSAParams, h: int, w: int) -> dict:
    return {"brightness": draw.uniform(-0.5, 0.5) * p.brightness, "saturation": draw.uniform(0.0, p.saturation),
            "contrast": draw.uniform(p.contrast, p.contrast + 1.0)}


def _color(x: Tensor, host: dict, dev: dict, p: DSAParams) -> Tensor:
    brightness, saturation, contrast = (_per_image(dev[k], x) for k in ("brightness", "saturation", "contrast"))
    x = x + brightness
    # With one channel the deviation from the channel mean is zero: saturation is a no-op.
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * saturation + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


def _draw_crop(draw: _Draw, p: DSAParams, h: int, w: int) -> dict:
    # capped below the side so that the negative pad never removes the whole image
    shift_h = min(int(h * p.ratio_crop_pad + 0.5), h - 1)
    shift_w = min(int(w * p.ratio_crop_pad + 0.5), w - 1)
    ty = draw.integers(-shift_h, shift_h + 1)
    return {"ty": ty, "tx": draw.integers(-shift_w, shift_w + 1)}


def _crop(x: Tensor, host: dict, dev: dict, p: DSAParams) -> Tensor:
    """Translate by whole pixels, filling with zeros: the reference's pad-and-crop."""
    n, c, h, w = x.shape
    if host["ty"].numel() == 1:
        # One shift for the batch: a single pad, negative on one side (i.e. a crop), is much
        # cheaper than the gather below. Output pixel (i, j) reads input (i + ty, j + tx).
        dy, dx = int(host["ty"]), int(host["tx"])  # the CPU draws: no device read
        return F.pad(x, (-dx, dx, -dy, dy))
    ty, tx = dev["ty"], dev["tx"]
    rows = torch.arange(h, device=x.device).view(1, h) + ty.view(-1, 1)  # (n, H): source row
    cols = torch.arange(w, device=x.device).view(1, w) + tx.view(-1, 1)
    inside = ((rows >= 0) & (rows < h)).view(-1, 1, h, 1) & ((cols >= 0) & (cols < w)).view(-1, 1, 1, w)
    source = (rows.clamp(0, h - 1).view(-1, h, 1) * w + cols.clamp(0, w - 1).view(-1, 1, w)).view(n, 1, h * w)
    shifted = torch.gather(x.reshape(n, c, h * w), 2, source.expand(n, c, h * w)).view(n, c, h, w)
    return shifted * inside.to(x.dtype)


def _draw_cutout(draw: _Draw, p: DSAParams, h: int, w: int) -> dict:
    size_h, size_w = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    # The reference draws the centre in [0, side + 1 - size % 2).
    top = draw.integers(0, h + (1 - size_h % 2)) - size_h // 2
    return {"top": top, "left": draw.integers(0, w + (1 - size_w % 2)) - size_w // 2}


def _cutout(x: Tensor, host: dict, dev: dict, p: DSAParams) -> Tensor:
    """Zero a square of side ``ratio_cutout`` x side whose centre may lie anywhere in the image
    (the square is clipped at the border, as in the reference)."""
    _, _, h, w = x.shape
    size_h, size_w = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    top, left = dev["top"], dev["left"]
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + size_h).view(-1, 1))
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + size_w).view(-1, 1))
    hole = in_rows.view(-1, 1, h, 1) & in_cols.view(-1, 1, 1, w)
    return x * (~hole).to(x.dtype)


def _draw_flip(draw: _Draw, p: DSAParams, h: int, w: int) -> dict:
    return {"flip": draw.uniform(0.0, 1.0) < p.prob_flip}


def _flip(x: Tensor, host: dict, dev: dict, p: DSAParams) -> Tensor:
    # An exact mirror (no resampling), chosen per draw with probability prob_flip.
    return torch.where(dev["flip"].view(-1, 1, 1, 1), x.flip(3), x)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    """Resample ``x`` through the affine maps ``theta`` ``(n, 2, 3)`` (output -> input, in
    normalised coordinates), bilinear with zero fill: linear in ``x``, hence differentiable.

    ``grid_sample``'s backward has no deterministic CUDA kernel; under torch's deterministic algorithms on an
    accelerator the same bilinear sum is taken from four gathers (:func:`_warp_gather`), whose backward is.
    The CPU always uses ``grid_sample`` (deterministic there)."""
    theta = theta.to(dtype=x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    if on_accelerator(x.device) and torch.are_deterministic_algorithms_enabled():
        return _warp_gather(x, grid)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _warp_gather(x: Tensor, grid: Tensor) -> Tensor:
    """``grid_sample(x, grid, bilinear, zeros, align_corners=True)`` as a weighted sum of four gathers."""
    n, c, h, w = x.shape
    ix = (grid[..., 0] + 1) * ((w - 1) / 2)  # (n, H, W) source column
    iy = (grid[..., 1] + 1) * ((h - 1) / 2)
    x0, y0 = ix.floor(), iy.floor()
    flat = x.reshape(n, c, h * w)
    out = None
    for cx, wx in ((x0, 1 - (ix - x0)), (x0 + 1, ix - x0)):
        for cy, wy in ((y0, 1 - (iy - y0)), (y0 + 1, iy - y0)):
            inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long().view(n, 1, -1).expand(n, c, -1)
            term = torch.gather(flat, 2, index).view(n, c, *ix.shape[1:]) * (wx * wy * inside).unsqueeze(1)
            out = term if out is None else out + term
    return out


def _draw_scale(draw: _Draw, p: DSAParams, h: int, w: int) -> dict:
    sx = draw.uniform(1.0 / p.ratio_scale, p.ratio_scale)
    sy = draw.uniform(1.0 / p.ratio_scale, p.ratio_scale)
    zero = torch.zeros_like(sx)
    return {"theta": torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1)}


def _draw_rotate(draw: _Draw, p: DSAParams, h: int, w: int) -> dict:
    angle = draw.uniform(-p.ratio_rotate, p.ratio_rotate) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid works in coordinates normalised to [-1, 1] per axis; conjugating by the
    # half-sides makes this a true rotation on non-square images too (identical to the
    # reference's matrix on square ones).
    half_w, half_h = max(w - 1, 1) / 2.0, max(h - 1, 1) / 2.0
    zero = torch.zeros_like(angle)
    theta = torch.stack(
        [torch.stack([cos, sin * half_h / half_w, zero], -1),
         torch.stack([-sin * half_w / half_h, cos, zero], -1)],
        1,
    )
    return {"theta": theta}


def _affine(x: Tensor, host: dict, dev: dict, p: DSAParams) -> Tensor:
    return _warp(x, dev["theta"])


_DRAWS = {"color": _draw_color, "crop": _draw_crop, "cutout": _draw_cutout, "flip": _draw_flip,
          "scale": _draw_scale, "rotate": _draw_rotate}

_OPS = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _affine,
    "rotate": _affine,
}
