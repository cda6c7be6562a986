"""What an attack must implement: Observation in, reconstructed images and labels out.

An attack never imports a defense; it sees the client only through ``Observation.simulate``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bench.component import Component
from bench.progress import Progress
from bench.threat import Observation


@dataclass
class Reconstruction:
    """An attack's answer.

    ``images`` are in the model's normalised input space, shape [num_images, C, H, W];
    ``labels`` are integer labels or ``None`` when the attack does not infer them.
    ``diverged`` marks a run whose objective became non-finite: its row is recorded as diverged and
    never silently scored as a success.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    loss: float
    iterations: int
    diverged: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class Attack(Component):
    """Base class of a reconstruction attack."""

    kind: ClassVar[str] = "attack"

    @property
    def targets_per_call(self) -> int:
        """How many targets the harness hands :meth:`reconstruct_many` at once (1: one at a time)."""
        return 1

    @abstractmethod
    def reconstruct(self, obs: Observation, generator: torch.Generator, progress: Progress) -> Reconstruction:
        """Reconstruct the client's inputs from ``obs``. All randomness comes from ``generator``."""

    def reconstruct_many(
        self, observations: Sequence[Observation], generators: Sequence[torch.Generator], progress: Progress
    ) -> list[Reconstruction]:
        """Several targets at once (``targets_per_call`` > 1), target i drawing only from ``generators[i]``.

        The default runs :meth:`reconstruct` on each in turn. An attack that can optimise several
        targets in one tensor (their observations have the same shapes) overrides it: many small
        problems then cost far less than as many runs.
        """
        return [self.reconstruct(obs, g, progress) for obs, g in zip(observations, generators)]
