"""Rendering a :class:`~bench.reports.leaderboard.Leaderboard` as Markdown, HTML or CSV.

Per scenario two tables: the **ranking** (one row per defense configuration × knowledge level ×
model, its strongest attack's statistics, utility and cost) and **every attack** (one row per
entry and attack, at the attack's strongest settings). The CSV is long-form, one line per cell
(scenario × defense × knowledge × model × attack) with every number, for re-plotting.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterable
from typing import Any

from bench.metrics import REGISTRY
from bench.reports.leaderboard import AttackCell, Entry, Leaderboard, Table, canonical
from bench.reports.stats import Summary, mean_std_text

Record = dict[str, str]


def _n_text(cell: AttackCell, mode: str) -> str:
    if not cell.diverged:
        return str(cell.used)
    return f"{cell.used} ({cell.diverged} div.)" if mode == "include" else f"{cell.used} (+{cell.diverged} div.)"


def _epsilon_text(value: float | None, delta: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" + (f" (δ={delta:.0e})" if delta is not None else "")


def _accuracy_text(e: Entry) -> str:
    text = mean_std_text(e.accuracy.mean, e.accuracy.std, 1, 100.0)
    return text if e.accuracy.n == 0 else f"{text} (n={e.accuracy.n})"


def _gain_text(s: Summary) -> str:
    return "n/a" if s.median is None else f"{s.median:+.1f}"


def ranking_records(table: Table, mode: str) -> list[Record]:
    psnr, ssim, acc = REGISTRY["psnr"], REGISTRY["ssim"], REGISTRY["label_acc"]
    records = []
    for e in table.entries:
        cell = e.strongest_cell
        s = cell.stats if cell else {}
        records.append(
            {
                "rank": str(e.rank),
                "defense": e.defense,
                "knowledge": e.knowledge,
                "model": e.model,
                "tier": "—" if e.tier is None else str(e.tier),
                "strongest attack": cell.label if cell else "n/a",
                f"PSNR median {psnr.privacy_arrow}": s["psnr"].median_text(2) if cell else "n/a",
                "PSNR mean [95 % CI]": (f"{s['psnr'].text(2)} {s['psnr'].interval_text(2)}" if cell else "n/a"),
                "recovered ↓": cell.success.text() if cell else "n/a",
                "gain over baseline, dB ↓": _gain_text(cell.gain) if cell else "n/a",
                f"SSIM median {ssim.privacy_arrow}": s["ssim"].median_text(3) if cell else "n/a",
                f"label acc {acc.privacy_arrow}": s["label_acc"].text(2) if cell else "n/a",
                "N": _n_text(cell, mode) if cell else "0",
                "accuracy % ↑": _accuracy_text(e) + (f" [{e.evaluated}]" if e.evaluated else ""),
                **(
                    {
                        "attacked model's accuracy %": mean_std_text(
                            e.state_accuracy.mean, e.state_accuracy.std, 1, 100.0
                        )
                    }
                    if any(x.state_accuracy.n for x in table.entries)
                    else {}
                ),
                "s/round ↓": "n/a" if e.seconds_per_round.mean is None else f"{e.seconds_per_round.mean:.2f}",
                "MB/round ↓": "n/a" if e.bytes_per_round.mean is None else f"{e.bytes_per_round.mean / 1e6:.3f}",
                "ε training ↓": _epsilon_text(e.epsilon, e.delta),
                "ε exchange ↓": _epsilon_text(e.epsilon_exchange),
            }
        )
    return records


def attack_records(table: Table, mode: str) -> list[Record]:
    records = []
    for e in table.entries:
        for name in table.attacks:
            cell = e.attacks.get(name)
            if cell is None:
                continue
            s = cell.stats
            record = {
                "defense": e.defense,
                "knowledge": e.knowledge,
                "model": e.model,
                "attack (settings)": cell.label + (" ★" if name == e.strongest else ""),
                "N": _n_text(cell, mode),
                "PSNR median": s["psnr"].median_text(2),
                "PSNR mean ± std": s["psnr"].text(2),
                "95 % CI": s["psnr"].interval_text(2),
                "recovered": cell.success.text(),
                "baseline PSNR": cell.baseline.median_text(2),
                "gain, dB": _gain_text(cell.gain),
            }
            for m in REGISTRY.values():
                if m.name not in ("psnr", "mse"):
                    record[f"{m.title} median"] = s[m.name].median_text(m.digits)
            record["tuning"] = ", ".join(cell.tunings) or "—"
            records.append(record)
    return records


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(records: list[Record]) -> str:
    if not records:
        return "(no rows)"
    titles = list(records[0])
    lines = ["| " + " | ".join(map(_md_cell, titles)) + " |", "|" + "|".join("---" for _ in titles) + "|"]
    lines += ["| " + " | ".join(_md_cell(r.get(t, "")) for t in titles) + " |" for r in records]
    return "\n".join(lines)


def html_table(records: list[Record]) -> str:
    if not records:
        return "<p>(no rows)</p>"
    titles = list(records[0])
    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r.get(t, ''))}</td>" for t in titles) + "</tr>" for r in records)
    return (
        f"<div class='scroll'><table class='leaderboard'><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def footnotes(board: Leaderboard) -> list[str]:
    return list(board.notes)


def to_markdown(board: Leaderboard, title: str = "Leaderboard", level: int = 1) -> str:
    hashes = "#" * level
    out = [f"{hashes} {title}", ""] + [f"* {line}" for line in board.header_lines()] + [""]
    for table in board.tables:
        out += [
            f"{hashes}# {table.scenario}",
            "",
            f"{hashes}## Ranking",
            "",
            markdown_table(ranking_records(table, board.diverged)),
            "",
            f"{hashes}## Every attack",
            "",
            markdown_table(attack_records(table, board.diverged)),
            "",
        ]
    out += [f"* {note}" for note in footnotes(board)]
    return "\n".join(out).rstrip() + "\n"


def html_list(lines: Iterable[str]) -> str:
    return "<ul class='notes'>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def html_tables(table: Table, mode: str, level: int = 3) -> str:
    return (
        f"<h{level}>Ranking</h{level}>"
        + html_table(ranking_records(table, mode))
        + f"<h{level}>Every attack</h{level}>"
        + html_table(attack_records(table, mode))
    )


def html_fragment(board: Leaderboard, level: int = 2) -> str:
    """The tables with their header notes, for embedding in a page."""
    parts = [html_list(board.header_lines())]
    for table in board.tables:
        parts += [f"<h{level}>{html.escape(table.scenario)}</h{level}>", html_tables(table, board.diverged, level + 1)]
    if footnotes(board):
        parts.append(html_list(footnotes(board)))
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
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def to_html(board: Leaderboard, title: str = "Leaderboard") -> str:
    return page(title, html_fragment(board))


def _summary_fields(prefix: str, s: Summary) -> dict[str, Any]:
    return {
        f"{prefix}_n": s.n,
        f"{prefix}_mean": s.mean,
        f"{prefix}_std": s.std,
        f"{prefix}_median": s.median,
        f"{prefix}_ci_low": s.low,
        f"{prefix}_ci_high": s.high,
    }


def csv_records(board: Leaderboard) -> list[dict[str, Any]]:
    """Every number of the board, one record per cell (scenario × defense × knowledge × model × attack)."""
    out = []
    for table in board.tables:
        fed = table.fields.get("federation") or {}
        for e in table.entries:
            for name, cell in e.attacks.items():
                rec: dict[str, Any] = {
                    "scenario": table.scenario,
                    "dataset": (table.fields.get("dataset") or {}).get("name"),
                    "batch_size": table.fields.get("batch_size"),
                    "attack_round": table.fields.get("attack_round"),
                    "clients": fed.get("clients"),
                    "federation": canonical(fed),
                    "rank": e.rank,
                    "tier": e.tier,
                    "defense": e.defense,
                    "defense_config": canonical(e.defense_config),
                    "knowledge": e.knowledge,
                    "model": e.model,
                    "attack": name,
                    "attack_settings": cell.label,
                    "strongest": name == e.strongest,
                    "n": cell.used,
                    "runs": cell.total,
                    "diverged": cell.diverged,
                    "settings_tried": cell.settings_tried,
                    "tuning": ";".join(cell.tunings),
                }
                for metric in REGISTRY:
                    rec.update(_summary_fields(metric, cell.stats[metric]))
                rec.update(
                    {
                        "success_rule": board.success.text(),
                        "success_k": cell.success.k,
                        "success_n": cell.success.n,
                        "success_rate": cell.success.value,
                        "baseline_psnr_median": cell.baseline.median,
                        "psnr_gain_median": cell.gain.median,
                        "psnr_gain_mean": cell.gain.mean,
                        "accuracy_mean": e.accuracy.mean,
                        "accuracy_std": e.accuracy.std,
                        "accuracy_n": e.accuracy.n,
                        "evaluated": e.evaluated,
                        "attacked_state_accuracy": e.state_accuracy.mean,
                        "seconds_per_round": e.seconds_per_round.mean,
                        "bytes_per_round": e.bytes_per_round.mean,
                        "epsilon": e.epsilon,
                        "delta": e.delta,
                        "epsilon_exchange": e.epsilon_exchange,
                    }
                )
                out.append(rec)
    return out


def to_csv(board: Leaderboard) -> str:
    records = csv_records(board)
    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)
    return buffer.getvalue()


def render(board: Leaderboard, fmt: str) -> str:
    return {"md": to_markdown, "html": to_html, "csv": to_csv}[fmt](board)
