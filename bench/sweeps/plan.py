"""Expanding a sweep file into cells, each with a stable id from its resolved configuration.

A cell is one ``bench run`` (an attack on ``num_targets`` targets) or one ``bench train`` (a defense's
utility). Its id is the ``run_id`` its rows carry: a hash of the configuration with every option
resolved (defaults filled in), so ``args = {}`` and ``args = {lr = 0.02}`` are the same cell when 0.02
is the default, and a cell keeps its id when the file is reordered or other cells are added.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

from bench import registry
from bench.defense import Defense
from bench.errors import BenchError
from bench.runs.attack import RunSpec, resolved_config, run_id
from bench.protocols import equal_optimiser
from bench.components import Choice
from bench.sweeps.config import ALL_KNOWLEDGE, DEFAULT_KNOWLEDGE, SweepConfig
from bench.sweeps.layout import STATES_DIR
from bench.tuning import TuningFile, tuned
from bench.runs.train import TrainSpec
from bench.runs.train import resolved_config as resolved_train_config


@dataclass(frozen=True)
class Cell:
    """One unit of work of a sweep (picklable: it travels to worker processes and Ray tasks)."""

    kind: Literal["attack", "train"]
    id: str
    label: str
    spec: RunSpec | TrainSpec

    @property
    def expected_rows(self) -> int:
        return self.spec.num_targets if isinstance(self.spec, RunSpec) else 1

    def in_dir(self, directory: Path) -> RunSpec | TrainSpec:
        """The cell's spec writing into ``directory`` (attack cells resume targets already there)."""
        if isinstance(self.spec, RunSpec):
            return replace(self.spec, output_dir=Path(directory), resume=True)
        return replace(self.spec, output_dir=Path(directory))


def choice_text(choice: Choice | None) -> str:
    """``name`` or ``name(k=v, ...)`` with the options the sweep file gave."""
    if choice is None:
        return "default model"
    args = ", ".join(f"{k}={v}" for k, v in choice.args.items())
    return f"{choice.name}({args})" if args else choice.name


def _check_components(cfg: SweepConfig) -> None:
    """Every named component exists and accepts its options (errors say which entry of the file)."""
    for key, kind, entries in (
        ("defenses", "defense", cfg.defenses),
        ("attacks", "attack", cfg.attacks),
        ("datasets", "dataset", cfg.datasets),
        ("models", "model", cfg.models),
    ):
        for i, choice in enumerate(entries):
            if choice is None:
                continue
            try:
                registry.create(kind, choice.name, choice.args)
            except BenchError as exc:
                raise BenchError(f"{cfg.source}: {key}[{i}]: {exc}") from None
    if cfg.data_root is not None and not cfg.data_root.is_dir():
        raise BenchError(f"{cfg.source}: [sweep] data_root {str(cfg.data_root)!r} is not a directory")


def _axes_label(cfg: SweepConfig, dataset: Choice, model: Choice | None, extra: list[str]) -> list[str]:
    """Only the axes with more than one value are worth a word in a cell's label."""
    parts = []
    if len(cfg.datasets) > 1:
        parts.append(choice_text(dataset))
    if len(cfg.models) > 1:
        parts.append(choice_text(model))
    return parts + extra


def _levels(cfg: SweepConfig, defense: Choice, wanted: tuple[str, ...], notes: list[str]) -> list[str]:
    """The knowledge levels to attack ``defense`` at: those of ``wanted`` it declares ("default": its own
    default, "all": every level it declares); a named level it lacks is skipped with a note."""
    cls = cast(type[Defense], type(registry.create("defense", defense.name, defense.args)))
    declared = tuple(getattr(cls, "knowledge_levels", ()))
    out: list[str] = []
    for level in wanted:
        if level == DEFAULT_KNOWLEDGE:
            out.append(cls.default_knowledge)
        elif level == ALL_KNOWLEDGE:
            out.extend(declared)
        elif level in declared:
            out.append(level)
        else:
            notes.append(
                f"{choice_text(defense)} has no knowledge level {level!r} (it has {', '.join(declared)}): skipped"
            )
    return list(dict.fromkeys(out))


