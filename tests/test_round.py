"""The attacked client's round (bench.round): one declaration, the same in every defense's client step and in
its attacker's simulator."""

from __future__ import annotations

import json

import pytest
import torch

from bench import registry
from bench.cli import main
from bench.errors import BenchError
from bench.round import Round
from bench.seeding import seed_everything
from bench.threat import LocalData
from tests.helpers import lenet_task

LOCAL = Round("local", batch_size=2, local_examples=4, local_epochs=2)
#: Options that make each built-in defense's replay exact (no noise) and its hypernetworks small.
EXACT_ARGS = {
    "dp": {"noise_multiplier": 0.0},
    "he": {"clients": 2},
    "hyperfl": {"hidden_dim": 8, "embedding_dim": 4},
    "pfedhn": {"hidden_dim": 8, "n_hidden": 1, "inner_steps": 3, "max_clients": 4},
}


def local_defenses() -> list[str]:
    return [n for n in registry.registered("defense") if "local" in registry.load("defense", n).round_kinds]


def data(n: int, seed: int, batch_size: int = 2) -> LocalData:
    g = torch.Generator().manual_seed(seed)
    return LocalData(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10, batch_size, population=20)


def observed_round(name: str, round_: Round, **args):
    d = registry.create("defense", name, {**EXACT_ARGS.get(name, {}), **args})
    d.setup(lenet_task())
    d.use_round(round_)
    seed_everything(0)
    server = d.init_server()
    clients = [d.init_client(i) for i in range(2)]
    target, other = data(round_.examples, 1), data(round_.examples, 2)
    obs = d.observe(server, clients[0], target, [(clients[1], other)], torch.Generator().manual_seed(0))
    x = torch.cat([target.x, other.x]) if obs.public.num_images > len(target) else target.x
    y = torch.cat([target.y, other.y]) if obs.public.num_images > len(target) else target.y
    truth = d.true_unknowns(clients[0], obs) or {}
    return d, obs, x, y, truth


def test_every_defense_that_trains_locally_is_found():
    assert {"fedavg", "fedavg-ft", "dp", "soteria", "he", "hyperfl", "pfedhn"} <= set(local_defenses())


@pytest.mark.parametrize("name", local_defenses())
def test_the_simulator_replays_the_clients_local_round_exactly(name):
    """E = 2 local epochs over N = 4 examples in batches of B = 2: what the simulator computes on the true
    inputs is what the client sent, to 1e-6 of its scale."""
    _, obs, x, y, truth = observed_round(name, LOCAL)
    assert obs.public.observed_kind == "update" and (obs.exact or name == "he")  # he: CKKS' error (~1e-10)
    simulated = obs.simulate(x, y, truth)
    assert simulated.keys() == obs.observed.keys()
    for k, v in obs.observed.items():
        scale = max(1.0, float(v.abs().max()))
        assert float((simulated[k].detach() - v).abs().max()) <= 1e-6 * scale, k


@pytest.mark.parametrize("name", ["fedavg", "dp", "he", "hyperfl"])
def test_one_copy_per_pass_is_the_same_round_when_the_copies_agree(name):
    """Dimitrov et al.'s per-epoch copies: passes × N images with every copy equal replay the plain round."""
    _, obs, x, y, truth = observed_round(name, LOCAL)
    assert obs.passes == LOCAL.local_epochs + (1 if name == "hyperfl" else 0)
    one = obs.simulate(x, y, truth)
    copies = obs.simulate(x.repeat(obs.passes, 1, 1, 1), y.repeat(obs.passes), truth)
    for k in one:
        assert torch.allclose(one[k], copies[k], atol=1e-7, rtol=1e-5), k


def test_fedsgd_sends_the_gradient_of_one_batch_whatever_the_local_epochs():
    d = registry.create("defense", "fedavg", {"weight_decay": 5e-4})
    d.setup(lenet_task(local_epochs=3))
    d.use_round(Round("fedsgd", 2))
    seed_everything(0)
    server = d.init_server()
    target = data(2, 1)
    obs = d.observe(server, {}, target, [], None)
    params = {k: v for k, v in server.items() if k in dict(d.model.named_parameters())}
    from bench.functional import loss_gradient

    d.model.eval()
    want = loss_gradient(d.model, params, target.x, target.y, create_graph=False)
    assert obs.public.observed_kind == "gradient" and obs.passes == 1
    for k in want:
        assert torch.allclose(obs.observed[k], want[k] + 5e-4 * params[k], atol=1e-7)


def test_a_head_epoch_first_trains_the_classifier_alone_and_is_replayed():
    """FedAvg under HyperFL's round (the control): the head epoch changes the update, exactly as replayed."""
    _, plain, *_ = observed_round("fedavg", LOCAL)
    _, headed, x, y, truth = observed_round("fedavg", Round("local", 2, 4, 2, head_epochs=1))
    assert headed.passes == 3 and headed.public.protocol["head_epochs"] == 1
    assert not torch.allclose(plain.observed["fc.weight"], headed.observed["fc.weight"])
    simulated = headed.simulate(x, y, truth)
    assert torch.allclose(simulated["body.0.weight"], headed.observed["body.0.weight"], atol=1e-7)


def test_hyperfl_takes_its_own_head_epoch_unless_the_round_says():
    d, obs, *_ = observed_round("hyperfl", LOCAL)
    assert obs.public.protocol["head_epochs"] == 1
    d, obs, *_ = observed_round("hyperfl", Round("local", 2, 4, 2, head_epochs=0))
    assert obs.public.protocol["head_epochs"] == 0 and obs.passes == 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Round("fedsgd", 2, local_examples=4), "needs --round local"),
        (lambda: Round("local", 4, local_examples=2), "--local-examples must be >= --batch-size"),
        (lambda: Round("fedsgd", 1, head_epochs=1), "--head-epochs needs --round local"),
        (lambda: Round("epochs", 1), "unknown round 'epochs'"),
    ],
)
def test_bad_rounds_are_one_line_errors(make, message):
    with pytest.raises(BenchError, match=message):
        make()


def test_a_defense_that_declares_no_local_round_refuses_one():
    from bench.defense import Defense

    class FedSGDOnly(registry.load("defense", "fedavg")):  # type: ignore[misc, valid-type]
        round_kinds = ("fedsgd",)

    with pytest.raises(BenchError, match="cannot run a 'local' round; valid: 'fedsgd'"):
        FedSGDOnly().use_round(LOCAL)
    assert Defense.round_kinds == ("fedsgd",)


def test_rows_record_the_round_and_scenarios_keep_rounds_apart(tmp_path, capsys):
    common = "--attack dlg --attack-arg iterations=2 --clients 4 --quiet --offline --model lenet --output-dir"
    assert main(f"run --defense fedavg {common} {tmp_path / 'a'}".split()) == 0
    extra = "--round local --local-examples 4 --batch-size 2 --local-epochs 2"
    assert main(f"run --defense fedavg {extra} {common} {tmp_path / 'b'}".split()) == 0
    row = json.loads((tmp_path / "b" / "results.jsonl").read_text().splitlines()[0])
    assert row["round"] == LOCAL.as_dict() and row["config"]["run"]["round"] == LOCAL.as_dict()
    assert row["num_reconstructed"] == 4 and len(row["per_image"]["psnr"]) == 4
    assert row["config"]["run"]["optimiser"]["optimiser"] == "hyperfl-official"
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path)]) == 0
    board = capsys.readouterr().out
    assert "FedSGD, batch 1" in board and "local: 2 epochs × 4 examples in batches of 2" in board
