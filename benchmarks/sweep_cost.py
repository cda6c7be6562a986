"""What a sweep cost: the seconds of every finished cell and the wall time of every recorded invocation.

Not a test: a record. A sweep that was interrupted and resumed (or whose cells were rerun after a fix)
has no single wall time; what it does have is the seconds each finished cell took (``done.json``) and
one line per completed ``bench sweep`` invocation (``invocations.jsonl``; an invocation killed before
it ended leaves none). This script writes both, and the wall time the finished cells need at
``--jobs J`` if the workers were never idle (Σ cell seconds / J: a lower bound, since the last cells
leave a worker idle), so a README can quote the sweep's cost honestly. Only the cells of the current
plan (``sweep.json``) count: cells that a changed grid or changed code superseded stay on disk.

Usage: python benchmarks/sweep_cost.py results/sweeps/default --jobs 2 --out results/default-sweep.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import provenance  # noqa: E402
from bench.sweeps.layout import CELLS_DIR, DONE_FILE, INVOCATIONS_FILE, PLAN_FILE  # noqa: E402


def summarise(sweep: Path, jobs: int) -> dict:
    planned = {cell["id"] for cell in json.loads((sweep / PLAN_FILE).read_text())["cells"]}
    finished = [json.loads(p.read_text()) for p in sorted((sweep / CELLS_DIR).glob(f"*/{DONE_FILE}"))]
    done = [d for d in finished if d.get("id") in planned]  # cells a changed grid or code superseded stay on disk
    seconds = [float(d.get("seconds") or 0.0) for d in done]
    by_kind: dict[str, float] = {}
    for d, s in zip(done, seconds):
        by_kind[d.get("kind", "?")] = by_kind.get(d.get("kind", "?"), 0.0) + s
    path = sweep / INVOCATIONS_FILE
    invocations = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    total = sum(seconds)
    return {
        "sweep": str(sweep),
        "cells_done": len(done),
        "superseded_cells_left_out": len(finished) - len(done),
        "cell_seconds": round(total, 1),
        "cell_minutes": round(total / 60, 1),
        "cell_minutes_by_kind": {k: round(v / 60, 1) for k, v in sorted(by_kind.items())},
        "slowest_cell": max(done, key=lambda d: d.get("seconds") or 0.0, default={}).get("label"),
        "slowest_cell_seconds": max(seconds, default=0.0),
        "jobs": jobs,
        "wall_minutes": round(total / 60 / jobs, 1),
        "wall_minutes_means": f"Σ cell seconds / {jobs} jobs: the wall time with no idle worker (a lower bound)",
        "invocations": [
            {k: inv.get(k) for k in ("timestamp", "wall_seconds", "jobs", "cells_done", "cells_failed", "cell_seconds")}
            for inv in invocations
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    record = summarise(args.sweep, args.jobs)
    record = provenance.write_record(args.out, record)
    print(json.dumps({k: record[k] for k in ("cells_done", "cell_minutes", "wall_minutes")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
