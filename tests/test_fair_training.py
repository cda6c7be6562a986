"""Utility under equal training: one optimiser for every defense of a comparison, learning rates tuned
on a validation split of the training data, rows that say what was evaluated, and FedAvg + FT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.data.embedded import build_digits
from bench.errors import BenchError
from bench.federation import Federation, FLSettings
from bench.functional import forward
from bench.protocols import equal_optimiser, resolve
from bench.results import read_rows
from bench.components import Choice, create_defense
from bench.sgd_defense import split_state
from bench.sweeps.config import load_config
from bench.sweeps.plan import plan
from bench.threat import LocalData
from bench.runs.train import TrainSpec, run_training, tune_learning_rate
from bench.defenses.fedavg import FINETUNED, FedAvg, FedAvgFT
from tests.helpers import QUICK_TRAIN, lenet_task

OFFICIAL = {"lr": 0.02, "momentum": 0.5, "weight_decay": 5e-4}
TINY = FLSettings(
    clients=2, partition="iid", train_per_client=10, test_per_client=5, batch_size=5, local_epochs=1, rounds=1
)


def sgd_of(choice: Choice) -> dict:
    config = create_defense(choice).config
    return {k: config[k] for k in OFFICIAL}


@pytest.mark.parametrize("name", ["fedavg", "dp", "he", "soteria", "hyperfl", "fedavg-ft"])
def test_a_train_preset_gives_every_defense_the_official_sgd(name):
    resolved = resolve("quick", Choice(name), Choice("photos"), None, {})
    assert sgd_of(resolved.defense) == OFFICIAL and resolved.extra["optimiser"] == "hyperfl-official"


def test_a_defense_preset_or_the_user_overrides_the_rule_and_the_row_says_so(tmp_path):
    own = {"preset": "hyperfl-paper", "lr": 0.05}  # dp's paper preset sets the same SGD; the user sets lr
    choice, applied = equal_optimiser(Choice("dp", own))
    assert applied["optimiser_applied"] == {} and sgd_of(choice) == {**OFFICIAL, "lr": 0.05}
    choice, applied = equal_optimiser(Choice("he", {"momentum": "0.9"}))
    assert applied["optimiser_applied"] == {"weight_decay": 5e-4}  # lr: its default is already 0.02
    assert sgd_of(choice) == {**OFFICIAL, "momentum": 0.9}
    with pytest.raises(BenchError, match="unknown optimiser rule 'adam'; valid: 'hyperfl-official' or 'defaults'"):
        equal_optimiser(Choice("fedavg"), "adam")
    assert main([*QUICK_TRAIN.format(defense="soteria", extra="--defense-arg lr=0.05 ").split(), str(tmp_path)]) == 0
    row = read_rows(tmp_path / "results.jsonl")[0][0]
    assert row["optimiser"] == {**OFFICIAL, "lr": 0.05, "head_lr": 0.1} and row["optimiser_rule"] == "hyperfl-official"
    assert row["optimiser_deviations"] == {"lr": 0.05} and row["evaluated"] == "global" and row["seed"] == 0


def test_sweep_cells_use_one_optimiser_for_attacks_and_training_unless_told(tmp_path):
    """Every defense's clients run the official SGD in a sweep, in its attack cells as in its training
    cells (so a leaderboard pairs rows of one protocol); "defaults" keeps each defense's own."""
    path = tmp_path / "sweep.toml"
    body = (
        '[grid]\nmodels = ["lenet"]\n{extra}[train]\nrounds = 1\n[[defenses]]\nname = "fedavg"\n'
        '[[defenses]]\nname = "dp"\n[[attacks]]\nname = "ig"\n'
    )
    path.write_text(body.format(extra=""))
    cells = plan(load_config(path))[0]
    assert [c.kind for c in cells] == ["train", "attack", "train", "attack"]
    assert all(sgd_of(c.spec.defense) == OFFICIAL for c in cells)
    assert all(c.spec.extra["optimiser"] == "hyperfl-official" for c in cells if c.kind == "train")
    assert cells[0].label == "train fedavg · seed 0"
    path.write_text(body.format(extra='optimiser = "defaults"\n'))
    cells = plan(load_config(path))[0]
    assert all(sgd_of(c.spec.defense) == {"lr": 0.02, "momentum": 0.0, "weight_decay": 0.0} for c in cells)
    path.write_text(body.format(extra='optimiser = "adam"\n'))
    with pytest.raises(BenchError, match=r"\[grid\]: optimiser must be 'hyperfl-official' or 'defaults'"):
        load_config(path)


