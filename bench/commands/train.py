"""``bench train``: federated training under a defense, for its utility (accuracy) and costs."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.common import (
    given,
    add_component_args,
    add_data_args,
    add_federation_args,
    add_run_args,
    choice,
    default_output_dir,
    explicit_federation,
)
from bench.protocols import TRAINING_PROTOCOLS, resolve
from bench.results import RESULTS_FILE
from bench.errors import BenchError
from bench.runs.train import DEFAULT_LR_GRID, DEFAULT_TRAIN_ROUNDS, VALIDATION_FRACTION, TrainSpec, run_training


def register(sub: argparse._SubParsersAction) -> None:
    protocols = "; ".join(f"{p.name}: {p.description}" for p in TRAINING_PROTOCOLS.values())
    p = sub.add_parser(
        "train",
        help="federated training under a defense: accuracy, time and bytes per round",
        description="Run the FL protocol under a defense and append one row with test accuracy "
        "per round, final accuracy, seconds per round and bytes per client per round.",
    )
    add_component_args(p, "defense", None, required=True)
    add_data_args(p)
    p.add_argument(
        "--protocol",
        choices=sorted(TRAINING_PROTOCOLS),
        default=None,
        help=f"a named training protocol (explicit flags override it; it trains the paper's 'cnn' unless --model "
        f"is given, and applies the defense's option preset of the same name if it has one). {protocols}",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"federated rounds (default: {DEFAULT_TRAIN_ROUNDS}, or the protocol's)",
    )
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N rounds (and after the last)")
    p.add_argument(
        "--tune-lr",
        action="store_true",
        help=f"first choose the defense's lr from --lr-grid by validation accuracy on "
        f"{VALIDATION_FRACTION:.0%}% of each client's training examples (never the test split), "
        f"training each candidate as the run does; the row records grid, accuracies and choice",
    )
    p.add_argument(
        "--lr-grid",
        default=None,
        metavar="LR,LR,...",
        help=f"learning rates --tune-lr tries (default: {','.join(f'{x:g}' for x in DEFAULT_LR_GRID)})",
    )
    add_run_args(p)
    add_federation_args(p, "--batch-size", unset=True)
    p.set_defaults(handler=handle)


def _report(record: dict) -> None:
    acc = f"{record['accuracy']:.4f}" if "accuracy" in record else "-"
    print(f"round {record['round']:>4}: accuracy {acc}  {record['seconds']:.2f} s", flush=True)


def _grid(args: argparse.Namespace) -> tuple[float, ...] | None:
    if args.lr_grid is not None and not args.tune_lr:
        raise BenchError("--lr-grid needs --tune-lr")
    if not args.tune_lr:
        return None
    if args.lr_grid is None:
        return DEFAULT_LR_GRID
    try:
        grid = tuple(float(x) for x in args.lr_grid.split(","))
    except ValueError:
        raise BenchError(
            f"--lr-grid expects comma-separated positive numbers such as 0.01,0.02,0.05, got {args.lr_grid!r}"
        ) from None
    if not grid or any(not x > 0 for x in grid):
        raise BenchError(
            f"--lr-grid expects comma-separated positive numbers such as 0.01,0.02,0.05, got {args.lr_grid!r}"
        )
    return grid


def handle(args: argparse.Namespace) -> int:
    grid = _grid(args)
    rounds = args.rounds if args.rounds is not None or args.protocol else DEFAULT_TRAIN_ROUNDS
    resolved = resolve(
        args.protocol,
        given(args, "defense"),
        given(args, "dataset"),
        choice(args, "model"),
        explicit_federation(args, rounds=rounds, eval_every=args.eval_every),
    )
    output_dir = Path(args.output_dir or default_output_dir("train", args.defense))
    spec = TrainSpec(
        defense=resolved.defense,
        output_dir=output_dir,
        federation=resolved.federation,
        dataset=given(args, "dataset"),
        model=resolved.model,
        seed=args.seed,
        device=args.device,
        data_root=args.data_root,
        extra=resolved.extra,
        tune_lr=grid,
    )
    if args.protocol:
        print(
            f"protocol {args.protocol}: {resolved.federation}; "
            f"model {resolved.model.name if resolved.model else 'default'}; "
            f"defense preset {resolved.extra['defense_preset_applied'] or '(none)'}",
            flush=True,
        )
    row = run_training(spec, on_round=_report, log=lambda line: print(f"tuning {line}", flush=True))
    if row["lr_tuning"]:
        print(
            f"chosen lr {row['lr_tuning']['chosen_lr']:g} (validation accuracies "
            f"{row['lr_tuning']['validation_accuracy']})"
        )
    print(
        f"final mean local accuracy {row['final_accuracy']:.4f} over {row['clients']} clients; "
        f"{row['seconds_per_round']:.2f} s/round; {row['bytes_uploaded_per_client_per_round'] / 1e6:.3f} MB "
        f"uploaded per client per round\nresults: {output_dir / RESULTS_FILE}"
    )
    return 0
