import numpy as np
import pytest
import torch

from bench import registry
from bench.data.embedded import build_digits, build_faces, build_photos
from bench.errors import BenchError
from tests.tv_fixtures import make_cifar10, make_cifar100, make_mnist_like


def test_photos_is_deterministic_cifar_like_and_offline():
    a = build_photos(20, 5)
    build_photos.cache_clear()
    b = build_photos(20, 5)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert a.train_x.shape == (200, 3, 32, 32) and a.test_x.shape == (50, 3, 32, 32)
    assert a.num_classes == 10 and a.train_x.min() >= 0 and a.train_x.max() <= 1
    assert torch.bincount(a.train_y).tolist() == [20] * 10
    assert (a.train_x.flatten(1).std(1) > 0.04).float().mean() > 0.95  # flat patches were skipped


def test_faces_and_digits():
    faces, digits = build_faces(), build_digits()
    assert faces.image_shape == (1, 32, 32) and faces.classes == ("face", "non-face")
    assert len(faces.train_y) + len(faces.test_y) == 200
    assert digits.image_shape == (1, 32, 32) and digits.num_classes == 10
    assert len(digits.train_y) + len(digits.test_y) == 1797


def test_normalisation_round_trip():
    d = build_photos(20, 5)
    x = d.train_x[:4]
    assert torch.allclose(d.denormalise(d.normalise(x)), x, atol=1e-6)
    z = d.normalise(d.train_x)
    assert z.mean(dim=(0, 2, 3)).abs().max() < 0.01 and (z.std(dim=(0, 2, 3)) - 1).abs().max() < 0.01


def load(name, root, **args):
    return registry.create("dataset", name, args).load(root)


@pytest.mark.parametrize("name, folder, prefix", [("mnist", "MNIST", ""), ("fashionmnist", "FashionMNIST", "")])
def test_mnist_family_loads_torchvision_format(tmp_path, name, folder, prefix):
    first = make_mnist_like(tmp_path, folder, prefix)
    d = load(name, tmp_path)
    assert d.train_x.shape == (12, 1, 28, 28) and d.test_x.shape == (6, 1, 28, 28)
    assert torch.allclose(d.train_x[0, 0], torch.from_numpy(first[0]).float() / 255)
    assert d.train_y.tolist() == [i % 10 for i in range(12)]


def test_emnist_loads_and_is_transposed_upright(tmp_path):
    first = make_mnist_like(tmp_path, "EMNIST", prefix="emnist-byclass-", classes=62)
    d = load("emnist", tmp_path)
    assert torch.allclose(d.train_x[0, 0], torch.from_numpy(first[0]).float().T / 255)


def test_cifar_loads_torchvision_format(tmp_path):
    first = make_cifar10(tmp_path)
    d = load("cifar10", tmp_path)
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert torch.allclose(d.train_x[0], torch.from_numpy(first[0].reshape(3, 32, 32)).float() / 255)
    assert d.classes[0] == "class0"
    make_cifar100(tmp_path)
    assert load("cifar100", tmp_path).num_classes == 100


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load("imagefolder", tmp_path, image_size=16, test_fraction=0.2)
    assert d.classes == ("cats", "dogs") and d.train_x.shape[1:] == (3, 16, 16)
    assert len(d.train_y) == 8 and len(d.test_y) == 2


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mnist", "MNIST/raw"),
        ("fashionmnist", "FashionMNIST/raw"),
        ("emnist", "EMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("imagefolder", "CLASS_NAME"),
    ],
)
def test_missing_files_name_the_expected_layout(tmp_path, name, expected):
    with pytest.raises(BenchError) as exc:
        load(name, tmp_path)
    assert expected in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(BenchError, match="--data-root"):
        load(name, None)
