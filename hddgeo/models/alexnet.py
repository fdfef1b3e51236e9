"""AlexNet sized for 32x32 images (five convolutions, as in the DC/DM benchmark code)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hddgeo.models._layers import ImageSize, as_hw


class _MaxPoolIfRoom(nn.Module):
    """MaxPool2d(2) that leaves an input with a side below 2 alone, so 8x8 digits never
    collapse to 0x0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 2:
            return x
        return F.max_pool2d(x, 2)


class AlexNet(nn.Module):
    """conv5x5(128) pool, conv5x5(192) pool, conv3x3 256/192/192, pool, linear; no normalisation.

    28x28 inputs get padding 4 in the first convolution (28 -> 32), like the reference.
    """

    def __init__(self, channels: int, num_classes: int, image_size: ImageSize = (32, 32)):
        super().__init__()
        h, w = as_hw(image_size)
        pad = 4 if (h, w) == (28, 28) else 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, kernel_size=5, padding=pad), nn.ReLU(inplace=True),
            _MaxPoolIfRoom(),
            nn.Conv2d(128, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            _MaxPoolIfRoom(),
            nn.Conv2d(192, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            _MaxPoolIfRoom(),
        )
        with torch.no_grad():
            self.feature_dim = self.features(torch.zeros(1, channels, h, w)).numel()
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
