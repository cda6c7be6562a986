"""HyperFL vs FedAvg on the same CNN: leakage under three attacker strengths, and utility.

Runs (or resumes) the cells below and renders their rows as the tables of ``docs/hyperfl.md``
(between the ``<!-- hyperfl-table:* -->`` markers). Finished targets are never recomputed: each cell
writes to its own folder under ``--out`` and is resumed, so an interrupted run loses nothing.

Privacy cells (one fresh network per target, batch ``--batch-size``, the embedded default data):
  fedavg (the paper's CNN, no protection) and hyperfl × {unaware, adaptive, oracle}, each at
  * FedSGD: the gradient (hyperfl: the hypernetwork gradient) of one batch;
  * after local training: the update after ``--local-epochs`` epochs on the target batch (fedavg with
    the official code's SGD: lr 0.02, momentum 0.5, weight decay 5e-4; hyperfl: 1 head epoch + the
    local epochs on hypernetwork + embedding).
Utility cells: ``bench train --preset quick`` for fedavg and hyperfl (mean local-test accuracy).

  python benchmarks/hyperfl_table.py --attack ig                  # all cells, then docs/hyperfl.md
  python benchmarks/hyperfl_table.py --attack dlg --attack-arg iterations=50 --settings fedsgd
  python benchmarks/hyperfl_table.py --render-only                # re-render the doc from results

Run it with OMP_NUM_THREADS=1 under nice on a shared machine: the unaware/oracle cells simulate the
13.7 M-parameter hypernetwork on every attack step (~0.3 s per step at FedSGD, ~1 s after a 5-epoch
round, on one CPU core).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.runs.attack import RunSpec, run  # noqa: E402
from doc_tables import mean_std  # noqa: E402
from bench.federation import FLSettings  # noqa: E402
from bench.metrics import psnr_per_image, ssim_per_image  # noqa: E402
from bench.options import parse_assignments  # noqa: E402
from bench.presets import resolve  # noqa: E402
from bench.results import RESULTS_FILE, read_rows  # noqa: E402
from bench.components import Choice, load_dataset  # noqa: E402
from bench.runs.train import TrainSpec, run_training  # noqa: E402

DOC = ROOT / "docs" / "hyperfl.md"
SETTINGS = ("fedsgd", "local")
ROWS = (
    ("fedavg", "fedavg (same CNN, no defense)"),
    ("unaware", "hyperfl, unaware attacker"),
    ("adaptive", "hyperfl, adaptive attacker"),
    ("oracle", "hyperfl, oracle attacker"),
)


@dataclass(frozen=True)
class Cell:
    row: str  # fedavg, or hyperfl's knowledge level: unaware | adaptive | oracle
    setting: str  # fedsgd | local

    @property
    def name(self) -> str:
        return f"{self.row}-{self.setting}"

    def defense(self) -> Choice:
        if self.row == "fedavg":
            return Choice("fedavg", {"preset": "hyperfl-paper"} if self.setting == "local" else {})
        return Choice("hyperfl", {"attack_setting": self.setting})

    def knowledge(self) -> str | None:
        return None if self.row == "fedavg" else self.row


def privacy(args: argparse.Namespace) -> None:
    attack = Choice(args.attack, parse_assignments(args.attack_arg, "--attack-arg"))
    for setting in args.settings:
        for row in args.rows:
            cell = Cell(row, setting)
            federation = FLSettings(clients=args.clients, local_epochs=args.local_epochs if setting == "local" else 1)
            spec = RunSpec(
                defense=cell.defense(),
                attack=attack,
                output_dir=args.out / args.attack / cell.name,
                model=Choice("cnn"),
                batch_size=args.batch_size,
                num_targets=args.num_targets,
                seed=args.seed,
                device=args.device,
                lpips_weights=args.lpips_weights,
                federation=federation,
                resume=True,
                knowledge=cell.knowledge(),
            )
            began = time.perf_counter()
            rows = run(spec, log=lambda m, c=cell.name: print(f"[{c}] {m}", flush=True))
            print(f"[{cell.name}] {len(rows)} target(s), {time.perf_counter() - began:.0f} s", flush=True)


def utility(args: argparse.Namespace) -> None:
    for defense in ("fedavg", "hyperfl"):
        out = args.out / "train" / defense
        if (out / RESULTS_FILE).exists() and read_rows(out / RESULTS_FILE)[0]:
            print(f"[train {defense}] already recorded in {out}", flush=True)
            continue
        r = resolve("quick", Choice(defense), Choice("photos"), None, {})
        spec = TrainSpec(
            defense=r.defense,
            output_dir=out,
            federation=r.federation,
            model=r.model,
            seed=args.seed,
            device=args.device,
            extra=r.extra,
        )
        row = run_training(spec, on_round=lambda h, d=defense: print(f"[train {d}] {h}", flush=True))
        print(f"[train {defense}] final accuracy {row['final_accuracy']:.4f}", flush=True)


def _stat(rows: list[dict[str, Any]], key: str, digits: int) -> str:
    return mean_std((r.get(key) for r in rows), digits)


def _cell_rows(out: Path, attack: str, cell: Cell) -> list[dict[str, Any]]:
    """The attack rows of the cell's latest run (a rerun with other options or targets appends a new run_id)."""
    path = out / attack / cell.name / RESULTS_FILE
    rows = [r for r in read_rows(path)[0] if r.get("kind") == "attack"] if path.exists() else []
    return [r for r in rows if r.get("run_id") == rows[-1].get("run_id")] if rows else []


