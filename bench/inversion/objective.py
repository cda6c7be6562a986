"""Gradient-matching objectives: distances between simulated and observed tensors, and image priors.

Written once and shared by every optimisation-based attack. ``GradientMatching`` evaluates one
candidate, or many at once (restarts) with ``torch.func.vmap`` when the defense's simulator allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

import torch

from bench.errors import first_line
from bench.threat import Observation

Distance = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]


def _total(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of scalar tensors (Python's ``sum``, typed: the same arithmetic, starting from 0)."""
    return cast(torch.Tensor, sum(terms))


def l2_distance(simulated: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ‖s − o‖² over all tensors, unweighted (DLG, iDLG)."""
    return _total(((s - o) ** 2).sum() for s, o in zip(simulated, observed))


def cosine_distance(simulated: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """1 − ⟨s, o⟩ / (‖s‖‖o‖) with all tensors concatenated: one global cosine (Inverting Gradients)."""
    dot = _total((s * o).sum() for s, o in zip(simulated, observed))
    s_norm = _total(s.pow(2).sum() for s in simulated).sqrt()
    o_norm = _total(o.pow(2).sum() for o in observed).sqrt()
    return 1 - dot / (s_norm * o_norm).clamp_min(1e-20)


def layerwise_cosine_distance(simulated: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over tensors of (1 − cos(s, o)): each layer counts equally (IG's per-layer option)."""
    return _total(1 - (s * o).sum() / (s.norm() * o.norm()).clamp_min(1e-20) for s, o in zip(simulated, observed))


DISTANCES: dict[str, Distance] = {
    "l2": l2_distance,
    "cosine": cosine_distance,
    "cosine-layer": layerwise_cosine_distance,
}


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, mean |Δx| + mean |Δy| over the batch (Inverting Gradients)."""
    dx = (x[..., :, :-1] - x[..., :, 1:]).abs().mean()
    dy = (x[..., :-1, :] - x[..., 1:, :]).abs().mean()
    return dx + dy


class GradientMatching:
    """distance(simulate(x, y, unknowns), observed) + tv · TV(x) for the observation's tensors."""

    def __init__(self, obs: Observation, distance: str = "l2", tv: float = 0.0) -> None:
        self.obs = obs
        self.keys = list(obs.observed)
        self.targets = [obs.observed[k].detach() for k in self.keys]
        self.distance = DISTANCES[distance]
        self.tv = tv

    def loss(self, x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Objective of one candidate: x [N, C, H, W], y [N] or [N, K], unknowns as declared."""
        simulated = self.obs.simulate(x, y, unknowns)
        value = self.distance([simulated[k] for k in self.keys], self.targets)
        if self.tv:
            value = value + self.tv * total_variation(x)
        return value

    def loss_batched(self, x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Objectives of R candidates at once (every argument has a leading dimension R): shape [R].

        Uses ``vmap`` over the simulator; a simulator that cannot be vmapped falls back to a loop.
        A single candidate skips ``vmap`` (same math; plain autograd is cheaper on small networks).
        """
        if x.shape[0] == 1:
            return self.loss(x[0], y[0], {k: v[0] for k, v in unknowns.items()}).unsqueeze(0)
        try:
            return torch.func.vmap(self.loss)(x, y, dict(unknowns))
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            if "vmap" not in str(exc) and "batched" not in str(exc).lower() and "functorch" not in str(exc):
                raise
            self.vmap_failed = first_line(exc)
            return torch.stack([self.loss(x[r], y[r], {k: v[r] for k, v in unknowns.items()}) for r in range(len(x))])
