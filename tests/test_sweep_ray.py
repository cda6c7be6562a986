"""The Ray executor, against a local Ray instance started here (what CI runs; a cluster works the same)."""

import json

import pytest

from bench.cli import main
from bench.results import read_rows
from bench.sweeps.layout import DONE_FILE
from tests.test_sweep_run import check_complete, config, plan_cells

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_executor_runs_cells_and_resumes_a_half_finished_one(tmp_path, local_ray, capsys):
    path, out = config(tmp_path)
    assert main(["sweep", str(path), "--executor", "ray", "--quiet"]) == 0
    assert "3 to run" in capsys.readouterr().out
    first = check_complete(out, targets=2)
    assert {r["machine"]["cpu_threads"] for r in first} == {1}  # one torch thread per one-CPU task
    # un-finish one attack cell as a crash would leave it: marker gone, only its first target recorded
    cell = next(c for c in plan_cells(out) if c["kind"] == "attack")
    directory = out / "cells" / cell["id"]
    kept = read_rows(directory / "results.jsonl")[0][0]
    (directory / DONE_FILE).unlink()
    (directory / "results.jsonl").write_text(json.dumps(kept) + "\n")
    assert main(["sweep", str(path), "--executor", "ray", "--quiet"]) == 0
    assert "2 finished, 1 to run" in capsys.readouterr().out
    rows = check_complete(out, targets=2)
    # the Ray task got the partial cell, resumed it and sent back both targets; the first one untouched
    resumed = [r for r in rows if r["run_id"] == cell["id"]]
    assert [r["target"] for r in resumed] == [0, 1] and resumed[0]["timestamp"] == kept["timestamp"]
    assert {r["psnr"] for r in rows if r["run_id"] == cell["id"]} == {
        r["psnr"] for r in first if r["run_id"] == cell["id"]
    }


def test_unreachable_ray_cluster_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    # (a real unreachable address makes Ray retry for minutes: the failure is simulated)
    def refuse(address=None, **_):
        raise ConnectionError(f"Could not find any running Ray instance at {address}.\nPlease start one.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    path, _ = config(tmp_path)
    assert main(["sweep", str(path), "--executor", "ray", "--address", "10.0.0.1:6379", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot start or reach the Ray cluster at '10.0.0.1:6379': Could not find any running Ray instance" in err
    assert err.count("\n") == 1
