"""The ConvNet of Inverting Gradients (Geiping et al. 2020, inversefed's ``ConvNet``)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from bench.models.base import Model, flat_features
from bench.options import Option


class InvertingConvNet(nn.Module):
    """Eight 3×3 conv-BN-ReLU blocks (widths w, 2w, 2w, 4w, 4w, 4w | pool 3 | 4w, 4w | pool 3) and a
    linear layer (36·w inputs for 32×32 images)."""

    classifier_name = "linear"

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, width: int) -> None:
        super().__init__()
        widths = [image_shape[0], width, 2 * width, 2 * width, 4 * width, 4 * width, 4 * width, 4 * width, 4 * width]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(8):
            layers[f"conv{i}"] = nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, padding=1)
            layers[f"bn{i}"] = nn.BatchNorm2d(widths[i + 1])
            layers[f"relu{i}"] = nn.ReLU()
            if i in (5, 7):
                layers[f"pool{0 if i == 5 else 1}"] = nn.MaxPool2d(3)
        layers["flatten"] = nn.Flatten()
        self.features = nn.Sequential(layers)
        self.linear = nn.Linear(flat_features(self.features, image_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


class ConvNet(Model):
    """ConvNet of Inverting Gradients: 8 conv-BN-ReLU blocks, 2 max-pools, 1 linear (width w)."""

    name = "convnet"
    description = __doc__
    options = (Option("width", int, 64, "base width w (the paper's ConvNet-64 uses 64)", min=1),)

    def build(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return InvertingConvNet(image_shape, num_classes, self.opt.width)
