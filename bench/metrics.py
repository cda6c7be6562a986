"""Scores of a reconstruction against the true images, in [0, 1] pixel space.

Conventions (also in the docs): images are denormalised and clamped to [0, 1] before scoring;
PSNR (data range 1, MSE floored at 1e-10, so at most 100 dB) and SSIM (scikit-image's windowed
SSIM, 7×7 uniform window, ``channel_axis`` for colour) are computed per image and then averaged;
LPIPS uses AlexNet (see :mod:`bench.perceptual`). When an attack returns more images than the
target has (e.g. an aggregate over several clients), or a batch in another order, each true image
is matched to one reconstruction by a minimum-MSE one-to-one assignment
(``scipy.optimize.linear_sum_assignment``) before scoring. Label accuracy is the share of true
labels found among the matched reconstructions' labels, order-insensitive (multiset overlap).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

from bench.perceptual import LpipsScorer

MSE_FLOOR = 1e-10


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).pow(2).flatten(1).mean(1)


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [0, 1] (data range 1)."""
    return 10 * torch.log10(1.0 / mse_per_image(a, b).clamp_min(MSE_FLOOR))


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """scikit-image's windowed SSIM per image (data range 1), colour images along the channel axis."""
    out = []
    for x, y in zip(a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()):
        x, y = np.moveaxis(x, 0, -1), np.moveaxis(y, 0, -1)
        if x.shape[-1] == 1:
            out.append(structural_similarity(x[..., 0], y[..., 0], data_range=1.0))
        else:
            out.append(structural_similarity(x, y, data_range=1.0, channel_axis=-1))
    return torch.tensor(out, dtype=torch.float64)


def match_reconstructions(truth: torch.Tensor, recon: torch.Tensor) -> np.ndarray:
    """For each true image, the index of its reconstruction under a min-MSE one-to-one assignment."""
    cost = (truth.double().flatten(1)[:, None, :] - recon.double().flatten(1)[None, :, :]).pow(2).mean(-1)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    out = np.empty(len(truth), dtype=np.int64)
    out[rows] = cols
    return out


def label_accuracy(true_labels: torch.Tensor, predicted: torch.Tensor) -> float:
    """Share of true labels present among the predicted ones (multiset overlap, order-insensitive)."""
    truth, pred = Counter(true_labels.tolist()), Counter(predicted.tolist())
    return sum(min(n, pred[label]) for label, n in truth.items()) / max(1, len(true_labels))


@dataclass
class Scores:
    """Per-image scores of the matched reconstructions and their means."""

    psnr: list[float]
    ssim: list[float]
    mse: list[float]
    lpips: list[float] | None
    lpips_note: str | None
    label_acc: float | None
    assignment: list[int]

    def means(self) -> dict[str, float | None]:
        def mean(v: list[float] | None) -> float | None:
            return None if v is None else float(np.mean(v))
        return {"psnr": mean(self.psnr), "ssim": mean(self.ssim), "mse": mean(self.mse),
                "lpips": mean(self.lpips), "label_acc": self.label_acc}


def score(truth: torch.Tensor, recon: torch.Tensor, true_labels: torch.Tensor,
          predicted_labels: torch.Tensor | None, lpips: LpipsScorer | None) -> Scores:
    """Score ``recon`` (N ≥ B images in [0, 1]) against ``truth`` (B images in [0, 1])."""
    truth, recon = truth.detach().cpu().float().clamp(0, 1), recon.detach().cpu().float().clamp(0, 1)
    if recon.shape[0] < truth.shape[0] or recon.shape[1:] != truth.shape[1:]:
        raise ValueError(f"reconstruction {tuple(recon.shape)} cannot be matched to truth {tuple(truth.shape)}")
    assignment = match_reconstructions(truth, recon)
    matched = recon[torch.from_numpy(assignment)]
    lpips_values, note = None, None
    if lpips is not None and lpips.available:
        lpips_values = lpips(truth, matched).tolist()
        note = lpips.note
    else:
        note = lpips.note if lpips is not None else "LPIPS not requested"
    label_acc = None
    if predicted_labels is not None:
        label_acc = label_accuracy(true_labels.cpu(), predicted_labels.cpu()[torch.from_numpy(assignment)])
    return Scores(psnr=psnr_per_image(truth, matched).tolist(), ssim=ssim_per_image(truth, matched).tolist(),
                  mse=mse_per_image(truth, matched).tolist(), lpips=lpips_values, lpips_note=note,
                  label_acc=label_acc, assignment=assignment.tolist())
