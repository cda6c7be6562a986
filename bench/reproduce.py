"""Claims that regenerate: every number README.md and docs/ quote sits in a generated block.

A block names what it shows and where it comes from, in the Markdown itself::

    <!-- bench:ranking results round=0 -->  ...generated table...  <!-- /bench -->
    <!-- bench:run benchmarks/results/main -->  ...generated sentence...  <!-- /bench -->
    <!-- bench:value benchmarks/results/target_batching.json ratio_median .2f -->0.23<!-- /bench -->

``bench reproduce`` rewrites every block from its committed source (result rows or a measurement's
JSON), so a figure in the docs is always what the current rows produce; ``bench reproduce --check``
(run by the tests) fails when a block differs from what its source produces. Kinds:

* ``ranking SOURCE [round=R] [dataset=NAME] [knowledge=K] [columns=a,b,...]``: the leaderboard's
  ranking table of the matching scenarios (``columns``: a subset of its columns, by title prefix);
  every kind that reads a leaderboard also takes ``exchange=fedsgd|local``, ``batch=B``, ``examples=N``
  and ``head=H`` to pick scenarios by the attacked round;
* ``attacks SOURCE [round=R] [dataset=NAME] [defense=A,B] [attack=X,Y] [knowledge=K]``: its every-attack table;
* ``cost SOURCE [dataset=NAME]``: seconds per training round per defense, and the ratio to FedAvg's;
* ``run SOURCE``: one sentence for a run's rows: target 0, then the distribution over all targets;
* ``value FILE KEY [FORMAT]``: one number (or text) from a JSON file (``KEY`` may be dotted);
* ``median SOURCE KEY [FORMAT]``: the median of a numeric key over the attack rows of SOURCE;
* ``cell SOURCE round=R defense=D [attack=A] [knowledge=K] FIELD``: one number of one leaderboard cell,
  for a sentence (median, mean, recovered, percent, n, gain, baseline, attack, accuracy, epsilon,
  epsilon_exchange).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

#: Block options that pick scenarios by the attacked round (bench.round.Round.as_dict keys).
ROUND_FILTERS = {"exchange": "kind", "batch": "batch_size", "examples": "local_examples", "head": "head_epochs"}
BLOCK = re.compile(r"<!-- bench:(?P<kind>[a-z]+) (?P<args>[^>]*?) -->(?P<body>.*?)<!-- /bench -->", re.DOTALL)
DEFAULT_FILES = ("README.md", "docs", "results/README.md")


@dataclass(frozen=True)
class Block:
    kind: str
    source: str
    options: Mapping[str, str]
    positional: tuple[str, ...]
    body: str
    span: tuple[int, int]

    @property
    def name(self) -> str:
        return f"{self.kind} {self.source} " + " ".join(
            self.positional + tuple(f"{k}={v}" for k, v in self.options.items())
        )


def parse_blocks(text: str) -> list[Block]:
    out = []
    for m in BLOCK.finditer(text):
        # ``columns=`` comes last and its titles hold spaces ("PSNR median"): it takes the rest of the line.
        args, _, columns = m.group("args").partition(" columns=")
        words = shlex.split(args)
        if not words:
            raise BenchError(f"block '{m.group(0)[:60]}...' names no source")
        positional = tuple(w for w in words[1:] if "=" not in w)
        options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        if columns:
            options["columns"] = columns.strip()
        out.append(Block(m.group("kind"), words[0], options, positional, m.group("body"), m.span("body")))
    return out


def _rows(root: Path, source: str) -> list[dict[str, Any]]:
    from bench.reports.loading import load_results

    return load_results([root / source]).rows


def _tables(root: Path, block: Block):
    from bench.reports.leaderboard import build

    board = build(_rows(root, block.source))
    tables = board.tables
    if "round" in block.options:
        tables = [t for t in tables if str(t.fields.get("attack_round")) == block.options["round"]]
    if "dataset" in block.options:
        tables = [t for t in tables if (t.fields.get("dataset") or {}).get("name") == block.options["dataset"]]
    for option, key in ROUND_FILTERS.items():  # the attacked round: exchange=local batch=4 examples=16 head=1
        if option in block.options:
            tables = [t for t in tables if str((t.fields.get("round") or {}).get(key)) == block.options[option]]
    if not tables:
        raise BenchError(f"block '{block.name}': no scenario of {block.source} matches")
    return board, tables


def _select(records: list[dict[str, str]], block: Block) -> list[dict[str, str]]:
    if "knowledge" in block.options:
        records = [r for r in records if r.get("knowledge") == block.options["knowledge"]]
    if "defense" in block.options:
        wanted_defenses = block.options["defense"].split(",")
        records = [r for r in records if r.get("defense") in wanted_defenses]
    if "attack" in block.options:
        wanted_attacks = block.options["attack"].split(",")
        records = [r for r in records if r.get("attack (settings)", "").rstrip(" ★").split("(")[0] in wanted_attacks]
    if "columns" in block.options:
        wanted = block.options["columns"].split(",")
        records = [{k: v for k, v in r.items() if any(k.startswith(w) for w in wanted)} for r in records]
    return records


def _ranking(root: Path, block: Block) -> str:
    from bench.reports.render import markdown_table, ranking_records

    board, tables = _tables(root, block)
    parts = []
    for t in tables:
        title = f"*{t.scenario}*\n\n" if len(tables) > 1 else ""
        parts.append(title + markdown_table(_select(ranking_records(t, board.diverged), block)))
    return (
        "\n" + "\n\n".join(parts) + f"\n\n(`python -m bench reproduce` from `{block.source}`: "
        f"{board.success.describe()} counts as recovered.)\n"
    )


def _attacks(root: Path, block: Block) -> str:
    from bench.reports.render import attack_records, markdown_table

    board, tables = _tables(root, block)
    parts = [
        (f"*{t.scenario}*\n\n" if len(tables) > 1 else "")
        + markdown_table(_select(attack_records(t, board.diverged), block))
        for t in tables
    ]
    return "\n" + "\n\n".join(parts) + f"\n\n(`python -m bench reproduce` from `{block.source}`.)\n"


def _run(root: Path, block: Block) -> str:
    from bench.reports import DEFAULT_SUCCESS
    from bench.reports.stats import Rate, SuccessRule, Summary

    rows = sorted((r for r in _rows(root, block.source) if r.get("kind") == "attack"), key=lambda r: r["target"])
    first = rows[0]
    ok = [r for r in rows if r.get("status") == "ok"]
    psnr = Summary.of(r["psnr"] for r in ok)
    rule = SuccessRule.parse(DEFAULT_SUCCESS)
    verdicts = [v for v in (rule.passes(r) for r in ok) if v is not None]
    return (
        f"target 0: PSNR {first['psnr']:.2f} dB, SSIM {first['ssim']:.3f} (no-information baseline "
        f"{first['baseline_psnr']:.2f} dB); over {len(rows)} targets of the same command with `--num-targets "
        f"{len(rows)}`: median PSNR {psnr.median_text(2)} dB, mean {psnr.text(2)} {psnr.interval_text(2)}, "
        f"{Rate(sum(verdicts), len(verdicts)).text()} recovered (`{block.source}`)"
    )


def _cost(root: Path, block: Block) -> str:
    """Seconds per training round per defense and data set, and their ratio to FedAvg's."""
    from bench.reports.render import markdown_table

    board, tables = _tables(root, block)
    records = []
    for t in tables:
        base = next((e.seconds_per_round.mean for e in t.entries if e.defense == "fedavg"), None)
        for e in sorted(t.entries, key=lambda e: e.defense):
            s = e.seconds_per_round.mean
            records.append(
                {
                    "data set": (t.fields.get("dataset") or {}).get("name", ""),
                    "defense": e.defense,
                    "s/round": "n/a" if s is None else f"{s:.2f}",
                    "ratio to fedavg": "n/a" if s is None or not base else f"{s / base:.2f}×",
                    "training runs": str(e.seconds_per_round.n),
                }
            )
    return "\n" + markdown_table(records) + f"\n\n(`python -m bench reproduce` from `{block.source}`.)\n"


