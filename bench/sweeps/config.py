"""Sweep files (TOML, or YAML with pyyaml): a strict schema with one-line errors naming the bad key.

```toml
[sweep]                      # where and how (all optional)
output_dir = "results/sweeps/default"   # default: results/sweeps/<file name without extension>
device = "cpu"               # auto | cpu | cuda | cuda:N
data_root = "/data"          # for torchvision data sets
lpips_weights = "alexnet-owt-7be5be79.pth"
tuning = "results/tuning.json"  # attack settings from `bench tune` (per defense × knowledge × attack)

[grid]                       # axes of the attack runs; a scalar is a one-value axis
datasets = ["photos"]        # names, or {name = "...", args = {...}} tables
models = ["cnn"]             # omit: each defense's own default model
seeds = [0, 1]
num_targets = 2
trained_num_targets = 1      # targets of the cells with attack_round > 0 (default: num_targets)
batch_size = 1               # FedSGD rounds at these batch sizes, unless `rounds` lists the rounds
attack_round = 0
knowledge = "default"        # attacker knowledge levels: names, "default" (each defense's own) or "all"
optimiser = "hyperfl-official"  # the clients' SGD for every defense, in attacks and training (not an axis):
                             # the official HyperFL settings (default) or "defaults" (each defense's own)
rounds = [                   # the attacked rounds (bench.round), instead of batch_size: kind, batch_size,
  { kind = "fedsgd", batch_size = 1 },           # local_examples, local_epochs (default: [federation]'s),
  { kind = "local", batch_size = 4, local_examples = 16, attack_round = [0], attacks = ["analytic"] },
]                            # head_epochs; optional per round: name, attack_round, attacks, num_targets

[federation]                 # the FL setting of the attacked clients (bench run's federation flags)
clients = 4

[train]                      # utility runs: one per defense × data set × model × train seed
rounds = 10                  # omit the table for bench train's defaults; enabled = false skips them
seeds = [0]                  # default: [grid] seeds
clients = 20                 # ... and the other federation keys

[[defenses]]                 # each: name, and optional args (the component's declared options)
name = "dp"
args = { noise_multiplier = 0.5 }
knowledge = ["adaptive", "unaware"]   # overrides the grid's knowledge for this entry
attacks = ["ig"]             # only these [[attacks]] against this entry (default: all)
rounds = ["fedsgd-b1"]       # only these [grid] rounds, by name (default: all; name: kind-bB[-nN] unless named)

[[attacks]]
name = "ig"
tune = { tv = [1e-4, 1e-2] }  # `bench tune --sweep FILE`: the grid tried on tuning seeds

[tune]                       # `bench tune --sweep FILE` (all optional)
seeds = [1000000, 1000001]   # tuning seeds: >= 1000000, never reported
num_targets = 8
attack_round = 0
output_dir = "results/sweeps/default-tuning"
```

Relative paths are taken from the current directory, as on the command line.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.partition import PARTITIONS
from bench.errors import BenchError, choices_text
from bench.federation import FLSettings
from bench.protocols import COMPARISON_OPTIMISER, OPTIMISERS
from bench.round import ROUND_KINDS, Round
from bench.components import DEFAULT_DATASET, Choice
from bench.runs.train import DEFAULT_TRAIN_ROUNDS  # bench train's default
from bench.sweeps.reader import _parse, _Reader, _show

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

SECTIONS = ("sweep", "grid", "federation", "train", "tune", "defenses", "attacks")
SWEEP_KEYS = ("output_dir", "device", "data_root", "lpips_weights", "tuning")
TUNE_KEYS = ("seeds", "num_targets", "attack_round", "output_dir")
GRID_KEYS = (
    "datasets",
    "models",
    "seeds",
    "num_targets",
    "trained_num_targets",
    "batch_size",
    "rounds",
    "attack_round",
    "knowledge",
    "optimiser",
)
ROUND_KEYS = (
    "name",
    "kind",
    "batch_size",
    "local_examples",
    "local_epochs",
    "head_epochs",
    "attack_round",
    "attacks",
    "num_targets",
)
FEDERATION_KEYS = ("clients", "partition", "train_per_client", "test_per_client", "batch_size", "local_epochs")
TRAIN_KEYS = ("enabled", "rounds", "eval_every", "seeds") + FEDERATION_KEYS
COMPONENT_KEYS = ("name", "args")
DEFENSE_KEYS = COMPONENT_KEYS + ("knowledge", "attacks", "rounds")
ATTACK_KEYS = COMPONENT_KEYS + ("tune",)
#: Knowledge-axis words besides a level's name: each defense's own default level, or every level it declares.
DEFAULT_KNOWLEDGE, ALL_KNOWLEDGE = "default", "all"


@dataclass(frozen=True)
class RoundAxis:
    """One attacked round of the grid, with the training rounds, attacks and target counts it is run at
    (``None``: the grid's)."""

    round: Round
    name: str = ""  # how [[defenses]] entries name it (``rounds = [...]``); default: its kind, batch and examples
    attack_rounds: tuple[int, ...] | None = None
    attacks: tuple[str, ...] | None = None
    num_targets: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TrainGrid:
    """The utility runs: federation settings (with rounds) and the seeds to train with."""

    federation: FLSettings
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class TuneGrid:
    """``bench tune --sweep``: per attack entry its settings grid, on tuning seeds (see :mod:`bench.tuning`)."""

    seeds: tuple[int, ...]
    num_targets: int
    attack_round: int
    output_dir: Path
    grids: tuple[Mapping[str, tuple[Any, ...]], ...]  # per [[attacks]] entry (empty: not tuned)


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep file: the grid's axes and where results go."""

    source: Path
    output_dir: Path
    device: str
    data_root: Path | None
    lpips_weights: Path | None
    defenses: tuple[Choice, ...]
    attacks: tuple[Choice, ...]
    #: per defense entry: the knowledge levels to attack it at (names, "default" or "all")
    knowledge: tuple[tuple[str, ...], ...]
    datasets: tuple[Choice, ...]
    models: tuple[Choice | None, ...]
    seeds: tuple[int, ...]
    num_targets: tuple[int, ...]
    trained_num_targets: tuple[int, ...]  # targets of cells attacking a trained round (attack_round > 0)
    rounds: tuple[RoundAxis, ...]
    attack_rounds: tuple[int, ...]
    federation: FLSettings
    train: TrainGrid | None
    raw: Mapping[str, Any]
    #: The optimiser rule every defense's clients use, in attack and training cells alike, so a defense's
    #: attack and training rows describe the same protocol (``bench.protocols.OPTIMISERS``).
    optimiser: str = COMPARISON_OPTIMISER
    #: per defense entry: the names of the [[attacks]] to run against it (None: all of them)
    defense_attacks: tuple[tuple[str, ...] | None, ...] = ()
    #: per defense entry: the names of the [grid] rounds to attack it in (None: all of them)
    defense_rounds: tuple[tuple[str, ...] | None, ...] = ()
    tuning: Path | None = None  # the tuning file whose settings the attack cells use
    tune: TuneGrid | None = None


def _knowledge(source: Path, value: Any, grid: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Per [[defenses]] entry, its ``knowledge`` list, else the grid's."""
    entries = value if isinstance(value, list) else [value]
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Mapping) and "knowledge" in entry:
            out.append(_Reader(source, f"defenses[{i}]", entry, DEFENSE_KEYS).texts("knowledge", grid))
        else:
            out.append(grid)
    return tuple(out)


def _defense_attacks(source: Path, value: Any, attacks: tuple[Choice, ...]) -> tuple[tuple[str, ...] | None, ...]:
    """Per [[defenses]] entry, its ``attacks`` list (names of [[attacks]] entries), else None (every attack)."""
    entries = value if isinstance(value, list) else [value]
    names = {a.name for a in attacks}
    out: list[tuple[str, ...] | None] = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, Mapping) and "attacks" in entry):
            out.append(None)
            continue
        reader = _Reader(source, f"defenses[{i}]", entry, DEFENSE_KEYS)
        wanted = entry["attacks"]
        wanted = wanted if isinstance(wanted, list) else [wanted]
        bad = [w for w in wanted if not isinstance(w, str) or w not in names]
        if bad:
            reader.fail(
                f"attacks lists {bad[0]!r}, which is not an [[attacks]] entry; valid: {choices_text(sorted(names))}"
            )
        out.append(tuple(wanted))
    return tuple(out)


