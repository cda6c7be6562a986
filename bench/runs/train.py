"""The utility run: federated training under a defense, recorded as one result row.

Library counterpart of ``bench train`` (sweeps call it directly): accuracy per round, final accuracy,
seconds per round and bytes uploaded per client per round, plus the usual provenance. A row also
says what was evaluated (``evaluated``: the global model, a personalised one, or the global model
with a fine-tuned head), with which optimiser it trained (``optimiser``, the comparison's rule in
``optimiser_rule`` and any deviation from it in ``optimiser_deviations``), and, with ``tune_lr``,
how its learning rate was chosen (``lr_tuning``: :func:`tune_learning_rate`, on a validation split
carved from the clients' training data — never the test split).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance
from bench.data.base import Dataset
from bench.defense import Defense
from bench.errors import BenchError
from bench.runs.common import prepare_components, run_id
from bench.federation import Federation, FLSettings
from bench.training import train
from bench.models.base import Model
from bench.protocols import OPTIMISERS
from bench.rows import train_row
from bench.results import RESULTS_FILE, append_rows, writable_dir
from bench.seeding import resolve_device
from bench.states import keep
from bench.components import Choice, build_task, create_defense, data_and_model_components, load_dataset, model_choice

#: Federated rounds of a utility run when neither the command line, a preset nor a sweep file says.
DEFAULT_TRAIN_ROUNDS = 20
#: Learning rates ``bench train --tune-lr`` tries unless told: the official HyperFL lr 0.02 and steps of
#: about 2-2.5× around it.
DEFAULT_LR_GRID: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1)
#: Share of each client's training examples held out as its validation set while tuning.
VALIDATION_FRACTION = 0.2
#: Options that make up a defense's optimiser, recorded in training rows when it declares them.
OPTIMISER_KEYS = ("lr", "momentum", "weight_decay", "head_lr", "max_grad_norm")


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
    #: Learning rates to choose from on a validation split before training (``None``: no tuning).
    tune_lr: tuple[float, ...] | None = None
    #: Where the final state is kept for attack runs of the same training (not part of the config).
    state_cache: Path | None = None


def _config(
    spec: TrainSpec, defense: Defense, dataset: Dataset, model: Choice, model_component: Model
) -> dict[str, Any]:
    return {
        "defense": {"name": spec.defense.name, **defense.config},
        "dataset": {"name": spec.dataset.name, **dataset.config},
        "model": {"name": model.name, **model_component.config},
        "run": {
            "seed": spec.seed,
            "federation": asdict(spec.federation),
            **spec.extra,
            **(
                {"tune_lr": {"grid": list(spec.tune_lr), "validation_fraction": VALIDATION_FRACTION}}
                if spec.tune_lr
                else {}
            ),
        },
    }


def resolved_config(spec: TrainSpec) -> dict[str, Any]:
    """The config ``run_training(spec)`` records (and hashes into its ``run_id``), without loading data."""
    defense = create_defense(spec.defense)
    dataset, model, model_component = data_and_model_components(spec.dataset, spec.model, defense)
    return _config(spec, defense, dataset, model, model_component)


def tune_learning_rate(
    spec: TrainSpec,
    grid: Sequence[float] = DEFAULT_LR_GRID,
    fraction: float = VALIDATION_FRACTION,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Choose the defense's ``lr`` from ``grid`` by validation accuracy, never looking at the test split.

    Each client's training examples are split (``Federation.validation_split``: a share ``fraction``
    held out per client, seeded); for every candidate the defense trains ``spec.federation.rounds``
    rounds on the rest, under the spec's seed and options, and is scored by the mean over clients of
    its accuracy on their held-out examples (what it would report, e.g. personalised). The best
    candidate wins (ties: the earlier in ``grid``). Returns the record training rows carry as
    ``lr_tuning``: the grid, the validation accuracy of each candidate, the chosen lr, the fraction
    and the rounds. Sweep-usable: it writes nothing.
    """
    settings = spec.federation
    settings.validate()
    if settings.rounds < 1:
        raise BenchError(f"--rounds must be >= 1, got {settings.rounds}")
    grid = tuple(float(lr) for lr in grid)
    if not grid or any(not lr > 0 for lr in grid):
        raise BenchError(f"the learning-rate grid must be positive numbers, got {list(grid)}")
    base = create_defense(spec.defense)
    if "lr" not in base.config:
        raise BenchError(
            f"defense {spec.defense.name!r} has no option 'lr' to tune; its options: "
            f"{', '.join(sorted(base.config)) or '(none)'}"
        )
    device = resolve_device(spec.device)
    _, data = load_dataset(spec.dataset, spec.data_root)
    model = model_choice(spec.model, base)
    validation = Federation(data, settings, spec.seed, device).validation_split(fraction, spec.seed)
    accuracies: dict[str, float] = {}
    for lr in grid:
        defense = create_defense(Choice(spec.defense.name, {**spec.defense.args, "lr": lr}))
        _, task = build_task(model, data, device, settings.local_epochs)
        defense.setup(task)
        state = train(defense, validation, spec.seed, settings.rounds)
        accuracies[f"{lr:g}"] = state.history[-1]["accuracy"]
        log(f"lr {lr:g}: validation accuracy {accuracies[f'{lr:g}']:.4f}")
    chosen = max(grid, key=lambda lr: accuracies[f"{lr:g}"])  # max keeps the first of equals
    return {
        "grid": list(grid),
        "validation_accuracy": accuracies,
        "chosen_lr": chosen,
        "validation_fraction": fraction,
        "rounds": settings.rounds,
        "split": "validation held out from each client's training examples; the test split is not used",
    }


