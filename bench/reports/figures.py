"""The report's figures (matplotlib, PNG bytes), drawn from result rows only.

* ``privacy_utility``: attack PSNR against accuracy, one point per defense configuration, one panel
  for the strongest attack and one per attack;
* ``psnr_distributions``: per attack, every target's PSNR per defense configuration (box + points;
  diverged runs drawn as red crosses whatever the leaderboard does with them);
* ``reconstruction_grid``: defense × attack, each cell the per-target PNGs the runs wrote (ground
  truth above reconstruction), side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.images import png_bytes, pyplot
from bench.reports.leaderboard import Entry, Table


def _png(fig) -> bytes:
    return png_bytes(fig, dpi=110, bbox_inches="tight", metadata={"Software": None})


def entry_label(entry: Entry, table: Table) -> str:
    """The defense's label, with the knowledge level and the model when the table mixes them."""
    label = entry.defense
    if len({e.knowledge for e in table.entries}) > 1:
        label += f" [{entry.knowledge}]"
    if len({e.model for e in table.entries}) > 1:
        label += f" · {entry.model}"
    return label


def _rows_of(frame: pd.DataFrame, entry: Entry, attack: str | None = None) -> pd.DataFrame:
    mask = (
        (frame["defense_label"] == entry.defense)
        & (frame["model_label"] == entry.model)
        & (frame["knowledge"] == entry.knowledge)
    )
    if attack is not None:
        mask &= frame["attack_label"] == attack
    return frame[mask].sort_values(["seed", "target"])


def _psnr_axis_and_legend(fig: Any, axes: Any) -> None:
    """The PSNR axis label on the first panel and one legend below all panels (each label once)."""
    axes[0][0].set_ylabel("attack PSNR median, dB (↓ more private)")
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(4, len(handles)),
            fontsize=9,
            frameon=False,
        )
    fig.tight_layout()


def privacy_utility(table: Table) -> tuple[bytes, list[str]]:
    """The scatter, and the labels of defense configurations it cannot place (no training run)."""
    plt = pyplot()
    panels = (["strongest attack"] if len(table.attacks) > 1 else []) + table.attacks
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.4, 3.6), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    unplaced = [entry_label(e, table) for e in table.entries if e.accuracy.mean is None]
    for ax, panel in zip(axes[0], panels):
        for i, e in enumerate(table.entries):
            attack = e.strongest if panel == "strongest attack" else panel
            cell = e.attacks.get(attack) if attack else None
            if e.accuracy.mean is None or cell is None or cell.stats["psnr"].median is None:
                continue
            psnr = cell.stats["psnr"]
            below, above = psnr.interval_bars()
            ax.errorbar(
                e.accuracy.mean * 100,
                psnr.median,
                xerr=(e.accuracy.std or 0) * 100,
                yerr=[[below], [above]],
                fmt="o",
                color=colors(i % 10),
                ms=7,
                capsize=3,
                label=entry_label(e, table),
            )
        ax.set_title(panel if panel != "strongest attack" else "strongest attack (per defense)", fontsize=10)
        ax.set_xlabel("accuracy % (more useful →)")
        ax.grid(alpha=0.3)
    _psnr_axis_and_legend(fig, axes)
    return _png(fig), unplaced


def round_groups(tables: Sequence[Table]) -> list[list[Table]]:
    """Tables that differ only in the attack round (same data set, batch size and federation), in round
    order; only groups with at least two rounds."""
    import json

    groups: dict[str, list[Table]] = {}
    for t in tables:
        fields = {k: v for k, v in t.fields.items() if k != "attack_round"}
        fed = {k: v for k, v in (fields.get("federation") or {}).items() if k != "rounds"}
        groups.setdefault(json.dumps({**fields, "federation": fed}, sort_keys=True, default=str), []).append(t)
    return [
        sorted(g, key=lambda t: t.fields.get("attack_round") or 0)
        for g in groups.values()
        if len({t.fields.get("attack_round") for t in g}) > 1
    ]


def psnr_by_round(tables: Sequence[Table]) -> bytes:
    """Attack PSNR (median over targets, bars: 95 % interval of the mean) against the training round, one line
    per defense configuration × knowledge level: the strongest attack, then one panel per attack."""
    plt = pyplot()
    attacks = sorted({a for t in tables for a in t.attacks})
    panels = ["strongest attack"] + attacks
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels) + 0.4, 3.8), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    names = sorted({(e.defense, e.knowledge, e.model) for t in tables for e in t.entries})
    multi_knowledge = len({k for _, k, _ in names}) > 1
    for ax, panel in zip(axes[0], panels):
        for i, (defense, knowledge, model) in enumerate(names):
            xs, ys, lows, highs = [], [], [], []
            for t in tables:
                entry = next(
                    (e for e in t.entries if (e.defense, e.knowledge, e.model) == (defense, knowledge, model)), None
                )
                cell = (
                    None
                    if entry is None
                    else (entry.strongest_cell if panel == "strongest attack" else entry.attacks.get(panel))
                )
                if cell is None or cell.stats["psnr"].median is None:
                    continue
                psnr = cell.stats["psnr"]
                below, above = psnr.interval_bars()
                xs.append(t.fields.get("attack_round") or 0)
                ys.append(psnr.median)
                lows.append(below)
                highs.append(above)
            if xs:
                label = defense + (f" [{knowledge}]" if multi_knowledge else "")
                ax.errorbar(xs, ys, yerr=[lows, highs], marker="o", ms=5, capsize=3, color=colors(i % 10), label=label)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("training round attacked")
        ax.grid(alpha=0.3)
    _psnr_axis_and_legend(fig, axes)
    return _png(fig)