def _choices(source: Path, kind: str, key: str, value: Any, required: bool) -> tuple[Choice, ...]:
    """A list of components: names, or tables {name, args} (defenses also take ``knowledge``)."""
    if value is None:
        if required:
            raise BenchError(f"{source}: the grid is empty: no {key} listed (add [[{key}]] tables with a name)")
        return ()
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise BenchError(f"{source}: the grid is empty: {key} is an empty list")
    out = []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        allowed = {"defense": DEFENSE_KEYS, "attack": ATTACK_KEYS}.get(kind, COMPONENT_KEYS)
        table = _Reader(source, where, entry, allowed)
        name = table.text("name", None)
        if not name:
            table.fail(f"needs a {kind} name")
        args = entry.get("args", {})
        if not isinstance(args, Mapping):
            table.fail(f"args must be a table of option = value, got {_show(args)}")
        for option, v in args.items():
            if not isinstance(v, (str, int, float, bool)):
                table.fail(f"args.{option} must be a string, number or boolean, got {_show(v)}")
        out.append(Choice(name, dict(args)))
    return tuple(out)


def _tune_grids(source: Path, value: Any) -> tuple[Mapping[str, tuple[Any, ...]], ...]:
    """Per [[attacks]] entry its ``tune`` table: option = [values] (a scalar is one value)."""
    entries = value if isinstance(value, list) else [value]
    out = []
    for i, entry in enumerate(entries):
        grid = entry.get("tune", {}) if isinstance(entry, Mapping) else {}
        if not isinstance(grid, Mapping):
            raise BenchError(f"{source}: attacks[{i}]: tune must be a table of option = [values], got {_show(grid)}")
        parsed = {}
        for option, values in grid.items():
            values = values if isinstance(values, list) else [values]
            if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
                raise BenchError(f"{source}: attacks[{i}]: tune.{option} must be a non-empty list of values")
            parsed[str(option)] = tuple(values)
        out.append(parsed)
    return tuple(out)


