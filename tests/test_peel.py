"""Switch-free recovery of a convolution block's input from its weight gradient's row space (bench.inversion.peel)."""

from __future__ import annotations

import torch

from bench.attacks.analytic import Analytic
from bench.defenses.dp import DP
from bench.defenses.fedavg import FedAvg
from bench.inversion.linear import as_gradient
from bench.inversion.peel import peel_block
from bench.inversion.recursive import BlockEvidence, chain_states, conv_chain
from bench.progress import SilentProgress
from tests.helpers import cnn_task, module_task
from tests.test_analytic import observe
from tests.test_recursive import _reading


def _peel(obs, block_index):
    layer, reading, params, upstream = _reading(obs)
    blocks = conv_chain(obs.public.model, layer.name)
    block = blocks[block_index]
    return (
        blocks,
        params,
        peel_block(
            BlockEvidence.of(
                block,
                params,
                as_gradient(obs, block.weight_key),
                reading.features.reshape(64, 3, 3),
                upstream.reshape(64, 3, 3),
            ),
            (32, 6, 6),
        ),
    )


def test_the_top_blocks_input_is_recovered_exactly_without_its_max_pool_switches():
    obs, target = observe(FedAvg(), cnn_task())
    blocks, params, peeled = _peel(obs, -1)
    assert not isinstance(peeled, str), peeled
    truth = chain_states(blocks, params, target.x[0])[-2]  # conv3's input: 32×6×6 behind a max-pool
    assert float((peeled.inputs - truth).norm() / truth.norm()) < 1e-5
    assert peeled.residual < 1e-5 and peeled.null_ratio < 1e-4

    x = truth.clone().requires_grad_(True)  # the upstream gradient there is the true one
    z = torch.nn.functional.conv2d(x[None], params["conv3.weight"].double(), params["conv3.bias"].double(), padding=1)
    out = torch.nn.functional.max_pool2d(torch.nn.functional.leaky_relu(z), 2)[0]
    _, _, _, upstream = _reading(obs)
    (true_up,) = torch.autograd.grad((out * upstream.double().reshape(64, 3, 3)).sum(), x)
    assert torch.allclose(peeled.upstream, true_up, atol=1e-6 * float(true_up.abs().max()))


def test_it_refuses_when_the_rank_structure_is_broken_and_says_why():
    noisy, _ = observe(DP(noise_multiplier=0.1), cnn_task())
    _, _, why = _peel(noisy, -1)
    assert isinstance(why, str) and "rank" in why
    obs, _ = observe(FedAvg(), cnn_task())
    layer, reading, params, upstream = _reading(obs)
    conv2 = conv_chain(obs.public.model, layer.name)[1]
    zeros = torch.zeros(32, 6, 6)
    why = peel_block(BlockEvidence.of(conv2, params, as_gradient(obs, conv2.weight_key), zeros, zeros), (16, 14, 14))
    assert isinstance(why, str) and "144 output positions" in why


def test_the_analytic_attack_matches_the_lowest_peeled_input():
    obs, _ = observe(FedAvg(), cnn_task())
    rec = Analytic(iterations=5).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert rec.info["peel"]["blocks"] == ["conv3"] and rec.info["matched_input_of"] == "conv3"
    assert "conv2" in rec.info["peel"]["stopped"]
    off = Analytic(iterations=5, peel="off").reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert off.info["matched_input_of"] == "fc1" and off.info["peel"]["blocks"] == []


def test_a_single_wide_block_gives_the_image_itself():
    from torch import nn

    class Wide(nn.Module):  # 4×4 positions, 64 channels: the rank of its weight gradient fixes its input
        classifier_name = "fc"

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 64, 3)
            self.fc = nn.Linear(64 * 2 * 2, 10)

        def forward(self, x):
            return self.fc(nn.functional.max_pool2d(nn.functional.leaky_relu(self.conv(x)), 2).flatten(1))

    obs, target = observe(FedAvg(), module_task(Wide, "wide", "fc", (3, 6, 6), 10))
    rec = Analytic(iterations=3).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert rec.info["peel"]["blocks"] == ["conv"] and rec.info["peel"]["won"]
    assert torch.allclose(rec.images, target.x.clamp(-2, 2), atol=1e-4)


def test_the_restarts_try_a_ladder_of_priors_and_the_matching_loss_picks_one():
    assert Analytic(tv=0.1, tv_spread=2.0).tv_weights(5) == [0.1, 0.2, 0.05, 0.4, 0.025]
    assert Analytic(tv=0.1, tv_spread=1.0).tv_weights(3) == [0.1, 0.1, 0.1]
    obs, _ = observe(FedAvg(), cnn_task())
    rec = Analytic(iterations=5).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    losses = rec.info["restart_losses"]
    assert len(losses) == 3 and rec.info["selected_restart"] == losses.index(min(losses))
    assert rec.info["selected_tv"] == [0.1, 0.2, 0.05][rec.info["selected_restart"]]
