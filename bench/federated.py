"""Federated training under any defense: the utility side of the benchmark.

The loop is the protocol itself: every participating client runs ``defense.client_update`` on its
own data, the server calls ``defense.aggregate``, and accuracy is the mean over clients of each
client's local-test accuracy with the model it would use (``defense.predict``), as in the HyperFL
paper. Per round it records accuracy, wall time and bytes uploaded per client.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.data.base import ImageDataset
from bench.data.partition import ClientSplit, split_clients
from bench.defense import ClientState, Defense, ServerState
from bench.errors import BenchError
from bench.seeding import generator, seed_everything
from bench.threat import LocalData


@dataclass(frozen=True)
class FLSettings:
    """How data are spread over clients and how a round runs (the public protocol)."""

    clients: int = 20
    partition: str = "dominant"
    train_per_client: int | None = None
    test_per_client: int | None = None
    batch_size: int = 50
    local_epochs: int = 1
    rounds: int = 0
    eval_every: int = 1

    def validate(self) -> None:
        for name in ("clients", "batch_size", "local_epochs", "eval_every"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.rounds < 0:
            raise BenchError(f"--rounds must be >= 0, got {self.rounds}")


class Federation:
    """The data set split over clients, normalised and on the device."""

    def __init__(self, data: ImageDataset, settings: FLSettings, seed: int, device: torch.device) -> None:
        self.data = data
        self.settings = settings
        self.splits: list[ClientSplit] = split_clients(
            settings.partition,
            data.train_y,
            data.test_y,
            data.num_classes,
            settings.clients,
            generator(seed, "partition"),
            settings.train_per_client,
            settings.test_per_client,
        )
        self.train_x = data.normalise(data.train_x).to(device)
        self.train_y = data.train_y.to(device)
        self.test_x = data.normalise(data.test_x).to(device)
        self.test_y = data.test_y.to(device)

    def local_train(self, client: int, batch_size: int | None = None) -> LocalData:
        idx = self.splits[client].train.to(self.train_x.device)
        return LocalData(self.train_x[idx], self.train_y[idx], batch_size or self.settings.batch_size)

    def local_test(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.splits[client].test.to(self.test_x.device)
        return self.test_x[idx], self.test_y[idx]

    def validation_split(self, fraction: float, seed: int) -> Federation:
        """The same clients with a validation split carved from each one's *training* examples: a share
        ``fraction`` of them (drawn per client with the seed) becomes its local "test" set, the rest its
        training set. The test split is not touched, so choices made on it (a learning rate) never see
        the data the reported accuracy is measured on."""
        if not 0 < fraction < 1:
            raise BenchError(f"the validation fraction must be in (0, 1), got {fraction}")
        split = copy.copy(self)
        split.test_x, split.test_y = self.train_x, self.train_y
        split.splits = []
        for c, own in enumerate(self.splits):
            held = round(fraction * len(own.train))
            if held < 1 or held >= len(own.train):
                raise BenchError(
                    f"client {c} has {len(own.train)} training examples: too few to hold out a "
                    f"validation share of {fraction:g} and still train (use more --train-per-client)"
                )
            order = own.train[torch.randperm(len(own.train), generator=generator(seed, "validation", c))]
            split.splits.append(ClientSplit(train=order[held:], test=order[:held]))
        return split


@dataclass
class TrainingState:
    server: ServerState
    clients: list[ClientState]
    rounds_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def start(defense: Defense, federation: Federation, *seed_parts: object) -> TrainingState:
    """Initial server and client states, drawn from torch's RNG seeded with ``seed_parts``."""
    seed_everything(*seed_parts)
    server = defense.init_server()
    clients = [defense.init_client(c) for c in range(federation.settings.clients)]
    return TrainingState(server, clients)


@torch.no_grad()
def evaluate(defense: Defense, federation: Federation, state: TrainingState, chunk: int = 512) -> list[float]:
    """Each client's local-test accuracy with the model it would use."""
    accuracies = []
    for c, client in enumerate(state.clients):
        x, y = federation.local_test(c)
        correct = 0
        for s in range(0, len(y), chunk):
            correct += int(
                (defense.predict(state.server, client, x[s : s + chunk]).argmax(-1) == y[s : s + chunk]).sum()
            )
        accuracies.append(correct / max(1, len(y)))
    return accuracies


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mean_metrics(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The round's client metrics in one record: numbers averaged over the clients that report them,
    flags true when any client's is, and other values (a DP model's description, a backend's name,
    ``None`` for "not measured") kept when every client reports the same, else listed once each."""
    out: dict[str, Any] = {}
    for k in sorted({k for m in metrics for k in m}):
        values = [m[k] for m in metrics if k in m]
        numbers = [v for v in values if _is_number(v)]
        if numbers and len(numbers) == len([v for v in values if v is not None]):
            out[k] = float(np.mean(numbers))
        elif all(isinstance(v, bool) for v in values):
            out[k] = any(values)
        elif all(isinstance(v, (str, bool)) or v is None for v in values):
            distinct = list(dict.fromkeys(values))
            out[k] = distinct[0] if len(distinct) == 1 else distinct
    return out


def train(
    defense: Defense,
    federation: Federation,
    seed: int,
    rounds: int,
    state: TrainingState | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingState:
    """Run ``rounds`` federated rounds (all clients participate), evaluating every ``eval_every``."""
    state = state or start(defense, federation, seed, "init")
    settings = federation.settings
    for i in range(rounds):
        r = state.rounds_done + 1
        began = time.perf_counter()
        uploads = []
        for c, client in enumerate(state.clients):
            data = federation.local_train(c)
            uploads.append(defense.client_update(state.server, client, data, generator(seed, "round", r, "client", c)))
        state.server = defense.aggregate(state.server, uploads)
        seconds = time.perf_counter() - began
        state.rounds_done = r
        record: dict[str, Any] = {
            "round": r,
            "seconds": seconds,
            **_mean_metrics([u.metrics for u in uploads]),
            **defense.server_metrics(),
        }
        if r % settings.eval_every == 0 or i == rounds - 1:
            began = time.perf_counter()
            for c, client in enumerate(state.clients):  # outside the protocol: before each client is scored
                defense.personalise(
                    state.server, client, federation.local_train(c), generator(seed, "round", r, "personalise", c)
                )
            if type(defense).personalise is not Defense.personalise:
                record["personalise_seconds"] = time.perf_counter() - began
            accuracies = evaluate(defense, federation, state)
            record["accuracy"] = float(np.mean(accuracies))
        state.history.append(record)
        if on_round is not None:
            on_round(record)
    return state
