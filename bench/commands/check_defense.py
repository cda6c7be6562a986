"""``bench check-defense``: conformance of a defense to the contract, on a tiny case, in seconds."""

from __future__ import annotations

import argparse

from bench.commands.common import add_check_args, choice, given
from bench.conformance import check_defense
from bench.seeding import resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-defense",
        help="check that a defense keeps the contract (exit 0 conforms, 1 fails)",
        description="Run a defense on a tiny synthetic case and check its contract: options, "
        "Observation shapes and dtypes, simulate() differentiable, consistent with "
        "what was observed and vmap-able, client_update/aggregate/predict, no private "
        "state sent, determinism under a seed. Prints each check as PASS, FAIL (with "
        "the reason), WARN or SKIP. Exit status 0 when nothing failed, 1 when a check "
        "failed, 2 for bad input.",
    )
    add_check_args(p, "defense")
    p.add_argument(
        "--knowledge",
        default=None,
        metavar="LEVEL",
        help="the attacker knowledge level to check the Observation of (default: the defense's default; "
        "the 'knowledge' check builds every declared level)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    defense = given(args, "defense")
    report = check_defense(
        defense.name, defense.args, choice(args, "model"), args.seed, resolve_device(args.device), args.knowledge
    )
    print(report.render())
    return 1 if report.failed else 0
