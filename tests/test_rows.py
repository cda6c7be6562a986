"""Rows follow one declared schema: a run writes exactly its keys, and a writer that drifts fails loudly."""

from __future__ import annotations

import pytest

from bench.components import Choice
from bench.errors import PluginError
from bench.federation import FLSettings
from bench.rows import ATTACK, SCHEMA_VERSION, TRAIN, attack_row, problem
from bench.runs.attack import RunSpec, run
from bench.runs.train import TrainSpec, run_training


def test_runs_write_exactly_the_declared_keys(tmp_path):
    fed = FLSettings(clients=2, train_per_client=10, test_per_client=5, batch_size=5)
    row = run(
        RunSpec(
            defense=Choice("fedavg"),
            attack=Choice("ig", {"iterations": 1}),
            output_dir=tmp_path / "a",
            model=Choice("lenet"),
            federation=fed,
        )
    )[0]
    assert list(row) == list(ATTACK) and row["schema"] == SCHEMA_VERSION and problem(row) is None
    train = run_training(
        TrainSpec(
            defense=Choice("fedavg"),
            output_dir=tmp_path / "t",
            model=Choice("lenet"),
            federation=FLSettings(**{**fed.__dict__, "rounds": 1}),
        )
    )
    assert list(train) == list(TRAIN) and problem(train) is None


def test_a_writer_that_drifts_from_the_schema_fails():
    with pytest.raises(PluginError, match="missing"):
        attack_row(run_id="x")
    assert "without" in problem({"kind": "attack", "run_id": "x"})


def test_an_aggregate_says_whether_the_server_could_attribute_the_targets_reconstruction(tmp_path):
    fed = FLSettings(clients=3, train_per_client=10, test_per_client=5, batch_size=5)
    rows = run(
        RunSpec(
            defense=Choice("he", {"clients": 3}),
            attack=Choice("ig", {"iterations": 1}),
            num_targets=2,
            output_dir=tmp_path,
            model=Choice("lenet"),
            federation=fed,
        )
    )
    assert all(r["num_reconstructed"] == 3 and r["attribution"] in (0.0, 1.0) for r in rows)
    alone = run(
        RunSpec(
            defense=Choice("fedavg"),
            attack=Choice("ig", {"iterations": 1}),
            output_dir=tmp_path / "f",
            model=Choice("lenet"),
            federation=fed,
        )
    )
    assert alone[0]["attribution"] is None