def plan(cfg: SweepConfig, use_tuning: bool = True) -> tuple[list[Cell], list[str]]:
    """All cells of the grid in a stable order (and notes about entries that resolve to the same cell).

    With ``use_tuning`` and a ``[sweep] tuning`` file, attack cells take the tuned settings of their
    defense × knowledge × attack × data set × model (and record the tuning).
    """
    _check_components(cfg)
    cells: dict[str, Cell] = {}
    notes: list[str] = []
    tuning = None
    if use_tuning and cfg.tuning is not None:
        if not cfg.tuning.is_file():
            raise BenchError(
                f"{cfg.source}: [sweep] tuning file {str(cfg.tuning)!r} does not exist: run "
                f"`bench tune --sweep {cfg.source}` first (or remove the key)"
            )
        tuning = TuningFile.read(cfg.tuning)

    def add(kind: Literal["attack", "train"], spec: RunSpec | TrainSpec, label: str) -> None:
        if tuning is not None and isinstance(spec, RunSpec):
            tuned_spec: RunSpec = tuned(spec, tuning, resolved_config)
            if tuned_spec.tuning:
                label += " · tuned"
            spec = tuned_spec
        config = resolved_config(spec) if isinstance(spec, RunSpec) else resolved_train_config(spec)
        cell = Cell(kind, run_id(config), label, spec)
        if cell.id in cells:
            notes.append(f"{label!r} resolves to the same configuration as {cells[cell.id].label!r}; run once")
        else:
            cells[cell.id] = cell

    common: dict[str, Any] = {"device": cfg.device, "data_root": cfg.data_root, "output_dir": Path(".")}
    states: dict[str, Any] = {"state_cache": cfg.output_dir.resolve() / STATES_DIR}
    chosen = cfg.defense_attacks or (None,) * len(cfg.defenses)
    in_rounds = cfg.defense_rounds or (None,) * len(cfg.defenses)
    for dataset, model, (named, knowledge, only, its_rounds) in itertools.product(
        cfg.datasets, cfg.models, zip(cfg.defenses, cfg.knowledge, chosen, in_rounds)
    ):
        attacks = [a for a in cfg.attacks if only is None or a.name in only]
        defense, optimiser = equal_optimiser(named, cfg.optimiser)  # attack and training cells alike
        if cfg.train is not None:
            for seed in cfg.train.seeds:
                label = " · ".join(
                    [f"train {choice_text(named)}", *_axes_label(cfg, dataset, model, []), f"seed {seed}"]
                )
                add(
                    "train",
                    TrainSpec(
                        defense=defense,
                        federation=cfg.train.federation,
                        dataset=dataset,
                        model=model,
                        seed=seed,
                        extra=optimiser,
                        **common,
                        **states,
                    ),
                    label,
                )
        levels = _levels(cfg, named, knowledge, notes)
        many_rounds = len(cfg.rounds) > 1
        axes = [a for a in cfg.rounds if its_rounds is None or a.name in its_rounds]
        for level, axis, seed in itertools.product(levels, axes, cfg.seeds):
            kinds = getattr(registry.load("defense", named.name), "round_kinds", ("fedsgd",))
            if axis.round.kind not in kinds:
                note = f"{choice_text(named)} cannot run a {axis.round.kind!r} round: skipped"
                notes.extend([note] * (note not in notes))
                continue
            round_attacks = [a for a in attacks if axis.attacks is None or a.name in axis.attacks]
            rounds_targets = [
                (r, t)
                for r in axis.attack_rounds or cfg.attack_rounds
                for t in (axis.num_targets or (cfg.num_targets if r == 0 else cfg.trained_num_targets))
            ]
            for attack, (attack_round, targets) in itertools.product(round_attacks, rounds_targets):
                extra = (
                    [f"knowledge {level}"] * (len(levels) > 1)
                    + [axis.round.label()] * many_rounds
                    + [f"round {attack_round}"] * (len(cfg.attack_rounds) > 1 or axis.attack_rounds is not None)
                    + [f"{targets} targets"] * (len(set(cfg.num_targets + cfg.trained_num_targets)) > 1)
                    + [f"seed {seed}"]
                )
                label = " · ".join(
                    [f"{choice_text(named)} × {choice_text(attack)}", *_axes_label(cfg, dataset, model, extra)]
                )
                add(
                    "attack",
                    RunSpec(
                        defense=defense,
                        attack=attack,
                        dataset=dataset,
                        model=model,
                        round=axis.round,
                        num_targets=targets,
                        seed=seed,
                        lpips_weights=cfg.lpips_weights,
                        federation=cfg.federation,
                        attack_round=attack_round,
                        knowledge=level,
                        optimiser=optimiser,
                        **common,
                        **states,
                    ),
                    label,
                )
    return list(cells.values()), notes
