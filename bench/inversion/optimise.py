"""Optimisation loops shared by attacks, with best-iterate tracking and divergence detection."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from bench.options import Option
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
    initial_loss: float = math.nan

    @property
    def improved(self) -> bool:
        """Whether the best iterate is better than the initial guess (False: the run never moved)."""
        return not math.isfinite(self.initial_loss) or self.loss < self.initial_loss


def lbfgs_options(tol: float = 0.0) -> tuple[Option, ...]:
    """The options of an attack built on :func:`lbfgs` (DLG, iDLG), declared once so they read alike."""
    return (
        Option("iterations", int, 300, "L-BFGS steps", min=1),
        Option("lr", float, 1.0, "L-BFGS learning rate", min=0.0, min_exclusive=True),
        Option("max_iter", int, 20, "L-BFGS inner iterations per step (PyTorch default)", min=1),
        Option("tol", float, tol, "stop once the matching loss is below this (0: never)", min=0.0),
    )


def lbfgs(
    variables: Sequence[torch.Tensor],
    objective: Callable[[], torch.Tensor],
    iterations: int,
    progress: Progress,
    lr: float = 1.0,
    max_iter: int = 20,
    tol: float = 0.0,
    description: str = "",
) -> OptimisationResult:
    """Minimise ``objective`` over ``variables`` with L-BFGS as DLG/iDLG do.

    Each of ``iterations`` steps is one ``torch.optim.LBFGS.step`` with PyTorch's defaults (up to
    ``max_iter`` inner iterations, no line search), exactly like the reference code. Stops early once
    the loss falls below ``tol`` (iDLG uses 1e-6), and on a non-finite loss (diverged). Returns the
    best iterate, not the last.
    """
    params = list(variables)
    optimiser = torch.optim.LBFGS(params, lr=lr, max_iter=max_iter)
    best = BestIterate(params)
    history: list[float] = []
    initial: list[float] = []
    diverged = False
    done = 0

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective()
        value = float(loss.detach())
        if not initial:
            initial.append(value)
        if not math.isfinite(value):
            raise Diverged
        best.offer(value)
        loss.backward(inputs=params)  # only the attack's variables need gradients
        return loss

    progress.start(iterations, description)
    try:
        for done in range(1, iterations + 1):  # noqa: B007 (read after the loop: the steps taken)
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
    return OptimisationResult(
        best.values, best.loss, done, diverged, history, initial_loss=initial[0] if initial else math.nan
    )


def step_milestones(iterations: int) -> list[int]:
    """Inverting Gradients' learning-rate milestones, ≈ 3/8, 5/8 and 7/8 of the run.

    Computed exactly as the reference code does (``iterations // 2.667``, ``// 1.6``, ``// 1.142``),
    so 4,800 iterations decay after steps 1,799, 2,999 (4800 // 1.6 is 2999.0 in floating point) and 4,203.
    """
    return [int(iterations // 2.667), int(iterations // 1.6), int(iterations // 1.142)]


class BestIterates:
    """Per-restart best iterate: every variable has a leading restart dimension R, and restart r keeps
    a copy of its own variables at the lowest finite loss it has seen."""

    def __init__(self, variables: Sequence[torch.Tensor]) -> None:
        self.variables = list(variables)
        restarts = self.variables[0].shape[0]
        self.loss = torch.full((restarts,), math.inf, dtype=torch.float64)
        self.values = [v.detach().clone() for v in self.variables]

    def offer(self, losses: torch.Tensor) -> None:
        """``losses`` [R] belong to the variables' *current* values (call before stepping).
        Non-finite losses never count as better (NaN compares false)."""
        losses = losses.detach().to("cpu", torch.float64)
        better = losses < self.loss
        improved = int(better.sum())
        if not improved:
            return
        self.loss = torch.where(better, losses, self.loss)
        if improved == len(better):
            for stored, current in zip(self.values, self.variables):
                stored.copy_(current.detach())
            return
        for stored, current in zip(self.values, self.variables):
            mask = better.to(current.device).view(-1, *([1] * (current.dim() - 1)))
            stored.copy_(torch.where(mask, current.detach(), stored))

    def restore(self, which: torch.Tensor) -> None:
        """Reset the restarts selected by the boolean mask ``which`` to their best values."""
        with torch.no_grad():
            for stored, current in zip(self.values, self.variables):
                mask = which.to(current.device).view(-1, *([1] * (current.dim() - 1)))
                current.copy_(torch.where(mask, stored, current))


@dataclass
class RestartsResult:
    """Outcome of a batched run: best values per restart ([R, ...] each), their losses [R], which
    restarts diverged [R], the steps taken, and the lowest loss over restarts after each step."""

    values: list[torch.Tensor]
    losses: torch.Tensor
    diverged: torch.Tensor
    iterations: int
    history: list[float] = field(default_factory=list)
    initial_losses: torch.Tensor | None = None

    def improved(self, restart: int) -> bool:
        """Whether restart ``restart``'s best iterate beats its initial guess (False: it never moved)."""
        if self.initial_losses is None or not math.isfinite(float(self.initial_losses[restart])):
            return True
        return bool(self.losses[restart] < self.initial_losses[restart])


def adam(
    variables: Sequence[torch.Tensor],
    objective: Callable[[], torch.Tensor],
    iterations: int,
    progress: Progress,
    lr: float = 0.1,
    signed: Sequence[torch.Tensor] = (),
    decay: bool = True,
    project: Callable[[], None] | None = None,
    description: str = "",
) -> RestartsResult:
    """Minimise R independent objectives at once with Adam, as Inverting Gradients does.

    Every variable has a leading restart dimension R and ``objective()`` returns the R losses [R].
    Each step backpropagates their *sum*: restart r's loss depends only on restart r's slice, and
    Adam's update is element-wise, so this is exactly R independent runs done in one tensor per step
    (which is what makes batching restarts with ``vmap`` valid; L-BFGS, with its shared line search
    and curvature pairs, would couple them). The backward pass is restricted to ``variables``
    (no gradients for the network's parameters are accumulated).

    Per step: evaluate, record the best iterate per restart, replace the gradients of the tensors in
    ``signed`` by their sign (IG's signed gradient), Adam step, MultiStepLR ×0.1 at
    :func:`step_milestones` when ``decay``, then ``project()`` (the box constraint; applied to the
    initial values too, so that every candidate lies in the box). A restart whose
    loss becomes non-finite is marked diverged and frozen at its best iterate; the loop stops when
    every restart has diverged. Returns the best iterates, not the last.
    """
    variables = list(variables)
    optimiser = torch.optim.Adam(variables, lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, step_milestones(iterations), 0.1) if decay else None
    signed_ids = {id(v) for v in signed}
    if project is not None:  # every candidate, the initial one included, lies in the box
        with torch.no_grad():
            project()
    best = BestIterates(variables)
    diverged = torch.zeros(variables[0].shape[0], dtype=torch.bool)
    history: list[float] = []
    initial: list[torch.Tensor] = []
    done = 0

    def evaluate() -> torch.Tensor:
        losses = objective()
        values = losses.detach().to("cpu", torch.float64)
        if not initial:
            initial.append(values.clone())
        best.offer(values)
        if not bool(torch.isfinite(values).all()):
            diverged.logical_or_(~torch.isfinite(values))
        return losses

    progress.start(iterations, description)
    try:
        for done in range(1, iterations + 1):  # noqa: B007 (read after the loop: the steps taken)
            losses = evaluate()
            some_diverged = bool(diverged.any())
            if some_diverged and bool(diverged.all()):
                break
            total = losses[~diverged.to(losses.device)].sum() if some_diverged else losses.sum()
            grads = torch.autograd.grad(total, variables, allow_unused=True)
            for v, g in zip(variables, grads):
                g = torch.zeros_like(v) if g is None else g
                v.grad = g.sign() if id(v) in signed_ids else g
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            if some_diverged:
                best.restore(diverged)
            if project is not None:
                with torch.no_grad():
                    project()
            low = float(best.loss.min())
            history.append(low)
            progress.advance(1, low)
        else:
            evaluate()  # the final iterate is a candidate too
    finally:
        progress.close()
    return RestartsResult(
        [v.clone() for v in best.values],
        best.loss.clone(),
        diverged.clone(),
        done,
        history,
        initial_losses=initial[0] if initial else None,
    )
