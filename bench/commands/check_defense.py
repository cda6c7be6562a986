"""``bench check-defense``: conformance of a defense to the contract, on a tiny case, in seconds."""
from __future__ import annotations

import argparse

from bench.commands.common import add_component_args, choice
from bench.conformance import check_defense
from bench.seeding import resolve_device


def add_check_args(parser: argparse.ArgumentParser, kind: str) -> None:
    """Arguments shared by check-defense and check-attack: the component, its options, the tiny case."""
    parser.add_argument(kind, metavar="NAME", help="registered name, package.module:Class or path/file.py:Class")
    parser.add_argument(f"--{kind}-arg", action="append", default=[], metavar="NAME=VALUE",
                        help=f"set one of the {kind}'s declared options (repeatable)")
    add_component_args(parser, "model", None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny case (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-defense", help="check that a defense keeps the contract (exit 0 conforms, 1 fails)",
                       description="Run a defense on a tiny synthetic case and check its contract: options, "
                                   "Observation shapes and dtypes, simulate() differentiable, consistent with "
                                   "what was observed and vmap-able, client_update/aggregate/predict, no private "
                                   "state sent, determinism under a seed. Prints each check as PASS, FAIL (with "
                                   "the reason), WARN or SKIP. Exit status 0 when nothing failed, 1 when a check "
                                   "failed, 2 for bad input.")
    add_check_args(p, "defense")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    defense = choice(args, "defense")
    report = check_defense(defense.name, defense.args, choice(args, "model"), args.seed, resolve_device(args.device))
    print(report.render())
    return 1 if report.failed else 0
