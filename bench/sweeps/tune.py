"""Tuning as cells: every grid point × tuning seed is one attack cell, run (and resumed) by the sweep
runner; the winners go to a tuning file (see :mod:`bench.tuning`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.runs.attack import RunSpec, resolved_config, run_id
from bench.results import RESULTS_FILE, read_rows
from bench.components import Choice
from bench.sweeps.layout import cell_dir, is_done
from bench.sweeps.plan import Cell, choice_text
from bench.tuning import Entry, check_tuning_seeds, choose, entry_key, grid_points


@dataclass(frozen=True)
class TuneJob:
    """One defense × knowledge × attack to tune: its base run (seed and targets are the tuning ones) and grid."""

    base: RunSpec
    grid: Mapping[str, Sequence[Any]]

    def points(self) -> list[dict[str, Any]]:
        return grid_points(self.grid)

    def spec(self, point: Mapping[str, Any], seed: int) -> RunSpec:
        attack = replace(self.base.attack, args={**self.base.attack.args, **point})
        return replace(self.base, attack=attack, seed=seed, output_dir=Path("."), resume=True, tuning=None)

    def label(self) -> str:
        knowledge = f" [{self.base.knowledge}]" if self.base.knowledge else ""
        return f"tune {choice_text(self.base.defense)}{knowledge} × {self.base.attack.name}"


def tuning_cells(jobs: Sequence[TuneJob], seeds: Sequence[int]) -> list[Cell]:
    """Every job's grid point × seed as an attack cell (ids: the runs' own ids, so resuming is free)."""
    check_tuning_seeds(seeds)
    cells: dict[str, Cell] = {}
    for job in jobs:
        for point in job.points():
            for seed in seeds:
                spec = job.spec(point, seed)
                try:
                    config = resolved_config(spec)
                except BenchError as exc:
                    raise BenchError(f"{job.label()}: {exc}") from None
                text = ", ".join(f"{k}={v}" for k, v in point.items())
                cell = Cell("attack", run_id(config), f"{job.label()}({text}) · seed {seed}", spec)
                cells.setdefault(cell.id, cell)
    return list(cells.values())


def _rows(root: Path, spec: RunSpec) -> list[dict[str, Any]]:
    cid = run_id(resolved_config(spec))
    if not is_done(root, cid):
        return []
    return [r for r in read_rows(cell_dir(root, cid) / RESULTS_FILE)[0] if r.get("kind") == "attack"]


def winners(jobs: Sequence[TuneJob], seeds: Sequence[int], root: Path) -> list[Entry]:
    """Per job, the grid point with the highest median PSNR over every tuning seed's targets."""
    entries = []
    for job in jobs:
        points = job.points()
        results = [(point, [r for seed in seeds for r in _rows(root, job.spec(point, seed))]) for point in points]
        if not any(rows for _, rows in results):
            continue
        best, scores = choose(results)
        configs = [resolved_config(job.spec(point, seeds[0]))["attack"] for point in points]
        typed = [{k: c[k] for k in point} for point, c in zip(points, configs)]  # values as the attack reads them
        for score, point in zip(scores, typed):
            score["point"] = point
        grid = {k: list(dict.fromkeys(p[k] for p in typed)) for k in job.grid}
        chosen = {k: configs[best][k] for k in {**job.base.attack.args, **points[best]} if k in configs[best]}
        config = resolved_config(job.spec(points[best], seeds[0]))
        entries.append(Entry(entry_key(config), chosen, grid, list(seeds), job.base.num_targets, scores))
    return entries


def jobs_of_sweep(
    cells: Sequence[Cell],
    grids: Sequence[Mapping[str, Sequence[Any]]],
    attacks: Sequence[Choice],
    num_targets: int,
    attack_round: int,
) -> list[TuneJob]:
    """One job per distinct defense × knowledge × attack × data set × model of a sweep's attack cells whose
    attack entry has a grid, at the tuning round, with the tuning number of targets."""
    grid_of = {choice_text(a) + repr(sorted(a.args.items())): g for a, g in zip(attacks, grids)}
    jobs: dict[str, TuneJob] = {}
    for cell in cells:
        if cell.kind != "attack" or not isinstance(cell.spec, RunSpec):
            continue
        spec = cell.spec
        grid = grid_of.get(choice_text(spec.attack) + repr(sorted(spec.attack.args.items())))
        if not grid:
            continue
        base = replace(spec, num_targets=num_targets, attack_round=attack_round, tuning=None)
        key = repr(entry_key(resolved_config(base))) + repr(sorted(base.attack.args.items()))
        jobs.setdefault(key, TuneJob(base, grid))
    return list(jobs.values())
