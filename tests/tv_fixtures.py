"""Tiny data sets written in torchvision's exact on-disk formats (for loader tests; no download)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


def make_mnist_like(
    root: Path, folder: str, prefix: str = "", train_n: int = 12, test_n: int = 6, size: int = 28, classes: int = 10
) -> np.ndarray:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    first = None
    for split, n in (("train", train_n), ("t10k" if not prefix else "test", test_n)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = np.arange(n) % classes
        write_idx_images(raw / f"{prefix}{split}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}{split}-labels-idx1-ubyte", labels)
        first = images if first is None else first
    return first


def make_cifar10(root: Path, per_batch: int = 4) -> np.ndarray:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        first = data if first is None else first
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(per_batch))}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return first


def make_cifar100(root: Path, n: int = 6) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        with open(base / name, "wb") as f:
            pickle.dump(
                {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), "fine_labels": list(range(n))}, f
            )
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
