"""Trained states are shared between the runs attacking the same training, and equal a fresh training."""

from __future__ import annotations

from dataclasses import replace

from bench.runs.attack import RunSpec, run
from bench.federation import FLSettings
from bench.components import Choice


def test_a_cached_state_is_the_trained_one_and_is_trained_once(tmp_path):
    base = RunSpec(
        defense=Choice("dp", {"noise_multiplier": 0.5}),
        attack=Choice("ig", {"iterations": 3}),
        output_dir=tmp_path / "plain",
        model=Choice("lenet"),
        num_targets=2,
        attack_round=1,
        federation=FLSettings(clients=2, train_per_client=20, test_per_client=10, batch_size=10),
    )
    plain = run(base)
    logs: list[str] = []
    cached = replace(base, output_dir=tmp_path / "a", state_cache=tmp_path / "states")
    first = run(cached, log=logs.append)
    other = run(replace(cached, attack=Choice("idlg", {"iterations": 2}), output_dir=tmp_path / "b"), log=logs.append)
    assert len(list((tmp_path / "states").glob("*.pt"))) == 1
    assert any("training 1 round(s)" in m for m in logs) and any("trained state of round 1 from" in m for m in logs)
    for a, b in zip(plain, first):  # loading the state changes nothing
        assert a["psnr"] == b["psnr"] and a["defense_metrics"]["epsilon"] == b["defense_metrics"]["epsilon"]
        assert a["run_id"] == b["run_id"]  # where states are kept is not part of the configuration
    assert all(r["state_accuracy"] is not None and r["attack_round"] == 1 for r in first + other)
    assert plain[0]["state_accuracy"] == other[0]["state_accuracy"]


def test_a_training_runs_final_state_is_the_one_attacked_at_that_round(tmp_path):
    from bench.runs.train import TrainSpec, run_training

    fed = FLSettings(clients=2, train_per_client=20, test_per_client=10, batch_size=10)
    row = run_training(
        TrainSpec(
            defense=Choice("fedavg"),
            output_dir=tmp_path / "t",
            model=Choice("lenet"),
            federation=replace(fed, rounds=2, eval_every=2),
            state_cache=tmp_path / "states",
        )
    )
    logs: list[str] = []
    rows = run(
        RunSpec(
            defense=Choice("fedavg"),
            attack=Choice("ig", {"iterations": 2}),
            output_dir=tmp_path / "a",
            model=Choice("lenet"),
            attack_round=2,
            federation=fed,
            state_cache=tmp_path / "states",
        ),
        log=logs.append,
    )
    assert any("trained state of round 2 from" in m for m in logs)
    assert rows[0]["state_accuracy"] == row["final_accuracy"]


def test_he_attacks_a_restored_federation(tmp_path):
    """A kept state holds no CKKS keys: the key holder re-keys in the process that restores it."""
    fed = FLSettings(clients=3, train_per_client=10, test_per_client=5, batch_size=5)
    spec = RunSpec(
        defense=Choice("he"),
        attack=Choice("ig", {"iterations": 1}),
        output_dir=tmp_path / "a",
        model=Choice("lenet"),
        attack_round=1,
        federation=fed,
        state_cache=tmp_path / "states",
    )
    run(spec)  # trains and keeps the state
    # A new defense object restores it: no keys until the key holder re-keys.
    rows = run(replace(spec, output_dir=tmp_path / "b", attack=Choice("ig", {"iterations": 2})))
    assert rows[0]["defense_metrics"]["aggregated_clients"] == 2
