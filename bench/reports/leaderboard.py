"""The leaderboard: one row per defense configuration, a pure function of result rows.

Per attack: mean ± sample standard deviation (ddof 1) of PSNR, SSIM, LPIPS and label accuracy over
every target batch of every seed, with N. Per defense: utility (final test accuracy of its ``train``
runs, mean ± std over seeds) and cost (seconds and bytes uploaded per client per round, ε where the
defense reports one). Rows are grouped into one table per *scenario* (data set, attacked batch size,
attack round, federation), since numbers from different scenarios are not comparable.

Conventions written into every output (``PRIVACY_NOTE``, ``ranking_rule``, ``diverged_rule``):

* lower PSNR, lower SSIM, higher LPIPS and lower label accuracy mean *more* privacy;
* ranking is privacy at equal utility: utility tiers first, then the strongest attack's mean PSNR;
* diverged attack runs are counted separately, never silently averaged as successes.
"""
from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.reports import DEFAULT_TOLERANCE, DIVERGED_MODES
METRICS: tuple[tuple[str, str, str, int], ...] = (
    # (row key, column title, direction of MORE privacy, digits)
    ("psnr", "PSNR", "↓", 2), ("ssim", "SSIM", "↓", 3), ("lpips", "LPIPS", "↑", 3), ("label_acc", "label acc", "↓", 2))
UTILITY, RANKING = "utility & cost", "ranking"  # column groups besides the attacks

PRIVACY_NOTE = ("Privacy: lower PSNR and SSIM, higher LPIPS and lower label accuracy mean MORE privacy "
                "(the attacker's reconstruction is worse). Arrows point the way that is better for the defense: "
                "more privacy, more accuracy, less cost.")
VALUES_NOTE = ("Values: mean ± sample standard deviation over all attacked target batches of all seeds; N counts "
               "them. Accuracy: the mean over clients of local-test accuracy after the defense's training run, "
               "mean ± std over training seeds (n in brackets). s/round and MB/round (uploaded per client) come "
               "from the same training runs; ε (with its δ) where the defense reports one.")


def ranking_rule(tolerance: float) -> str:
    return (f"Ranking (privacy at equal utility): defenses are put in utility tiers by how far their accuracy is "
            f"below the best in the table, {tolerance:g} accuracy points per tier (tier 0: within {tolerance:g} "
            f"points of the best); defenses without a training run come after all tiers. Within a tier, the lower "
            f"the strongest attack's mean PSNR (the worst case over attacks) the better; ties by mean accuracy.")


def diverged_rule(mode: str) -> str:
    if mode == "include":
        return ("Diverged attack runs (non-finite objective; their best finite iterate is scored) are INCLUDED in "
                "the means and counted in N; '(k div.)' says how many of N diverged.")
    return ("Diverged attack runs (non-finite objective) are EXCLUDED from the means, so a failed optimisation is "
            "never averaged in as a result; '+k div.' after N counts them. An attack with only diverged runs "
            "shows n/a and does not count as the strongest attack.")


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[Any]) -> Stat:
        v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
        if not v:
            return cls(None, None, 0)
        return cls(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None, len(v))

    def text(self, digits: int, scale: float = 1.0) -> str:
        if self.mean is None:
            return "n/a"
        if self.std is None:
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


@dataclass
class AttackCell:
    """One attack's scores against one defense configuration."""

    stats: dict[str, Stat]
    total: int
    diverged: int

    @property
    def used(self) -> int:
        return self.stats["psnr"].n


@dataclass
class Entry:
    """One leaderboard row: a defense configuration (with its model) in a scenario."""

    defense: str
    defense_config: dict[str, Any]
    model: str
    attacks: dict[str, AttackCell]
    accuracy: Stat
    seconds_per_round: Stat
    bytes_per_round: Stat
    epsilon: float | None = None
    delta: float | None = None
    epsilon_source: str | None = None
    privacy: float | None = None
    strongest: str | None = None
    tier: int | None = None
    rank: int = 0


@dataclass
class Table:
    scenario: str
    attacks: list[str]
    entries: list[Entry]
    key: str = ""  # the canonical scenario (the ``scenario`` column of :func:`attack_frame`): labels may repeat


