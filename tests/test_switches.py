"""A block's input through its max-pool with searched switches (bench.inversion.switches), and the analytic
attack's descent that uses it."""

from __future__ import annotations

import torch

from bench.attacks.analytic import Analytic
from bench.defenses.dp import DP
from bench.defenses.fedavg import FedAvg
from bench.inversion.linear import as_gradient
from bench.inversion.recursive import BlockEvidence, chain_states, conv_chain, pool_switches, solve_block
from bench.inversion.switches import choose_switches, search_switches, window_positions
from bench.progress import SilentProgress
from tests.helpers import cnn_task
from tests.test_analytic import observe
from tests.test_recursive import _reading


def _conv2(smooth: bool = True):
    """conv2's evidence for one FedSGD gradient of the CNN (its output and upstream gradient: the true
    ones, as conv3's peeling gives them), and its true input."""
    obs, target = observe(FedAvg(), cnn_task(), smooth=smooth)
    layer, _, params, _ = _reading(obs)
    blocks = conv_chain(obs.public.model, layer.name)
    states = chain_states(blocks, params, target.x[0])
    x = states[1].clone().requires_grad_(True)
    out = [blocks[1], blocks[2]]
    # the upstream gradient at conv2's output: replay the true forward pass above it
    y = x
    for block in out:
        z = torch.nn.functional.conv2d(
            y[None], params[block.weight_key].double(), params[block.bias_key].double(), padding=block.padding
        )
        y = torch.nn.functional.max_pool2d(torch.nn.functional.leaky_relu(z), 2)[0]
        if block is blocks[1]:
            conv2_out = y
    conv2_out.retain_grad()
    _, reading, _, upstream = _reading(obs)
    (y * upstream.double().reshape(y.shape)).sum().backward()
    evidence = BlockEvidence.of(
        blocks[1], params, as_gradient(obs, blocks[1].weight_key), conv2_out.detach(), conv2_out.grad
    )
    return evidence, states[1], params


def test_window_positions_enumerate_each_max_pool_window():
    positions = window_positions(4, 4, 2)
    assert positions.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert window_positions(5, 5, 2).shape == (4, 4)  # the last row and column are never pooled


def test_from_the_true_input_no_switch_moves_and_the_input_is_exact():
    evidence, truth, params = _conv2()
    switches = pool_switches(evidence.block, evidence.weight.double(), evidence.bias.double(), truth)
    _, moved = choose_switches(evidence, truth, switches)
    assert moved == 0
    search = search_switches(evidence, truth)
    assert search.moved == [0]
    assert float((search.solution.inputs - truth).norm() / truth.norm()) < 1e-6


def test_the_search_repairs_switches_that_an_estimates_argmax_gets_wrong():
    evidence, truth, params = _conv2()
    g = torch.Generator().manual_seed(3)
    estimate = truth + 0.1 * truth.std() * torch.randn(truth.shape, generator=g, dtype=truth.dtype)
    w, b = evidence.weight.double(), evidence.bias.double()
    true_switches = pool_switches(evidence.block, w, b, truth)
    wrong = float((pool_switches(evidence.block, w, b, estimate) != true_switches).float().mean())

    def error(v: torch.Tensor) -> float:
        return float((v - truth).norm() / truth.norm())

    argmax = solve_block(evidence, estimate, switch_rounds=6)
    search = search_switches(evidence, estimate)
    assert search.moved[0] > 0 and search.switches is not None
    assert float((search.switches != true_switches).float().mean()) < wrong / 2
    assert error(search.solution.inputs) < error(argmax.inputs) / 2
    assert error(search.solution.inputs) < error(estimate) / 2


def test_the_attack_descends_one_block_and_averages_the_two_recoveries():
    obs, _ = observe(FedAvg(), cnn_task())

    def run(mode: str):
        attack = Analytic(iterations=5, descend=mode)
        return attack.reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())

    off, average, compete = run("off"), run("average"), run("compete")
    assert off.info["descent"] == {"ran": False, "why_not": "off (descend='off')"}
    descent = average.info["descent"]
    assert descent["ran"] and descent["block"] == "conv2" and descent["combined"] == "average"
    assert descent["used"] and average.iterations == 2 * off.iterations
    second = 2 * average.images - off.images  # the descent's own image
    assert not torch.allclose(second, off.images)
    won = compete.info["descent"]["used"]
    assert torch.allclose(compete.images, second if won else off.images, atol=1e-5)
    assert won == (compete.info["descent"]["matching_loss"] < off.loss)


def test_it_does_not_descend_where_the_reading_is_not_exact():
    obs, _ = observe(DP(noise_multiplier=0.1), cnn_task())
    rec = Analytic(iterations=3).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert rec.info["descent"] == {"ran": False, "why_not": "the matched input is not known exactly"}