def _rounds(source: Path, grid: _Reader, federation: FLSettings, attacks: tuple[Choice, ...]) -> tuple[RoundAxis, ...]:
    """The grid's attacked rounds: its ``rounds`` tables, or FedSGD at each of its ``batch_size`` values."""
    if "rounds" not in grid.table:
        return tuple(RoundAxis(Round("fedsgd", b)) for b in grid.integers("batch_size", (1,), 1))
    if "batch_size" in grid.table:
        grid.fail("give batch_size inside each of rounds, not beside it")
    entries = grid.table["rounds"]
    if not isinstance(entries, list) or not entries:
        grid.fail("rounds must be a non-empty list of tables {kind, batch_size, ...}")
    names = {a.name for a in attacks}
    out = []
    for i, entry in enumerate(entries):
        table = _Reader(source, f"[grid] rounds[{i}]", entry, ROUND_KEYS)
        kind = table.text("kind", "fedsgd")
        if kind not in ROUND_KINDS:
            table.fail(f"kind must be {choices_text(ROUND_KINDS)}, got {kind!r}")
        try:
            round_ = Round(
                kind,
                table.integer("batch_size", 1, 1),
                table.optional_integer("local_examples", 1),
                table.integer("local_epochs", federation.local_epochs, 1) if kind == "local" else 1,
                table.optional_integer("head_epochs", 0),
            )
        except BenchError as exc:
            table.fail(str(exc))
        only = table.texts("attacks", ()) if "attacks" in table.table else None
        bad = [a for a in only or () if a not in names]
        if bad:
            table.fail(
                f"attacks lists {bad[0]!r}, which is not an [[attacks]] entry; valid: {choices_text(sorted(names))}"
            )
        default_name = f"{kind}-b{round_.batch_size}" + (f"-n{round_.examples}" if kind == "local" else "")
        out.append(
            RoundAxis(
                round_,
                table.text("name", default_name) or default_name,
                table.integers("attack_round", (0,), 0) if "attack_round" in table.table else None,
                only,
                table.integers("num_targets", (1,), 1) if "num_targets" in table.table else None,
            )
        )
    if len({(r.round, r.attack_rounds, r.attacks, r.num_targets) for r in out}) != len(out):
        grid.fail("rounds lists the same round twice")
    if len({r.name for r in out}) != len(out):
        grid.fail("two rounds have the same name; give them distinct `name`s")
    return tuple(out)


def _defense_rounds(source: Path, value: Any, rounds: tuple[RoundAxis, ...]) -> tuple[tuple[str, ...] | None, ...]:
    """Per [[defenses]] entry, its ``rounds`` list (names of [grid] rounds), else None (every round)."""
    entries = value if isinstance(value, list) else [value]
    names = [r.name for r in rounds]
    out: list[tuple[str, ...] | None] = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, Mapping) and "rounds" in entry):
            out.append(None)
            continue
        reader = _Reader(source, f"defenses[{i}]", entry, DEFENSE_KEYS)
        wanted = reader.texts("rounds", ())
        bad = [w for w in wanted if w not in names]
        if bad:
            reader.fail(f"rounds lists {bad[0]!r}, which is not a [grid] round; valid: {choices_text(names)}")
        out.append(wanted)
    return tuple(out)


