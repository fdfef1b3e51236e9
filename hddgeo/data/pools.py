"""Real images indexed by class.

Every distillation method draws "a batch of real images of class c" once per class per
iteration; indexing the label tensor each time would scan the whole train split. The pool
computes the per-class index lists once and serves draws from them.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["ClassPool"]


class ClassPool:
    """Images grouped by class, with reproducible draws.

    All randomness comes from the ``torch.Generator`` passed in (a CPU generator), never from
    the global RNG, so that a run is reproducible from its seeds alone and drawing real images
    does not shift the random stream of network initialisation or augmentation.
    Images stay on whatever device they were given; indices live on the CPU.
    """

    # index bookkeeping for the CPU generators that draw batches (hddgeo.device.tensors_off_device skips it)
    _host_tensors = ("labels", "indices")

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int):
        if images.dim() < 2 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"ClassPool needs images (N, ...) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        labels_cpu = labels.detach().to("cpu", torch.int64)
        if labels_cpu.numel() and (int(labels_cpu.min()) < 0 or int(labels_cpu.max()) >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}), found [{int(labels_cpu.min())}, {int(labels_cpu.max())}]"
            )
        self.images = images
        self.labels = labels_cpu
        self.num_classes = int(num_classes)
        self.indices: list[Tensor] = [
            torch.nonzero(labels_cpu == c, as_tuple=False).flatten() for c in range(self.num_classes)
        ]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        counts = [self.count(c) for c in range(self.num_classes)]
        return (f"ClassPool({len(self)} images, {self.num_classes} classes, "
                f"per class {min(counts)}..{max(counts)}, shape {tuple(self.images.shape[1:])})")

    def _check_class(self, c: int) -> int:
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise ValueError(f"class {c} is out of range [0, {self.num_classes})")
        return c

    def count(self, c: int) -> int:
        """Number of images of class ``c``."""
        return int(self.indices[self._check_class(c)].numel())

    def sample_indices(self, c: int, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Dataset indices of ``min(n, count(c))`` distinct images of class ``c``, in random order."""
        idx = self.indices[self._check_class(c)]
        if n < 0:
            raise ValueError(f"cannot sample a negative number of images ({n})")
        order = torch.randperm(idx.numel(), generator=generator)
        return idx[order[: min(int(n), idx.numel())]]

    def sample(self, c: int, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` distinct random images of class ``c``; all of them, shuffled, when the class
        has fewer than ``n`` (the DM protocol's batch of 256 on a small class)."""
        idx = self.sample_indices(c, n, generator)
        return self.images[idx.to(self.images.device)]

    def real_init(self, ipc: int, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """``ipc`` distinct real images of every class, class-major, to initialise a synthetic
        set. Returns copies, so optimising them never alters the pool."""
        if ipc < 1:
            raise ValueError(f"IPC must be at least 1, got {ipc}")
        for c in range(self.num_classes):
            if self.count(c) < ipc:
                raise ValueError(
                    f"IPC {ipc} is larger than class {c} ({self.count(c)} images); lower the IPC or use a "
                    f"dataset (or pruning ratio) that keeps at least {ipc} images per class"
                )
        idx = torch.cat([self.sample_indices(c, ipc, generator) for c in range(self.num_classes)])
        images = self.images[idx.to(self.images.device)].detach().clone()
        labels = torch.arange(self.num_classes, dtype=torch.int64).repeat_interleave(ipc)
        return images, labels

    def to(self, device) -> "ClassPool":
        """This pool with its images on ``device`` (the index lists are shared; they stay on the CPU)."""
        if self.images.device == torch.device(device):
            return self
        pool = ClassPool.__new__(ClassPool)
        pool.images, pool.labels, pool.num_classes, pool.indices = (self.images.to(device), self.labels,
                                                                    self.num_classes, self.indices)
        return pool

    def subset(self, keep_indices: Union[Tensor, Sequence[int]]) -> "ClassPool":
        """A new pool holding only the images at ``keep_indices`` (dataset indices of this pool),
        e.g. what survives pruning. Classes keep their numbering even if one ends up empty."""
        keep = torch.as_tensor(keep_indices, dtype=torch.int64).flatten().cpu()
        if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= len(self)):
            raise ValueError(f"keep_indices must lie in [0, {len(self)})")
        if torch.unique(keep).numel() != keep.numel():
            raise ValueError("keep_indices contains duplicates")
        return ClassPool(self.images[keep.to(self.images.device)], self.labels[keep], self.num_classes)
