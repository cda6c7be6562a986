"""Default data sets built from images that ship inside installed packages (no download, ever).

* ``photos`` (the default): CIFAR-like 32×32 RGB patches cut from scikit-image's bundled colour
  photographs; the class is the source photo (10 classes). Train patches come from the top three
  quarters of each photo and test patches from the bottom quarter, so test images are never crops
  of training pixels.
* ``faces``: scikit-image's LFW subset (100 faces, 100 non-face backgrounds), 32×32 grey.
* ``digits``: scikit-learn's handwritten digits (1,797 images, 8×8 upsampled to 32×32 grey).

Generation is deterministic (fixed seed, independent of the run's seed), so every machine with the
same scikit-image release sees the same images.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import Dataset, ImageDataset, channel_stats
from bench.options import Option

_DATA_SEED = 20241210  # fixed: the data set must not depend on the run's seed


def _rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 float32 in [0, 1]; RGBA is composited on white."""
    img = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.shape[-1] == 4:
        alpha = img[..., 3:]
        img = img[..., :3] * alpha + (1 - alpha)
    return img


def _photo_sources() -> dict[str, Callable[[], np.ndarray]]:
    from skimage import data

    return {
        "astronaut": data.astronaut,
        "cat": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "tissue": data.immunohistochemistry,
        "retina": data.retina,
        "galaxies": data.hubble_deep_field,
        "colour wheel": data.colorwheel,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "logo": data.logo,
    }


def _pyramid(image: np.ndarray, short_sides: tuple[int, ...]) -> list[torch.Tensor]:
    """The photo resized (antialiased) so its short side takes each given length; [3, H, W] each."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    h, w = t.shape[-2:]
    levels = []
    for side in short_sides:
        scale = side / min(h, w)
        size = (max(side, round(h * scale)), max(side, round(w * scale)))
        levels.append(F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1))
    return levels


def _patches(levels: list[torch.Tensor], count: int, size: int, rows: tuple[float, float],
             rng: np.random.Generator, min_std: float = 0.05) -> torch.Tensor:
    """``count`` random ``size``×``size`` crops within the given band of rows, skipping flat ones."""
    out: list[torch.Tensor] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        level = levels[rng.integers(len(levels))]
        h, w = level.shape[-2:]
        top_lo, top_hi = int(rows[0] * h), int(rows[1] * h) - size
        if top_hi < top_lo:
            continue
        top = int(rng.integers(top_lo, top_hi + 1))
        left = int(rng.integers(0, w - size + 1))
        crop = level[:, top:top + size, left:left + size]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        if float(crop.std()) < min_std and attempts < 50 * count:
            continue
        out.append(crop)
    return torch.stack(out)


@lru_cache(maxsize=4)
def build_photos(train_per_class: int, test_per_class: int, size: int = 32) -> ImageDataset:
    rng = np.random.default_rng(_DATA_SEED)
    sources = _photo_sources()
    train, test, train_y, test_y = [], [], [], []
    for label, load in enumerate(sources.values()):
        levels = _pyramid(_rgb(load()), short_sides=(4 * size, 5 * size, 7 * size, 9 * size))
        train.append(_patches(levels, train_per_class, size, (0.0, 0.75), rng))
        test.append(_patches(levels, test_per_class, size, (0.75, 1.0), rng))
        train_y += [label] * train_per_class
        test_y += [label] * test_per_class
    train_x = torch.cat(train).float()
    mean, std = channel_stats(train_x)
    return ImageDataset("photos", train_x, torch.tensor(train_y), torch.cat(test).float(),
                        torch.tensor(test_y), tuple(sources), mean, std)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _split_every(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a deterministic split: every k-th example goes to test."""
    idx = torch.arange(n)
    return idx[idx % k != 0], idx[idx % k == 0]


@lru_cache(maxsize=2)
def build_faces(size: int = 32) -> ImageDataset:
    from skimage import data

    images = torch.from_numpy(np.asarray(data.lfw_subset(), dtype=np.float32))
    images = images / images.max() if images.max() > 1 else images
    x = _resize(images[:, None], size)
    y = torch.tensor([0] * 100 + [1] * 100)
    tr, te = _split_every(len(y), 5)
    mean, std = channel_stats(x[tr])
    return ImageDataset("faces", x[tr], y[tr], x[te], y[te], ("face", "non-face"), mean, std)


@lru_cache(maxsize=2)
def build_digits(size: int = 32) -> ImageDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = _resize(torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None], size)
    y = torch.from_numpy(digits.target.astype(np.int64))
    tr, te = _split_every(len(y), 6)
    mean, std = channel_stats(x[tr])
    return ImageDataset("digits", x[tr], y[tr], x[te], y[te], tuple(str(i) for i in range(10)), mean, std)


class Photos(Dataset):
    """32×32 RGB patches of scikit-image's bundled photos, 10 classes (CIFAR-like; the default)."""

    name = "photos"
    description = __doc__
    options = Dataset.options + (
        Option("train_per_class", int, 500, "training patches per class", min=1),
        Option("test_per_class", int, 100, "test patches per class", min=1),
    )

    def read(self, data_root: Path | None) -> ImageDataset:
        return build_photos(self.opt.train_per_class, self.opt.test_per_class)


class Faces(Dataset):
    """scikit-image's LFW subset: 100 faces and 100 non-faces, 32×32 grey (2 classes)."""

    name = "faces"
    description = __doc__

    def read(self, data_root: Path | None) -> ImageDataset:
        return build_faces()


class Digits(Dataset):
    """scikit-learn's 8×8 handwritten digits upsampled to 32×32 grey (10 classes)."""

    name = "digits"
    description = __doc__

    def read(self, data_root: Path | None) -> ImageDataset:
        return build_digits()
