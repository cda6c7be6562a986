"""Hand-made result rows with known numbers, for leaderboard and report tests (no attack is run).

Four defense configurations, two attacks, two seeds × two targets each:

| defense                | accuracy      | dlg PSNR            | ig PSNR | expected rank |
|------------------------|---------------|---------------------|---------|---------------|
| fedavg                 | 0.70, 0.72    | 30, 32, 34, 36      | 20..26  | 2 (tier 0, strongest median 33)  |
| dp(noise_multiplier=0.1) | 0.70, 0.70  | 10, 12, 14, 16      | 15 ×4   | 1 (tier 0, strongest median 15)  |
| dp(noise_multiplier=1) | 0.30, 0.32    | 5, 6, 7, 8 + 99 div.| 6 ×4    | 3 (tier 20, strongest median 6.5)|
| he                     | (no train row)| 40 ×4               | 41 ×4   | 4 (no utility)              |

Every target's no-information baseline is 12 dB (so the default success rule, gain ≥ 6 dB, means PSNR ≥ 18).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

BASELINE_PSNR = 12.0
FEDERATION = {
    "clients": 4,
    "partition": "dominant",
    "train_per_client": None,
    "test_per_client": None,
    "batch_size": 50,
    "local_epochs": 1,
    "rounds": 0,
    "eval_every": 1,
}
DATASET = {"name": "photos", "normalise": True}
MODEL = {"name": "cnn"}
ATTACKS = {"dlg": {"name": "dlg", "iterations": 50}, "ig": {"name": "ig", "iterations": 1000, "tv": 0.0001}}
DEFENSES = {
    "fedavg": {"name": "fedavg", "lr": 0.02},
    "dp01": {"name": "dp", "noise_multiplier": 0.1, "clip": 1.0},
    "dp1": {"name": "dp", "noise_multiplier": 1.0, "clip": 1.0},
    "he": {"name": "he", "clients": 4},
}
PSNR = {
    ("fedavg", "dlg"): [30, 32, 34, 36],
    ("fedavg", "ig"): [20, 22, 24, 26],
    ("dp01", "dlg"): [10, 12, 14, 16],
    ("dp01", "ig"): [15, 15, 15, 15],
    ("dp1", "dlg"): [5, 6, 7, 8],
    ("dp1", "ig"): [6, 6, 6, 6],
    ("he", "dlg"): [40, 40, 40, 40],
    ("he", "ig"): [41, 41, 41, 41],
}
ACCURACY = {"fedavg": [0.70, 0.72], "dp01": [0.70, 0.70], "dp1": [0.30, 0.32]}
EPSILON = {"dp01": 812.0, "dp1": 3.5}


def _png(colour: tuple[int, int, int]) -> bytes:
    """A 65×32 pair image: a flat colour (ground truth) above noise (reconstruction)."""
    pixels = np.full((65, 32, 3), 255, np.uint8)
    pixels[:32] = colour
    pixels[33:] = np.random.default_rng(sum(colour)).integers(0, 256, (32, 32, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def attack_row(defense: str, attack: str, seed: int, target: int, psnr: float, status: str = "ok") -> dict:
    run_id = f"{defense}-{attack}-{seed}"
    return {
        "kind": "attack",
        "run_id": run_id,
        "target": target,
        "status": status,
        "diverged": status == "diverged",
        "defense": DEFENSES[defense]["name"],
        "attack": attack,
        "dataset": "photos",
        "model": "cnn",
        "seed": seed,
        "psnr": psnr,
        "ssim": psnr / 100,
        "lpips": 1 - psnr / 100,
        "label_acc": 1.0 if psnr > 20 else 0.0,
        "lpips_note": None,
        "knowledge": "adaptive",
        "notes": [],
        "baseline_psnr": BASELINE_PSNR,
        "baseline_ssim": 0.1,
        "baseline_lpips": 0.9,
        "defense_metrics": {"epsilon": EPSILON[defense], "delta": 1e-5} if defense in EPSILON else {},
        "config": {
            "defense": DEFENSES[defense],
            "attack": ATTACKS[attack],
            "dataset": DATASET,
            "model": MODEL,
            "run": {
                "batch_size": 1,
                "num_targets": 2,
                "seed": seed,
                "attack_round": 0,
                "knowledge": "adaptive",
                "federation": FEDERATION,
            },
        },
        "image_file": f"images/{run_id}-t{target}.png",
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "versions": {"bench-fl": "0.1.0", "torch": "2"},
        "timestamp": "2026-11-25T12:00:00+00:00",
    }


def train_row(defense: str, seed: int, accuracy: float) -> dict:
    history = [{"round": 1, "seconds": 2.0, "bytes_uploaded": 4e5, "accuracy": accuracy}]
    if defense in EPSILON:
        history[-1].update(epsilon=EPSILON[defense], delta=1e-5)
    return {
        "kind": "train",
        "run_id": f"train-{defense}-{seed}",
        "defense": DEFENSES[defense]["name"],
        "seed": seed,
        "final_accuracy": accuracy,
        "seconds_per_round": 2.0 if defense != "dp1" else 3.0,
        "bytes_uploaded_per_client_per_round": 4e5,
        "history": history,
        "config": {
            "defense": DEFENSES[defense],
            "dataset": DATASET,
            "model": MODEL,
            "run": {"seed": seed, "federation": {**FEDERATION, "rounds": 1}},
        },
    }


def write_fixture(directory: Path, with_images: bool = True) -> Path:
    """Write the rows (and their PNGs) to ``directory/results.jsonl``; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for (defense, attack), values in PSNR.items():
        for i, psnr in enumerate(values):
            rows.append(attack_row(defense, attack, seed=i // 2, target=i % 2, psnr=float(psnr)))
    diverged = attack_row("dp1", "dlg", seed=2, target=0, psnr=99.0, status="diverged")
    rows.append(diverged)
    for defense, accuracies in ACCURACY.items():
        rows += [train_row(defense, seed, acc) for seed, acc in enumerate(accuracies)]
    if with_images:
        (directory / "images").mkdir(exist_ok=True)
        for n, row in enumerate(r for r in rows if r["kind"] == "attack"):
            (directory / row["image_file"]).write_bytes(_png((40 * (n % 6), 200 - 20 * (n % 9), 90)))
    path = directory / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
