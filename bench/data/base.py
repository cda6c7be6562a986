"""Image data sets as tensors, with the normalisation the model sees carried alongside."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch

from bench.component import Component
from bench.options import Option


@dataclass(frozen=True)
class ImageDataset:
    """Train and test images in [0, 1] (float32, [N, C, H, W]) with integer labels.

    ``mean``/``std`` define the model's input normalisation; attacks work in normalised space and
    scores are computed after :meth:`denormalise` (clamped to [0, 1]).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        return mean, std

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] pixel space, clamped: how every reconstruction is scored."""
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0, 1)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images [N, C, H, W] (the usual normalisation constants)."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


class Dataset(Component):
    """Base class of a data-set loader. Loaders never download: data ship with a package or sit
    under the user's ``--data-root``. Subclasses implement :meth:`read` and extend ``options``."""

    kind: ClassVar[str] = "dataset"
    #: True when the data set needs ``--data-root`` (torchvision formats).
    needs_data_root: ClassVar[bool] = False
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "normalise",
            bool,
            True,
            "feed the model per-channel standardised inputs (train-set mean/std); "
            "false feeds raw [0, 1] pixels as the DLG/iDLG papers do",
        ),
    )

    @abstractmethod
    def read(self, data_root: Path | None) -> ImageDataset:
        """Read the images and labels (mean/std of the training images as normalisation)."""

    def load(self, data_root: Path | None) -> ImageDataset:
        data = self.read(data_root)
        if not self.opt.normalise:
            channels = data.image_shape[0]
            data = replace(data, mean=(0.0,) * channels, std=(1.0,) * channels)
        return data