def optimiser_record(defense: Defense, rule: str | None) -> dict[str, Any]:
    """The row's optimiser columns: the effective values of the optimiser options the defense declares,
    the comparison's rule, and where the defense trains otherwise (its own paper's preset, the user,
    a tuned lr)."""
    effective = {k: defense.config[k] for k in OPTIMISER_KEYS if k in defense.config}
    wanted = OPTIMISERS.get(rule or "", {})
    deviations = {k: v for k, v in effective.items() if k in wanted and v != wanted[k]}
    return {"optimiser": effective, "optimiser_rule": rule or "defense options", "optimiser_deviations": deviations}


def run_training(
    spec: TrainSpec,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train ``spec.federation.rounds`` rounds, append the utility row to ``results.jsonl``, return it.

    With ``spec.tune_lr`` the lr is first chosen by :func:`tune_learning_rate`; the row's ``config``
    stays the untuned spec (so its ``run_id`` is known before running) and records the grid, while
    ``optimiser.lr`` and ``lr_tuning.chosen_lr`` give the lr the reported model trained with.
    """
    settings = spec.federation
    settings.validate()
    if settings.rounds < 1:
        raise BenchError(f"--rounds must be >= 1, got {settings.rounds}")
    untuned = create_defense(spec.defense)
    output_dir = writable_dir(spec.output_dir)
    tuning = None
    trained_spec = spec
    if spec.tune_lr:
        tuning = tune_learning_rate(spec, spec.tune_lr, log=log)
        trained_spec = replace(
            spec, defense=Choice(spec.defense.name, {**spec.defense.args, "lr": tuning["chosen_lr"]})
        )
    parts = prepare_components(
        trained_spec.defense, spec.dataset, spec.model, spec.data_root, spec.device, settings.local_epochs
    )
    defense, data, device, model = parts.defense, parts.data, parts.device, parts.model
    federation = Federation(data, settings, spec.seed, device)
    config = _config(spec, untuned, parts.dataset, model, parts.model_component)
    began = time.perf_counter()
    state = train(defense, federation, spec.seed, settings.rounds, on_round=on_round)
    if spec.state_cache is not None and tuning is None:
        keep(state, config, spec.state_cache)
    history = state.history
    evaluated = [h for h in history if "accuracy" in h]
    row = train_row(
        run_id=run_id(config),
        defense=spec.defense.name,
        dataset=spec.dataset.name,
        model=model.name,
        seed=spec.seed,
        rounds=settings.rounds,
        clients=settings.clients,
        final_accuracy=evaluated[-1]["accuracy"],
        evaluated=defense.evaluated_model(),
        accuracy_per_round={h["round"]: h["accuracy"] for h in evaluated},
        seconds_per_round=float(np.mean([h["seconds"] for h in history])),
        modelled_seconds_per_round=float(np.mean([h["seconds"] + (h.get("modelled_seconds") or 0.0) for h in history])),
        bytes_uploaded_per_client_per_round=float(np.mean([h.get("bytes_uploaded", 0.0) for h in history])),
        **optimiser_record(defense, spec.extra.get("optimiser")),
        lr_tuning=tuning,
        history=history,
        total_seconds=time.perf_counter() - began,
        config=config,
        **provenance.stamp(str(device)),
    )
    append_rows(output_dir / RESULTS_FILE, [row])
    return row
