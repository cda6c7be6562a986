"""``python -m bench``: the command line. User errors print one line and exit with status 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bench.errors import BenchError

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "run",
    "list",
    "train",
    "tune",
    "sweep",
    "leaderboard",
    "report",
    "publish",
    "reproduce",
    "check_defense",
    "check_attack",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (still exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bench",
        description="Privacy attacks and defenses in federated learning: "
        "how much of a client's images can an honest-but-curious server reconstruct, and what "
        "does the defense cost in accuracy and compute?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)
    for name in COMMANDS:
        importlib.import_module(f"bench.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BenchError as exc:
        print(f"bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted; finished results are kept", file=sys.stderr)
        return 130
