"""Formatting shared by the benchmark scripts that write tables into docs/ (imported from the
scripts' own folder, which Python puts first on sys.path when a script runs)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def mean_std(values: Iterable[float | None], digits: int = 2) -> str:
    """``mean ± std`` (population std, as every table in docs/ reports it), ignoring missing values."""
    kept = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not kept:
        return "n/a"
    return f"{np.mean(kept):.{digits}f} ± {np.std(kept):.{digits}f}"