@dataclass
class Leaderboard:
    tables: list[Table]
    diverged: str
    tolerance: float
    notes: list[str] = field(default_factory=list)

    def header_lines(self) -> list[str]:
        return [PRIVACY_NOTE, ranking_rule(self.tolerance), diverged_rule(self.diverged), VALUES_NOTE]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_labels(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Readable names for component configs: the name, plus the options that differ between configs
    of the same component (``dp(noise_multiplier=0.1)`` vs ``dp(noise_multiplier=1)``)."""
    by_name: dict[str, list[str]] = {}
    for key, config in configs.items():
        by_name.setdefault(str(config.get("name")), []).append(key)
    labels = {}
    for name, keys in by_name.items():
        options = sorted({k for key in keys for k in configs[key] if k != "name"})
        differing = [o for o in options if len({canonical(configs[key].get(o)) for key in keys}) > 1]
        for key in keys:
            args = ", ".join(f"{o}={_short(configs[key].get(o))}" for o in differing)
            labels[key] = f"{name}({args})" if args else name
    return labels


def _epsilon(row: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """ε and δ of a row: top level, the last training round's metrics, or the defense's metrics."""
    places = [row, (row.get("history") or [{}])[-1], row.get("defense_metrics") or {}]
    for place in places:
        if isinstance(place, Mapping) and place.get("epsilon") is not None:
            return float(place["epsilon"]), None if place.get("delta") is None else float(place["delta"])
    return None, None


def _scenario(row: Mapping[str, Any]) -> dict[str, Any]:
    run = row["config"]["run"]
    return {"dataset": row["config"]["dataset"], "batch_size": run.get("batch_size"),
            "attack_round": run.get("attack_round"), "federation": run.get("federation")}


def _scenario_label(scenario: Mapping[str, Any], dataset_label: str, distinguish: Sequence[str] = ()) -> str:
    """``distinguish``: further federation settings to show (those that differ between the board's scenarios)."""
    fed = scenario.get("federation") or {}
    round_ = scenario.get("attack_round")
    when = "untrained network (round 0)" if round_ == 0 else f"after {round_} training round(s)"
    parts = [dataset_label, f"batch size {scenario.get('batch_size')}", when]
    if fed:
        parts.append(f"{fed.get('clients')} clients ({fed.get('partition')})")
        parts += [f"{k} {fed.get(k)}" for k in distinguish]
    return " · ".join(parts)


def _differing_federation(scenario_keys: Sequence[str]) -> list[str]:
    """Federation settings, other than clients and partition, that differ between scenarios."""
    feds = [json.loads(k).get("federation") or {} for k in scenario_keys]
    names = sorted({k for f in feds for k in f} - {"clients", "partition"})
    return [k for k in names if len({json.dumps(f.get(k)) for f in feds}) > 1]


def _frames(rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, str]]]:
    """Attack rows and train rows as frames keyed by canonical configs, and the labels of those keys."""
    configs: dict[str, dict[str, Any]] = {"defense": {}, "attack": {}, "model": {}, "dataset": {}}
    attack, train = [], []
    for r in rows:
        c = r["config"]
        keys = {part: canonical(c[part]) for part in configs if part in c}
        for part, key in keys.items():
            configs[part][key] = c[part]
        if r["kind"] == "attack":
            ok = r.get("status") == "ok" and not r.get("diverged")
            eps, delta = _epsilon(r)
            attack.append({"scenario": canonical(_scenario(r)), **keys, "ok": ok, "seed": r.get("seed"),
                           "target": r.get("target"), **{m: r.get(m) for m, *_ in METRICS},
                           "epsilon": eps, "delta": delta, "image": r.get("_image_path")})
        elif r["kind"] == "train":
            eps, delta = _epsilon(r)
            train.append({**keys, "final_accuracy": r.get("final_accuracy"),
                          "seconds_per_round": r.get("seconds_per_round"),
                          "bytes_per_round": r.get("bytes_uploaded_per_client_per_round"),
                          "epsilon": eps, "delta": delta})
    labels = {part: config_labels(found) for part, found in configs.items()}
    columns = ["scenario", "defense", "attack", "model", "dataset", "ok", "seed", "target", *(m for m, *_ in METRICS),
               "epsilon", "delta", "image"]
    return (pd.DataFrame(attack, columns=columns),
            pd.DataFrame(train, columns=["defense", "model", "dataset", "final_accuracy", "seconds_per_round",
                                         "bytes_per_round", "epsilon", "delta"]),
            labels)