def _federation(table: _Reader, rounds: int = 0, eval_every: int = 1) -> FLSettings:
    defaults = FLSettings()
    partition = table.text("partition", defaults.partition)
    if partition not in PARTITIONS:
        table.fail(f"partition must be {choices_text(PARTITIONS)}, got {partition!r}")
    return FLSettings(
        clients=table.integer("clients", defaults.clients, 1),
        partition=partition,
        train_per_client=table.optional_integer("train_per_client", 1),
        test_per_client=table.optional_integer("test_per_client", 1),
        batch_size=table.integer("batch_size", defaults.batch_size, 1),
        local_epochs=table.integer("local_epochs", defaults.local_epochs, 1),
        rounds=rounds,
        eval_every=eval_every,
    )


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def load_config(path: Path) -> SweepConfig:
    """Read and validate a sweep file (names and options of components are checked by ``plan``)."""
    path = Path(path)
    data = _parse(path)
    _Reader(path, "top level", data, SECTIONS)
    sweep = _Reader(path, "[sweep]", data.get("sweep", {}), SWEEP_KEYS)
    grid = _Reader(path, "[grid]", data.get("grid", {}), GRID_KEYS)
    attack_fl = _Reader(path, "[federation]", data.get("federation", {}), FEDERATION_KEYS)
    seeds = grid.integers("seeds", (0,), 0)
    train_grid = None
    if data.get("train", {}) is not False:
        train = _Reader(path, "[train]", data.get("train", {}), TRAIN_KEYS)
        if train.flag("enabled", True):
            rounds = train.integer("rounds", DEFAULT_TRAIN_ROUNDS, 1)
            train_grid = TrainGrid(
                _federation(train, rounds, train.integer("eval_every", 1, 1)), train.integers("seeds", seeds, 0)
            )
    models = _choices(path, "model", "models", grid.table.get("models"), required=False)
    defenses = _choices(path, "defense", "defenses", data.get("defenses"), required=True)
    attacks = _choices(path, "attack", "attacks", data.get("attacks"), required=True)
    output_dir = Path(sweep.text("output_dir", str(Path("results") / "sweeps" / path.stem)))
    tune = None
    if "tune" in data:
        from bench.tuning import DEFAULT_TUNING_SEEDS, check_tuning_seeds

        table = _Reader(path, "[tune]", data["tune"], TUNE_KEYS)
        try:
            tune_seeds = check_tuning_seeds(table.integers("seeds", DEFAULT_TUNING_SEEDS, 0))
        except BenchError as exc:
            raise BenchError(f"{path}: [tune]: {exc}") from None
        tune = TuneGrid(
            tune_seeds,
            table.integer("num_targets", 8, 1),
            table.integer("attack_round", 0, 0),
            Path(table.text("output_dir", str(output_dir.parent / f"{output_dir.name}-tuning"))),
            _tune_grids(path, data.get("attacks")),
        )
    optimiser = grid.text("optimiser", COMPARISON_OPTIMISER)
    if optimiser not in OPTIMISERS:
        grid.fail(f"optimiser must be {choices_text(OPTIMISERS)}, got {optimiser!r}")
    return SweepConfig(
        source=path,
        output_dir=output_dir,
        device=sweep.text("device", "auto"),
        data_root=_path(sweep.text("data_root", None)),
        lpips_weights=_path(sweep.text("lpips_weights", None)),
        defenses=defenses,
        knowledge=_knowledge(path, data.get("defenses"), grid.texts("knowledge", (DEFAULT_KNOWLEDGE,))),
        defense_attacks=_defense_attacks(path, data.get("defenses"), attacks),
        attacks=attacks,
        datasets=_choices(path, "dataset", "datasets", grid.table.get("datasets", [DEFAULT_DATASET]), required=True),
        models=models or (None,),
        seeds=seeds,
        num_targets=(targets := grid.integers("num_targets", (1,), 1)),
        trained_num_targets=grid.integers("trained_num_targets", targets, 1),
        rounds=(round_axes := _rounds(path, grid, fed := _federation(attack_fl), attacks)),
        defense_rounds=_defense_rounds(path, data.get("defenses"), round_axes),
        attack_rounds=grid.integers("attack_round", (0,), 0),
        federation=fed,
        train=train_grid,
        raw=data,
        tuning=_path(sweep.text("tuning", None)),
        tune=tune,
        optimiser=optimiser,
    )
