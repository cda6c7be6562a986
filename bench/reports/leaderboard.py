"""The leaderboard: a pure function of result rows (it never reruns an attack).

Rows are grouped into one table per *scenario* (data set, attacked batch size, attack round,
federation: numbers from different scenarios are not comparable) and, within it, one *entry* per
defense configuration, attacker knowledge level and model. Per entry and attack the cell holds the
distribution over every attacked target of every seed (:class:`bench.reports.stats.Summary` for
each registered metric: N, mean ± std, median, 95 % bootstrap interval of the mean), the success
rate under one :class:`~bench.reports.stats.SuccessRule`, and the gain over the no-information
baseline. When an attack ran under several settings against the same entry (its defaults and a
tuning, say), the cell is the strongest of them: the settings with the highest median PSNR.

* The **strongest attack** of an entry is its cell with the highest median PSNR: a defense is as
  private as its best attacker, per knowledge level.
* **Ranking, privacy at equal utility**: utility tiers first (``tolerance`` accuracy points per
  tier below the best accuracy of the table; entries without a training run after all tiers), then
  the strongest attack's *median* PSNR (lower first): a statistic one lucky target cannot flip.
* **Diverged** attack runs (non-finite objective) are counted separately and left out of the
  statistics unless ``diverged="include"``.
* Lower PSNR/SSIM, higher LPIPS, lower label accuracy and a lower success rate mean *more* privacy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.metrics import REGISTRY
from bench.reports import DEFAULT_TOLERANCE, DIVERGED_MODES
from bench.reports.stats import DEFAULT_SUCCESS, Rate, SuccessRule, Summary

from bench.reports.labels import (
    KNOWLEDGE_NOTE,
    PRIVACY_NOTE,
    VALUES_NOTE,
    _differing_federation,
    _scenario_label,
    canonical,
    config_labels,
    diverged_rule,
    ranking_rule,
    scenario_of,
    success_note,
)


@dataclass
class AttackCell:
    """One attack (at its strongest settings) against one entry."""

    attack: str  # the attack's name
    label: str  # its settings, e.g. ig(tv=0.1)
    stats: dict[str, Summary]  # per registered metric
    success: Rate
    gain: Summary  # PSNR minus the target's no-information baseline
    baseline: Summary  # the targets' no-information PSNR
    total: int
    diverged: int
    tunings: tuple[str, ...] = ()
    settings_tried: int = 1

    @property
    def used(self) -> int:
        return self.stats["psnr"].n


@dataclass
class Entry:
    """One leaderboard row: a defense configuration, attacked at one knowledge level, with its model."""

    defense: str
    defense_config: dict[str, Any]
    knowledge: str
    model: str
    attacks: dict[str, AttackCell]
    accuracy: Summary
    seconds_per_round: Summary
    bytes_per_round: Summary
    epsilon: float | None = None
    delta: float | None = None
    epsilon_exchange: float | None = None
    evaluated: str | None = None
    state_accuracy: Summary = field(default_factory=lambda: Summary(0))  # of the attacked (trained) model
    privacy: float | None = None
    strongest: str | None = None
    tier: int | None = None
    rank: int = 0

    @property
    def strongest_cell(self) -> AttackCell | None:
        return self.attacks.get(self.strongest) if self.strongest else None


@dataclass
class Table:
    scenario: str
    attacks: list[str]
    entries: list[Entry]
    key: str = ""  # the canonical scenario (the ``scenario`` column of :func:`attack_frame`): labels may repeat
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Leaderboard:
    tables: list[Table]
    diverged: str
    tolerance: float
    success: SuccessRule
    notes: list[str] = field(default_factory=list)

    def header_lines(self) -> list[str]:
        return [
            PRIVACY_NOTE,
            KNOWLEDGE_NOTE,
            ranking_rule(self.tolerance),
            diverged_rule(self.diverged),
            success_note(self.success),
            VALUES_NOTE,
        ]


def _epsilon(row: Mapping[str, Any], key: str = "epsilon") -> tuple[float | None, float | None]:
    """ε (under ``key``) and δ of a row: top level, the last training round's metrics, or the defense's metrics."""
    places = [row, (row.get("history") or [{}])[-1], row.get("defense_metrics") or {}]
    for place in places:
        if isinstance(place, Mapping) and place.get(key) is not None:
            return float(place[key]), None if place.get("delta") is None else float(place["delta"])
    return None, None


@dataclass
class _Rows:
    """Attack and train rows reduced to what the board needs, with canonical keys and their labels."""

    attack: list[dict[str, Any]]
    train: list[dict[str, Any]]
    labels: dict[str, dict[str, str]]


def _collect(rows: Sequence[Mapping[str, Any]], rule: SuccessRule) -> _Rows:
    configs: dict[str, dict[str, Any]] = {"defense": {}, "attack": {}, "model": {}, "dataset": {}}
    attack, train = [], []
    for r in rows:
        c = r["config"]
        keys = {part: canonical(c[part]) for part in configs if part in c}
        for part, key in keys.items():
            configs[part][key] = c[part]
        if r["kind"] == "attack":
            eps, delta = _epsilon(r)
            record = {
                "scenario": canonical(scenario_of(r)),
                **keys,
                "knowledge": str(r.get("knowledge")),
                "attack_name": c["attack"].get("name"),
                "ok": r.get("status") == "ok" and not r.get("diverged"),
                "seed": r.get("seed"),
                "target": r.get("target"),
                "epsilon": eps,
                "delta": delta,
                "epsilon_exchange": _epsilon(r, "epsilon_exchange")[0],
                "image": r.get("_image_path"),
                "tuning": (r.get("tuning") or {}).get("id") if isinstance(r.get("tuning"), Mapping) else None,
                "success": rule.passes(r),
                "psnr_gain": None,
                "baseline_psnr": r.get("baseline_psnr"),
                "state_accuracy": r.get("state_accuracy"),
            }
            record.update({m: r.get(m) for m in REGISTRY})
            if r.get("psnr") is not None and r.get("baseline_psnr") is not None:
                record["psnr_gain"] = float(r["psnr"]) - float(r["baseline_psnr"])
            attack.append(record)
        elif r["kind"] == "train":
            eps, delta = _epsilon(r)
            train.append(
                {
                    **keys,
                    "final_accuracy": r.get("final_accuracy"),
                    # modelled HE time (a simulated cryptosystem) included: the cost of the protocol, not of bench
                    "seconds_per_round": r.get("modelled_seconds_per_round") or r.get("seconds_per_round"),
                    "bytes_per_round": r.get("bytes_uploaded_per_client_per_round"),
                    "epsilon": eps,
                    "delta": delta,
                    "evaluated": r.get("evaluated"),
                }
            )
    return _Rows(attack, train, {part: config_labels(found) for part, found in configs.items()})


def _group(records: Sequence[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _cell(attack: str, label: str, rows: list[dict[str, Any]], diverged: str) -> AttackCell:
    used = rows if diverged == "include" else [r for r in rows if r["ok"]]
    verdicts = [r["success"] for r in used if r["success"] is not None]
    return AttackCell(
        attack,
        label,
        {m: Summary.of(r[m] for r in used) for m in REGISTRY},
        Rate(sum(verdicts), len(verdicts)),
        Summary.of(r["psnr_gain"] for r in used),
        Summary.of((r["baseline_psnr"] for r in used), interval=False),
        len(rows),
        sum(not r["ok"] for r in rows),
        tuple(sorted({r["tuning"] for r in rows if r["tuning"]})),
    )


def _strongest_setting(cells: list[AttackCell]) -> AttackCell:
    """Of one attack's settings, the one with the highest median PSNR (cells without a score last)."""

    def key(c: AttackCell) -> float:
        m = c.stats["psnr"].median
        return -math.inf if m is None else m

    best = max(cells, key=key)
    best.settings_tried = len(cells)
    return best


