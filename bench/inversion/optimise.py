"""Optimisation loops shared by attacks, with best-iterate tracking and divergence detection."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from bench.progress import Progress


class Diverged(Exception):
    """The objective became non-finite."""


class BestIterate:
    """Keeps a copy of the variables at the lowest finite loss seen so far."""

    def __init__(self, variables: Sequence[torch.Tensor]) -> None:
        self.variables = list(variables)
        self.loss = math.inf
        self.values = [v.detach().clone() for v in self.variables]

    def offer(self, loss: float) -> None:
        if math.isfinite(loss) and loss < self.loss:
            self.loss = loss
            self.values = [v.detach().clone() for v in self.variables]


@dataclass
class OptimisationResult:
    """The best variables found, their loss, the loss after each step, and whether the run diverged."""

    values: list[torch.Tensor]
    loss: float
    iterations: int
    diverged: bool
    history: list[float] = field(default_factory=list)


def lbfgs(variables: Sequence[torch.Tensor], objective: Callable[[], torch.Tensor], iterations: int,
          progress: Progress, lr: float = 1.0, max_iter: int = 20, tol: float = 0.0,
          description: str = "") -> OptimisationResult:
    """Minimise ``objective`` over ``variables`` with L-BFGS as DLG/iDLG do.

    Each of ``iterations`` steps is one ``torch.optim.LBFGS.step`` with PyTorch's defaults (up to
    ``max_iter`` inner iterations, no line search), exactly like the reference code. Stops early once
    the loss falls below ``tol`` (iDLG uses 1e-6), and on a non-finite loss (diverged). Returns the
    best iterate, not the last.
    """
    optimiser = torch.optim.LBFGS(list(variables), lr=lr, max_iter=max_iter)
    best = BestIterate(variables)
    history: list[float] = []
    diverged = False
    done = 0

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise Diverged
        best.offer(value)
        loss.backward()
        return loss

    progress.start(iterations, description)
    try:
        for done in range(1, iterations + 1):
            try:
                optimiser.step(closure)
            except Diverged:
                diverged = True
                break
            history.append(best.loss)
            progress.advance(1, best.loss)
            if tol and best.loss < tol:
                break
    finally:
        progress.close()
    return OptimisationResult(best.values, best.loss, done, diverged, history)
