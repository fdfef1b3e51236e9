"""Train-on-synthetic evaluation: fit fresh networks on a (distilled) set, test on real data.

Protocol (the reference code bases', see docs/design.md): SGD with lr 0.01, momentum 0.9, weight decay
5e-4, 1000 epochs with the learning rate divided by 10 at half, batch 256, cross-entropy, DSA
augmentation during training (passed in as ``augment``), mean and std over several networks.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hddgeo.device import autocast, move_module, on_accelerator
from hddgeo.models import build_model
from hddgeo.seeds import network_seeds
from hddgeo.training import sgd_epochs

Augment = Callable[[torch.Tensor, int], torch.Tensor]


def _check_inputs(images, labels, test_images, test_labels, num_classes: Optional[int]):
    """Tensors with checked shapes and labels, and the number of classes."""
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels)
    test_images = torch.as_tensor(test_images)
    test_labels = torch.as_tensor(test_labels)
    for name, x in (("images", images), ("test_images", test_images)):
        if x.dim() != 4:
            raise ValueError(f"{name} must be a (N, C, H, W) batch, got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty: pass at least one image")
    for name, y in (("labels", labels), ("test_labels", test_labels)):
        if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"{name} must be a 1-D tensor of integer class indices, "
                             f"got shape {tuple(y.shape)} and dtype {y.dtype}")
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length ({len(images)} vs {len(labels)}); "
                         f"pass one label per image")
    if len(test_images) != len(test_labels):
        raise ValueError(f"test_images and test_labels differ in length ({len(test_images)} vs "
                         f"{len(test_labels)}); pass one label per test image")
    if images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"training images are {tuple(images.shape[1:])} but test images are "
                         f"{tuple(test_images.shape[1:])}; both must share (C, H, W)")
    # the four label bounds in one read (labels may live on a GPU, where every read waits for the queue)
    bounds = torch.stack([labels.min(), labels.max(), test_labels.min().to(labels.device),
                          test_labels.max().to(labels.device)]).tolist()
    if num_classes is None:
        num_classes = int(max(bounds[1], bounds[3])) + 1
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    for name, (lo, hi) in (("labels", bounds[:2]), ("test_labels", bounds[2:])):
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes - 1}] for num_classes="
                             f"{num_classes}, found values in [{lo}, {hi}]; fix the labels or "
                             f"num_classes")
    return images.float(), labels.long(), test_images.float(), test_labels.long(), num_classes


@torch.no_grad()
def _correct(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
             device: torch.device, amp: str = "none", per_image: bool = False) -> torch.Tensor:
    """The number of correctly classified test images, a 0-d tensor on ``device`` (not read); ``per_image``: which
    images are, a boolean vector."""
    net.eval()
    if per_image:
        hits = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            with autocast(device, amp):
                hits.append(net(x).argmax(1) == labels[start:start + batch_size].to(device))
        return torch.cat(hits)
    correct = torch.zeros((), dtype=torch.int64, device=device)  # read once, not once per batch
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        with autocast(device, amp):
            logits = net(x)
        correct += (logits.argmax(1) == y).sum()
    return correct


def train_and_test(images, labels, test_images, test_labels, model: str = "convnet",
                   num_classes: Optional[int] = None, epochs: int = 1000, lr: float = 0.01,
                   momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 256,
                   augment: Optional[Augment] = None, seed: int = 0, device=None,
                   progress: bool = False, model_kwargs: Optional[dict] = None, amp: str = "none",
                   per_image: bool = False) -> dict:
    """Train one fresh ``model`` on ``(images, labels)`` and return its test accuracy.

    ``images`` is ``(N, C, H, W)``; channels and image size come from it, ``num_classes``
    defaults to one more than the largest train or test label. ``augment(x, seed)`` is applied
    to every training batch with a seed derived from ``seed``, so a run is reproducible. The
    learning rate is multiplied by 0.1 at epoch ``epochs // 2``. The caller's global RNG state
    is left untouched (everything runs inside ``torch.random.fork_rng``).

    Returns ``{"acc": test accuracy in [0, 1], "train_loss": mean cross-entropy of the last
    epoch}``.  ``device`` is where the network trains (default: where ``images`` are); the network is
    initialised on the CPU and moved there, so a seed gives the same initial network on every device.
    ``amp="bf16"`` trains and tests under bf16 autocast.  ``per_image=True`` adds ``"correct"``: which test images
    the network classifies correctly (a boolean CPU tensor; per-image difficulty is built from it).
    """
    images, labels, test_images, test_labels, num_classes = _check_inputs(
        images, labels, test_images, test_labels, num_classes)
    correct, loss = _train_and_test(images, labels, test_images, test_labels, model, num_classes, epochs, lr, momentum,
                                    weight_decay, batch_size, augment, seed, device, progress, model_kwargs, amp,
                                    per_image)
    hits = correct.cpu() if per_image else None
    correct, loss = torch.stack([correct.sum().double(), loss.double()]).tolist()  # one read
    return {"acc": int(correct) / len(test_images), "train_loss": loss, **({"correct": hits} if per_image else {})}


def _train_and_test(images, labels, test_images, test_labels, model, num_classes, epochs, lr, momentum, weight_decay,
                    batch_size, augment, seed, device, progress, model_kwargs, amp, per_image=False) -> tuple:
    """:func:`train_and_test` on checked inputs: ``(correct test images, last epoch's loss)`` as device tensors,
    unread (a caller reads the results of all its networks at once)."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = images.device if device is None else torch.device(device)
    # Fork every CUDA generator too: torch.manual_seed below reseeds all of them.
    fork_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        net = build_model(model, images.shape[1], num_classes, tuple(images.shape[2:]), **(model_kwargs or {}))
        net = move_module(net, device)  # drawn on the CPU (fork_rng above), then moved in one copy
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                                    weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        epoch_iter = range(epochs)
        if progress:
            epoch_iter = tqdm(epoch_iter, desc=f"{model} seed {seed}", file=sys.stderr,
                              leave=False)
        train_loss = sgd_epochs(net, images.to(device), labels.to(device), optimizer, gen, epochs, batch_size,
                                augment=augment, lr_drop_at=epochs // 2, epoch_iter=epoch_iter, amp=amp, read=False)
        correct = _correct(net, test_images, test_labels, batch_size, device, amp, per_image)
    return correct, train_loss


def evaluate_synset(images, labels, test_images, test_labels, num_classes: int,
                    model: str = "convnet", num_nets: int = 3, epochs: int = 1000,
                    lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                    batch_size: int = 256, augment: Optional[Augment] = None,
                    seed: Union[int, Sequence[int]] = 0, device=None, progress: bool = True,
                    model_kwargs: Optional[dict] = None, amp: str = "none") -> dict:
    """Train ``num_nets`` fresh networks on a synthetic set and test each on real data.

    ``seed`` seeds the networks: an ``int`` gives them ``seed .. seed + num_nets - 1``, a sequence one seed each
    (a run's evaluation networks come from :meth:`hddgeo.seeds.RunSeeds.eval_networks`).

    Returns ``{"mean", "std", "accs", "train_losses", "model", "seeds"}``; accuracies are fractions in
    [0, 1] and ``std`` is the population standard deviation (``numpy.std``, ddof=0), so a single
    network gives std 0. ``progress`` shows a bar over networks (and one over epochs) on stderr.
    ``device`` (default: where ``images`` are) and ``amp`` as in :func:`train_and_test`; the set and the
    test split are moved there once.
    """
    # Validate once up front so a bad input fails before any training starts.
    images, labels, test_images, test_labels, num_classes = _check_inputs(
        images, labels, test_images, test_labels, num_classes)
    device = images.device if device is None else torch.device(device)
    images, labels = images.to(device), labels.to(device)
    test_images, test_labels = test_images.to(device), test_labels.to(device)
    if num_nets < 1:
        raise ValueError(f"num_nets must be >= 1, got {num_nets}")
    results = []
    net_seeds = network_seeds(seed, num_nets)
    nets = net_seeds
    if progress:
        nets = tqdm(nets, desc=f"evaluate {model}", file=sys.stderr)
    for net_seed in nets:
        results.append(_train_and_test(images, labels, test_images, test_labels, model, num_classes, epochs, lr,
                                       momentum, weight_decay, batch_size, augment, net_seed, device, progress,
                                       model_kwargs, amp))
        if progress and not on_accelerator(device):  # on a GPU the bar shows no accuracy: reading it would wait
            nets.set_postfix(acc=f"{int(results[-1][0]) / len(test_images):.4f}")
    # every network's results in one read
    values = torch.stack([torch.stack([c.double(), l.double()]) for c, l in results]).tolist()
    accs = [int(c) / len(test_images) for c, _ in values]
    losses = [l for _, l in values]
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "accs": accs,
            "train_losses": losses, "model": model, "seeds": net_seeds}


# ----------------------------------------------------------------------------- declared protocols
@dataclass(frozen=True)
class Protocol:
    """A declared train-on-synthetic protocol: what :func:`evaluate_sets` does to every set it is given.

    ``networks`` fresh ``model`` networks are trained ``epochs`` epochs with SGD (``lr``, ``momentum``,
    ``weight_decay``, batch ``batch``; the learning rate divided by 10 at half), with per-image DSA (``dsa``,
    ``dsa_strategy``) on the set's images in the dataset's normalised space, then tested on the test split (its first
    ``test_per_class`` images of each class when positive, else all of it).  The networks are seeded by
    ``seed`` (a run's final evaluation networks, :meth:`hddgeo.seeds.RunSeeds.eval_networks`), so every set evaluated
    under one protocol meets the same networks: two sets are paired network by network."""

    name: str = "default"
    model: str = "convnet"
    networks: int = 5
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 256
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    test_per_class: int = 0
    seed: int = 0

    def network_seeds(self) -> list:
        from hddgeo.seeds import RunSeeds

        return RunSeeds(self.seed, 2).eval_networks("final", self.networks)

    def describe(self) -> str:
        test = f"the first {self.test_per_class} test images per class" if self.test_per_class else "the whole test split"
        return (f"{self.name}: {self.networks} x {self.model} trained {self.epochs} epochs (SGD lr {self.lr}, momentum "
                f"{self.momentum}, weight decay {self.weight_decay}, batch {self.batch}, lr x0.1 at half"
                f"{', DSA ' + self.dsa_strategy if self.dsa else ', no augmentation'}), tested on {test}; networks "
                f"seeded from {self.seed}")


# "paper": the official DM / IDM / HDD code's evaluation (20 networks x 1000 epochs, DSA); "default": hddgeo's
# shorter one (5 x 300, the verdict's IPC 1 budget)
PROTOCOLS = {"default": Protocol(), "paper": Protocol(name="paper", networks=20, epochs=1000)}


def evaluate_sets(sets, dataset, protocol: Protocol, device=None, progress: bool = False, amp: str = "none") -> list:
    """Evaluate every :class:`hddgeo.synset_files.LoadedSet` in ``sets`` under ``protocol`` on ``dataset`` (its
    test split); one row per (set, network): ``set, network, net_seed, acc``."""
    from functools import partial

    from hddgeo.data import dsa

    if protocol.test_per_class:
        dataset = dataset.test_subset(protocol.test_per_class)
    augment = partial(dsa, strategy=protocol.dsa_strategy, siamese=False) if protocol.dsa else None
    seeds = protocol.network_seeds()
    rows = []
    for s in sets:
        res = evaluate_synset(s.images, s.labels, dataset.test_images, dataset.test_labels, dataset.num_classes,
                              model=protocol.model, num_nets=protocol.networks, epochs=protocol.epochs, lr=protocol.lr,
                              momentum=protocol.momentum, weight_decay=protocol.weight_decay, batch_size=protocol.batch,
                              augment=augment, seed=seeds, device=device, progress=progress, amp=amp)
        rows += [{"set": s.name, "network": j, "net_seed": seed, "acc": acc}
                 for j, (seed, acc) in enumerate(zip(res["seeds"], res["accs"]))]
    return rows
