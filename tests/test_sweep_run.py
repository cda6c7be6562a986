"""Running sweeps: every cell once, resumable after kill -9, no work when finished, failures retried."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.reports.loading import load_results
from bench.results import read_rows
from bench.sweeps.layout import DONE_FILE, ERROR_FILE

CONFIG = """
[sweep]
output_dir = "{out}"
device = "cpu"

[grid]
seeds = {seeds}
num_targets = {targets}
batch_size = {batch}

[federation]
clients = 4

[train]
enabled = {train}
rounds = 1
clients = 4
seeds = [0]

[[defenses]]
name = "fedavg"

[[attacks]]
name = "dlg"
args = {{ iterations = {iterations}, max_iter = {iterations} }}
"""


def config(tmp_path, seeds="[0, 1]", targets=2, batch="1", train="true", iterations=2):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sweep.toml"
    path.write_text(
        CONFIG.format(
            out=tmp_path / "out", seeds=seeds, targets=targets, batch=batch, train=train, iterations=iterations
        )
    )
    return path, tmp_path / "out"


def plan_cells(out):
    return json.loads((out / "sweep.json").read_text())["cells"]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def check_complete(out: Path, targets: int) -> list[dict]:
    """Every planned cell finished exactly once; every results file whole; the merged file consistent."""
    cells = plan_cells(out)
    merged, problems = read_rows(out / "results.jsonl")
    assert not problems
    for cell in cells:
        directory = out / "cells" / cell["id"]
        assert (directory / DONE_FILE).is_file(), cell
        rows, problems = read_rows(directory / "results.jsonl")
        assert not problems and {r["run_id"] for r in rows} == {cell["id"]}
        if cell["kind"] == "attack":
            assert sorted(r["target"] for r in rows) == list(range(targets))
            assert all((directory / r["image_file"]).is_file() for r in rows)
        else:
            assert len(rows) == 1 and rows[0]["kind"] == "train"
        assert not list(directory.rglob("*.tmp"))
    keys = [(r["kind"], r["run_id"], r.get("target")) for r in merged]
    assert len(keys) == len(set(keys)) == sum(targets if c["kind"] == "attack" else 1 for c in cells)
    assert all((out / r["image_file"]).is_file() for r in merged if r["kind"] == "attack")
    return merged


def test_sweep_runs_every_cell_and_a_rerun_does_no_work(tmp_path, capsys):
    path, out = config(tmp_path)
    assert main(["sweep", str(path)]) == 0
    captured = capsys.readouterr()
    assert "3 cells (2 attack, 1 train), 0 finished, 3 to run" in captured.out
    assert "cells: 100%" in captured.err and "3/3" in captured.err  # the progress bar over cells
    rows = check_complete(out, targets=2)
    assert len(rows) == 5 and (out / "leaderboard.md").read_text().count("| 1 | fedavg |") == 1
    before = snapshot(out)
    assert main(["sweep", str(path), "--quiet"]) == 0
    assert "3 finished, 0 to run" in capsys.readouterr().out
    assert snapshot(out) == before  # not a byte written, not a file touched
    # the leaderboard reads the sweep directory (finished cells) and the merged file alike
    assert len(load_results([out]).rows) == len(load_results([out / "results.jsonl"]).rows) == 5


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_kill_9_mid_sweep_loses_nothing_and_duplicates_nothing(tmp_path, capsys):
    path, out = config(tmp_path, seeds="[0, 1, 2]", targets=3, iterations=4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "sweep", str(path), "--jobs", "2", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    partial: dict[str, list[dict]] = {}
    deadline = time.monotonic() + 240
    try:
        # wait until one cell is finished and another is half-way (some of its targets recorded)
        while time.monotonic() < deadline and proc.poll() is None:
            cells = [d for d in (out / "cells").glob("*") if d.is_dir()] if (out / "cells").is_dir() else []
            done = [d for d in cells if (d / DONE_FILE).exists()]
            half = [d for d in cells if not (d / DONE_FILE).exists() and (d / "results.jsonl").exists()]
            if done and half:
                workers = _children(proc.pid)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"never caught the sweep half-way (exit {proc.poll()}): {proc.stderr.read().decode()[-500:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the orphaned workers die with the sweep (and the cell locks would hold even if they did not)
    for _ in range(200):
        if not any(_alive(w) for w in workers):
            break
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)

    # after the crash: every file whole, finished cells complete, the half-way cell not mistaken for finished
    for results in out.rglob("results.jsonl"):
        rows, problems = read_rows(results)
        assert not problems, problems
        if not (results.parent / DONE_FILE).exists() and results.parent.parent.name == "cells":
            partial[results.parent.name] = rows
    assert partial, "the kill should have left a half-finished cell"
    finished = [c for c in plan_cells(out) if (out / "cells" / c["id"] / DONE_FILE).exists()]
    loaded = load_results([out])
    assert {r["run_id"] for r in loaded.rows} == {c["id"] for c in finished}
    assert any("unfinished" in note for note in loaded.notes)

    assert main(["sweep", str(path), "--quiet"]) == 0
    assert f"{len(finished)} finished" in capsys.readouterr().out
    rows = check_complete(out, targets=3)
    assert len(rows) == 3 * 3 + 1
    # targets recorded before the kill were kept as they were, not recomputed
    by_key = {(r["run_id"], r.get("target")): r for r in rows}
    for cell_id, before in partial.items():
        for row in before:
            assert by_key[(cell_id, row["target"])]["timestamp"] == row["timestamp"]
            assert by_key[(cell_id, row["target"])]["psnr"] == row["psnr"]


def test_a_failing_cell_is_reported_kept_apart_and_retried(tmp_path, capsys):
    path, out = config(tmp_path, seeds="[0]", batch="[1, 100000]", train="false")
    assert main(["sweep", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "FAILED fedavg × dlg(iterations=2, max_iter=2) · FedSGD, batch 100000 · seed 0" in err
    assert err.strip().splitlines()[-1].startswith("bench sweep: error: 1 of 2 cell(s) failed")
    assert "exceeds a client's" in err and "Traceback" not in err
    cells = {c["label"]: c["id"] for c in plan_cells(out)}
    bad = out / "cells" / cells["fedavg × dlg(iterations=2, max_iter=2) · FedSGD, batch 100000 · seed 0"]
    good = out / "cells" / cells["fedavg × dlg(iterations=2, max_iter=2) · FedSGD, batch 1 · seed 0"]
    assert (good / DONE_FILE).exists() and not (bad / DONE_FILE).exists() and (bad / ERROR_FILE).exists()
    assert len(read_rows(out / "results.jsonl")[0]) == 2
    assert main(["sweep", str(path), "--quiet"]) == 2  # the failed cell is retried, the finished one is not
    assert "1 finished, 1 to run" in capsys.readouterr().out


def test_unwritable_output_dir(tmp_path, capsys):
    path, out = config(tmp_path)
    out.write_text("a file, not a directory")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and err.count("\n") == 1


def test_a_cell_with_missing_or_duplicated_rows_is_never_marked_done(tmp_path):
    from bench.sweeps.cells import finish
    from bench.sweeps.config import load_config
    from bench.sweeps.plan import plan

    path, out = config(tmp_path, train="false")
    cell = plan(load_config(path))[0][0]
    directory = out / "cells" / cell.id
    directory.mkdir(parents=True)
    row = {"kind": "attack", "run_id": cell.id, "target": 0}
    for rows in ([row], [row, row], [row, {**row, "target": 1}, {**row, "run_id": "other"}]):
        (directory / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        outcome = finish(cell, directory, 1.0, None)
        assert outcome.status == "failed" and "not marked done" in outcome.error
        assert not (directory / DONE_FILE).exists()
    (directory / "results.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "target": 1}) + "\n")
    assert finish(cell, directory, 1.0, None).status == "done" and (directory / DONE_FILE).exists()


def test_every_sweep_invocation_that_runs_cells_is_recorded_with_its_wall_time(tmp_path):
    import json

    from bench.cli import main

    path = tmp_path / "s.toml"
    path.write_text(
        f'[sweep]\noutput_dir = "{tmp_path / "out"}"\n[grid]\nmodels = ["lenet"]\n'
        '[federation]\nclients = 2\n[train]\nenabled = false\n[[defenses]]\nname = "fedavg"\n[[attacks]]\nname = "ig"\n'
        "args = { iterations = 1 }\n"
    )
    assert main(["sweep", str(path), "--quiet"]) == 0 and main(["sweep", str(path), "--quiet"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "invocations.jsonl").read_text().splitlines()]
    assert [r["cells_done"] for r in lines] == [1] and lines[0]["wall_seconds"] >= 0  # the rerun had nothing to do
    assert lines[0]["jobs"] == 1 and "git" in lines[0]
