"""Scores of a reconstruction against the true images, in [0, 1] pixel space: one registry of metrics.

Each :class:`Metric` is defined once (name, title, which direction favours the attacker, digits,
how it is computed per image and how it aggregates) and that one definition feeds scoring, the
result row, the run summary, the leaderboard and the report; adding a metric is one
:func:`register` call. Conventions (also in the docs): images are denormalised and clamped to
[0, 1] before scoring; PSNR (data range 1, MSE floored at 1e-10, so at most 100 dB) and SSIM
(scikit-image's windowed SSIM, 7×7 uniform window, ``channel_axis`` for colour) are computed per
image and then averaged over the batch; LPIPS uses AlexNet (see :mod:`bench.perceptual`). When an
attack returns more images than the target has (e.g. an aggregate over several clients), or a batch
in another order, each true image is matched to one reconstruction by a minimum-MSE one-to-one
assignment (``scipy.optimize.linear_sum_assignment``) before scoring. Label accuracy is the share of
true labels found among the matched reconstructions' labels, order-insensitive (multiset overlap).

Every row also carries the **no-information baseline**: the same metrics for the best guesses made
without the observation — the training set's mean image and a flat image of its mean colour
(:func:`baseline_guesses`) — so a reconstruction counts as evidence of leakage only above them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

from bench.perceptual import LpipsScorer

MSE_FLOOR = 1e-10

#: per-image scores of matched images in [0, 1] ([B, C, H, W] each), or None when unavailable
PerImage = Callable[[torch.Tensor, torch.Tensor, "LpipsScorer | None"], "torch.Tensor | None"]


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


def _lpips(a: torch.Tensor, b: torch.Tensor, scorer: LpipsScorer | None) -> torch.Tensor | None:
    return scorer(a, b) if scorer is not None and scorer.available else None


@dataclass(frozen=True)
class Metric:
    """One score of a reconstruction, defined once for the whole pipeline.

    ``higher_is_better`` is from the *attacker's* side (a better reconstruction): PSNR and SSIM go up,
    LPIPS and MSE go down when the attack succeeds; a defense wants the opposite. ``per_image``
    computes the metric for matched image pairs (``None`` for a batch-level metric such as label
    accuracy); the row's value is the mean over the batch's images. ``baseline``: whether the
    no-information guesses are scored with it too.
    """

    name: str
    title: str
    higher_is_better: bool
    digits: int
    description: str
    per_image: PerImage | None = None
    baseline: bool = True

    @property
    def privacy_arrow(self) -> str:
        """The direction that means MORE privacy (the attacker does worse), for column titles."""
        return "↓" if self.higher_is_better else "↑"

    def best(self, values: list[float]) -> float:
        """The attacker's best of several values (e.g. of the no-information guesses)."""
        return max(values) if self.higher_is_better else min(values)

    def fmt(self, value: float | None) -> str:
        return "n/a" if value is None else f"{value:.{self.digits}f}"


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric to every score, row, summary, leaderboard and report (one place)."""
    REGISTRY[metric.name] = metric
    return metric


register(
    Metric(
        "psnr", "PSNR", True, 2, "peak signal-to-noise ratio in dB (data range 1)", lambda a, b, _: psnr_per_image(a, b)
    )
)
register(
    Metric(
        "ssim",
        "SSIM",
        True,
        3,
        "scikit-image's windowed SSIM (7×7), per channel for colour",
        lambda a, b, _: ssim_per_image(a, b),
    )
)
register(
    Metric("lpips", "LPIPS", False, 3, "LPIPS v0.1 with AlexNet (ImageNet weights); null when unavailable", _lpips)
)
register(
    Metric("mse", "MSE", False, 4, "mean squared error in [0, 1] pixel space", lambda a, b, _: mse_per_image(a, b))
)
register(
    Metric(
        "label_acc",
        "label acc",
        True,
        2,
        "share of true labels among the matched reconstructions' "
        "labels (multiset overlap); null when the attack infers none",
        baseline=False,
    )
)


def image_metrics() -> list[Metric]:
    return [m for m in REGISTRY.values() if m.per_image is not None]


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


def per_image_scores(
    truth: torch.Tensor, matched: torch.Tensor, lpips: LpipsScorer | None, metrics: list[Metric] | None = None
) -> dict[str, list[float] | None]:
    """Every image metric for matched pairs in [0, 1] (None where a metric is unavailable)."""
    out: dict[str, list[float] | None] = {}
    for metric in metrics if metrics is not None else image_metrics():
        assert metric.per_image is not None
        values = metric.per_image(truth, matched, lpips)
        out[metric.name] = None if values is None else [float(v) for v in values]
    return out


@dataclass
class Scores:
    """Per-image scores of the matched reconstructions, label accuracy, and the assignment."""

    per_image: dict[str, list[float] | None]
    label_acc: float | None
    lpips_note: str | None
    assignment: list[int]

    def means(self) -> dict[str, float | None]:
        """The row's value of every registered metric."""
        out: dict[str, float | None] = {
            name: None if v is None else float(np.mean(v)) for name, v in self.per_image.items()
        }
        out["label_acc"] = self.label_acc
        return {name: out.get(name) for name in REGISTRY}


