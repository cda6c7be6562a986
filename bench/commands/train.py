"""``bench train``: federated training under a defense, for its utility (accuracy) and costs."""
from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import numpy as np

from bench import provenance
from bench.commands.common import (add_component_args, add_data_args, add_federation_args, add_run_args, choice,
                                   default_output_dir, federation)
from bench.errors import BenchError
from bench.experiment import run_id
from bench.federated import Federation, train
from bench.results import RESULTS_FILE, append_rows
from bench.seeding import resolve_device
from bench.setup import build_task, create_defense, load_dataset, model_choice


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="federated training under a defense: accuracy, time and bytes per round",
                       description="Run the FL protocol under a defense and append one row with test accuracy "
                                   "per round, final accuracy, seconds per round and bytes per client per round.")
    add_component_args(p, "defense", None, required=True)
    add_data_args(p)
    p.add_argument("--rounds", type=int, default=20, help="federated rounds (default: 20)")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N rounds (and after the last)")
    add_run_args(p)
    add_federation_args(p, "--batch-size")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = federation(args, rounds=args.rounds, eval_every=args.eval_every)
    settings.validate()
    if args.rounds < 1:
        raise BenchError(f"--rounds must be >= 1, got {args.rounds}")
    output_dir = Path(args.output_dir or default_output_dir("train", args.defense))
    output_dir.mkdir(parents=True, exist_ok=True)
    defense_choice, dataset_choice = choice(args, "defense"), choice(args, "dataset")
    defense = create_defense(defense_choice)
    device = resolve_device(args.device)
    dataset, data = load_dataset(dataset_choice, args.data_root)
    model = model_choice(choice(args, "model"), defense)
    model_component, task = build_task(model, data, device, settings.local_epochs)
    defense.setup(task)
    fed = Federation(data, settings, args.seed, device)
    config = {"defense": {"name": defense_choice.name, **defense.config},
              "dataset": {"name": dataset_choice.name, **dataset.config},
              "model": {"name": model.name, **model_component.config},
              "run": {"seed": args.seed, "federation": vars(settings).copy()}}

    def report(record: dict) -> None:
        acc = f"{record['accuracy']:.4f}" if "accuracy" in record else "-"
        print(f"round {record['round']:>4}: accuracy {acc}  {record['seconds']:.2f} s", flush=True)

    began = time.perf_counter()
    state = train(defense, fed, args.seed, args.rounds, on_round=report)
    history = state.history
    evaluated = [h for h in history if "accuracy" in h]
    row = {
        "kind": "train", "run_id": run_id(config), "defense": defense_choice.name, "dataset": dataset_choice.name,
        "model": model.name, "seed": args.seed, "rounds": args.rounds, "clients": settings.clients,
        "final_accuracy": evaluated[-1]["accuracy"],
        "accuracy_per_round": {h["round"]: h["accuracy"] for h in evaluated},
        "seconds_per_round": float(np.mean([h["seconds"] for h in history])),
        "bytes_uploaded_per_client_per_round": float(np.mean([h.get("bytes_uploaded", 0.0) for h in history])),
        "history": history, "total_seconds": time.perf_counter() - began,
        "config": config, "versions": provenance.package_versions(), "git": provenance.git_state(),
        "machine": provenance.machine(str(device)),
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    append_rows(output_dir / RESULTS_FILE, [row])
    print(f"final mean local accuracy {row['final_accuracy']:.4f} over {settings.clients} clients; "
          f"{row['seconds_per_round']:.2f} s/round; {row['bytes_uploaded_per_client_per_round'] / 1e6:.3f} MB "
          f"uploaded per client per round\nresults: {output_dir / RESULTS_FILE}")
    return 0
