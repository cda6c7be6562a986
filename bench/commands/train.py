"""``bench train``: federated training under a defense, for its utility (accuracy) and costs."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.common import (add_component_args, add_data_args, add_federation_args, add_run_args, choice,
                                   default_output_dir, explicit_federation)
from bench.presets import TRAIN_PRESETS, resolve
from bench.results import RESULTS_FILE
from bench.utility import DEFAULT_TRAIN_ROUNDS, TrainSpec, run_training


def register(sub: argparse._SubParsersAction) -> None:
    presets = "; ".join(f"{p.name}: {p.description}" for p in TRAIN_PRESETS.values())
    p = sub.add_parser("train", help="federated training under a defense: accuracy, time and bytes per round",
                       description="Run the FL protocol under a defense and append one row with test accuracy "
                                   "per round, final accuracy, seconds per round and bytes per client per round.")
    add_component_args(p, "defense", None, required=True)
    add_data_args(p)
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default=None,
                   help=f"a named protocol (explicit flags override it; it trains the paper's 'cnn' unless --model "
                        f"is given, and applies the defense's option preset of the same name if it has one). {presets}")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"federated rounds (default: {DEFAULT_TRAIN_ROUNDS}, or the preset's)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N rounds (and after the last)")
    add_run_args(p)
    add_federation_args(p, "--batch-size", unset=True)
    p.set_defaults(handler=handle)


def _report(record: dict) -> None:
    acc = f"{record['accuracy']:.4f}" if "accuracy" in record else "-"
    print(f"round {record['round']:>4}: accuracy {acc}  {record['seconds']:.2f} s", flush=True)


def handle(args: argparse.Namespace) -> int:
    rounds = args.rounds if args.rounds is not None or args.preset else DEFAULT_TRAIN_ROUNDS
    resolved = resolve(args.preset, choice(args, "defense"), choice(args, "dataset"), choice(args, "model"),
                       explicit_federation(args, rounds=rounds, eval_every=args.eval_every))
    output_dir = Path(args.output_dir or default_output_dir("train", args.defense))
    spec = TrainSpec(defense=resolved.defense, output_dir=output_dir, federation=resolved.federation,
                     dataset=choice(args, "dataset"), model=resolved.model, seed=args.seed, device=args.device,
                     data_root=args.data_root, extra=resolved.extra)
    if args.preset:
        print(f"preset {args.preset}: {resolved.federation}; model {resolved.model.name}; "
              f"defense preset {resolved.extra['defense_preset_applied'] or '(none)'}", flush=True)
    row = run_training(spec, on_round=_report)
    print(f"final mean local accuracy {row['final_accuracy']:.4f} over {row['clients']} clients; "
          f"{row['seconds_per_round']:.2f} s/round; {row['bytes_uploaded_per_client_per_round'] / 1e6:.3f} MB "
          f"uploaded per client per round\nresults: {output_dir / RESULTS_FILE}")
    return 0
