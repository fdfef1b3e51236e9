"""Networks used to distill and to evaluate synthetic sets.

Every model takes ``(channels, num_classes, image_size)``, has ``embed(x)`` (flattened
features, ``feature_dim`` wide) and ``forward(x) = classifier(embed(x))``.
"""
from __future__ import annotations

import torch
from torch import nn

from hddgeo.device import move_module
from hddgeo.models._layers import ImageSize
from hddgeo.models.alexnet import AlexNet
from hddgeo.models.convnet import ConvNet
from hddgeo.models.resnet import ResNet18
from hddgeo.models.vgg import VGG11

_REGISTRY = {"convnet": ConvNet, "alexnet": AlexNet, "vgg11": VGG11, "resnet18": ResNet18}
MODEL_NAMES = tuple(_REGISTRY)


def build_model(name: str, channels: int, num_classes: int, image_size: ImageSize,
                **kw) -> nn.Module:
    """A freshly initialised network by name (case-insensitive); ``kw`` goes to its constructor
    (e.g. ``depth=4`` or ``width=64`` for ConvNet, ``norm="batchnorm"`` for VGG11/ResNet18)."""
    cls = _REGISTRY.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return cls(channels, num_classes, image_size=image_size, **kw)


def fresh_network(name: str, dataset, seed: int, device=None, **kw) -> nn.Module:
    """A randomly initialised ``name`` network for ``dataset`` (its channels, classes and image size),
    seeded by ``seed`` without touching the caller's global random state.

    The weights are drawn on the CPU and then moved to ``device``, so a seed gives the same network on
    every device.  Only the CPU generator is seeded (``torch.manual_seed`` would reseed every CUDA generator
    too, each iteration), and an accelerator gets the weights in one copy (:func:`hddgeo.device.move_module`)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        net = build_model(name, dataset.channels, dataset.num_classes, dataset.image_size, **kw)
    return net if device is None else move_module(net, device)


def embed(net: nn.Module, images: torch.Tensor, batch_size: int = 512, device=None) -> torch.Tensor:
    """``net.embed`` of every image, ``(N, d)``, in chunks of ``batch_size`` without autograd.

    The result is on ``images``' device; ``device`` is where the network computes (default: where its
    parameters are). Every layer treats images independently, so the chunk size does not change the
    values (bitwise, for the instance-norm ConvNet)."""
    if len(images) == 0:
        raise ValueError("no images to embed")
    if device is not None:
        net = net.to(device)
    device = next(net.parameters()).device
    with torch.no_grad():
        out = [net.embed(images[s:s + batch_size].to(device)).to(images.device) for s in range(0, len(images), batch_size)]
    return torch.cat(out)


__all__ = ["MODEL_NAMES", "build_model", "embed", "fresh_network", "ConvNet", "AlexNet", "VGG11", "ResNet18"]
