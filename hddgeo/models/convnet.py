"""ConvNet-D, the default backbone of dataset distillation benchmarks."""
from __future__ import annotations

import torch
from torch import nn

from hddgeo.models._layers import AvgPool2x2, ImageSize, as_hw, norm_layer


class ConvNet(nn.Module):
    """``depth`` blocks of conv3x3 -> instance norm -> ReLU -> AvgPool2d(2), then a linear layer.

    A 28x28 input gets padding 3 in the first convolution, so it continues as 32x32 (the
    reference pads MNIST-sized images the same way, which gives the same 2048-dim embedding as
    CIFAR). Inputs of 8x8 shrink 8 -> 4 -> 2 -> 1 with the default depth 3.
    """

    def __init__(self, channels: int, num_classes: int, image_size: ImageSize = (32, 32),
                 width: int = 128, depth: int = 3, norm: str = "instancenorm"):
        super().__init__()
        h, w = as_hw(image_size)
        blocks = []
        in_ch = channels
        for i in range(depth):
            pad = 3 if i == 0 and (h, w) == (28, 28) else 1
            blocks += [nn.Conv2d(in_ch, width, kernel_size=3, padding=pad),
                       norm_layer(norm, width), nn.ReLU(inplace=True), AvgPool2x2()]
            h, w = (h + 2 * pad - 2) // 2, (w + 2 * pad - 2) // 2
            if h < 1 or w < 1:
                raise ValueError(f"depth {depth} is too deep for {as_hw(image_size)} images: "
                                 f"block {i + 1} would pool below 1x1; use depth <= {i}")
            in_ch = width
        self.features = nn.Sequential(*blocks)
        self.feature_dim = width * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
