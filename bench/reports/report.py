"""The comparison report: one self-contained HTML page (every image embedded, no external asset) and
the same content as Markdown (figures as PNG files next to it), from result rows only.

Contents: how to read it, the leaderboard, then per scenario a privacy-utility scatter, per-attack
PSNR distributions and reconstruction grids (defense × attack, ground truth above reconstruction),
and the provenance of the rows (files, git commits, versions, machines, caveats).
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.reports import DEFAULT_SUCCESS, DEFAULT_TOLERANCE, figures
from bench.reports.leaderboard import Leaderboard, attack_frame, build
from bench.reports.render import (
    attack_records,
    footnotes,
    html_list,
    html_tables,
    markdown_table,
    page,
    ranking_records,
    to_csv,
)
from bench.reports.loading import ResultSet
from bench.results import atomic_write_bytes

SCORING_NOTE = (
    "Scores compare images in [0, 1] pixel space after undoing the normalisation: PSNR (data range 1) "
    "and scikit-image's windowed SSIM per image, then averaged; LPIPS (AlexNet) where its weights were "
    "available; in a batch, each true image is matched to one reconstruction by a minimum-MSE one-to-one "
    "assignment (scipy linear_sum_assignment) before scoring. Every target is also scored against the "
    "no-information baseline (the training set's mean image and its flat mean colour)."
)


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: bytes
    caveat: str | None = None  # a problem drawing it, for the report's notes and caveats


def _provenance(results: ResultSet) -> list[str]:
    rows = results.rows
    kinds = Counter(r["kind"] for r in rows)
    commits = Counter(
        f"{(r.get('git') or {}).get('commit') or 'unknown'}"[:10]
        + ("+dirty" if (r.get("git") or {}).get("dirty") else "")
        for r in rows
    )
    versions = Counter(
        f"bench-fl {v.get('bench-fl')}, torch {v.get('torch')}, python {v.get('python')}"
        for r in rows
        if isinstance(v := r.get("versions"), dict)
    )
    machines = Counter(
        f"{m.get('platform')}, {m.get('cpu_threads')} torch thread(s), device {m.get('device')}"
        + (f" ({m['gpu']})" if m.get("gpu") else "")
        for r in rows
        if isinstance(m := r.get("machine"), dict)
    )
    stamps = sorted(r["timestamp"] for r in rows if r.get("timestamp"))
    lines = [
        f"{len(rows)} rows ({kinds.get('attack', 0)} attack, {kinds.get('train', 0)} train) from "
        f"{len(results.files)} results file(s)"
    ]
    if stamps:
        lines.append(f"runs from {stamps[0]} to {stamps[-1]}")
    lines += [f"git commit {c}: {n} rows" for c, n in commits.most_common()]
    lines += [f"{v}: {n} rows" for v, n in versions.most_common()]
    lines += [f"machine {m}: {n} rows" for m, n in machines.most_common()]
    return lines


def _caveats(results: ResultSet, figure_caveats: Sequence[str] = ()) -> list[str]:
    attack_rows = results.of_kind("attack")
    notes = Counter(n for r in attack_rows for n in (r.get("notes") or []))
    out = [f"{n} (in {k} rows)" for n, k in notes.most_common()]
    lpips = Counter(r["lpips_note"] for r in attack_rows if r.get("lpips") is None and r.get("lpips_note"))
    out += [f"LPIPS n/a in {k} rows: {n}" for n, k in lpips.most_common()]
    attributed: dict[str, list[float]] = {}
    for r in attack_rows:
        if r.get("attribution") is not None:
            attributed.setdefault(str(r["config"]["defense"].get("name")), []).append(float(r["attribution"]))
    out += [
        f"{name}: the server decrypts an aggregate; reconstructions are scored against the target's images by a "
        f"ground-truth matching it could not do. Whether it could tell which reconstruction is the target's "
        f"(attribution, chance = the target's share of the images): {sum(v) / len(v):.2f} over {len(v)} rows"
        for name, v in sorted(attributed.items())
    ]
    knowledge = Counter(
        f"{r['config']['defense'].get('name')}: attacker knowledge '{r.get('knowledge')}'"
        for r in attack_rows
        if r.get("knowledge")
    )
    out += [f"{k} ({n} rows)" for k, n in sorted(knowledge.items())]
    return out + results.notes + list(figure_caveats) + results.problems


def build_figures(board: Leaderboard, results: ResultSet, max_images: int) -> tuple[list[list[Figure]], Counter]:
    """Three figures per scenario, and how many target images the grids showed and missed (a grid with
    missing images carries a ``caveat``; ``results`` is not changed)."""
    frame = attack_frame(results.rows)
    per_table: list[list[Figure]] = []
    images: Counter[str] = Counter()
    for i, table in enumerate(board.tables, start=1):
        rows = frame[frame["scenario"] == table.key]
        scatter, unplaced = figures.privacy_utility(table)
        caption = (
            "Attack PSNR (median over targets × seeds, bars: 95 % bootstrap interval of the mean) against "
            "the defense's accuracy (bars: std over training seeds), one point per defense configuration and "
            "knowledge level. Bottom right is best: useful and private."
        )
        if unplaced:
            caption += f" Not placed (no training run): {', '.join(unplaced)}."
        grid, shown, missing = figures.reconstruction_grid(table, rows, max_images)
        images.update(shown=shown, missing=missing)
        grid_caption = (
            f"Per defense (rows, in rank order) and attack (columns): the first {max_images} attacked "
            f"targets by seed and target, each ground truth (top) above the matched reconstruction "
            f"(bottom), with their PSNR in dB († diverged)."
        )
        grid_caveat = None
        if missing:
            grid_caption += f" {missing} image file(s) missing on disk, drawn grey."
            grid_caveat = f"{table.scenario}: {missing} reconstruction image file(s) missing on disk"
        per_table.append(
            [
                Figure(f"privacy_utility_{i}", "Privacy against utility", caption, scatter),
                Figure(
                    f"psnr_distributions_{i}",
                    "PSNR per target",
                    "Every target's PSNR per defense configuration "
                    "and attack (box: quartiles of non-diverged runs; red ×: diverged runs; grey line: the median "
                    "no-information baseline).",
                    figures.psnr_distributions(table, rows),
                ),
                Figure(f"reconstructions_{i}", "Reconstructions", grid_caption, grid, grid_caveat),
            ]
        )
    return per_table, images


def training_figures(board: Leaderboard) -> list[Figure]:
    """Privacy across training: per group of scenarios that differ only in the attacked round."""
    out = []
    for i, group in enumerate(figures.round_groups(board.tables), start=1):
        rounds = ", ".join(str(t.fields.get("attack_round")) for t in group)
        out.append(
            Figure(
                f"psnr_by_round_{i}",
                f"Privacy across training: {group[0].scenario.split(' · ')[0]}",
                f"Attack PSNR (median over targets × seeds; bars: 95 % bootstrap interval of the mean) "
                f"against the training round attacked (rounds {rounds}; each defense attacked in the state "
                f"its own training reached), per defense configuration: the strongest attack, then each "
                f"attack.",
                figures.psnr_by_round(group),
            )
        )
    return out


def _figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f"<figure><h3>{html.escape(fig.title)}</h3><img class='figure' alt='{html.escape(fig.title)}' "
        f"src='data:image/png;base64,{data}'><figcaption>{html.escape(fig.caption)}</figcaption></figure>"
    )


def _html(
    board: Leaderboard,
    per_table: list[list[Figure]],
    files: Sequence[Path],
    provenance: list[str],
    caveats: list[str],
    title: str,
    across: Sequence[Figure] = (),
) -> str:
    parts = [
        html_list(provenance),
        "<h2>How to read this report</h2>",
        html_list([*board.header_lines(), SCORING_NOTE]),
    ]
    if across:
        parts += ["<h2>Privacy across training</h2>", *(_figure_html(f) for f in across)]
    for table, figs in zip(board.tables, per_table):
        parts += [f"<h2>{html.escape(table.scenario)}</h2>", html_tables(table, board.diverged)]
        parts += [_figure_html(fig) for fig in figs]
    if caveats:
        parts += ["<h2>Notes and caveats</h2>", html_list(caveats)]
    parts += ["<h2>Input files</h2>", html_list(str(f) for f in files)]
    return page(title, "\n".join(parts))


def _markdown(
    board: Leaderboard,
    per_table: list[list[Figure]],
    files: Sequence[Path],
    provenance: list[str],
    caveats: list[str],
    title: str,
    across: Sequence[Figure] = (),
) -> str:
    out = [f"# {title}", ""] + [f"* {x}" for x in provenance] + ["", "## How to read this report", ""]
    out += [f"* {line}" for line in [*board.header_lines(), SCORING_NOTE]] + [""]
    if across:
        out += ["## Privacy across training", ""]
        for fig in across:
            out += [f"### {fig.title}", "", f"![{fig.title}](figures/{fig.name}.png)", "", fig.caption, ""]
    for table, figs in zip(board.tables, per_table):
        out += [
            f"## {table.scenario}",
            "",
            "### Ranking",
            "",
            markdown_table(ranking_records(table, board.diverged)),
            "",
            "### Every attack",
            "",
            markdown_table(attack_records(table, board.diverged)),
            "",
        ]
        for fig in figs:
            out += [f"### {fig.title}", "", f"![{fig.title}](figures/{fig.name}.png)", "", fig.caption, ""]
    if caveats:
        out += ["## Notes and caveats", ""] + [f"* {x}" for x in caveats] + [""]
    out += ["## Input files", ""] + [f"* `{f}`" for f in files]
    return "\n".join(out).rstrip() + "\n"


def write_report(
    results: ResultSet,
    out_dir: Path,
    diverged: str = "exclude",
    tolerance: float = DEFAULT_TOLERANCE,
    max_images: int = 4,
    title: str = "bench report",
    success: str = DEFAULT_SUCCESS,
) -> dict[str, Any]:
    """Write ``report.html`` (self-contained), ``report.md`` + ``figures/`` and ``leaderboard.csv``."""
    out_dir = Path(out_dir)
    board = build(results.rows, diverged, tolerance, success)
    per_table, images = build_figures(board, results, max_images)
    across = training_figures(board)
    all_figures = across + [f for figs in per_table for f in figs]
    provenance = _provenance(results)
    caveats = footnotes(board) + _caveats(results, [f.caveat for f in all_figures if f.caveat])
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    for fig in all_figures:
        atomic_write_bytes(out_dir / "figures" / f"{fig.name}.png", fig.png)
    html_page = _html(board, per_table, results.files, provenance, caveats, title, across)
    atomic_write_bytes(out_dir / "report.html", html_page.encode())
    atomic_write_bytes(
        out_dir / "report.md", _markdown(board, per_table, results.files, provenance, caveats, title, across).encode()
    )
    atomic_write_bytes(out_dir / "leaderboard.csv", to_csv(board).encode())
    return {
        "html": out_dir / "report.html",
        "markdown": out_dir / "report.md",
        "figures": len(all_figures),
        "images_shown": images["shown"],
        "images_missing": images["missing"],
    }
