"""Federated training under any defense: the utility side of the benchmark.

The loop is the protocol itself: every participating client runs ``defense.client_update`` on its
own data, the server calls ``defense.aggregate``, and accuracy is the mean over clients of each
client's local-test accuracy with the model it would use (``defense.predict``), as in the HyperFL
paper. Per round it records accuracy, wall time and bytes uploaded per client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.defense import ClientState, Defense, ServerState
from bench.seeding import generator, seed_everything


from bench.federation import Federation


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
