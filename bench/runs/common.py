"""What an attack run and a training run share: their id, and one preparation of their components.

Both resolve the defense, the data set and the model the same way (the defense's own model when the
user names none), build the learning task from the loaded data and set the defense up on it, so that
privacy (an attack run) and utility (a training run) always measure the same protocol.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.components import Choice, build_task, create_defense, load_dataset, model_choice
from bench.data.base import Dataset, ImageDataset
from bench.defense import Defense, FLTask
from bench.models.base import Model
from bench.round import Round
from bench.seeding import resolve_device


def run_id(config: dict[str, Any]) -> str:
    """A stable id of a run's resolved configuration (same config and seed → same id)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Components:
    """A run's defense (set up on its task), data set, model and device."""

    defense: Defense
    dataset: Dataset
    data: ImageDataset
    model: Choice
    model_component: Model
    task: FLTask
    device: torch.device


def prepare_components(
    defense: Choice,
    dataset: Choice,
    model: Choice | None,
    data_root: Path | None,
    device: str,
    local_epochs: int,
    knowledge: str | None = None,
    defense_instance: Defense | None = None,
    round_: Round | None = None,
) -> Components:
    """Resolve the choices (one-line BenchErrors for bad ones), load the data, build the task and set the
    defense up on it. ``knowledge`` and ``round_`` (attack runs): the attacker level and the attacked round
    its observations are built for."""
    instance = defense_instance or create_defense(defense)
    if knowledge is not None or defense_instance is None:
        instance.use_knowledge(knowledge)
    if round_ is not None:
        instance.use_round(round_)
    resolved_device = resolve_device(device)
    dataset_component, data = load_dataset(dataset, data_root)
    picked = model_choice(model, instance)
    model_component, task = build_task(picked, data, resolved_device, local_epochs)
    instance.setup(task)
    return Components(instance, dataset_component, data, picked, model_component, task, resolved_device)
