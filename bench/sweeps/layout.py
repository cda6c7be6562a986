"""The files of a sweep directory (shared by the sweep runner and the result readers).

```
OUTPUT_DIR/
  sweep.json            the plan: every cell's id, kind and label (rewritten when the grid changes)
  results.jsonl         all finished cells' rows merged (rebuilt from cells/ after every sweep)
  leaderboard.md        the leaderboard of the finished cells
  cells/<id>/           one directory per cell, written only by that cell
    results.jsonl       its rows (attack: one per target, appended as targets finish; train: one)
    images/             its per-target PNGs (ground truth above reconstruction)
    done.json           written atomically once every row is in: the cell is finished
    error.txt           the last failure, if the cell failed (it is retried on the next run)
  states/<key>.pt       trained federation states shared by the cells attacking the same training
  invocations.jsonl     one line per `bench sweep` run: its wall time, the cells it ran, jobs, machine
```

A cell is finished exactly when ``done.json`` exists; rows of an unfinished cell are partial and never
read by leaderboards or reports (a resumed cell continues from them instead).
"""

from __future__ import annotations

from pathlib import Path

PLAN_FILE = "sweep.json"
CELLS_DIR = "cells"
DONE_FILE = "done.json"
ERROR_FILE = "error.txt"
LOCK_FILE = ".lock"
LEADERBOARD_FILE = "leaderboard.md"
STATES_DIR = "states"
INVOCATIONS_FILE = "invocations.jsonl"


def cell_dir(root: Path, cell_id: str) -> Path:
    return Path(root) / CELLS_DIR / cell_id


def is_done(root: Path, cell_id: str) -> bool:
    return (cell_dir(root, cell_id) / DONE_FILE).is_file()


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / PLAN_FILE).is_file()
