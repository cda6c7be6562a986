import pytest
import torch

from bench import registry
from bench.models.base import classifier_of


def build(name, shape, classes=10, **args):
    return registry.create("model", name, args).build(shape, classes)


def test_lenet_matches_dlg():
    net = build("lenet", (3, 32, 32), 100)
    assert net.fc.in_features == 768 and net.fc.out_features == 100
    assert build("lenet", (1, 28, 28)).fc.in_features == 588
    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 1] and all(c.out_channels == 12 for c in convs)
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in net.body) == 3
    assert all(p.min() >= -0.5 and p.max() <= 0.5 for p in net.parameters())
    default = build("lenet", (3, 32, 32), init="default")
    assert default.fc.weight.abs().max() < 0.05  # PyTorch's init is much narrower than U(-0.5, 0.5)


@pytest.mark.parametrize("width", [16, 64])
def test_inverting_gradients_convnet(width):
    net = build("convnet", (3, 32, 32), width=width)
    assert net.linear.in_features == 36 * width
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 8
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_for_small_images():
    net = build("resnet18", (3, 32, 32))
    assert net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_hyperfl_cnns():
    cifar = build("cnn", (3, 32, 32))
    assert cifar.fc1.in_features == 576 and cifar.fc2.in_features == 128
    mnist = build("cnn", (1, 28, 28), 62)
    assert mnist.fc1.in_features == 800 and mnist.conv3 is None and mnist.fc2.out_features == 62


@pytest.mark.parametrize("name", ["lenet", "convnet", "resnet18", "cnn"])
def test_every_model_names_its_classifier(name):
    net = build(name, (3, 32, 32))
    assert isinstance(net.get_submodule(classifier_of(net)), torch.nn.Linear)
