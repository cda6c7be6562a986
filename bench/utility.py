"""The utility run: federated training under a defense, recorded as one result row.

Library counterpart of ``bench train`` (sweeps call it directly): accuracy per round, final accuracy,
seconds per round and bytes uploaded per client per round, plus the usual provenance.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance
from bench.data.base import Dataset
from bench.defense import Defense
from bench.errors import BenchError
from bench.experiment import run_id
from bench.federated import Federation, FLSettings, train
from bench.models.base import Model
from bench.results import RESULTS_FILE, append_rows, writable_dir
from bench.seeding import resolve_device
from bench.setup import Choice, build_task, create_defense, data_and_model_components, load_dataset, model_choice

#: Federated rounds of a utility run when neither the command line, a preset nor a sweep file says.
DEFAULT_TRAIN_ROUNDS = 20


@dataclass(frozen=True)
class TrainSpec:
    """Everything that defines a utility run (recorded in the row's ``config``)."""

    defense: Choice
    output_dir: Path
    federation: FLSettings
    dataset: Choice = Choice("photos")
    model: Choice | None = None
    seed: int = 0
    device: str = "auto"
    data_root: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the preset used, recorded verbatim


def _config(spec: TrainSpec, defense: Defense, dataset: Dataset, model: Choice, model_component: Model) -> dict[str, Any]:
    return {"defense": {"name": spec.defense.name, **defense.config},
            "dataset": {"name": spec.dataset.name, **dataset.config},
            "model": {"name": model.name, **model_component.config},
            "run": {"seed": spec.seed, "federation": asdict(spec.federation), **spec.extra}}


def resolved_config(spec: TrainSpec) -> dict[str, Any]:
    """The config ``run_training(spec)`` records (and hashes into its ``run_id``), without loading data."""
    defense = create_defense(spec.defense)
    dataset, model, model_component = data_and_model_components(spec.dataset, spec.model, defense)
    return _config(spec, defense, dataset, model, model_component)


def run_training(spec: TrainSpec, on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train ``spec.federation.rounds`` rounds, append the utility row to ``results.jsonl``, return it."""
    settings = spec.federation
    settings.validate()
    if settings.rounds < 1:
        raise BenchError(f"--rounds must be >= 1, got {settings.rounds}")
    defense = create_defense(spec.defense)
    device = resolve_device(spec.device)
    output_dir = writable_dir(spec.output_dir)
    dataset, data = load_dataset(spec.dataset, spec.data_root)
    model = model_choice(spec.model, defense)
    model_component, task = build_task(model, data, device, settings.local_epochs)
    defense.setup(task)
    federation = Federation(data, settings, spec.seed, device)
    config = _config(spec, defense, dataset, model, model_component)
    began = time.perf_counter()
    state = train(defense, federation, spec.seed, settings.rounds, on_round=on_round)
    history = state.history
    evaluated = [h for h in history if "accuracy" in h]
    row = {
        "kind": "train", "run_id": run_id(config), "defense": spec.defense.name, "dataset": spec.dataset.name,
        "model": model.name, "seed": spec.seed, "rounds": settings.rounds, "clients": settings.clients,
        "final_accuracy": evaluated[-1]["accuracy"],
        "accuracy_per_round": {h["round"]: h["accuracy"] for h in evaluated},
        "seconds_per_round": float(np.mean([h["seconds"] for h in history])),
        "modelled_seconds_per_round": float(np.mean([h["seconds"] + (h.get("modelled_seconds") or 0.0)
                                                     for h in history])),
        "bytes_uploaded_per_client_per_round": float(np.mean([h.get("bytes_uploaded", 0.0) for h in history])),
        "history": history, "total_seconds": time.perf_counter() - began,
        "config": config, **provenance.stamp(str(device)),
    }
    append_rows(output_dir / RESULTS_FILE, [row])
    return row
