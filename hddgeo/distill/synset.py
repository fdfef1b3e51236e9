"""The synthetic set: learnable images with fixed labels, saved as ``.pt`` and as an image grid PNG."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from hddgeo.rundir import load_tensors, save_tensors, write_file

GRID_MIN_SIDE = 48  # pixels per image in synset.png and TensorBoard's grid (digits' 8x8 become 48x48)


def partition_expand(images: torch.Tensor, factor: int) -> torch.Tensor:
    """IDM's partition-and-expansion: split each image into ``factor x factor`` tiles, upsample each tile.

    ``(N, C, H, W) -> (N * factor^2, C, H, W)``, tiles in row-major order; ``factor=1`` is the identity.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = images[:, :, : th * factor, : tw * factor].reshape(n, c, factor, th, factor, tw)
    tiles = tiles.permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def partition_pack(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse layout of :func:`partition_expand` for initialisation: tile ``factor^2`` downscaled images into one."""
    if factor == 1:
        return images
    m, c, h, w = images.shape
    if m % (factor * factor):
        raise ValueError(f"need a multiple of {factor * factor} images to pack, got {m}")
    th, tw = h // factor, w // factor
    small = F.interpolate(images, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    n = m // (factor * factor)
    small = small.reshape(n, factor, factor, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, th * factor, tw * factor)
    if (th * factor, tw * factor) != (h, w):
        small = F.pad(small, (0, w - tw * factor, 0, h - th * factor))
    return small


class SyntheticSet:
    """``ipc`` learnable images per class (``images`` is a leaf tensor with ``requires_grad``).

    ``factor > 1`` stores IDM's partitioned images: each stored image expands to ``factor^2`` training
    images (see :func:`partition_expand`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, factor: int = 1):
        self.images = images.detach().clone().requires_grad_(True)
        self.labels = labels.detach().clone().long()
        self.num_classes = int(num_classes)
        self.factor = int(factor)
        self.ipc = len(self.labels) // self.num_classes

    @classmethod
    def from_real(cls, pool, ipc: int, generator: torch.Generator, factor: int = 1) -> "SyntheticSet":
        """Initialise from real images (``factor^2`` distinct real images packed into each stored image)."""
        per = factor * factor
        images, labels = pool.real_init(ipc * per, generator)
        return cls(partition_pack(images, factor), labels[::per], pool.num_classes, factor)

    @classmethod
    def from_noise(cls, shape, num_classes: int, ipc: int, generator: torch.Generator, factor: int = 1) -> "SyntheticSet":
        images = torch.randn(num_classes * ipc, *shape, generator=generator)
        labels = torch.arange(num_classes).repeat_interleave(ipc)
        return cls(images, labels, num_classes, factor)

    def to(self, device) -> "SyntheticSet":
        """This set with its images (still a leaf that requires grad) and labels on ``device``."""
        if self.images.device != torch.device(device):
            self.images = self.images.detach().to(device).requires_grad_(True)
        self.labels = self.labels.to(device)
        return self

    def expanded(self, images: Optional[torch.Tensor] = None):
        """Training images and labels (after partition-and-expansion), differentiable in ``images``."""
        images = self.images if images is None else images
        per = self.factor * self.factor
        return partition_expand(images, self.factor), self.labels.repeat_interleave(per)

    def by_class(self) -> torch.Tensor:
        """Expanded images as ``(C, m, ...)`` (labels are stored class-major)."""
        images, _ = self.expanded()
        return images.reshape(self.num_classes, -1, *images.shape[1:])

    def state(self) -> dict:
        train_images, train_labels = self.expanded()
        # save_tensors writes CPU copies, so the file loads on any device
        return {"params": self.images.detach().clone(), "labels": self.labels, "factor": self.factor,
                "num_classes": self.num_classes, "images": train_images.detach().clone(), "train_labels": train_labels}

    def save(self, path: str, extra: Optional[dict] = None) -> None:
        save_tensors({**self.state(), **(extra or {})}, path)

    def grid(self, dataset) -> torch.Tensor:
        """The denormalised images as one ``(3 or 1, H, W)`` grid in [0, 1], one row per class, each image
        enlarged (nearest neighbour) to at least ``GRID_MIN_SIDE`` pixels so that an 8x8 digit is readable."""
        from hddgeo._torchvision import torchvision

        images, _ = self.expanded()
        images = dataset.denormalise(images.detach().cpu()).clamp(0, 1)
        factor = max(1, -(-GRID_MIN_SIDE // max(images.shape[-2:])))
        if factor > 1:
            images = images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
        return torchvision.utils.make_grid(images, nrow=images.shape[0] // self.num_classes, padding=2,
                                           pad_value=1.0)

    def save_grid(self, path: str, dataset) -> None:
        """:meth:`grid` as a PNG (through the one safe writer)."""
        from hddgeo._torchvision import torchvision

        grid = self.grid(dataset)
        write_file(path, lambda fh: torchvision.utils.save_image(grid, fh, format="png"), binary=True)

    @staticmethod
    def load(path: str) -> dict:
        return load_tensors(path, "synthetic set")
