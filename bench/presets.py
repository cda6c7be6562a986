"""Named training protocols for utility runs (``bench train --preset NAME``).

A preset fixes the federation (clients, split, examples per client, batch, local epochs, rounds),
the model every defense trains (the paper's CNN, so the defense is the only difference between rows)
and, where a defense declares an option preset of the same name, that defense's own protocol
settings (e.g. fedavg's SGD lr 0.02, momentum 0.5, weight decay 5e-4 in the official HyperFL code).
Anything the user sets explicitly wins over the preset.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from bench import registry
from bench.errors import BenchError, choices_text
from bench.federated import FLSettings
from bench.setup import Choice


@dataclass(frozen=True)
class TrainPreset:
    """Federation settings, the model, and per-data-set sizes where the protocol fixes them."""

    name: str
    description: str
    settings: Mapping[str, Any]
    model: str = "cnn"
    per_dataset: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


TRAIN_PRESETS: dict[str, TrainPreset] = {
    "quick": TrainPreset(
        "quick", "the paper's protocol scaled to the embedded data and 2 CPU cores (a few minutes per defense): "
                 "10 clients, dominant split, 100 train / 50 test examples each, batch 50, 5 local epochs, 20 rounds",
        {"clients": 10, "partition": "dominant", "train_per_client": 100, "test_per_client": 50, "batch_size": 50,
         "local_epochs": 5, "rounds": 20}),
    "paper": TrainPreset(
        "paper", "the HyperFL paper's protocol: 20 clients all participating, 200 rounds, batch 50, 5 local epochs, "
                 "dominant split; train/test per client 600/300 (CIFAR-10), 600/600 (Fashion-MNIST), "
                 "1000/600 (EMNIST); other data sets: the most every client can get",
        {"clients": 20, "partition": "dominant", "batch_size": 50, "local_epochs": 5, "rounds": 200},
        per_dataset={"cifar10": {"train_per_client": 600, "test_per_client": 300},
                     "fashionmnist": {"train_per_client": 600, "test_per_client": 600},
                     "emnist": {"train_per_client": 1000, "test_per_client": 600}}),
}


@dataclass(frozen=True)
class Resolved:
    """What a preset resolves to, with the user's explicit choices applied on top."""

    defense: Choice
    model: Choice | None
    federation: FLSettings
    extra: dict[str, Any]


def resolve(preset: str | None, defense: Choice, dataset: Choice, model: Choice | None,
            explicit: Mapping[str, Any]) -> Resolved:
    """Apply ``preset`` (or none) under the user's explicit federation settings ``explicit``
    (FLSettings field → value; absent or ``None`` means "not given")."""
    given = {k: v for k, v in explicit.items() if v is not None}
    unknown = set(given) - {f.name for f in fields(FLSettings)}
    if unknown:
        raise BenchError(f"unknown federation settings {sorted(unknown)}")
    if preset is None:
        return Resolved(defense, model, FLSettings(**given), {})
    if preset not in TRAIN_PRESETS:
        raise BenchError(f"unknown preset {preset!r}; valid: {choices_text(TRAIN_PRESETS)}")
    p = TRAIN_PRESETS[preset]
    settings = {**p.settings, **p.per_dataset.get(dataset.name, {}), **given}
    defense_presets = getattr(registry.load("defense", defense.name), "presets", {})
    applied = None
    if "preset" not in defense.args and preset in defense_presets:
        defense = Choice(defense.name, {"preset": preset, **defense.args})
        applied = preset
    extra = {"preset": preset, "defense_preset_applied": applied}
    return Resolved(defense, model or Choice(p.model), FLSettings(**settings), extra)