def _clamped(images: torch.Tensor) -> torch.Tensor:
    return images.detach().cpu().float().clamp(0, 1)


def score(
    truth: torch.Tensor,
    recon: torch.Tensor,
    true_labels: torch.Tensor,
    predicted_labels: torch.Tensor | None,
    lpips: LpipsScorer | None,
) -> Scores:
    """Score ``recon`` (N ≥ B images in [0, 1]) against ``truth`` (B images in [0, 1])."""
    truth, recon = _clamped(truth), _clamped(recon)
    if recon.shape[0] < truth.shape[0] or recon.shape[1:] != truth.shape[1:]:
        raise ValueError(f"reconstruction {tuple(recon.shape)} cannot be matched to truth {tuple(truth.shape)}")
    assignment = match_reconstructions(truth, recon)
    matched = recon[torch.from_numpy(assignment)]
    note = lpips.note if lpips is not None else "LPIPS not requested"
    label_acc = None
    if predicted_labels is not None:
        label_acc = label_accuracy(true_labels.cpu(), predicted_labels.cpu()[torch.from_numpy(assignment)])
    return Scores(per_image_scores(truth, matched, lpips), label_acc, note, assignment.tolist())


# --- the no-information baseline -------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The guesses a server can make without the observation, from the public training distribution."""

    guesses: Mapping[str, torch.Tensor] = field(default_factory=dict)  # name -> one image [C, H, W] in [0, 1]

    def score(self, truth: torch.Tensor, lpips: LpipsScorer | None) -> dict[str, Any]:
        """Per guess, the batch mean of every baseline metric; and per metric the attacker's best guess
        (``baseline_<metric>``), the reference a reconstruction has to beat."""
        truth = _clamped(truth)
        metrics = [m for m in image_metrics() if m.baseline]
        per_guess: dict[str, dict[str, float | None]] = {}
        for name, guess in self.guesses.items():
            repeated = _clamped(guess).expand_as(truth)
            scores = per_image_scores(truth, repeated, lpips, metrics)
            per_guess[name] = {k: None if v is None else float(np.mean(v)) for k, v in scores.items()}
        best: dict[str, Any] = {}
        for metric in metrics:
            values = [v for g in per_guess.values() if (v := g.get(metric.name)) is not None]
            best[f"baseline_{metric.name}"] = metric.best(values) if values else None
        return {"baseline": per_guess, **best}


def baseline_guesses(train_images: torch.Tensor) -> Baseline:
    """The training set's mean image, and a flat image of its mean colour (images in [0, 1], [N, C, H, W])."""
    images = train_images.detach().cpu().double()
    mean_image = images.mean(0)
    colour = mean_image.mean(dim=(1, 2), keepdim=True).expand_as(mean_image)
    return Baseline({"mean_image": mean_image.float(), "mean_colour": colour.float().contiguous()})
