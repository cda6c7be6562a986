"""Standard data sets read from the user's ``--data-root`` in torchvision's own on-disk format.

Nothing is downloaded (``download=False`` always). When files are missing the error names the
folder layout torchvision expects, so a user can put the files in place by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.data.base import Dataset, ImageDataset, channel_stats
from bench.errors import BenchError, first_line
from bench.options import Option


def _require_root(name: str, data_root: Path | None, layout: str) -> Path:
    if data_root is None:
        raise BenchError(f"data set {name!r} is read from disk: pass --data-root DIR with {layout}")
    if not Path(data_root).is_dir():
        raise BenchError(f"--data-root {str(data_root)!r} is not a directory (data set {name!r} expects {layout})")
    return Path(data_root)


def _open(name: str, layout: str, factory: Any, **kwargs: Any) -> Any:
    try:
        return factory(download=False, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError, EOFError, ValueError, KeyError) as exc:
        raise BenchError(
            f"data set {name!r} not found or unreadable under {kwargs.get('root')!s}: "
            f"expected {layout} ({first_line(exc)})"
        ) from None


def _as_images(data: Any, channels_last: bool) -> torch.Tensor:
    """uint8 arrays/tensors ([N, H, W] or [N, H, W, C]) to float [N, C, H, W] in [0, 1]."""
    x = torch.as_tensor(np.asarray(data))
    if x.ndim == 3:
        x = x[:, None]
    elif channels_last:
        x = x.permute(0, 3, 1, 2)
    return x.float().div(255.0).contiguous()


def _build(
    name: str, train: Any, test: Any, classes: list[str], channels_last: bool, transpose: bool = False
) -> ImageDataset:
    train_x, test_x = _as_images(train.data, channels_last), _as_images(test.data, channels_last)
    if transpose:  # EMNIST stores images transposed
        train_x, test_x = train_x.transpose(-1, -2).contiguous(), test_x.transpose(-1, -2).contiguous()
    mean, std = channel_stats(train_x)
    return ImageDataset(
        name,
        train_x,
        torch.as_tensor(train.targets).long(),
        test_x,
        torch.as_tensor(test.targets).long(),
        tuple(str(c) for c in classes),
        mean,
        std,
    )


class _TorchvisionSet(Dataset):
    needs_data_root: ClassVar[bool] = True
    layout: ClassVar[str] = ""
    channels_last: ClassVar[bool] = False

    def _factory(self) -> Any:
        raise NotImplementedError

    def _extra(self) -> dict[str, Any]:
        return {}

    def read(self, data_root: Path | None) -> ImageDataset:
        root = _require_root(self.name, data_root, self.layout)
        factory = self._factory()
        train = _open(self.name, self.layout, factory, root=str(root), train=True, **self._extra())
        test = _open(self.name, self.layout, factory, root=str(root), train=False, **self._extra())
        return _build(self.name, train, test, list(train.classes), self.channels_last, transpose=self.name == "emnist")


class MNIST(_TorchvisionSet):
    """MNIST (28×28 grey, 10 classes) from DATA_ROOT/MNIST/raw/ in torchvision's format."""

    name = "mnist"
    description = __doc__
    layout = "DATA_ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"

    def _factory(self) -> Any:
        from torchvision.datasets import MNIST as TV

        return TV


class FashionMNIST(_TorchvisionSet):
    """Fashion-MNIST (28×28 grey, 10 classes) from DATA_ROOT/FashionMNIST/raw/."""

    name = "fashionmnist"
    description = __doc__
    layout = "DATA_ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"

    def _factory(self) -> Any:
        from torchvision.datasets import FashionMNIST as TV

        return TV


