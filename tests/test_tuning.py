"""bench tune: grids run on tuning seeds only, the best median wins, and runs and sweeps use (and record) it."""

from __future__ import annotations

import json

import pytest

import bench.runs.attack as experiment
from bench.cli import main
from bench.errors import BenchError
from bench.tuning import TUNING_SEED_BASE, TuningFile, check_tuning_seeds, choose, parse_grid

FAST = ["--model", "lenet", "--clients", "2", "--num-targets", "1", "--quiet"]


def test_seeds_below_the_base_are_reporting_seeds_and_refused(capsys):
    with pytest.raises(BenchError, match="reporting seeds"):
        check_tuning_seeds([TUNING_SEED_BASE, 3])
    assert main(["tune", "--defense", "fedavg", "--attack", "ig", "--grid", "tv=0.1", "--seeds", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["tune", "--defense", "fedavg", "--attack", "ig", "--grid", "tv"]) == 2
    assert "NAME=V1,V2" in capsys.readouterr().err


def test_the_best_median_wins_not_the_best_mean():
    lucky = [{"status": "ok", "psnr": p} for p in (10, 10, 90)]  # mean 36.7, median 10
    steady = [{"status": "ok", "psnr": p} for p in (20, 21, 22)]  # mean 21, median 21
    diverged = [{"status": "diverged", "psnr": 99, "baseline_psnr": 12}]
    best, scores = choose([({"tv": 1}, lucky), ({"tv": 2}, steady), ({"tv": 3}, diverged)])
    assert best == 1 and scores[2]["median_psnr"] == 12 and scores[2]["diverged"] == 1
    assert parse_grid(["tv=1e-4, 1e-3", "iterations=5"]) == {"tv": ["1e-4", "1e-3"], "iterations": ["5"]}


def test_tune_runs_only_tuning_seeds_and_run_uses_and_records_the_winner(tmp_path, monkeypatch, capsys):
    seen = []
    real = experiment.run

    def spy(spec, *a, **k):
        seen.append(spec.seed)
        return real(spec, *a, **k)

    monkeypatch.setattr(experiment, "run", spy)
    monkeypatch.setattr("bench.sweeps.cells.run", spy, raising=False)
    tuning = tmp_path / "tuning.json"
    assert (
        main(
            [
                "tune",
                "--defense",
                "fedavg",
                "--attack",
                "ig",
                "--attack-arg",
                "iterations=2",
                "--grid",
                "tv=0,0.5",
                "--output",
                str(tuning),
                "--work-dir",
                str(tmp_path / "work"),
                *FAST,
            ]
        )
        == 0
    )
    rows = [
        json.loads(line)
        for line in (tmp_path / "work" / "cells").glob("*/results.jsonl")
        for line in line.read_text().splitlines()
    ]
    assert rows and all(r["seed"] >= TUNING_SEED_BASE for r in rows)
    assert all(s >= TUNING_SEED_BASE for s in seen)
    entry = TuningFile.read(tuning).entries[0]
    assert entry["key"]["attack"] == "ig" and entry["key"]["knowledge"] == "adaptive"
    assert entry["options"]["iterations"] == 2 and entry["options"]["tv"] in (0.0, 0.5)
    assert entry["grid"] == {"tv": [0.0, 0.5]} and len(entry["scores"]) == 2
    capsys.readouterr()
    out = tmp_path / "run"
    assert (
        main(["run", "--defense", "fedavg", "--attack", "ig", "--tuning", str(tuning), "--output-dir", str(out), *FAST])
        == 0
    )
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert row["tuning"]["id"] == entry["id"] and row["config"]["attack"]["tv"] == entry["options"]["tv"]
    assert row["config"]["run"]["tuning"] == entry["id"] and row["seed"] == 0
    # no entry for this defense: a one-line error, not an untuned run passed off as tuned
    assert (
        main(["run", "--defense", "dp", "--attack", "ig", "--tuning", str(tuning), "--output-dir", str(out), *FAST])
        == 2
    )


def test_a_sweep_tunes_its_cells_and_then_uses_the_tuning(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'[sweep]\noutput_dir = "{tmp_path / "out"}"\ntuning = "{tmp_path / "tuning.json"}"\n'
        '[grid]\nmodels = ["lenet"]\nseeds = [0]\n[federation]\nclients = 2\n[train]\nenabled = false\n'
        f'[tune]\nnum_targets = 1\nseeds = [{TUNING_SEED_BASE}]\noutput_dir = "{tmp_path / "tune"}"\n'
        '[[defenses]]\nname = "fedavg"\n'
        '[[attacks]]\nname = "ig"\nargs = { iterations = 2 }\ntune = { tv = [0.0, 0.3] }\n'
        '[[attacks]]\nname = "dlg"\nargs = { iterations = 1, max_iter = 1 }\n'
    )
    assert main(["sweep", str(sweep), "--dry-run"]) == 2  # the tuning file does not exist yet
    assert "bench tune --sweep" in capsys.readouterr().err
    assert main(["tune", "--sweep", str(sweep), "--quiet"]) == 0
    assert main(["sweep", str(sweep), "--quiet"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    by_attack = {r["attack"]: r for r in rows}
    assert by_attack["ig"]["tuning"]["seeds"] == [TUNING_SEED_BASE] and by_attack["dlg"]["tuning"] is None
