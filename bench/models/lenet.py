"""The sigmoid LeNet of DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020)."""

from __future__ import annotations

import torch
from torch import nn

from bench.models.base import Model, flat_features
from bench.options import Option


class SigmoidLeNet(nn.Module):
    """Three 12-channel 5×5 convolutions (strides 2, 2, 1; padding 2) with sigmoids, then one linear
    layer (768 inputs for 32×32 images, 588 for 28×28). Sigmoids keep gradients informative, which is
    why gradient-inversion papers use this network."""

    classifier_name = "fc"

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels = image_shape[0]
        self.body = nn.Sequential(
            nn.Conv2d(channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        self.fc = nn.Linear(flat_features(self.body, image_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class LeNet(Model):
    """Sigmoid LeNet of DLG/iDLG: 3 convs of 12 channels (strides 2, 2, 1) + 1 linear layer."""

    name = "lenet"
    description = __doc__
    options = (
        Option(
            "init",
            str,
            "uniform",
            "weight init: 'uniform' is DLG's U(-0.5, 0.5) for all weights and biases; 'default' is PyTorch's",
            choices=("uniform", "default"),
        ),
    )

    def build(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        net = SigmoidLeNet(image_shape, num_classes)
        if self.opt.init == "uniform":
            with torch.no_grad():
                for p in net.parameters():
                    p.uniform_(-0.5, 0.5)
        return net
