"""``bench report``: a self-contained HTML page and Markdown from result files (never reruns an attack)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.leaderboard import add_result_args, load
from bench.errors import BenchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="HTML + Markdown comparison report from result files",
        description="Leaderboard, privacy-utility scatter, per-attack PSNR distributions and "
        "reconstruction grids (ground truth above reconstruction) per defense × attack: "
        "OUT/report.html (self-contained), OUT/report.md with OUT/figures/, "
        "OUT/leaderboard.csv.",
    )
    add_result_args(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results") / "report",
        metavar="DIR",
        help="output directory (default: results/report)",
    )
    p.add_argument(
        "--max-images",
        type=int,
        default=4,
        metavar="N",
        help="targets shown per defense × attack in the reconstruction grids (default: 4)",
    )
    p.add_argument("--title", default="bench report", help="page title")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from bench.reports.report import write_report  # pandas and matplotlib: not at start-up

    if args.max_images < 1:
        raise BenchError(f"--max-images must be >= 1, got {args.max_images}")
    results = load(args)
    try:
        written = write_report(
            results, args.out, args.diverged, args.utility_tolerance, args.max_images, args.title, args.success
        )
    except OSError as exc:
        raise BenchError(f"cannot write the report to {str(args.out)!r}: {exc.strerror or exc}") from None
    print(f"report: {written['html']} (self-contained), {written['markdown']}; {written['figures']} figure(s)")
    return 0
