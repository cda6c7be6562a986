"""Reading result rows for leaderboards and reports: files, run directories and sweep directories.

* a file is read line by line; a bad line is reported with its line number and skipped, the rest kept;
* a directory is searched for ``results.jsonl`` files; a *sweep* directory (it holds ``sweep.json``)
  contributes the rows of its finished cells only (unfinished cells are partial and are reported);
* a row is identified by (kind, run_id, target): the same row reached twice (a sweep's merged file
  and its cell, two copies of a run) is counted once.

Each row gets two in-memory annotations for the reports: ``_source`` (``file:line``) and, for attack
rows with a picture, ``_image_path`` (the PNG, resolved against the row's results file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.rows import problem
from bench.errors import BenchError
from bench.results import PUBLISHED_FILE, RESULTS_FILE, read_numbered_rows
from bench.sweeps.layout import CELLS_DIR, PLAN_FILE, cell_dir, is_done, is_sweep_dir

#: Fields a row needs to take part in a leaderboard, by kind.
MAX_PROBLEMS_PER_FILE = 10


@dataclass
class ResultSet:
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # skipped lines and unreadable files
    notes: list[str] = field(default_factory=list)  # unfinished cells, duplicates

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == kind]


_row_problem = problem  # the schema's own reader (bench.rows)


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a row: the same row reached twice is counted once."""
    return row["kind"], row["run_id"], row.get("target")


def usable_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows ``load_results`` would keep of rows already read (e.g. a sweep's merged rows): those a
    leaderboard can use, each identity once, in order."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for row in rows:
        if _row_problem(row) is None and (key := _key(row)) not in seen:
            seen.add(key)
            out.append(row)
    return out


def _read_file(path: Path, out: ResultSet) -> list[dict[str, Any]]:
    try:
        numbered, problems = read_numbered_rows(path)
    except OSError as exc:
        out.problems.append(f"{path}: cannot read ({exc.strerror or exc}); skipped")
        return []
    rows = []
    for number, row in numbered:
        problem = _row_problem(row)
        if problem:
            problems.append(f"{path}:{number}: skipped, {problem}")
            continue
        row["_source"] = f"{path}:{number}"
        if row.get("image_file"):
            row["_image_path"] = str(path.parent / row["image_file"])
        rows.append(row)
    if len(problems) > MAX_PROBLEMS_PER_FILE:
        problems = problems[:MAX_PROBLEMS_PER_FILE] + [
            f"{path}: ... and {len(problems) - MAX_PROBLEMS_PER_FILE} more bad line(s) skipped"
        ]
    out.problems.extend(problems)
    out.files.append(path)
    return rows


def _sweep_cells(root: Path, out: ResultSet) -> list[Path]:
    """Results files of the finished cells of a sweep's current plan."""
    try:
        ids = [c["id"] for c in json.loads((root / PLAN_FILE).read_text())["cells"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        out.problems.append(f"{root / PLAN_FILE}: unreadable plan ({exc}); reading every finished cell instead")
        ids = sorted(p.name for p in (root / CELLS_DIR).iterdir()) if (root / CELLS_DIR).is_dir() else []
    finished = [i for i in ids if is_done(root, i)]
    if len(finished) < len(ids):
        out.notes.append(
            f"{root}: {len(ids) - len(finished)} of {len(ids)} cell(s) unfinished, left out "
            f"(re-run the sweep to finish them)"
        )
    return [cell_dir(root, i) / RESULTS_FILE for i in finished]


def _files(path: Path, out: ResultSet) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BenchError(f"no such results file or directory: {str(path)!r}")
    found: list[Path] = []
    for here, dirs, names in os.walk(path):
        dirs.sort()
        if is_sweep_dir(Path(here)):
            found += _sweep_cells(Path(here), out)
            dirs[:] = []
        elif PUBLISHED_FILE in names:  # a published result set (bench publish)
            found.append(Path(here) / PUBLISHED_FILE)
            dirs[:] = []
        elif RESULTS_FILE in names:
            cell = Path(here)
            sweep = cell.parent.parent
            if cell.parent.name == CELLS_DIR and is_sweep_dir(sweep) and not is_done(sweep, cell.name):
                out.notes.append(f"{cell}: unfinished sweep cell, left out")
                continue
            found.append(cell / RESULTS_FILE)
            # A folder with its own results.jsonl is one result set (a run, a published sweep such as the
            # committed results/): what lies below it (local sweeps, runs) is not part of it.
            dirs[:] = []
    return found


def load_results(paths: Sequence[Path]) -> ResultSet:
    """Every usable row under ``paths``; raises a one-line BenchError when there is none."""
    out = ResultSet()
    seen: dict[tuple[Any, ...], str] = {}
    duplicates = 0
    for path in paths:
        for file in _files(Path(path), out):
            for row in _read_file(file, out):
                key = _key(row)
                if key in seen:
                    duplicates += 1
                    continue
                seen[key] = row["_source"]
                out.rows.append(row)
    if duplicates:
        out.notes.append(f"{duplicates} row(s) read twice (same kind, run id and target) counted once")
    if not out.rows:
        where = ", ".join(map(str, paths))
        detail = f"; {len(out.problems)} problem(s), first: {out.problems[0]}" if out.problems else ""
        raise BenchError(f"no result rows found in {where} ({len(out.files)} results file(s) read){detail}")
    return out
