"""``bench leaderboard``: rank defense configurations from result files (never reruns an attack)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.reports import DEFAULT_SUCCESS, DEFAULT_TOLERANCE, DIVERGED_MODES
from bench.reports.loading import ResultSet, load_results
from bench.results import atomic_write_bytes


def add_result_args(parser: argparse.ArgumentParser) -> None:
    """Inputs and ranking options shared by ``leaderboard`` and ``report``."""
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path("results")],
        metavar="RESULTS",
        help="results.jsonl files, run directories or sweep directories (default: results/)",
    )
    parser.add_argument(
        "--diverged",
        choices=DIVERGED_MODES,
        default="exclude",
        help="leave diverged attack runs out of the means (default) or include them; either way they are counted",
    )
    parser.add_argument(
        "--utility-tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        metavar="POINTS",
        help=f"width of a utility tier in accuracy points for the ranking (default: {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--success",
        default=DEFAULT_SUCCESS,
        metavar="RULE",
        help=f"when a target counts as recovered: METRIC>=X, METRIC<=X or METRIC_gain>=X (gain over the "
        f"no-information baseline); default {DEFAULT_SUCCESS} (e.g. ssim>=0.5)",
    )


def load(args: argparse.Namespace) -> ResultSet:
    if args.utility_tolerance <= 0:
        raise BenchError(f"--utility-tolerance must be > 0, got {args.utility_tolerance}")
    from bench.reports.stats import SuccessRule

    SuccessRule.parse(args.success)  # a bad rule is bad input, before anything is read
    results = load_results(args.paths)
    for line in results.problems + results.notes:
        print(f"warning: {line}", file=sys.stderr)
    return results


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="rank defenses by privacy at equal utility, from result files",
        description="Per scenario, one row per defense configuration and attacker knowledge level: "
        "its strongest attack's median PSNR, interval, success rate and gain over the "
        "no-information baseline, the defense's accuracy and costs, and its rank; then "
        "every attack's statistics.",
    )
    add_result_args(p)
    p.add_argument("--format", choices=("md", "html", "csv"), default="md", help="output format (default: md)")
    p.add_argument("--output", "-o", type=Path, default=None, metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from bench.reports.leaderboard import build
    from bench.reports.render import render

    board = build(load(args).rows, args.diverged, args.utility_tolerance, args.success)
    text = render(board, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(args.output, text.encode())
        except OSError as exc:
            raise BenchError(f"cannot write {str(args.output)!r}: {exc.strerror or exc}") from None
        print(f"leaderboard: {args.output}")
    return 0
