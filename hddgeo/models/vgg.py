"""VGG11 for small images (conv3x3 -> norm -> ReLU stages, one linear classifier)."""
from __future__ import annotations

import torch
from torch import nn

from hddgeo.models._layers import ImageSize, as_hw, norm_layer

_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG11 with instance norm (``norm="instancenorm"``, the default) or batch norm.

    At 32x32 the five pools give 1x1x512 features. Smaller inputs skip a pool whenever it
    would leave later convolutions working on 1x1 maps: instance norm of a single pixel is
    constant, so such a layer would carry no information. The last pool (after all
    convolutions) only needs 2x2 to run. 8x8 inputs therefore also end at 512 features.
    28x28 inputs get padding 3 in the first convolution (28 -> 32), like the reference.
    """

    def __init__(self, channels: int, num_classes: int, image_size: ImageSize = (32, 32),
                 norm: str = "instancenorm"):
        super().__init__()
        h, w = as_hw(image_size)
        layers: list[nn.Module] = []
        in_ch = channels
        for i, item in enumerate(_VGG11):
            if item == "M":
                last = i == len(_VGG11) - 1
                need = 2 if last else 4
                if h >= need and w >= need:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            pad = 3 if i == 0 and (h, w) == (28, 28) else 1
            layers += [nn.Conv2d(in_ch, item, kernel_size=3, padding=pad),
                       norm_layer(norm, item), nn.ReLU(inplace=True)]
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            in_ch = item
        self.features = nn.Sequential(*layers)
        self.feature_dim = in_ch * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
