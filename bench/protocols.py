"""Named training protocols for utility runs (``bench train --protocol NAME``), and the equal optimiser.

("Preset" means one thing in bench: a component's named bundle of option values, ``preset=NAME``. A
training protocol is a federation and its schedule; it may apply a defense's preset of the same name.)

A protocol fixes the federation (clients, split, examples per client, batch, local epochs, rounds),
the model every defense trains (the paper's CNN, so the defense is the only difference between rows)
and, where a defense declares an option preset of the same name, that defense's own protocol
settings. Anything the user sets explicitly wins over the protocol.

A comparison trains every defense with the same client optimiser (:func:`equal_optimiser`): the official
HyperFL code's client SGD (lr 0.02 — ``cnn/options.py``; momentum 0.5 and weight decay 5e-4 —
``torch.optim.SGD`` in ``cnn/methods/fedavg.py``, ``dp_fedavg.py``, ``hyperfl.py``), with which the paper
trains every method. It is applied by role: to the options a defense declares as its client's local SGD
(``Defense.client_optimiser``: ``lr``, ``momentum``, ``weight_decay`` → option names), unless the user or
the defense's own option preset (its paper's prescription) sets them; a server's optimiser or a method's
own inner loop (pFedHN declares none) is never touched. Training rows record the effective values and
every deviation from the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from bench import registry
from bench.errors import BenchError, choices_text
from bench.federation import FLSettings
from bench.components import Choice


@dataclass(frozen=True)
class TrainingProtocol:
    """Federation settings, the model, and per-data-set sizes where the protocol fixes them."""

    name: str
    description: str
    settings: Mapping[str, Any]
    model: str = "cnn"
    per_dataset: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


TRAINING_PROTOCOLS: dict[str, TrainingProtocol] = {
    "quick": TrainingProtocol(
        "quick",
        "the paper's protocol scaled to the embedded data and 2 CPU cores (a few minutes per defense): "
        "10 clients, dominant split, 100 train / 50 test examples each, batch 50, 5 local epochs, 20 rounds",
        {
            "clients": 10,
            "partition": "dominant",
            "train_per_client": 100,
            "test_per_client": 50,
            "batch_size": 50,
            "local_epochs": 5,
            "rounds": 20,
        },
    ),
    "paper": TrainingProtocol(
        "paper",
        "the HyperFL paper's protocol: 20 clients all participating, 200 rounds, batch 50, 5 local epochs, "
        "dominant split; train/test per client 600/300 (CIFAR-10), 600/600 (Fashion-MNIST), "
        "1000/600 (EMNIST); other data sets: the most every client can get",
        {"clients": 20, "partition": "dominant", "batch_size": 50, "local_epochs": 5, "rounds": 200},
        per_dataset={
            "cifar10": {"train_per_client": 600, "test_per_client": 300},
            "fashionmnist": {"train_per_client": 600, "test_per_client": 600},
            "emnist": {"train_per_client": 1000, "test_per_client": 600},
        },
    ),
}


#: Optimiser rules for comparisons: name → the SGD settings every defense trains with ("defaults": none, each
#: defense keeps its own option defaults).
OPTIMISERS: dict[str, Mapping[str, float]] = {
    "hyperfl-official": {"lr": 0.02, "momentum": 0.5, "weight_decay": 5e-4},
    "defaults": {},
}
#: The rule of ``bench train --protocol`` and of sweeps' training cells unless they name another.
COMPARISON_OPTIMISER = "hyperfl-official"


def equal_optimiser(defense: Choice, rule: str = COMPARISON_OPTIMISER) -> tuple[Choice, dict[str, Any]]:
    """``defense`` with the rule's settings for the client-SGD roles it declares (``Defense.client_optimiser``:
    role → option) that neither the user nor its own option preset sets (where its default differs); and
    what was applied (recorded in the run's config). Options outside those roles (a server's optimiser, a
    method's own inner loop) are never touched, whatever their names."""
    if rule not in OPTIMISERS:
        raise BenchError(f"unknown optimiser rule {rule!r}; valid: {choices_text(OPTIMISERS)}")
    cls = registry.load("defense", defense.name)
    defaults = {o.name: o.default for o in getattr(cls, "options", ())}
    roles: Mapping[str, str] = getattr(cls, "client_optimiser", {})
    own_preset = getattr(cls, "presets", {}).get(defense.args.get("preset"), {})
    applied = {}
    for role, value in OPTIMISERS[rule].items():
        option = roles.get(role)
        if option is None or option not in defaults or defaults[option] == value:
            continue
        if option not in defense.args and option not in own_preset:
            applied[option] = value
    return Choice(defense.name, {**applied, **defense.args}), {"optimiser": rule, "optimiser_applied": applied}


@dataclass(frozen=True)
class Resolved:
    """What a protocol resolves to, with the user's explicit choices applied on top."""

    defense: Choice
    model: Choice | None
    federation: FLSettings
    extra: dict[str, Any]


def resolve(
    protocol: str | None, defense: Choice, dataset: Choice, model: Choice | None, explicit: Mapping[str, Any]
) -> Resolved:
    """Apply ``protocol`` (or none) under the user's explicit federation settings ``explicit``
    (FLSettings field → value; absent or ``None`` means "not given")."""
    given = {k: v for k, v in explicit.items() if v is not None}
    unknown = set(given) - {f.name for f in fields(FLSettings)}
    if unknown:
        raise BenchError(f"unknown federation settings {sorted(unknown)}")
    if protocol is None:
        return Resolved(defense, model, FLSettings(**given), {})
    if protocol not in TRAINING_PROTOCOLS:
        raise BenchError(f"unknown training protocol {protocol!r}; valid: {choices_text(TRAINING_PROTOCOLS)}")
    p = TRAINING_PROTOCOLS[protocol]
    settings = {**p.settings, **p.per_dataset.get(dataset.name, {}), **given}
    defense_presets = getattr(registry.load("defense", defense.name), "presets", {})
    applied = None
    if "preset" not in defense.args and protocol in defense_presets:
        defense = Choice(defense.name, {"preset": protocol, **defense.args})
        applied = protocol
    defense, optimiser = equal_optimiser(defense)
    extra = {"protocol": protocol, "defense_preset_applied": applied, **optimiser}
    return Resolved(defense, model or Choice(p.model), FLSettings(**settings), extra)