def psnr_distributions(table: Table, frame: pd.DataFrame) -> bytes:
    plt = pyplot()
    n = len(table.attacks)
    width = max(4.0, 0.75 * len(table.entries) + 1.5)
    fig, axes = plt.subplots(1, n, figsize=(width * n, 4.2), squeeze=False, sharey=True)
    labels = [entry_label(e, table) for e in table.entries]
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for ax, attack in zip(axes[0], table.attacks):
        data, positions = [], []
        for i, e in enumerate(table.entries):
            rows = _rows_of(frame, e, attack)
            ok, bad = rows[rows["ok"]]["psnr"].dropna(), rows[~rows["ok"]]["psnr"].dropna()
            if len(ok):
                data.append(ok.to_numpy())
                positions.append(i)
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(ok)), ok, s=12, color="tab:blue", alpha=0.7, zorder=3)
            if len(bad):
                ax.scatter(
                    i + rng.uniform(-0.15, 0.15, len(bad)),
                    bad,
                    s=30,
                    color="tab:red",
                    marker="x",
                    zorder=4,
                    label="diverged",
                )
        if data:
            ax.boxplot(data, positions=positions, widths=0.5, showfliers=False, medianprops={"color": "black"})
        for i, e in enumerate(table.entries):
            base = _rows_of(frame, e, attack)["baseline_psnr"].dropna()
            if len(base):
                ax.hlines(float(base.median()), i - 0.35, i + 0.35, colors="gray", linestyles="--", lw=1, zorder=2)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_title(attack, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles[:1], names[:1], fontsize=8, loc="best")
    axes[0][0].set_ylabel("PSNR per target, dB (↓ more private)")
    fig.tight_layout()
    return _png(fig)


def _load_rgb(path: str | None) -> np.ndarray | None:
    from PIL import Image

    if not path:
        return None
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError):
        return None


def _strip(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    height = max(i.shape[0] for i in images)
    parts = []
    for img in images:
        pad = np.full((height, img.shape[1], 3), 255, np.uint8)
        pad[: img.shape[0]] = img
        parts += [pad, np.full((height, gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def reconstruction_grid(table: Table, frame: pd.DataFrame, max_images: int) -> tuple[bytes, int, int]:
    """The grid PNG, the number of target images shown and the number missing on disk."""
    plt = pyplot()
    strips: dict[tuple[int, int], tuple[np.ndarray, str]] = {}
    shown = missing = 0
    for r, e in enumerate(table.entries):
        for c, attack in enumerate(table.attacks):
            rows = _rows_of(frame, e, attack).head(max_images)
            images, captions = [], []
            for _, row in rows.iterrows():
                img = _load_rgb(row["image"])
                if img is None:
                    missing += 1
                    img = np.full((65, 32, 3), 200, np.uint8)
                else:
                    shown += 1
                images.append(img)
                psnr = "n/a" if pd.isna(row["psnr"]) else f"{row['psnr']:.1f}"
                captions.append(psnr + ("" if row["ok"] else "†"))
            if images:
                strips[(r, c)] = (_strip(images), "PSNR " + " | ".join(captions))
    n_rows, n_cols = len(table.entries), len(table.attacks)
    widest = max((s.shape[1] for s, _ in strips.values()), default=100)
    tallest = max((s.shape[0] for s, _ in strips.values()), default=65)
    scale = 3.4 / max(widest, tallest * 2.2)  # inches per pixel: a cell at most ~3.4 in wide (~3x zoom at 32 px)
    cell_w, cell_h = max(2.4, widest * scale * 1.05), tallest * scale + 0.55
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_w * n_cols + 1.6, cell_h * n_rows + 0.4), squeeze=False)
    for r, e in enumerate(table.entries):
        for c, attack in enumerate(table.attacks):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if (r, c) in strips:
                strip, caption = strips[(r, c)]
                ax.imshow(strip, interpolation="nearest")
                ax.set_xlabel(caption, fontsize=7)
            else:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=8, color="gray", transform=ax.transAxes)
            if r == 0:
                ax.set_title(attack, fontsize=10)
            if c == 0:
                ax.set_ylabel(entry_label(e, table), fontsize=9, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return _png(fig), shown, missing