class EMNIST(_TorchvisionSet):
    """EMNIST (28×28 grey; split byclass = digits + upper + lower case, 62 classes) from DATA_ROOT/EMNIST/raw/."""

    name = "emnist"
    description = __doc__
    layout = "DATA_ROOT/EMNIST/raw/emnist-SPLIT-{train,test}-{images-idx3,labels-idx1}-ubyte"
    options = Dataset.options + (
        Option(
            "split",
            str,
            "byclass",
            "EMNIST split",
            choices=("byclass", "bymerge", "balanced", "letters", "digits", "mnist"),
        ),
    )

    def _factory(self) -> Any:
        from torchvision.datasets import EMNIST as TV

        return TV

    def _extra(self) -> dict[str, Any]:
        return {"split": self.opt.split}


def _existence_checked(cls: Any) -> Any:
    """torchvision's CIFAR classes verify MD5 sums of the full archives; check presence instead so
    that subsets and test fixtures in the same format load too (a damaged file fails on read)."""
    return type(
        cls.__name__,
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


class CIFAR10(_TorchvisionSet):
    """CIFAR-10 (32×32 RGB, 10 classes) from DATA_ROOT/cifar-10-batches-py/."""

    name = "cifar10"
    description = __doc__
    layout = "DATA_ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"
    channels_last = True

    def _factory(self) -> Any:
        from torchvision.datasets import CIFAR10 as TV

        return _existence_checked(TV)


class CIFAR100(_TorchvisionSet):
    """CIFAR-100 (32×32 RGB, 100 fine classes) from DATA_ROOT/cifar-100-python/."""

    name = "cifar100"
    description = __doc__
    layout = "DATA_ROOT/cifar-100-python/{train,test,meta}"
    channels_last = True

    def _factory(self) -> Any:
        from torchvision.datasets import CIFAR100 as TV

        return _existence_checked(TV)


class ImageFolder(Dataset):
    """Your own images: DATA_ROOT/CLASS/IMAGE (or DATA_ROOT/{train,test}/CLASS/IMAGE), resized."""

    name = "imagefolder"
    description = __doc__
    needs_data_root = True
    layout = "DATA_ROOT/CLASS_NAME/IMAGE_FILE or DATA_ROOT/{train,test}/CLASS_NAME/IMAGE_FILE"
    options = Dataset.options + (
        Option("image_size", int, 32, "images are resized to this square size", min=8),
        Option("grayscale", bool, False, "convert to one grey channel"),
        Option("test_fraction", float, 0.2, "held-out share when there is no test/ folder", min=0.0, max=0.9),
    )

    def _read(self, folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        from torchvision import transforms
        from torchvision.datasets import ImageFolder as TV

        tf = transforms.Compose(
            ([transforms.Grayscale()] if self.opt.grayscale else [])
            + [transforms.Resize((self.opt.image_size, self.opt.image_size)), transforms.ToTensor()]
        )
        try:
            ds = TV(str(folder), transform=tf, loader=lambda p: _pil_rgb(p))
        except (FileNotFoundError, RuntimeError) as exc:
            raise BenchError(
                f"data set 'imagefolder' found no images under {str(folder)!r}: expected "
                f"{self.layout} ({first_line(exc)})"
            ) from None
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        return torch.stack(xs), torch.tensor(ys), list(ds.classes)

    def read(self, data_root: Path | None) -> ImageDataset:
        root = _require_root(self.name, data_root, self.layout)
        if (root / "train").is_dir() and (root / "test").is_dir():
            train_x, train_y, classes = self._read(root / "train")
            test_x, test_y, test_classes = self._read(root / "test")
            if test_classes != classes:
                raise BenchError(f"imagefolder: test/ classes {test_classes} differ from train/ classes {classes}")
        else:
            x, y, classes = self._read(root)
            perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
            n_test = int(round(len(y) * self.opt.test_fraction))
            te, tr = perm[:n_test], perm[n_test:]
            train_x, train_y, test_x, test_y = x[tr], y[tr], x[te], y[te]
        mean, std = channel_stats(train_x)
        return ImageDataset("imagefolder", train_x, train_y, test_x, test_y, tuple(classes), mean, std)


def _pil_rgb(path: str) -> Any:
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")