def attack_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Attack rows with the leaderboard's labels (columns ``scenario_label``, ``defense_label``,
    ``model_label``, ``attack_label``), scores, ``ok`` (not diverged), seed, target and image path."""
    attacks, _, labels = _frames(rows)
    out = attacks.copy()
    for part in ("defense", "model", "attack"):
        out[f"{part}_label"] = [labels[part][k] for k in attacks[part]]
    distinguish = _differing_federation(attacks["scenario"].unique())
    out["scenario_label"] = [_scenario_label(json.loads(k), labels["dataset"][canonical(json.loads(k)["dataset"])],
                                             distinguish) for k in attacks["scenario"]]
    return out


def _rank(entries: list[Entry], tolerance: float) -> list[Entry]:
    accuracies = [e.accuracy.mean for e in entries if e.accuracy.mean is not None]
    best = max(accuracies) if accuracies else None
    for e in entries:
        if e.accuracy.mean is not None and best is not None:
            e.tier = int(math.floor((best - e.accuracy.mean) * 100 / tolerance + 1e-9))

    def key(e: Entry) -> tuple[float, float, float, str]:
        tier = math.inf if e.tier is None else e.tier
        privacy = math.inf if e.privacy is None else e.privacy
        accuracy = -(e.accuracy.mean if e.accuracy.mean is not None else -math.inf)
        return tier, privacy, accuracy, e.defense

    ranked = sorted(entries, key=key)
    for i, e in enumerate(ranked, start=1):
        e.rank = i
    return ranked


def build(rows: Sequence[Mapping[str, Any]], diverged: str = "exclude",
          tolerance: float = DEFAULT_TOLERANCE) -> Leaderboard:
    """The leaderboard of ``rows`` (attack and train rows, as ``load_results`` returns them)."""
    if diverged not in DIVERGED_MODES:
        raise ValueError(f"diverged must be one of {DIVERGED_MODES}")
    attacks, trains, labels = _frames(rows)
    board = Leaderboard([], diverged, tolerance)
    if attacks.empty:
        board.notes.append("no attack rows: nothing to rank")
        return board
    used = attacks if diverged == "include" else attacks[attacks["ok"]]
    grouped = {key: frame for key, frame in used.groupby(["scenario", "defense", "model", "attack"], sort=False)}
    totals = attacks.groupby(["scenario", "defense", "model", "attack"], sort=False)["ok"].agg(["size", "sum"])
    train_groups = {key: frame for key, frame in trains.groupby(["dataset", "defense", "model"], sort=False)}
    matched_train: set[tuple[str, str, str]] = set()
    distinguish = _differing_federation(attacks["scenario"].unique())
    for scenario_key, scenario_rows in attacks.groupby("scenario", sort=False):
        scenario = json.loads(scenario_key)
        dataset_key = canonical(scenario["dataset"])
        attack_keys = sorted(scenario_rows["attack"].unique(), key=lambda k: labels["attack"][k])
        entries = []
        for (defense_key, model_key), defense_rows in scenario_rows.groupby(["defense", "model"], sort=False):
            cells = {}
            for attack_key in attack_keys:
                index = (scenario_key, defense_key, model_key, attack_key)
                if index not in totals.index:
                    continue
                frame = grouped.get(index, attacks.iloc[0:0])
                size, ok = totals.loc[index]
                cells[labels["attack"][attack_key]] = AttackCell(
                    {m: Stat.of(frame[m]) for m, *_ in METRICS}, int(size), int(size - ok))
            train = train_groups.get((dataset_key, defense_key, model_key))
            if train is not None:
                matched_train.add((dataset_key, defense_key, model_key))
            empty = trains.iloc[0:0]
            t = train if train is not None else empty
            entry = Entry(labels["defense"][defense_key], json.loads(defense_key), labels["model"][model_key], cells,
                          Stat.of(t["final_accuracy"]), Stat.of(t["seconds_per_round"]), Stat.of(t["bytes_per_round"]))
            entry.epsilon, entry.delta, entry.epsilon_source = _entry_epsilon(t, defense_rows)
            psnrs = {name: c.stats["psnr"].mean for name, c in cells.items() if c.stats["psnr"].mean is not None}
            if psnrs:
                entry.strongest = max(psnrs, key=lambda name: psnrs[name])
                entry.privacy = psnrs[entry.strongest]
            entries.append(entry)
        board.tables.append(Table(_scenario_label(scenario, labels["dataset"][dataset_key], distinguish),
                                  [labels["attack"][k] for k in attack_keys], _rank(entries, tolerance),
                                  key=scenario_key))
    unmatched = {labels["defense"][key[1]] for key in train_groups if key not in matched_train}
    if unmatched:
        board.notes.append(f"training rows without attack rows in the same data set and model, not shown: "
                           f"{', '.join(sorted(unmatched))}")
    return board


def _entry_epsilon(train: pd.DataFrame, attacked: pd.DataFrame) -> tuple[float | None, float | None, str | None]:
    """ε from the training runs (what training spent); else from the attacked exchanges (marked)."""
    for frame, source in ((train, "train"), (attacked, "attack")):
        eps = frame["epsilon"].dropna()
        if len(eps):
            deltas = frame["delta"].dropna()
            return float(eps.mean()), float(deltas.mean()) if len(deltas) else None, source
    return None, None, None


# --- rendering ------------------------------------------------------------------------------------

def _n_text(cell: AttackCell, mode: str) -> str:
    if not cell.diverged:
        return str(cell.used)
    return f"{cell.used} ({cell.diverged} div.)" if mode == "include" else f"{cell.used} (+{cell.diverged} div.)"


def _epsilon_text(e: Entry) -> str:
    if e.epsilon is None:
        return "—"
    text = f"{e.epsilon:.3g}" + (f" (δ={e.delta:.0e})" if e.delta is not None else "")
    return text + ("ᵃ" if e.epsilon_source == "attack" else "")


def display_frame(table: Table, mode: str) -> pd.DataFrame:
    """The table as strings with two-level columns (attack, metric) — rendered to Markdown and HTML."""
    records = []
    for e in table.entries:
        rec: dict[tuple[str, str], str] = {("", "rank"): str(e.rank), ("", "defense"): e.defense,
                                           ("", "model"): e.model}
        rec[(RANKING, "tier")] = "—" if e.tier is None else str(e.tier)
        rec[(RANKING, "worst-case PSNR ↓")] = "n/a" if e.privacy is None else f"{e.privacy:.2f} ({e.strongest})"
        acc = e.accuracy.text(1, 100.0)
        rec[(UTILITY, "accuracy % ↑")] = acc if e.accuracy.n == 0 else f"{acc} (n={e.accuracy.n})"
        rec[(UTILITY, "s/round ↓")] = "n/a" if e.seconds_per_round.mean is None else f"{e.seconds_per_round.mean:.2f}"
        mb = e.bytes_per_round.mean
        rec[(UTILITY, "MB/round ↓")] = "n/a" if mb is None else f"{mb / 1e6:.3f}"
        rec[(UTILITY, "ε ↓")] = _epsilon_text(e)
        for attack in table.attacks:
            cell = e.attacks.get(attack)
            for key, title, arrow, digits in METRICS:
                rec[(attack, f"{title} {arrow}")] = "—" if cell is None else cell.stats[key].text(digits)
            rec[(attack, "N")] = "—" if cell is None else _n_text(cell, mode)
        records.append(rec)
    frame = pd.DataFrame(records)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    titles = [m if a in ("", UTILITY, RANKING) else f"{a} {m}" for a, m in frame.columns]
    lines = ["| " + " | ".join(map(_md_cell, titles)) + " |", "|" + "|".join("---" for _ in titles) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_md_cell(v) for v in row.tolist()) + " |")
    return "\n".join(lines)


def footnotes(board: Leaderboard) -> list[str]:
    notes = list(board.notes)
    if any(e.epsilon_source == "attack" for t in board.tables for e in t.entries):
        notes.append("ᵃ ε reported for the attacked exchange (no training run reported one).")
    return notes


def to_markdown(board: Leaderboard, title: str = "Leaderboard", level: int = 1) -> str:
    hashes = "#" * level
    out = [f"{hashes} {title}", ""] + [f"* {line}" for line in board.header_lines()] + [""]
    for table in board.tables:
        out += [f"{hashes}# {table.scenario}", "", markdown_table(display_frame(table, board.diverged)), ""]
    out += [f"* {note}" for note in footnotes(board)]
    return "\n".join(out).rstrip() + "\n"


def html_list(lines: Iterable[str]) -> str:
    return "<ul class='notes'>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def html_table(table: Table, mode: str) -> str:
    frame = display_frame(table, mode)
    return "<div class='scroll'>" + frame.to_html(index=False, escape=True, classes="leaderboard", border=0) + "</div>"


def html_fragment(board: Leaderboard, level: int = 2) -> str:
    """The tables with their header notes, for embedding in a page."""
    parts = [html_list(board.header_lines())]
    for table in board.tables:
        parts += [f"<h{level}>{html.escape(table.scenario)}</h{level}>", html_table(table, board.diverged)]
    notes = footnotes(board)
    if notes:
        parts.append(html_list(notes))
    return "\n".join(parts)


STYLE = """
div.scroll { overflow-x: auto; max-width: 100%; }
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em; color: #222; }
table.leaderboard { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 3px 7px; text-align: right;
  white-space: nowrap; }
