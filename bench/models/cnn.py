"""The small CNNs of the HyperFL paper (feature extractor + linear classifier head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.base import Model, flat_features


class HyperFLCNN(nn.Module):
    """HyperFL's CNN: for 28×28 inputs (E/F-MNIST) conv 1→16 k5, conv 16→32 k5 p1, fc 800→128;
    otherwise (CIFAR) conv C→16 k5, conv 16→32 k5 p1, conv 32→64 k3 p1, fc 576→128. Each conv is
    followed by LeakyReLU and 2×2 max-pool, the fc by LeakyReLU; the head is fc 128→classes."""

    classifier_name = "fc2"

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, _ = image_shape
        self.conv1 = nn.Conv2d(channels, 16, kernel_size=5, padding=0)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5, padding=1)
        self.conv3 = nn.Conv2d(32, 64, kernel_size=3, padding=1) if height != 28 else None
        self.fc1 = nn.Linear(flat_features(self._features, image_shape), 128)
        self.fc2 = nn.Linear(128, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        convs = [self.conv1, self.conv2] + ([self.conv3] if self.conv3 is not None else [])
        for conv in convs:
            x = F.max_pool2d(F.leaky_relu(conv(x)), 2)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.leaky_relu(self.fc1(self._features(x))))


class CNN(Model):
    """HyperFL paper's CNN: 2-3 conv (LeakyReLU, max-pool) + fc→128 feature extractor, fc head."""

    name = "cnn"
    description = __doc__

    def build(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return HyperFLCNN(image_shape, num_classes)
