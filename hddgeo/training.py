"""The one supervised training loop: SGD over shuffled minibatches with cross-entropy.

Evaluation networks (trained on synthetic sets), coreset selection networks and DANCE's experts (trained
on real data) all train through :func:`sgd_epochs`; they differ only in the optimiser they pass, whether
the images are augmented, whether the learning rate drops, and what they record per batch.  Every random
draw (the shuffles, the augmentation seeds) comes from the caller's generator ``gen``, in a fixed order:
per epoch one ``randperm``, then per batch one augmentation seed.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F

from hddgeo.device import autocast, to_device

Augment = Callable[[torch.Tensor, int], torch.Tensor]
OnBatch = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def sgd_epochs(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
               gen: torch.Generator, epochs: int, batch_size: int, augment: Optional[Augment] = None,
               lr_drop_at: Optional[int] = None, on_batch: Optional[OnBatch] = None,
               epoch_iter: Optional[Iterable[int]] = None, amp: str = "none", read: bool = True):
    """Train ``net`` in place for ``epochs`` epochs; return the mean cross-entropy of the last epoch (NaN for 0).

    ``images`` and ``labels`` live where ``net`` does.  ``augment(x, seed)`` is applied to every batch;
    ``lr_drop_at`` multiplies every group's learning rate by 0.1 at that epoch (the evaluation protocol's
    drop at half); ``on_batch(epoch, indices, logits, y)`` sees each batch's detached logits before the
    update (coreset's forgetting history, DANCE's training accuracy).  ``epoch_iter`` replaces
    ``range(epochs)`` (a progress bar over it).  ``amp="bf16"`` runs the forward pass under bf16 autocast
    (the cross-entropy is computed in float32 by autocast's rules).

    The loss is accumulated on the device and read once, after the last epoch (on a GPU every read is a host
    synchronisation); ``read=False`` returns it as a 0-d device tensor instead, unread.  Each epoch's shuffle is
    drawn on the CPU and copied without waiting (:func:`hddgeo.device.to_device`).
    """
    n = len(images)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    total = None
    net.train()
    for epoch in (range(epochs) if epoch_iter is None else epoch_iter):
        if lr_drop_at is not None and epoch == lr_drop_at and epoch > 0:
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * 0.1
        order = to_device(torch.randperm(n, generator=gen), images.device)
        total = torch.zeros((), dtype=torch.float64, device=images.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x, y = images[idx], labels[idx]
            if augment is not None:
                x = augment(x, int(torch.randint(0, 2**31 - 1, (), generator=gen)))
            with autocast(images.device, amp):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            if on_batch is not None:
                on_batch(epoch, idx, logits.detach().float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * len(idx)
    if total is None:
        return float("nan") if read else torch.full((), float("nan"), dtype=torch.float64, device=images.device)
    return float(total) / n if read else total / n
