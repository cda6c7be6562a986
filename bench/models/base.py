"""Model architectures as components: ``build(image_shape, num_classes)`` returns a fresh network.

Every network names its classifier head in ``classifier_name`` (the module path of its final
linear layer): HyperFL keeps that head private, and label inference reads its gradient.
"""

from __future__ import annotations

from collections.abc import Callable

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import nn

from bench.component import Component


class Model(Component):
    """Base class of a model architecture."""

    kind: ClassVar[str] = "model"

    @abstractmethod
    def build(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        """A freshly initialised network (drawn from torch's global RNG) with ``classifier_name`` set."""


def flat_features(body: Callable[[torch.Tensor], torch.Tensor], image_shape: tuple[int, int, int]) -> int:
    """Number of features ``body`` produces for one image, found with a dry run."""
    with torch.no_grad():
        return int(body(torch.zeros(1, *image_shape)).flatten(1).shape[1])


def classifier_of(model: nn.Module) -> str:
    """The module path of the classifier head (``classifier_name``), checked to be a Linear layer."""
    name = getattr(model, "classifier_name", None)
    if not isinstance(name, str) or not isinstance(model.get_submodule(name), nn.Linear):
        raise TypeError(f"{type(model).__name__} must set classifier_name to the path of its final nn.Linear")
    return name
