"""Composed defenses: ``dp+he`` is DP-SGD under secure aggregation, conforming, with both defenses' numbers."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.components import Choice
from bench.conformance import check_defense
from bench.errors import BenchError
from bench.federation import FLSettings
from bench.registry import create
from bench.runs.attack import RunSpec, run


def test_dp_under_he_conforms_and_records_both(tmp_path):
    report = check_defense("dp+he", {"noise_multiplier": 0.5})
    assert not report.failed, report.render()
    defense = create("defense", "dp+he", {"noise_multiplier": 0.5, "clients": 2})
    assert defense.config["clients"] == 2 and defense.config["client"]["name"] == "dp"
    assert defense.config["client"]["noise_multiplier"] == 0.5
    rows = run(
        RunSpec(
            defense=Choice("dp+he", {"noise_multiplier": 0.5}),
            attack=Choice("ig", {"iterations": 2}),
            output_dir=tmp_path,
            model=Choice("lenet"),
            federation=FLSettings(clients=3),
        )
    )
    metrics = rows[0]["defense_metrics"]
    assert metrics["aggregated_clients"] == 2 and metrics["epsilon_exchange"] > 0 and metrics["noise_multiplier"] == 0.5
    assert rows[0]["config"]["defense"]["name"] == "dp+he" and rows[0]["num_reconstructed"] == 2


@pytest.mark.parametrize(
    "spec, args, fragment",
    [
        ("dp+fedavg", {}, "cannot wrap another defense"),
        ("hyperfl+he", {}, "not a FedAvg-family defense"),
        ("dp+he", {"nope": 1}, "has no option 'nope'"),
        ("+he", {}, r"must be INNER\+OUTER"),
    ],
)
def test_a_composition_that_cannot_work_is_a_one_line_error(spec, args, fragment):
    with pytest.raises(BenchError, match=fragment):
        create("defense", spec, args)


def test_the_cli_runs_a_composition(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "--defense",
                "dp+he",
                "--defense-arg",
                "noise_multiplier=1",
                "--attack",
                "ig",
                "--attack-arg",
                "iterations=1",
                "--model",
                "lenet",
                "--clients",
                "2",
                "--quiet",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
