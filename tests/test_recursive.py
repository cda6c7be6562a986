"""R-GAP's recursion (bench.inversion.recursive) and its use by the analytic attack."""

from __future__ import annotations

import torch
from torch import nn

from bench.attacks.analytic import Analytic
from bench.defenses.fedavg import FedAvg
from bench.defenses.hyperfl import HyperFL
from bench.inversion.linear import as_gradient, leaky_layers, read_layer
from bench.inversion.recursive import BlockEvidence, chain_states, conv_chain, invert_chain, solve_block
from bench.metrics import psnr_per_image
from bench.models.cnn import HyperFLCNN
from bench.models.lenet import LeNet, SigmoidLeNet
from bench.progress import SilentProgress
from tests.helpers import cnn_task, lenet_task
from tests.test_analytic import observe


def _reading(obs):
    layer = leaky_layers(obs)[0]
    reading = read_layer(obs, layer)
    params = {k: v.detach() for k, v in obs.public.model.named_parameters()}
    return layer, reading, params, params[layer.weight_key].T @ reading.delta


def test_the_chains_below_the_leaky_layer_are_read_from_the_model():
    lenet = conv_chain(SigmoidLeNet((3, 32, 32), 10), "fc")
    assert isinstance(lenet, list)
    assert [(b.name, b.stride, b.padding, b.activation, b.pool) for b in lenet] == [
        ("body.0", 2, 2, "sigmoid", 1),
        ("body.2", 2, 2, "sigmoid", 1),
        ("body.4", 1, 2, "sigmoid", 1),
    ]
    cnn = conv_chain(HyperFLCNN((3, 32, 32), 10), "fc1")
    assert isinstance(cnn, list)
    assert [(b.name, b.activation, b.slope, b.pool) for b in cnn] == [
        ("conv1", "leaky_relu", 0.01, 2),
        ("conv2", "leaky_relu", 0.01, 2),
        ("conv3", "leaky_relu", 0.01, 2),
    ]

    class ReLUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    why = conv_chain(ReLUNet(), "fc")
    assert isinstance(why, str) and "invertible activation" in why


def unsaturated_lenet():
    """DLG's LeNet with PyTorch's initialisation: with DLG's U(−0.5, 0.5) weights some sigmoids saturate,
    and inverting them amplifies the float32 rounding of the observation (R-GAP's §4 discusses this)."""
    return lenet_task(model=LeNet(init="default"))


def test_rgap_recovers_one_image_exactly_through_a_pool_free_chain():
    obs, target = observe(FedAvg(), unsaturated_lenet(), smooth=True)
    layer, reading, params, upstream = _reading(obs)
    blocks = conv_chain(obs.public.model, layer.name)
    gradients = {b.weight_key: as_gradient(obs, b.weight_key) for b in blocks}
    image, residuals = invert_chain(
        blocks, params, gradients, reading.features, upstream, torch.zeros_like(target.x[0])
    )
    assert float((image - target.x[0]).norm() / target.x[0].norm()) < 1e-4
    assert max(residuals) < 1e-3


def test_zeroed_gradient_entries_are_left_out_not_read_as_zero():
    obs, target = observe(FedAvg(), unsaturated_lenet(), smooth=True)
    layer, reading, params, upstream = _reading(obs)
    blocks = conv_chain(obs.public.model, layer.name)
    gradients = {b.weight_key: as_gradient(obs, b.weight_key) for b in blocks}
    g = gradients["body.0.weight"]
    keep = torch.rand(g.shape, generator=torch.Generator().manual_seed(0)) > 0.2
    gradients["body.0.weight"] = g * keep  # a defense zeroed a fifth of the first layer's entries
    image, _ = invert_chain(blocks, params, gradients, reading.features, upstream, torch.zeros_like(target.x[0]))
    assert float((image - target.x[0]).norm() / target.x[0].norm()) < 1e-3


def test_through_a_max_pool_the_right_switches_give_the_exact_input():
    obs, target = observe(FedAvg(), cnn_task(), smooth=True)
    layer, reading, params, upstream = _reading(obs)
    blocks = conv_chain(obs.public.model, layer.name)
    assert isinstance(blocks, list)
    top = blocks[-1]
    truth = chain_states(blocks, params, target.x[0])[-2]  # the top block's input
    shape = (params[top.weight_key].shape[0], *[s // 2 for s in truth.shape[1:]])
    evidence = BlockEvidence.of(
        top, params, as_gradient(obs, top.weight_key), reading.features.reshape(shape), upstream.reshape(shape)
    )
    solution = solve_block(evidence, truth)  # the true input sets the switches; the solve starts there too
    assert float((solution.inputs - truth).norm() / truth.norm()) < 1e-5
    assert solution.residual < 1e-5


def test_the_analytic_attack_uses_the_recursion_where_it_applies_and_says_why_not_elsewhere():
    obs, target = observe(FedAvg(), unsaturated_lenet(), smooth=True)
    rec = Analytic(iterations=50).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    recursion = rec.info["recursion"]
    assert recursion["ran"] and recursion["won"] and recursion["blocks"] == ["body.0", "body.2", "body.4"]
    pixels = lambda x: x * 0.25 + 0.5  # noqa: E731 - the task's normalisation
    assert float(psnr_per_image(pixels(rec.images), pixels(target.x))[0]) > 60

    off = Analytic(iterations=50, recursion="off").reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert off.info["recursion"] == {"ran": False, "why_not": "off (recursion='off')"}
    assert rec.loss < off.loss

    hyper, _ = observe(HyperFL(), cnn_task(), knowledge="adaptive")
    skipped = Analytic(iterations=5).reconstruct(hyper, torch.Generator().manual_seed(0), SilentProgress())
    assert not skipped.info["recursion"]["ran"] and "max-pool" in skipped.info["recursion"]["why_not"]
