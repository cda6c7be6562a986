"""Running one cell into its own directory and marking it finished atomically.

Why this is crash-safe:

* a cell writes only into ``cells/<id>/``; rows are appended atomically (``bench.results``), so a
  ``kill -9`` leaves whole rows, never a truncated line;
* the cell is finished exactly when ``done.json`` exists, written atomically *after* its rows were
  checked to be complete and unique, so partial rows are never mistaken for a finished cell;
* an unfinished attack cell resumes target by target (``resume=True`` skips targets already recorded
  under the cell's id), so no target is recorded twice; an unfinished train cell starts over (its one
  row is written only at the end, so nothing partial exists to duplicate);
* an exclusive lock on ``cells/<id>/.lock`` (released by the kernel when its holder dies) keeps two
  processes — a resumed sweep and a still-running orphan worker, or two sweeps — off the same cell.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.runs.attack import RunSpec, run
from bench.progress import Progress, SilentProgress
from bench.results import RESULTS_FILE, atomic_write_bytes, read_rows
from bench.sweeps.layout import DONE_FILE, ERROR_FILE, LOCK_FILE, cell_dir, is_done
from bench.sweeps.plan import Cell
from bench.runs.train import run_training


@dataclass(frozen=True)
class Outcome:
    """What happened to a cell: ``done`` (ran now), ``skipped`` (already finished) or ``failed``."""

    id: str
    label: str
    status: str
    seconds: float = 0.0
    error: str | None = None


@contextlib.contextmanager
def cell_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cell directory (a no-op where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(directory / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_temporaries(directory: Path) -> None:
    """Temporary files of an atomic write interrupted by a crash (never read, safe to drop)."""
    for pattern in (".*.tmp", "images/.*.tmp"):
        for tmp in directory.glob(pattern):
            tmp.unlink(missing_ok=True)


def compute(cell: Cell, workdir: Path, progress: Progress | None = None) -> str | None:
    """Run the cell's work in ``workdir``; the error as one line (None on success). Never raises
    for a failing cell, so one bad cell does not stop a sweep."""
    workdir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(workdir)
    spec = cell.in_dir(workdir)
    try:
        if isinstance(spec, RunSpec):
            run(spec, progress=progress or SilentProgress())
        else:
            (workdir / RESULTS_FILE).unlink(missing_ok=True)  # all-or-nothing: never two train rows
            run_training(spec)
    except BenchError as exc:
        message = str(exc)
    except Exception as exc:  # a bug in a component: keep the traceback in error.txt, one line on screen
        (workdir / ERROR_FILE).write_text(traceback.format_exc())
        return f"{type(exc).__name__}: {exc} (traceback in {workdir / ERROR_FILE})"
    else:
        (workdir / ERROR_FILE).unlink(missing_ok=True)
        return None
    (workdir / ERROR_FILE).write_text(message + "\n")
    return message


def finalize(cell: Cell, directory: Path, seconds: float) -> None:
    """Check the cell's rows are complete and unique, then mark it finished (atomically)."""
    rows, problems = read_rows(directory / RESULTS_FILE) if (directory / RESULTS_FILE).exists() else ([], [])
    ours = [r for r in rows if r.get("run_id") == cell.id and r.get("kind") == cell.kind]
    keys = [r.get("target") for r in ours]
    if problems or len(ours) != cell.expected_rows or len(set(keys)) != len(keys) or len(rows) != len(ours):
        raise RuntimeError(
            f"cell {cell.id} ({cell.label}) left {len(ours)} row(s) of its own, {len(rows)} in all "
            f"and {len(problems)} bad line(s); expected {cell.expected_rows}: not marked done"
        )
    done = {
        "id": cell.id,
        "kind": cell.kind,
        "label": cell.label,
        "rows": len(ours),
        "seconds": round(seconds, 3),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(directory / DONE_FILE, (json.dumps(done, indent=1) + "\n").encode())


def finish(cell: Cell, directory: Path, seconds: float, error: str | None) -> Outcome:
    """Mark the cell done if its work succeeded and its rows check out (call under the cell's lock)."""
    if error is None:
        try:
            finalize(cell, directory, seconds)
        except RuntimeError as exc:  # incomplete or duplicated rows: never marked done
            error = str(exc)
    if error is not None:
        return Outcome(cell.id, cell.label, "failed", seconds, error)
    return Outcome(cell.id, cell.label, "done", seconds)


def settle(cell: Cell, root: Path, work: Callable[[Path], tuple[str | None, float]]) -> Outcome:
    """Under the cell's lock: skip it if it is finished, else do ``work(directory)`` (its error, or
    None, and seconds) and :func:`finish` it. Every executor ends a cell this way."""
    directory = cell_dir(root, cell.id)
    directory.mkdir(parents=True, exist_ok=True)
    with cell_lock(directory):
        if is_done(root, cell.id):
            return Outcome(cell.id, cell.label, "skipped")
        error, seconds = work(directory)
        return finish(cell, directory, seconds, error)


def execute(cell: Cell, root: Path, progress: Progress | None = None) -> Outcome:
    """Run a cell of the sweep in ``root`` unless it is finished (the local executors' unit of work)."""

    def work(directory: Path) -> tuple[str | None, float]:
        began = time.perf_counter()
        error = compute(cell, directory, progress)
        return error, time.perf_counter() - began

    return settle(cell, root, work)


def snapshot(directory: Path) -> dict[str, bytes]:
    """The cell's files (relative path → bytes), to ship a cell to a machine without shared storage."""
    if not directory.is_dir():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in (LOCK_FILE, DONE_FILE) and not p.name.endswith(".tmp")
    }


def restore(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write shipped files into a cell directory, each atomically."""
    for relative, data in files.items():
        path = directory / relative
        if directory.resolve() not in path.resolve().parents:
            raise RuntimeError(f"refusing to write {relative!r} outside the cell directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
