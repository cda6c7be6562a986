"""Scheduling a sweep's unfinished cells: in this process, on local worker processes, or on Ray.

Finished cells are skipped before anything starts, so re-running a finished sweep does no work. Every
executor runs the same unit (``cells.compute`` + ``cells.finalize``), and a failing cell is reported
and retried on the next run without stopping the others.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.progress import TqdmProgress
from bench.results import RESULTS_FILE, append_rows, atomic_write_bytes, read_rows
from bench.sweeps.cells import Outcome, compute, execute, restore, settle, snapshot
from bench.sweeps.config import SweepConfig
from bench.sweeps.layout import CELLS_DIR, INVOCATIONS_FILE, PLAN_FILE, cell_dir, is_done
from bench.sweeps.plan import Cell
import logging

EXECUTORS = ("local", "ray")
Report = Callable[[Outcome], None]


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace ``path`` unless it already holds ``data`` (a finished sweep writes nothing)."""
    if path.exists() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def write_plan(root: Path, cfg: SweepConfig, cells: Sequence[Cell]) -> None:
    """``sweep.json``: the cells of the current grid (readers take only these from ``cells/``)."""
    plan = {
        "format": 1,
        "source": str(cfg.source),
        "config": json.loads(json.dumps(cfg.raw, default=str)),
        "cells": [{"id": c.id, "kind": c.kind, "label": c.label} for c in cells],
    }
    root.mkdir(parents=True, exist_ok=True)
    write_if_changed(root / PLAN_FILE, (json.dumps(plan, indent=1) + "\n").encode())


def record_invocation(
    root: Path, began: float, ended: float, outcomes: Sequence[Outcome], jobs: int, executor: str
) -> None:
    """Append one line per ``bench sweep`` invocation to ``OUTPUT_DIR/invocations.jsonl``: when it ran, its
    wall time, the cells it ran and how (what a README quotes as the sweep's cost comes from here)."""
    from bench import provenance

    record = {
        "started": began,
        "ended": ended,
        "wall_seconds": ended - began,
        "jobs": jobs,
        "executor": executor,
        "cells_done": sum(o.status == "done" for o in outcomes),
        "cells_failed": sum(o.status == "failed" for o in outcomes),
        "cell_seconds": sum(o.seconds or 0.0 for o in outcomes),
        **provenance.stamp("cpu"),
    }
    append_rows(Path(root) / INVOCATIONS_FILE, [record])


def check_writable(root: Path) -> None:
    try:
        (root / CELLS_DIR).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise BenchError(f"sweep output dir {str(root)!r} is not writable: {exc.strerror or exc}") from None


def merge(root: Path, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Rebuild ``OUTPUT_DIR/results.jsonl`` from the finished cells, in plan order (image paths made
    relative to ``OUTPUT_DIR``). Returns the rows written, so callers need not read them again."""
    merged: list[dict[str, Any]] = []
    for cell in cells:
        if not is_done(root, cell.id):
            continue
        rows, _ = read_rows(cell_dir(root, cell.id) / RESULTS_FILE)
        for row in rows:
            if row.get("image_file"):
                row["image_file"] = f"{CELLS_DIR}/{cell.id}/{row['image_file']}"
        merged += rows
    write_if_changed(root / RESULTS_FILE, "".join(json.dumps(row, allow_nan=False) + "\n" for row in merged).encode())
    return merged


# --- local executors ------------------------------------------------------------------------------


def run_sequential(cells: Sequence[Cell], root: Path, report: Report, quiet: bool) -> None:
    for cell in cells:
        report(execute(cell, root, None if quiet else TqdmProgress(position=1)))


def _die_with_parent(parent: int) -> None:
    """Linux: a worker gets SIGKILL when the sweep process dies (so ``kill -9`` leaves no orphans)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux; the cell locks still hold
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(threads: int, parent: int) -> None:
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)


