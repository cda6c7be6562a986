"""DP's accounting: Opacus' RDP analysis over a wide order grid, the budget of a client's history and of
one exchange, and the noise multiplier that spends a target budget."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.defense import ClientState
from bench.errors import BenchError

from bench.defenses.dp.mechanism import HISTORY


def _order_grid() -> tuple[float, ...]:
    """Orders 1 + 1e-8 … 1.8 (10 per decade of α − 1), 2.0 … 11.9 (step 0.1), then ~100 integers 12 … 1024."""
    near_one = 1 + np.geomspace(1e-8, 1, 81)[:-1]
    low = np.round(np.arange(2.0, 12.0, 0.1), 1)
    high = np.unique(np.round(np.geomspace(12, 1024, 100)))
    return tuple(float(a) for a in np.concatenate([near_one, low, high]))


#: The RDP orders every ε is optimised over (module docstring: why this range and these spacings).
RDP_ORDERS: tuple[float, ...] = _order_grid()


@dataclass(frozen=True)
class Spent:
    """An (ε, δ) budget from the RDP accountant and the order α that gave it (``None`` when ε is 0 or ∞)."""

    epsilon: float
    order: float | None

    @property
    def at_edge(self) -> bool:
        """True when the optimal order is the grid's first or last: ε is then a loose bound."""
        return self.order is not None and self.order in (RDP_ORDERS[0], RDP_ORDERS[-1])


def privacy_spent(history: Sequence[tuple[float, float, int]], delta: float) -> Spent:
    """(ε, optimal order) after the given (σ, q, steps) segments (∞ when some σ = 0).

    Opacus' RDP analysis — ``compute_rdp`` per segment, summed, then ``get_privacy_spent`` (Balle et al.
    2020's conversion), exactly what ``RDPAccountant.get_privacy_spent(delta, alphas=RDP_ORDERS)``
    does — with the per-step RDP memoised per (σ, q): it is linear in the steps, and the clients of a
    round (and the targets of a run) share a few (σ, q). Opacus' warning for an optimum on the grid's
    edge is let through.
    """
    return _spent(tuple((float(s), float(q), int(n)) for s, q, n in history), float(delta))


def epsilon_spent(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """ε of :func:`privacy_spent`."""
    return privacy_spent(history, delta).epsilon


@functools.lru_cache(maxsize=256)
def _rdp_per_step(sigma: float, q: float) -> np.ndarray:
    from opacus.accountants.analysis import rdp as analysis

    rdp = np.asarray(analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(RDP_ORDERS)), dtype=float)
    rdp.setflags(write=False)
    return rdp


@functools.lru_cache(maxsize=4096)
def _spent(history: tuple[tuple[float, float, int], ...], delta: float) -> Spent:
    from opacus.accountants.analysis import rdp as analysis

    segments = [(s, q, n) for s, q, n in history if n > 0 and q > 0]
    if not segments:
        return Spent(0.0, None)
    if any(s == 0 for s, _, _ in segments):
        return Spent(math.inf, None)
    rdp = sum(n * _rdp_per_step(s, q) for s, q, n in segments)
    epsilon, order = analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    return Spent(float(epsilon), float(order))


def calibrated_noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, epochs: int) -> float:
    """σ that spends ``target_epsilon`` in ``epochs`` passes at sampling rate q (Opacus, RDP, :data:`RDP_ORDERS`).

    Opacus' bisection evaluates ε at trial σ's that are never used (up to σ = 10⁶); their "optimal order
    is the largest alpha" warnings are collected, not shown. The σ it returns is then accounted with
    :func:`privacy_spent`, whose warning for an edge optimum is let through.
    """
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings(record=True):  # trial σ's of the search only (docstring)
            warnings.simplefilter("always")
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    epochs=epochs,
                    accountant="rdp",
                    alphas=list(RDP_ORDERS),
                )
            )
    except ValueError as exc:
        raise BenchError(
            f"defense 'dp' cannot reach target_epsilon={target_epsilon} with delta={delta}, "
            f"q={sample_rate:.4g}, epochs={epochs}: {exc}"
        ) from None
    privacy_spent([(sigma, sample_rate, int(epochs / sample_rate))], delta)
    return sigma


def history_of(client: ClientState) -> list[tuple[float, float, int]]:
    rows = client.get(HISTORY)
    return [] if rows is None else [(float(s), float(q), int(n)) for s, q, n in rows.tolist()]


def with_segment(
    history: list[tuple[float, float, int]], sigma: float, q: float, steps: int
) -> list[tuple[float, float, int]]:
    """The history extended by ``steps`` steps at (σ, q), merged with the last segment when equal (as Opacus does)."""
    if history and history[-1][:2] == (sigma, q):
        return [*history[:-1], (sigma, q, history[-1][2] + steps)]
    return [*history, (sigma, q, steps)]