def _rank(entries: list[Entry], tolerance: float) -> list[Entry]:
    accuracies = [e.accuracy.mean for e in entries if e.accuracy.mean is not None]
    best = max(accuracies) if accuracies else None
    for e in entries:
        if e.accuracy.mean is not None and best is not None:
            e.tier = int(math.floor((best - e.accuracy.mean) * 100 / tolerance + 1e-9))

    def key(e: Entry) -> tuple[float, float, float, float, str, str]:
        cell = e.strongest_cell
        success = cell.success.value if cell is not None and cell.success.value is not None else math.inf
        return (
            math.inf if e.tier is None else e.tier,
            math.inf if e.privacy is None else e.privacy,
            success,
            -(e.accuracy.mean if e.accuracy.mean is not None else -math.inf),
            e.defense,
            e.knowledge,
        )

    ranked = sorted(entries, key=key)
    for i, e in enumerate(ranked, start=1):
        e.rank = i
    return ranked


def _train_summary(entry: Entry, train: list[dict[str, Any]]) -> None:
    entry.accuracy = Summary.of((t["final_accuracy"] for t in train), interval=False)
    entry.seconds_per_round = Summary.of((t["seconds_per_round"] for t in train), interval=False)
    entry.bytes_per_round = Summary.of((t["bytes_per_round"] for t in train), interval=False)
    eps = [t for t in train if t["epsilon"] is not None]
    if eps:
        entry.epsilon = sum(t["epsilon"] for t in eps) / len(eps)
        entry.delta = eps[0]["delta"]
    evaluated = {t["evaluated"] for t in train if t.get("evaluated")}
    entry.evaluated = ", ".join(sorted(evaluated)) or None