def baseline_cells(rows: list[dict[str, Any]]) -> list[str]:
    """PSNR/SSIM of a flat image of the training set's mean colour against the same targets: what a
    reconstruction scores with no information about the image at all."""
    cfg = rows[0]["config"]["dataset"]
    _, data = load_dataset(Choice(cfg["name"], {k: v for k, v in cfg.items() if k != "name"}), None)
    mean = data.train_x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    psnr, ssim = [], []
    for r in rows:
        x = data.train_x[r["image_ids"]]
        psnr.append(float(psnr_per_image(x, mean.expand_as(x)).mean()))
        ssim.append(float(ssim_per_image(x, mean.expand_as(x)).mean()))
    fake = [{"psnr": p, "ssim": q} for p, q in zip(psnr, ssim)]
    return [f"{_stat(fake, 'psnr', 2)} (n={len(rows)})", _stat(fake, "ssim", 3), "", ""]


def privacy_table(out: Path, attack: str) -> str:
    head = (
        "| server observes → | FedSGD PSNR (dB) | SSIM | LPIPS | label acc | after local training PSNR (dB) | SSIM "
        "| LPIPS | label acc |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    details: set[str] = set()
    for row, title in ROWS:
        cells = []
        for setting in SETTINGS:
            rows = _cell_rows(out, attack, Cell(row, setting))
            if not rows:
                cells += ["not run"] * 4
                continue
            n, diverged = len(rows), sum(1 for r in rows if r.get("diverged"))
            seconds = np.mean([r["attack_seconds"] for r in rows])
            tag = f"n={n}, {seconds:.0f} s/target" + (f", {diverged} diverged" if diverged else "")
            cells += [
                f"{_stat(rows, 'psnr', 2)} ({tag})",
                _stat(rows, "ssim", 3),
                _stat(rows, "lpips", 3),
                _stat(rows, "label_acc", 2),
            ]
            first = rows[0]
            cfg = first["config"]
            attack_cfg = ", ".join(f"{k}={v}" for k, v in cfg["attack"].items() if k != "name")
            fed = cfg["run"]["federation"]
            details.add(
                f"{attack} ({attack_cfg}); batch {first['batch_size']}; local epochs after local training: "
                f"{fed['local_epochs'] if setting == 'local' else '-'}; data {first['dataset']}; "
                f"model {first['model']}; seed {first['seed']}"
            )
            if first.get("lpips") is None and first.get("lpips_note"):
                details.add(f"LPIPS: {first['lpips_note']}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    reference = []
    for setting in SETTINGS:
        rows = next((r for r in (_cell_rows(out, attack, Cell(row, setting)) for row, _ in ROWS) if r), [])
        reference += baseline_cells(rows) if rows else ["", "", "", ""]
    lines.append("| *no information: a flat image of the data set's mean colour* | " + " | ".join(reference) + " |")
    lines.append("")
    lines += [f"- {d}" for d in sorted(details)]
    return "\n".join(lines)


def utility_table(out: Path) -> str:
    lines = [
        "| defense (bench train --preset quick) | final mean local accuracy | best round | s/round "
        "| MB uploaded per client per round |",
        "|---|---|---|---|---|",
    ]
    for defense in ("fedavg", "hyperfl"):
        path = out / "train" / defense / RESULTS_FILE
        rows = read_rows(path)[0] if path.exists() else []
        if not rows:
            lines.append(f"| {defense} | not run | | | |")
            continue
        r = rows[-1]
        best = max(r["accuracy_per_round"].values())
        lines.append(
            f"| {defense} | {r['final_accuracy']:.4f} | {best:.4f} | {r['seconds_per_round']:.1f} "
            f"| {r['bytes_uploaded_per_client_per_round'] / 1e6:.3f} |"
        )
    return "\n".join(lines)


def render(out: Path, attacks: list[str]) -> None:
    """Rewrite the doc's tables: one privacy table per attack that has results, then the utility table."""
    text = DOC.read_text()
    found = [a for a in attacks if (out / a).is_dir()]
    privacy = "\n\n".join(f"**{a}**\n\n{privacy_table(out, a)}" for a in found) or "not run"
    for marker, table in (("privacy", privacy), ("utility", utility_table(out))):
        pattern = re.compile(
            rf"(<!-- hyperfl-table:{marker}:begin -->\n).*?(<!-- hyperfl-table:{marker}:end -->)", re.S
        )
        if not pattern.search(text):
            raise SystemExit(f"{DOC} lacks the hyperfl-table:{marker} markers")
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    DOC.write_text(text)
    print(f"rendered {DOC}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attack", default="ig", help="attack to run (default: ig)")
    p.add_argument("--attack-arg", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--num-targets", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--local-epochs", type=int, default=5, help="epochs of the 'after local training' setting")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--lpips-weights", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "hyperfl-table")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS), help="which settings to run")
    p.add_argument(
        "--rows",
        nargs="+",
        choices=[r for r, _ in ROWS],
        default=[r for r, _ in ROWS],
        help="which defense/attacker rows to run",
    )
    p.add_argument("--skip-utility", action="store_true", help="do not run the utility cells")
    p.add_argument("--skip-privacy", action="store_true", help="do not run the privacy cells")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args()
    if not args.render_only and not args.skip_privacy:
        privacy(args)
    if not args.render_only and not args.skip_utility:
        utility(args)
    render(args.out, [args.attack] + [a for a in ("ig", "dlg") if a != args.attack])


if __name__ == "__main__":
    main()