def _cell(root: Path, block: Block) -> str:
    """One number of one leaderboard cell, for a sentence: ``cell SOURCE round=R defense=D attack=A FIELD``
    (FIELD: median, mean, recovered — "k/n" —, percent — the success rate —, n, gain, baseline, accuracy,
    epsilon, epsilon_exchange; ``attack=strongest``:
    the entry's strongest attack; ``knowledge=K`` picks the level, default: the only or adaptive one)."""
    _, tables = _tables(root, block)
    wanted = block.options.get("defense")
    level = block.options.get("knowledge")
    entries = [e for t in tables for e in t.entries if e.defense == wanted and (level is None or e.knowledge == level)]
    if level is None and len(entries) > 1:
        entries = [e for e in entries if e.knowledge == "adaptive"]
    if len(entries) != 1:
        raise BenchError(f"block '{block.name}': {len(entries)} entries match (say round=, dataset=, knowledge=)")
    entry = entries[0]
    name = block.options.get("attack", "strongest")
    cell = entry.strongest_cell if name == "strongest" else entry.attacks.get(name)
    if cell is None:
        raise BenchError(f"block '{block.name}': no attack {name!r} against {wanted}")
    field = block.positional[0] if block.positional else "median"
    psnr = cell.stats["psnr"]
    values = {
        "median": psnr.median_text(2),
        "mean": psnr.text(2),
        "recovered": f"{cell.success.k}/{cell.success.n}",
        "percent": "n/a" if cell.success.value is None else f"{100 * cell.success.value:.0f} %",
        "n": str(cell.used),
        "gain": "n/a" if cell.gain.median is None else f"{cell.gain.median:+.1f}",
        "baseline": cell.baseline.median_text(2),
        "attack": cell.label,
        "accuracy": "n/a" if entry.accuracy.mean is None else f"{100 * entry.accuracy.mean:.1f} %",
        "epsilon": "n/a" if entry.epsilon is None else f"{entry.epsilon:.3g}",
        "epsilon_exchange": "n/a" if entry.epsilon_exchange is None else f"{entry.epsilon_exchange:.3g}",
    }
    if field not in values:
        raise BenchError(f"block '{block.name}': unknown field {field!r}; valid: {', '.join(values)}")
    return values[field]


