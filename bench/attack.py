"""What an attack must implement: Observation in, reconstructed images and labels out.

An attack never imports a defense; it sees the client only through ``Observation.simulate``.
"""
from __future__ import annotations

from abc import abstractmethod
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

    @abstractmethod
    def reconstruct(self, obs: Observation, generator: torch.Generator, progress: Progress) -> Reconstruction:
        """Reconstruct the client's inputs from ``obs``. All randomness comes from ``generator``."""
