"""Statistics of a leaderboard cell: a distribution, not just a mean.

A gradient-inversion optimiser is chaotic: the same attack recovers one target at 60 dB and fails
on the next at 8 dB, so a mean describes neither. Every cell reports N, the mean ± sample standard
deviation (ddof 1; the one convention everywhere), the median, a 95 % percentile-bootstrap interval
of the mean (fixed resampling seed, so a leaderboard is a pure function of its rows) and a success
rate under one documented :class:`SuccessRule`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.metrics import REGISTRY
from bench.reports import DEFAULT_SUCCESS

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def _finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if not math.isnan(f):
            out.append(f)
    return out


def mean_std_text(mean: float | None, std: float | None, digits: int, scale: float = 1.0) -> str:
    """The one mean ± std format: ``12.34 ± 5.67``, the mean alone for one value, ``n/a`` for none."""
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


@dataclass(frozen=True)
class Summary:
    """N, mean, sample std (ddof 1), median and the bootstrap interval [low, high] of the mean."""

    n: int
    mean: float | None = None
    std: float | None = None
    median: float | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, values: Iterable[Any], interval: bool = True) -> Summary:
        v = np.asarray(_finite(values), dtype=np.float64)
        if not len(v):
            return cls(0)
        std = float(v.std(ddof=1)) if len(v) > 1 else None
        low = high = None
        if interval and len(v) > 1:
            rng = np.random.default_rng(BOOTSTRAP_SEED)
            means = v[rng.integers(0, len(v), size=(BOOTSTRAP_RESAMPLES, len(v)))].mean(axis=1)
            tail = (1 - CONFIDENCE) / 2 * 100
            low, high = (float(x) for x in np.percentile(means, [tail, 100 - tail]))
        return cls(len(v), float(v.mean()), std, float(np.median(v)), low, high)

    def text(self, digits: int, scale: float = 1.0) -> str:
        return mean_std_text(self.mean, self.std, digits, scale)

    def interval_bars(self) -> tuple[float, float]:
        """How far the interval of the mean reaches below and above the median (for error bars; 0 when unknown)."""
        if self.median is None:
            return 0.0, 0.0
        low = self.low if self.low is not None else self.median
        high = self.high if self.high is not None else self.median
        return max(0.0, self.median - low), max(0.0, high - self.median)

    def median_text(self, digits: int) -> str:
        return "n/a" if self.median is None else f"{self.median:.{digits}f}"

    def interval_text(self, digits: int) -> str:
        if self.low is None or self.high is None:
            return "n/a"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


_RULE = re.compile(r"^\s*([a-z_]+?)(_gain)?\s*(>=|<=)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")
SUCCESS_WHY = (
    "a target counts as recovered when its PSNR is at least 6 dB above the best no-information guess "
    "(the training set's mean image or its flat mean colour), i.e. the reconstruction's MSE is at most a "
    "quarter of the guess's; a fixed PSNR or SSIM threshold would mean different things on different "
    "data sets, while the gain over the guess does not"
)


@dataclass(frozen=True)
class SuccessRule:
    """When a target counts as recovered: ``METRIC>=X``, ``METRIC<=X``, or ``METRIC_gain>=X`` (the row's
    metric minus its no-information baseline ``baseline_METRIC``). Default :data:`DEFAULT_SUCCESS`."""

    metric: str
    gain: bool
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> SuccessRule:
        match = _RULE.match(text or "")
        valid = ", ".join(m for m in REGISTRY)
        if not match:
            raise BenchError(
                f"success rule {text!r} must look like METRIC>=X, METRIC<=X or METRIC_gain>=X "
                f"(e.g. {DEFAULT_SUCCESS!r} or 'ssim>=0.5'); metrics: {valid}"
            )
        metric, gain, op, value = match.groups()
        if metric not in REGISTRY:
            raise BenchError(f"success rule {text!r}: unknown metric {metric!r}; valid: {valid}")
        if gain and not REGISTRY[metric].baseline:
            raise BenchError(f"success rule {text!r}: {metric} has no no-information baseline to gain over")
        return cls(metric, bool(gain), op, float(value))

    def value(self, row: Mapping[str, Any]) -> float | None:
        v = row.get(self.metric)
        if v is None:
            return None
        if not self.gain:
            return float(v)
        base = row.get(f"baseline_{self.metric}")
        return None if base is None else float(v) - float(base)

    def passes(self, row: Mapping[str, Any]) -> bool | None:
        v = self.value(row)
        if v is None or math.isnan(v):
            return None
        return v >= self.threshold if self.op == ">=" else v <= self.threshold

    def text(self) -> str:
        return f"{self.metric}{'_gain' if self.gain else ''}{self.op}{self.threshold:g}"

    def describe(self) -> str:
        what = (
            f"{REGISTRY[self.metric].title} gain over the no-information baseline"
            if self.gain
            else REGISTRY[self.metric].title
        )
        return f"{what} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Rate:
    """k successes out of n scored targets."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    def text(self) -> str:
        return "n/a" if not self.n else f"{self.k}/{self.n} ({100 * self.k / self.n:.0f} %)"