def build(
    rows: Sequence[Mapping[str, Any]],
    diverged: str = "exclude",
    tolerance: float = DEFAULT_TOLERANCE,
    success: str | SuccessRule = DEFAULT_SUCCESS,
) -> Leaderboard:
    """The leaderboard of ``rows`` (attack and train rows, as ``load_results`` returns them)."""
    if diverged not in DIVERGED_MODES:
        raise ValueError(f"diverged must be one of {DIVERGED_MODES}")
    rule = success if isinstance(success, SuccessRule) else SuccessRule.parse(success)
    data = _collect(rows, rule)
    labels = data.labels
    board = Leaderboard([], diverged, tolerance, rule)
    if not data.attack:
        board.notes.append("no attack rows: nothing to rank")
        return board
    trains = _group(data.train, "dataset", "defense", "model")
    matched: set[tuple] = set()
    scenarios = _group(data.attack, "scenario")
    distinguish = _differing_federation([k[0] for k in scenarios])
    for (scenario_key,), scenario_rows in scenarios.items():
        scenario = json.loads(scenario_key)
        dataset_key = canonical(scenario["dataset"])
        entries = []
        for (defense_key, knowledge, model_key), entry_rows in _group(
            scenario_rows, "defense", "knowledge", "model"
        ).items():
            cells: dict[str, AttackCell] = {}
            for (name,), named in sorted(_group(entry_rows, "attack_name").items()):
                settings = [
                    _cell(name, labels["attack"][key], rows_, diverged)
                    for (key,), rows_ in _group(named, "attack").items()
                ]
                cells[name] = _strongest_setting(settings)
            entry = Entry(
                labels["defense"][defense_key],
                json.loads(defense_key),
                knowledge,
                labels["model"][model_key],
                cells,
                Summary(0),
                Summary(0),
                Summary(0),
            )
            train = trains.get((dataset_key, defense_key, model_key), [])
            if train:
                matched.add((dataset_key, defense_key, model_key))
            _train_summary(entry, train)
            if entry.epsilon is None:  # no training run reported one: the attacked exchanges' accounting
                eps = [r["epsilon"] for r in entry_rows if r["epsilon"] is not None]
                entry.epsilon = sum(eps) / len(eps) if eps else None
            entry.state_accuracy = Summary.of(
                {(r["seed"], r["attack"]): r["state_accuracy"] for r in entry_rows}.values(), interval=False
            )
            exchange = [r["epsilon_exchange"] for r in entry_rows if r["epsilon_exchange"] is not None]
            entry.epsilon_exchange = sum(exchange) / len(exchange) if exchange else None
            medians = {n: c.stats["psnr"].median for n, c in cells.items() if c.stats["psnr"].median is not None}
            if medians:
                entry.strongest = max(medians, key=lambda n: medians[n])
                entry.privacy = medians[entry.strongest]
            entries.append(entry)
        attacks = sorted({name for e in entries for name in e.attacks})
        board.tables.append(
            Table(
                _scenario_label(scenario, labels["dataset"][dataset_key], distinguish),
                attacks,
                _rank(entries, tolerance),
                key=scenario_key,
                fields=scenario,
            )
        )
    unmatched = {labels["defense"][key[1]] for key in trains if key not in matched}
    if unmatched:
        board.notes.append(
            f"training rows without attack rows in the same data set and model, not shown: "
            f"{', '.join(sorted(unmatched))}"
        )
    return board


def attack_frame(rows: Sequence[Mapping[str, Any]]):  # -> pandas.DataFrame (imported lazily: CLI start-up)
    """Attack rows with the leaderboard's labels (columns ``scenario``, ``scenario_label``, ``defense_label``,
    ``knowledge``, ``model_label``, ``attack_label`` (the attack's name), scores, ``ok``, seed, target, image)."""
    import pandas as pd

    data = _collect(rows, SuccessRule.parse(DEFAULT_SUCCESS))
    frame = pd.DataFrame(data.attack)
    if frame.empty:
        return frame
    for part in ("defense", "model"):
        frame[f"{part}_label"] = [data.labels[part][k] for k in frame[part]]
    frame["attack_label"] = frame["attack_name"]
    distinguish = _differing_federation(list(frame["scenario"].unique()))
    frame["scenario_label"] = [
        _scenario_label(json.loads(k), data.labels["dataset"][canonical(json.loads(k)["dataset"])], distinguish)
        for k in frame["scenario"]
    ]
    return frame
