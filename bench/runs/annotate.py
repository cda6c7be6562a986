"""What a result row says besides its scores: whether the server could attribute an aggregate's reconstruction
to the target, notes on an optimisation that never moved, and the one-line caption of a target."""

from __future__ import annotations

from typing import Any

from bench.attack import Reconstruction


def attribution(assignment: list[int], batch: int, reconstructed: int) -> float | None:
    """When the attack reconstructs more images than the target has (an aggregate over clients), the share of
    the target's images whose best match lies in the attacker's own slots for the target (the first ``batch``
    of its reconstruction, the layout its simulator uses). The score matches reconstructions to the target's
    images by ground truth, which the server cannot do; this says whether it could tell which reconstruction
    is the target's (chance: batch / reconstructed). None for a single client's batch."""
    if reconstructed <= batch:
        return None
    return sum(1 for j in assignment if j < batch) / max(1, len(assignment))


def optimisation_notes(attack: str, rec: Reconstruction) -> list[str]:
    """A row whose attack never moved from its initial guess says so: its score then measures the
    random start (e.g. a matching loss already below L-BFGS' tolerances), not the defense."""
    if rec.info.get("improved") is False and not rec.diverged:
        return [
            f"{attack} never improved on its initial guess (attack_info.initial_loss): the score is that of "
            "the random start, a failed optimisation rather than a measure of the defense"
        ]
    return []


def caption(row: dict[str, Any]) -> str:
    lp = "n/a" if row["lpips"] is None else f"{row['lpips']:.3f}"
    acc = "n/a" if row["label_acc"] is None else f"{row['label_acc']:.2f}"
    flag = "  DIVERGED" if row["diverged"] else ""
    return (
        f"target {row['target']} (client {row['target_client']}): PSNR {row['psnr']:.2f} dB, "
        f"SSIM {row['ssim']:.3f}, LPIPS {lp}, label acc {acc}{flag}"
    )
