"""Turning names and options into ready components: data set, model, defense, attack, task.

Shared by ``run`` and ``train`` so both build the learning problem the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from bench import registry
from bench.attack import Attack
from bench.data.base import Dataset, ImageDataset
from bench.defense import Defense, FLTask
from bench.errors import BenchError
from bench.models.base import Model, classifier_of

DEFAULT_DATASET = "photos"
DEFAULT_MODEL = "lenet"


@dataclass(frozen=True)
class Choice:
    """A component picked by name (entry point, module:Class or file.py:Class) with its option values."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


def load_dataset(choice: Choice, data_root: Path | None) -> tuple[Dataset, ImageDataset]:
    component = cast(Dataset, registry.create("dataset", choice.name, choice.args))
    if data_root is not None and not Path(data_root).is_dir():
        raise BenchError(f"--data-root {str(data_root)!r} is not a directory")
    return component, component.load(data_root)


def create_defense(choice: Choice) -> Defense:
    return cast(Defense, registry.create("defense", choice.name, choice.args))


def create_attack(choice: Choice) -> Attack:
    return cast(Attack, registry.create("attack", choice.name, choice.args))


def model_choice(model: Choice | None, defense: Defense) -> Choice:
    """The model the user named, else the defense's preferred one, else the harness default."""
    return model or Choice(type(defense).default_model or DEFAULT_MODEL)


def data_and_model_components(dataset: Choice, model: Choice | None, defense: Defense) -> tuple[Dataset, Choice, Model]:
    """The data-set and model components with validated options, nothing loaded or built (cheap)."""
    model = model_choice(model, defense)
    return (
        cast(Dataset, registry.create("dataset", dataset.name, dataset.args)),
        model,
        cast(Model, registry.create("model", model.name, model.args)),
    )


def build_task(model: Choice, data: ImageDataset, device: torch.device, local_epochs: int = 1) -> tuple[Model, FLTask]:
    component = cast(Model, registry.create("model", model.name, model.args))
    shape, classes = data.image_shape, data.num_classes

    def new_model() -> torch.nn.Module:
        return component.build(shape, classes).to(device)

    try:
        probe = component.build(shape, classes)
        classifier = classifier_of(probe)
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"model {model.name!r} cannot be built for {data.name} images {shape}: {exc}") from None
    task = FLTask(
        new_model=new_model,
        model_name=model.name,
        classifier=classifier,
        image_shape=shape,
        num_classes=classes,
        mean=data.mean,
        std=data.std,
        device=device,
        local_epochs=local_epochs,
    )
    return component, task
