"""Arguments shared by sub-commands and their conversion to bench's settings."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path

from bench.data.partition import PARTITIONS
from bench.errors import BenchError
from bench.federation import FLSettings
from bench.options import parse_assignments
from bench.protocols import COMPARISON_OPTIMISER, OPTIMISERS
from bench.round import ROUND_KINDS, Round
from bench.components import DEFAULT_DATASET, Choice


def add_component_args(parser: argparse.ArgumentParser, kind: str, default: str | None, required: bool = False) -> None:
    flag = f"--{kind}"
    parser.add_argument(
        flag,
        default=default,
        required=required,
        metavar="NAME",
        help=f"{kind} to use: a registered name (see `bench list`), package.module:Class or "
        f"path/file.py:Class" + (f" (default: {default})" if default else ""),
    )
    parser.add_argument(
        f"{flag}-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"set one of the {kind}'s declared options (repeatable; `bench list` shows them)",
    )


def add_check_args(parser: argparse.ArgumentParser, kind: str) -> None:
    """Arguments shared by check-defense and check-attack: the component, its options, the tiny case."""
    parser.add_argument(kind, metavar="NAME", help="registered name, package.module:Class or path/file.py:Class")
    parser.add_argument(
        f"--{kind}-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"set one of the {kind}'s declared options (repeatable)",
    )
    add_component_args(parser, "model", None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny case (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")


def choice(args: argparse.Namespace, kind: str) -> Choice | None:
    name = getattr(args, kind)
    if name is None:
        if getattr(args, f"{kind}_arg", None):
            raise BenchError(
                f"--{kind}-arg needs --{kind} NAME (without it the default {kind} is used, "
                f"so its options would be ignored)"
            )
        return None
    return Choice(name, parse_assignments(getattr(args, f"{kind}_arg"), f"--{kind}-arg"))


def given(args: argparse.Namespace, kind: str) -> Choice:
    """The component the user named for ``kind`` (``--defense`` ...), which the parser requires or has a default."""
    picked = choice(args, kind)
    if picked is None:
        raise BenchError(f"--{kind} is required")
    return picked


def add_data_args(parser: argparse.ArgumentParser) -> None:
    add_component_args(parser, "dataset", DEFAULT_DATASET)
    add_component_args(parser, "model", None)
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder holding torchvision-format data sets (never downloaded)",
    )


def add_federation_args(
    parser: argparse.ArgumentParser, batch_flag: str, batch_default: int = 50, unset: bool = False
) -> None:
    """The federation flags. With ``unset`` their values stay ``None`` unless given (a preset fills
    them; see :func:`explicit_federation`); the help still shows the defaults used without a preset."""
    group = parser.add_argument_group("federation")

    def default(value):
        return None if unset else value

    group.add_argument("--clients", type=int, default=default(20), help="number of clients (default: 20)")
    group.add_argument(
        "--partition",
        choices=PARTITIONS,
        default=default("dominant"),
        help="how data are split over clients: iid, or HyperFL's dominant label groups (default)",
    )
    group.add_argument(
        "--train-per-client",
        type=int,
        default=None,
        metavar="N",
        help="training examples per client (default: the most every client can get)",
    )
    group.add_argument(
        "--test-per-client",
        type=int,
        default=None,
        metavar="N",
        help="test examples per client (default: the most every client can get)",
    )
    group.add_argument(
        batch_flag,
        dest="train_batch_size",
        type=int,
        default=default(batch_default),
        help=f"local mini-batch size during training (default: {batch_default})",
    )
    group.add_argument(
        "--local-epochs", type=int, default=default(1), help="passes over local data per round (default: 1)"
    )


def explicit_federation(args: argparse.Namespace, **more: object) -> dict[str, object]:
    """The federation settings the user gave (``None`` = not given), as FLSettings field names."""
    return {
        "clients": args.clients,
        "partition": args.partition,
        "train_per_client": args.train_per_client,
        "test_per_client": args.test_per_client,
        "batch_size": args.train_batch_size,
        "local_epochs": args.local_epochs,
        **more,
    }


def federation(args: argparse.Namespace, rounds: int = 0, eval_every: int = 1) -> FLSettings:
    return FLSettings(
        clients=args.clients,
        partition=args.partition,
        train_per_client=args.train_per_client,
        test_per_client=args.test_per_client,
        batch_size=args.train_batch_size,
        local_epochs=args.local_epochs,
        rounds=rounds,
        eval_every=eval_every,
    )


def add_round_args(parser: argparse.ArgumentParser) -> None:
    """The attacked client's round (bench.round) and the comparison's client optimiser."""
    group = parser.add_argument_group("attacked round")
    group.add_argument(
        "--round",
        choices=tuple(ROUND_KINDS),
        default="fedsgd",
        help="what the attacked client computes: fedsgd = the gradient of one batch (default); local = its "
        "update after --local-epochs passes over --local-examples examples in batches of --batch-size",
    )
    group.add_argument("--batch-size", type=int, default=1, help="the attacked round's mini-batch size (default: 1)")
    group.add_argument(
        "--local-examples",
        type=int,
        default=None,
        metavar="N",
        help="local round: the client's examples in the round, every one a target (default: --batch-size)",
    )
    group.add_argument(
        "--head-epochs",
        type=int,
        default=None,
        metavar="H",
        help="local round: passes on the classifier head alone before the local epochs (default: the "
        "defense's own: 1 for hyperfl, 0 for the FedAvg family)",
    )
    group.add_argument(
        "--optimiser",
        default=COMPARISON_OPTIMISER,
        choices=tuple(OPTIMISERS),
        help=f"the clients' SGD for every defense (by role, bench.protocols.equal_optimiser): "
        f"{COMPARISON_OPTIMISER} (default: lr 0.02, momentum 0.5, weight decay 5e-4, the HyperFL paper's for "
        f"every method) or defaults (each defense's own option defaults)",
    )


def attacked_round(args: argparse.Namespace) -> Round:
    """The :class:`bench.round.Round` the round flags describe (``--local-epochs`` is the federation's too)."""
    local = args.round == "local"
    return Round(
        args.round,
        args.batch_size,
        args.local_examples,
        args.local_epochs if local else 1,
        args.head_epochs,
    )


def add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where results.jsonl and images go (default: results/runs/<time>-<names>)",
    )


def default_output_dir(*names: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", n) for n in names)
    return Path("results") / "runs" / f"{stamp}-{safe}"