def test_the_validation_split_is_carved_from_each_clients_training_data():
    data = build_digits()
    fed = Federation(
        data,
        FLSettings(clients=3, partition="dominant", train_per_client=20, test_per_client=10),
        0,
        torch.device("cpu"),
    )
    split = fed.validation_split(0.2, seed=0)
    assert split.test_x is fed.train_x and split.splits is not fed.splits
    for own, new in zip(fed.splits, split.splits):
        train, held = set(new.train.tolist()), set(new.test.tolist())
        assert len(held) == 4 and not train & held and train | held == set(own.train.tolist())
    assert [s.test.tolist() for s in fed.splits] == [
        s.test.tolist() for s in Federation(data, fed.settings, 0, torch.device("cpu")).splits
    ]
    with pytest.raises(BenchError, match="too few to hold out"):
        Federation(
            data, FLSettings(clients=2, train_per_client=1, test_per_client=1), 0, torch.device("cpu")
        ).validation_split(0.2, 0)


def test_tune_learning_rate_picks_the_best_validation_accuracy_and_the_row_records_it(tmp_path):
    spec = TrainSpec(
        defense=Choice("fedavg"),
        output_dir=tmp_path,
        federation=TINY,
        dataset=Choice("digits"),
        model=Choice("lenet"),
        device="cpu",
        tune_lr=(1e-6, 0.5),
    )
    tuning = tune_learning_rate(spec, spec.tune_lr)
    accuracies = tuning["validation_accuracy"]
    assert set(accuracies) == {"1e-06", "0.5"} and tuning["grid"] == [1e-6, 0.5]
    assert tuning["chosen_lr"] == max((1e-6, 0.5), key=lambda lr: accuracies[f"{lr:g}"])
    row = run_training(spec)
    assert row["lr_tuning"] == tuning and row["optimiser"]["lr"] == tuning["chosen_lr"]
    assert row["config"]["run"]["tune_lr"]["grid"] == [1e-6, 0.5]
    with pytest.raises(BenchError, match="grid must be positive"):
        tune_learning_rate(spec, (0.1, -1.0))


def test_train_rows_say_what_was_evaluated(tmp_path):
    for name, expected in (("fedavg", "global"), ("fedavg-ft", "global+finetuned-head"), ("hyperfl", "personalised")):
        spec = TrainSpec(
            defense=Choice(name),
            output_dir=Path(tmp_path / name),
            federation=TINY,
            dataset=Choice("digits"),
            model=Choice("lenet"),
            device="cpu",
            seed=3,
        )
        row = run_training(spec)
        assert row["evaluated"] == expected and row["seed"] == 3
        if name == "fedavg-ft":
            assert row["history"][-1]["personalise_seconds"] > 0


def test_fedavg_ft_fine_tunes_the_head_alone_on_the_clients_data_as_the_official_code():
    """cnn/methods/fedavg.py local_fine_tuning: the classifier keys trainable, SGD(lr, momentum 0.5,
    weight decay 5e-4) for the local epochs; the rest of the global model is kept."""
    torch.manual_seed(0)
    d = FedAvgFT(**OFFICIAL)
    d.setup(lenet_task(local_epochs=2))
    server = d.init_server()
    g = torch.Generator().manual_seed(0)
    data = LocalData(torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, 10, (6,), generator=g), 3)
    client: dict = {}
    d.personalise(server, client, data, None)  # fixed batch order, to replay it
    ref = d.task.new_model()
    ref.load_state_dict(server)
    head = [p for n, p in ref.named_parameters() if n.startswith("fc.")]
    for n, p in ref.named_parameters():
        p.requires_grad_(n.startswith("fc."))
    opt = torch.optim.SGD(head, lr=0.02, momentum=0.5, weight_decay=5e-4)
    for _ in range(2):
        for x, y in data.batches():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ref(x), y).backward()
            opt.step()
    tuned = {k[len(FINETUNED) :]: v for k, v in client.items()}
    assert set(tuned) == {"fc.weight", "fc.bias"}
    for k, v in tuned.items():
        assert torch.allclose(v, ref.get_parameter(k), atol=1e-6)
    x = data.x[:2]
    ref.eval()
    assert torch.allclose(d.predict(server, client, x), ref(x), atol=1e-5)
    params, buffers = split_state(d.model, server)
    plain = FedAvg(**OFFICIAL)
    plain.setup(lenet_task(local_epochs=2))
    assert torch.allclose(plain.predict(server, client, x), forward(d.model, params, x, buffers), atol=1e-6)
    up = d.client_update(server, client, data, None)  # training ignores the fine-tuned head
    assert torch.equal(
        torch.cat([v.flatten() for v in up.payload.values()]),
        torch.cat([v.flatten() for v in plain.client_update(server, {}, data, None).payload.values()]),
    )