def _median(root: Path, block: Block) -> str:
    """The median of a numeric key over the attack rows of SOURCE (e.g. attack_seconds), formatted."""
    import statistics

    if not block.positional:
        raise BenchError(f"block '{block.name}' needs a KEY")
    key = block.positional[0]
    values = [float(r[key]) for r in _rows(root, block.source) if r.get("kind") == "attack" and r.get(key) is not None]
    if not values:
        raise BenchError(f"block '{block.name}': no attack row of {block.source} has {key!r}")
    fmt = block.positional[1] if len(block.positional) > 1 else ""
    return format(statistics.median(values), fmt)


def _value(root: Path, block: Block) -> str:
    if not block.positional:
        raise BenchError(f"block '{block.name}' needs a KEY")
    try:
        value: Any = json.loads((root / block.source).read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"block '{block.name}': cannot read {block.source}: {exc}") from None
    for part in block.positional[0].split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    fmt = block.positional[1] if len(block.positional) > 1 else ""
    return format(value, fmt)


KINDS: dict[str, Callable[[Path, Block], str]] = {
    "ranking": _ranking,
    "attacks": _attacks,
    "run": _run,
    "value": _value,
    "cost": _cost,
    "median": _median,
    "cell": _cell,
}


def regenerate(text: str, root: Path) -> tuple[str, list[str]]:
    """``text`` with every block regenerated, and the names of the blocks whose content changed."""
    changed, out, last = [], [], 0
    for block in parse_blocks(text):
        if block.kind not in KINDS:
            raise BenchError(f"unknown block kind {block.kind!r}; valid: {', '.join(KINDS)}")
        body = KINDS[block.kind](root, block)
        if body != block.body:
            changed.append(block.name)
        out += [text[last : block.span[0]], body]
        last = block.span[1]
    out.append(text[last:])
    return "".join(out), changed


def markdown_files(root: Path, names: tuple[str, ...] = DEFAULT_FILES) -> list[Path]:
    files: list[Path] = []
    for name in names:
        path = root / name
        files += sorted(path.glob("*.md")) if path.is_dir() else [path] if path.is_file() else []
    return files
