"""``bench sweep``: run a grid of attack and utility runs from a TOML/YAML file, resumably."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from bench.errors import BenchError
from bench.runs.attack import RunSpec
from bench.reports.loading import usable_rows
from bench.results import RESULTS_FILE
from bench.sweeps.config import load_config
from bench.sweeps.layout import LEADERBOARD_FILE, is_done
from bench.sweeps.plan import plan
from bench.sweeps.runner import (
    EXECUTORS,
    check_writable,
    merge,
    record_invocation,
    run_cells,
    write_if_changed,
    write_plan,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of attacks × defenses (and their training runs) from a file",
        description="Expand CONFIG (TOML, or YAML) into cells — one attack run or one training run "
        "each, with a stable id from its resolved configuration — and run the unfinished "
        "ones. Re-running the same command resumes; finished cells are never rerun.",
    )
    p.add_argument("config", type=Path, metavar="CONFIG", help="sweep file (.toml, .yaml or .yml)")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        metavar="N",
        help="run N cells at once in worker processes, each with cores/N torch threads (default: 1)",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local processes (default) or Ray tasks, one per cell, on a Ray cluster",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join (e.g. 'auto' or 'ray://head:10001'); default: a local instance",
    )
    p.add_argument("--output-dir", type=Path, default=None, metavar="DIR", help="override [sweep] output_dir")
    p.add_argument("--dry-run", action="store_true", help="list the cells and whether they are finished; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--offline",
        action="store_true",
        help="never download anything (LPIPS weights) in any cell; the same as BENCH_OFFLINE=1",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise BenchError(f"--jobs must be >= 1, got {args.jobs}")
    if args.address and args.executor != "ray":
        raise BenchError("--address is for --executor ray")
    cfg = load_config(args.config)
    if args.output_dir is not None:
        cfg = replace(cfg, output_dir=args.output_dir)
    cells, notes = plan(cfg)
    if args.offline:  # carried by each attack cell's spec, so it reaches worker processes and Ray tasks
        cells = [replace(c, spec=replace(c.spec, offline=True)) if isinstance(c.spec, RunSpec) else c for c in cells]
    root = cfg.output_dir
    for note in notes:
        print(f"note: {note}")
    todo = [c for c in cells if not is_done(root, c.id)]
    kinds = {k: sum(c.kind == k for c in cells) for k in ("attack", "train")}
    print(
        f"sweep {cfg.source}: {len(cells)} cells ({kinds['attack']} attack, {kinds['train']} train), "
        f"{len(cells) - len(todo)} finished, {len(todo)} to run; output {root}",
        flush=True,
    )
    if args.dry_run:
        todo_ids = {c.id for c in todo}
        for c in cells:
            print(f"  {'todo' if c.id in todo_ids else 'done'}  {c.id}  {c.kind:<6} {c.label}")
        return 0
    check_writable(root)
    write_plan(root, cfg, cells)
    began = time.time()
    outcomes = run_cells(todo, root, args.jobs, args.executor, args.address, args.quiet)
    if outcomes:  # a rerun with nothing to do writes nothing
        record_invocation(root, began, time.time(), outcomes, args.jobs, args.executor)
    rows = merge(root, cells)  # the finished cells' rows, in plan order: what load_results([root]) reads
    if rows:
        from bench.reports.leaderboard import build
        from bench.reports.render import to_markdown

        board = build(usable_rows(rows))
        write_if_changed(root / LEADERBOARD_FILE, to_markdown(board, title=f"Leaderboard: {cfg.source.name}").encode())
    failed = [o for o in outcomes if o.status == "failed"]
    ran = sum(o.status == "done" for o in outcomes)
    print(
        f"ran {ran} cell(s), {len(failed)} failed; {len(rows)} rows in {root / RESULTS_FILE}"
        + (f"; leaderboard {root / LEADERBOARD_FILE}" if rows else "")
    )
    if failed:
        raise BenchError(
            f"{len(failed)} of {len(todo)} cell(s) failed (first: {failed[0].label}: {failed[0].error}); "
            f"finished cells are kept; re-run the same command to retry the others"
        )
    return 0