def run_processes(cells: Sequence[Cell], root: Path, report: Report, jobs: int) -> None:
    """``jobs`` worker processes (spawned, not forked: torch and fork do not mix), each with
    ``cpus // jobs`` torch threads so the workers do not oversubscribe the cores."""
    threads = max(1, available_cpus() // jobs)
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, os.getpid()),
    )
    try:
        futures = {pool.submit(execute, cell, root): cell for cell in cells}
        for future in as_completed(futures):
            cell = futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                raise BenchError(
                    "a worker process died (killed, or out of memory?); finished cells are kept; "
                    "re-run the same command to resume"
                ) from None
            except Exception as exc:
                outcome = Outcome(cell.id, cell.label, "failed", error=f"{type(exc).__name__}: {exc}")
            report(outcome)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


# --- Ray --------------------------------------------------------------------------------------------


def ray_cell(cell: Cell, files: dict[str, bytes]) -> tuple[str | None, float, dict[str, bytes]]:
    """A Ray task: run the cell in a scratch directory seeded with its partial files (so it resumes),
    and send every file back; the driver writes them, so workers need no shared storage."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
    with tempfile.TemporaryDirectory(prefix="bench-cell-") as tmp:
        work = Path(tmp)
        restore(work, files)
        began = time.perf_counter()
        error = compute(cell, work)
        return error, time.perf_counter() - began, snapshot(work)


def _accept(cell: Cell, root: Path, result: tuple[str | None, float, dict[str, bytes]]) -> Outcome:
    error, seconds, files = result

    def work(directory: Path) -> tuple[str | None, float]:
        restore(directory, files)  # partial rows of a failed cell are kept: the next run resumes them
        return error, seconds

    return settle(cell, root, work)


def run_ray(cells: Sequence[Cell], root: Path, report: Report, address: str | None) -> None:
    """One Ray task per cell (1 CPU each, plus 1 GPU when the sweep's device is CUDA), on the cluster
    at ``address`` (or one already initialised in this process, or a new local instance)."""
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install 'bench-fl[ray]'") from None
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError, depending on the failure
            where = f"at {address!r}" if address else "(local)"
            raise BenchError(f"cannot start or reach the Ray cluster {where}: {' '.join(str(exc).split())}") from None
        started = True
    task = ray.remote(max_retries=0)(ray_cell)
    pending: dict[Any, Cell] = {}
    try:
        for cell in cells:
            gpus = 1 if str(cell.spec.device).startswith("cuda") else 0
            ref = task.options(num_cpus=1, num_gpus=gpus).remote(cell, snapshot(cell_dir(root, cell.id)))
            pending[ref] = cell
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                outcome = _accept(cell, root, ray.get(ready[0]))
            except ray.exceptions.RayError as exc:
                outcome = Outcome(cell.id, cell.label, "failed", error=" ".join(str(exc).split())[:300])
            report(outcome)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def run_cells(
    cells: Sequence[Cell], root: Path, jobs: int, executor: str, address: str | None, quiet: bool
) -> list[Outcome]:
    """Run ``cells`` (the unfinished ones) with a progress bar over cells; returns their outcomes."""
    from tqdm.auto import tqdm

    outcomes: list[Outcome] = []
    bar = tqdm(
        total=len(cells),
        desc="cells",
        unit="cell",
        disable=quiet or not cells,
        file=sys.stderr,
        dynamic_ncols=True,
        position=0,
    )

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        bar.update(1)
        if outcome.status == "failed":
            bar.write(f"FAILED {outcome.label} [{outcome.id}]: {outcome.error}", file=sys.stderr)
        elif outcome.status == "done" and not quiet:
            bar.write(f"done   {outcome.label} [{outcome.id}] {outcome.seconds:.1f} s")

    try:
        if executor == "ray":
            run_ray(cells, root, report, address)
        elif jobs > 1 and len(cells) > 1:
            run_processes(cells, root, report, min(jobs, len(cells)))
        else:
            run_sequential(cells, root, report, quiet)
    finally:
        bar.close()
    return outcomes
