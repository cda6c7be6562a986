"""Attack settings tuned per defense, on seeds that are never reported.

A mistuned attack makes a defense look safe: the worst thing a privacy benchmark can publish. So
``bench tune`` runs an attack's settings grid (e.g. ``tv=1e-4,1e-3,1e-2,1e-1``) against one defense
at one knowledge level on **tuning seeds** (≥ :data:`TUNING_SEED_BASE`; their targets, networks and
initialisations come from streams no reporting seed uses), picks the settings with the highest
median PSNR (a chaotic optimiser's lucky target cannot decide it; ties: the mean), and writes them
to a tuning file. ``run --tuning FILE`` and a sweep's ``[sweep] tuning`` then use the winning
settings for that defense × knowledge × attack × data set × model, and every row records which
tuning it came from (``tuning``: id, file, options). Reporting seeds are below the base: tuning
never reads or writes a row of a reporting seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.results import atomic_write_bytes

#: Seeds at or above this are tuning seeds; reported runs use seeds below it.
TUNING_SEED_BASE = 1_000_000
DEFAULT_TUNING_SEEDS = (TUNING_SEED_BASE, TUNING_SEED_BASE + 1)
VERSION = 1


def check_tuning_seeds(seeds: Iterable[int]) -> tuple[int, ...]:
    seeds = tuple(seeds)
    low = [s for s in seeds if s < TUNING_SEED_BASE]
    if low:
        raise BenchError(
            f"tuning seeds must be >= {TUNING_SEED_BASE} (seeds below are reporting seeds, which tuning "
            f"never touches); got {low[0]}"
        )
    if not seeds:
        raise BenchError("tuning needs at least one seed")
    return seeds


def parse_grid(assignments: Sequence[str], flag: str = "--grid") -> dict[str, list[str]]:
    """``NAME=v1,v2,...`` (repeatable) → {name: [values as text]}; values are typed by the attack's options."""
    grid: dict[str, list[str]] = {}
    for text in assignments:
        name, sep, values = text.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise BenchError(f"{flag} {text!r} must look like NAME=V1,V2,... (e.g. tv=1e-4,1e-3,1e-2)")
        grid[name.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    if not grid:
        raise BenchError(f"tuning needs a grid: {flag} NAME=V1,V2,... (e.g. {flag} tv=1e-4,1e-3,1e-2,1e-1)")
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def entry_key(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a tuning applies to, from a run's resolved config: the defense configuration, the attacker's
    knowledge level, the attacked round, the attack's name, the data set and the model."""
    from bench.round import Round

    run = config["run"]
    return {
        "defense": dict(config["defense"]),
        "knowledge": run.get("knowledge"),
        "round": Round.from_dict(run.get("round"), run.get("batch_size") or 1).as_dict(),
        "attack": config["attack"]["name"],
        "dataset": dict(config["dataset"]),
        "model": dict(config["model"]),
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Entry:
    """The winning settings of one attack against one defense × knowledge × data set × model."""

    key: dict[str, Any]
    options: dict[str, Any]  # the attack options to use (base options + the winning point)
    grid: dict[str, list[Any]]
    seeds: list[int]
    num_targets: int
    scores: list[dict[str, Any]] = field(default_factory=list)  # per grid point: options, median/mean PSNR, n

    @property
    def id(self) -> str:
        text = _canonical(
            {
                "key": self.key,
                "options": self.options,
                "grid": self.grid,
                "seeds": self.seeds,
                "num_targets": self.num_targets,
            }
        )
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "options": self.options,
            "grid": self.grid,
            "seeds": self.seeds,
            "num_targets": self.num_targets,
            "scores": self.scores,
        }


def score_point(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median and mean PSNR of one grid point's rows; a diverged run counts at its no-information baseline."""
    values = [
        float(r["psnr"])
        if r.get("status") == "ok" and r.get("psnr") is not None
        else float(r.get("baseline_psnr") or 0.0)
        for r in rows
    ]
    if not values:
        return {"n": 0, "median_psnr": None, "mean_psnr": None}
    return {
        "n": len(values),
        "median_psnr": float(np.median(values)),
        "mean_psnr": float(np.mean(values)),
        "diverged": sum(r.get("status") != "ok" for r in rows),
    }


def choose(points: Sequence[tuple[dict[str, Any], Sequence[Mapping[str, Any]]]]) -> tuple[int, list[dict[str, Any]]]:
    """The index of the best grid point (highest median PSNR, then mean) and every point's scores."""
    scores = [{"point": point, **score_point(rows)} for point, rows in points]

    def key(s: dict[str, Any]) -> tuple[float, float]:
        return (
            -math.inf if s["median_psnr"] is None else s["median_psnr"],
            -math.inf if s["mean_psnr"] is None else s["mean_psnr"],
        )

    best = max(range(len(scores)), key=lambda i: key(scores[i]))
    return best, scores


class TuningFile:
    """The tuning file: entries by key (JSON, rewritten atomically; entries for other keys are kept)."""

    def __init__(self, path: Path, entries: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(path)
        self.entries = entries or []

    @classmethod
    def read(cls, path: Path, must_exist: bool = True) -> TuningFile:
        path = Path(path)
        if not path.exists():
            if must_exist:
                raise BenchError(f"tuning file {str(path)!r} does not exist (write it with `bench tune`)")
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot read tuning file {str(path)!r}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("entries"), list):
            raise BenchError(f"{path}: not a bench tuning file (version {VERSION})")
        return cls(path, data["entries"])

    def put(self, entry: Entry) -> None:
        key = _canonical(entry.key)
        self.entries = [e for e in self.entries if _canonical(e["key"]) != key] + [entry.as_dict()]

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": VERSION, "entries": self.entries}, indent=1, sort_keys=True, default=str)
        atomic_write_bytes(self.path, (text + "\n").encode())

    def lookup(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The entry for a run's resolved config (its key), or None."""
        key = _canonical(entry_key(config))
        return next((e for e in self.entries if _canonical(e["key"]) == key), None)


def tuned(spec: Any, tuning: TuningFile, resolve: Any) -> Any:
    """``spec`` (a RunSpec) with the tuned attack options of its entry, and the tuning recorded; unchanged
    when the file has no entry for it. ``resolve`` is ``bench.runs.attack.resolved_config`` (a parameter:
    this module stays below the experiment)."""
    entry = tuning.lookup(resolve(spec))
    if entry is None:
        return spec
    attack = replace(spec.attack, args={**spec.attack.args, **entry["options"]})
    record = {"id": entry["id"], "file": str(tuning.path), "options": entry["options"], "seeds": entry["seeds"]}
    return replace(spec, attack=attack, tuning=record)
