"""``bench check-attack``: conformance of an attack to the contract, on a tiny case."""

from __future__ import annotations

import argparse

from bench.commands.common import add_check_args, add_component_args, choice, given
from bench.conformance import check_attack
from bench.seeding import resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-attack",
        help="check that an attack keeps the contract (exit 0 conforms, 1 fails)",
        description="Run an attack on a tiny synthetic case and check its contract: options, images "
        "of the right shape and dtype with finite values, labels of the right shape, "
        "observation left untouched, progress reported, determinism under a seed, "
        "unknowns handled. The attack runs with its declared defaults unless "
        "--attack-arg says otherwise (e.g. --attack-arg iterations=10 for speed). "
        "Exit status 0 when nothing failed, 1 when a check failed, 2 for bad input.",
    )
    add_check_args(p, "attack")
    add_component_args(p, "defense", "fedavg")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    attack = given(args, "attack")
    report = check_attack(
        attack.name, attack.args, choice(args, "defense"), choice(args, "model"), args.seed, resolve_device(args.device)
    )
    print(report.render())
    return 1 if report.failed else 0
