"""torchvision's ResNet-18 adapted to 32×32 inputs (3×3 stem, no stem max-pool), as on CIFAR."""

from __future__ import annotations

from torch import nn

from bench.models.base import Model


class ResNet18(Model):
    """torchvision ResNet-18 for small images: 3×3 stride-1 stem, no max-pool, randomly initialised."""

    name = "resnet18"
    description = __doc__

    def build(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(image_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.classifier_name = "fc"
        return net