table.leaderboard thead th { background: #f0f0f0; text-align: center; }
table.leaderboard td:nth-child(2), table.leaderboard td:nth-child(3) { text-align: left; font-weight: 600; }
table.leaderboard tbody tr:nth-child(even) { background: #fafafa; }
ul.notes { font-size: 13px; color: #444; max-width: 75em; }
figure { margin: 1em 0 2em; } figcaption { font-size: 13px; color: #444; max-width: 75em; }
img.figure { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def page(title: str, body: str) -> str:
    """A self-contained HTML page: ``title`` as its title and heading, then ``body`` (HTML)."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def to_html(board: Leaderboard, title: str = "Leaderboard") -> str:
    return page(title, html_fragment(board))


def numeric_frame(board: Leaderboard) -> pd.DataFrame:
    """Every number of the leaderboard, one row per defense configuration and scenario (for CSV)."""
    records = []
    for table in board.tables:
        for e in table.entries:
            rec: dict[str, Any] = {"scenario": table.scenario, "rank": e.rank, "defense": e.defense,
                                   "defense_config": canonical(e.defense_config), "model": e.model}
            for attack in table.attacks:
                cell = e.attacks.get(attack)
                for key, *_ in METRICS:
                    stat = cell.stats[key] if cell else Stat(None, None, 0)
                    rec[f"{attack}.{key}_mean"], rec[f"{attack}.{key}_std"] = stat.mean, stat.std
                rec[f"{attack}.n"] = cell.used if cell else 0
                rec[f"{attack}.diverged"] = cell.diverged if cell else 0
            rec.update({"accuracy_mean": e.accuracy.mean, "accuracy_std": e.accuracy.std, "accuracy_n": e.accuracy.n,
                        "seconds_per_round": e.seconds_per_round.mean, "bytes_per_round": e.bytes_per_round.mean,
                        "epsilon": e.epsilon, "delta": e.delta, "epsilon_source": e.epsilon_source,
                        "tier": e.tier, "worst_case_psnr": e.privacy, "strongest_attack": e.strongest})
            records.append(rec)
    return pd.DataFrame(records)


def to_csv(board: Leaderboard) -> str:
    buffer = io.StringIO()
    numeric_frame(board).to_csv(buffer, index=False)
    return buffer.getvalue()


def render(board: Leaderboard, fmt: str) -> str:
    return {"md": to_markdown, "html": to_html, "csv": to_csv}[fmt](board)
