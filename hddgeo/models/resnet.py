"""ResNet18 for small images: 3x3 stem, no max pool, global average pool before the classifier."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hddgeo.device import on_accelerator
from hddgeo.models._layers import ImageSize, as_hw, norm_layer


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.norm2 = norm_layer(norm, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          norm_layer(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Four stages of two basic blocks (64, 128, 256, 512 channels), instance norm by default.

    A stage downsamples (stride 2) only while its output stays at least 2x2: instance norm of
    a 1x1 map is constant, so 8x8 inputs run 8 -> 4 -> 2 -> 2 instead of collapsing. The
    embedding is the global average of the last stage (512 dims for every input size).
    """

    def __init__(self, channels: int, num_classes: int, image_size: ImageSize = (32, 32),
                 norm: str = "instancenorm"):
        super().__init__()
        h, w = as_hw(image_size)
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, padding=1, bias=False),
                                  norm_layer(norm, 64), nn.ReLU(inplace=True))
        blocks = []
        in_ch = 64
        for stage, out_ch in enumerate((64, 128, 256, 512)):
            stride = 1
            if stage > 0 and (h - 1) // 2 + 1 >= 2 and (w - 1) // 2 + 1 >= 2:
                stride = 2
                h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            blocks += [BasicBlock(in_ch, out_ch, stride, norm), BasicBlock(out_ch, out_ch, 1, norm)]
            in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.feature_dim = in_ch
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        if on_accelerator(x.device):  # adaptive pooling has no deterministic CUDA backward; a mean has
            return x.mean((-2, -1))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
