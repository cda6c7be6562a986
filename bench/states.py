"""Trained federation states on disk, shared by the attack runs that attack the same training.

Attacking at round R means training R rounds of the defense's own protocol first; every attack and
knowledge level of a sweep attacks the *same* state (the one its accuracy column comes from), so it
is trained once per defense configuration × data set × model × federation × seed × rounds and kept
under the sweep's ``states/`` (a lock per state keeps two workers from training it twice). Files are
read with ``torch.load(weights_only=True)``: tensors and plain containers only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bench.defense import Defense
from bench.federation import Federation
from bench.training import TrainingState, train


def state_key(config: Mapping[str, Any], rounds: int) -> str:
    """What determines a trained state: the defense, data set and model configs, the federation (without how
    many rounds a run trains or how often it evaluates: neither changes the state of round ``rounds``), the
    seed and the rounds. An attack run's and a training run's configs give the same key for the same state."""
    run = config["run"]
    federation = {k: v for k, v in run["federation"].items() if k not in ("rounds", "eval_every")}
    what = {
        "defense": config["defense"],
        "dataset": config["dataset"],
        "model": config["model"],
        "federation": federation,
        "seed": run["seed"],
        "rounds": rounds,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save(path: Path, state: TrainingState) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(
        {
            "server": state.server,
            "clients": state.clients,
            "rounds_done": state.rounds_done,
            "history": json.dumps(state.history),
        },
        tmp,
    )
    os.replace(tmp, path)


def _load(path: Path, device: torch.device) -> TrainingState:
    data = torch.load(path, map_location=device, weights_only=True)
    return TrainingState(data["server"], data["clients"], int(data["rounds_done"]), json.loads(data["history"]))


def keep(state: TrainingState, config: Mapping[str, Any], cache: Path) -> None:
    """Keep a training run's final state for the attack runs of the same training (if none kept it yet)."""
    path = Path(cache) / f"{state_key(config, state.rounds_done)}.pt"
    with _locked(path):
        if not path.is_file():
            _save(path, state)


def trained(
    defense: Defense,
    federation: Federation,
    seed: int,
    rounds: int,
    config: Mapping[str, Any],
    cache: Path | None,
    device: torch.device,
    log: Callable[[str], None],
) -> TrainingState:
    """The federation after ``rounds`` rounds of ``defense``'s training: from ``cache`` when another run
    trained it already, else trained now (and kept there)."""
    if cache is None:
        log(f"training {rounds} round(s) before attacking")
        return train(defense, federation, seed, rounds)
    path = Path(cache) / f"{state_key(config, rounds)}.pt"
    with _locked(path):
        if path.is_file():
            log(f"trained state of round {rounds} from {path}")
            return _load(path, device)
        log(f"training {rounds} round(s) before attacking (kept in {path})")
        state = train(defense, federation, seed, rounds)
        _save(path, state)
        return state
