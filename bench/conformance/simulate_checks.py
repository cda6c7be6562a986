"""The checks of a defense's simulator (``simulate``): shapes, differentiability, consistency with what was
observed, and vmap. A mixin of :class:`bench.conformance.defense_checks.DefenseChecks`, sharing its state
(``self.ctx``: the defense, the tiny case, the observation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from bench.contract import (
    OBSERVED_KINDS,
    candidate,
    input_gradients,
    require_jsonable,
    require_x_gradient,
    simulate_checked,
    tensor_dict,
)
from bench.conformance.report import Failed, Skipped, Warned
from bench.errors import first_line
from bench.seeding import generator
from bench.threat import Tensors, Upload

#: simulate(true inputs) must match observed within ATOL + RTOL · max|observed| per tensor.
ATOL, RTOL = 1e-6, 1e-5


def mismatch(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> tuple[str, float, float] | None:
    """(key, largest difference, tolerance) of the first tensor that differs beyond tolerance."""
    for key, w in want.items():
        g, w = got[key].detach(), w.detach()
        if not w.is_floating_point():
            if not torch.equal(g, w):
                return key, float("inf"), 0.0
            continue
        diff = float((g.double() - w.double()).abs().max()) if w.numel() else 0.0
        tol = ATOL + RTOL * (float(w.abs().max()) if w.numel() else 0.0)
        if not diff <= tol:
            return key, diff, tol
    return None


def _clone(tensors: Mapping[str, torch.Tensor]) -> Tensors:
    return {k: v.detach().clone() for k, v in tensors.items()}


def _unchanged(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], what: str, call: str) -> None:
    for key, value in before.items():
        if key not in after or not torch.equal(value, after[key].detach()):
            raise Failed(f"{call} changed {what}[{key!r}]; it must not modify its inputs")


def _informative(t: torch.Tensor) -> bool:
    """Worth looking for in what is sent: a non-constant floating tensor (constants match by chance)."""
    return t.is_floating_point() and t.numel() > 1 and bool(t.min() != t.max())


def check_upload(upload: Any, num_examples: int) -> Upload:
    if not isinstance(upload, Upload):
        raise Failed(f"client_update() returned a {type(upload).__name__}, not a bench.Upload")
    tensor_dict(upload.payload, "Upload.payload", floating=False)
    tensor_dict(upload.buffers, "Upload.buffers", floating=False, allow_empty=True)
    if upload.num_examples != num_examples:
        raise Failed(f"Upload.num_examples is {upload.num_examples!r}, but the client trained on {num_examples}")
    if upload.kind not in OBSERVED_KINDS:
        raise Failed(f"Upload.kind is {upload.kind!r}, expected 'gradient' or 'update'")
    if not isinstance(upload.metrics, Mapping):
        raise Failed(f"Upload.metrics is a {type(upload.metrics).__name__}, not a dict")
    require_jsonable(dict(upload.metrics), "Upload.metrics")
    return upload


class SimulateChecks:
    """``simulate-*`` checks; ``self.ctx`` and ``self.seed`` are the owning :class:`DefenseChecks`'."""

    ctx: Any
    seed: int

    def simulate_shapes(self) -> str:
        c = self.ctx
        c.x, c.y, c.soft, c.guesses = candidate(c.obs, generator(self.seed, "check", "candidate"))
        simulate_checked(c.obs, c.x, c.y, c.guesses)
        simulate_checked(c.obs, c.x, c.soft, c.guesses)
        return "same keys, shapes, dtypes and devices as observed, for integer and soft labels"

    def simulate_grad(self) -> str:
        c = self.ctx
        grads = input_gradients(c.obs, c.x, c.soft, c.guesses)
        require_x_gradient(grads)
        hints = {"y": " (DLG-style attacks optimise label probabilities)"}
        for name, g in grads.items():
            if g is None:
                raise Failed(
                    f"simulate() is not differentiable in {name}{hints.get(name, ' (an adaptive attack optimises it)')}"
                )
            if not bool(torch.isfinite(g).all()):
                raise Failed(f"the matching loss has a non-finite gradient with respect to {name}")
        x_grad = grads["x"]
        if x_grad is None or not bool(x_grad.abs().sum() > 0):
            raise Failed("the gradient of the matching loss with respect to x is identically zero")
        return f"gradients reach x{', the soft labels and every unknown' if c.obs.unknowns else ' and the soft labels'}"

    def simulate_consistent(self) -> str:
        c = self.ctx
        obs, target = c.obs, c.case.target
        if not obs.exact:
            raise Skipped(
                "the Observation declares exact=False (its simulator does not replay the client "
                "exactly: noise, or an unaware attacker), so simulate(true inputs) may differ"
            )
        # the state observe() saw: later checks (client-update) may change the client state in place
        truth = c.defense.true_unknowns(c.initial_clients[0], obs) if obs.unknowns else {}
        if truth is None:
            raise Skipped(
                f"the true values of unknowns {', '.join(map(repr, obs.unknowns))} are not in the "
                f"client state under those names; override Defense.true_unknowns"
            )
        labels = (
            ("true labels", target.y),
            ("one-hot label probabilities", torch.nn.functional.one_hot(target.y, c.case.task.num_classes).float()),
        )
        worst = 0.0
        for what, y in labels:
            simulated = simulate_checked(obs, target.x, y, truth)
            bad = mismatch(simulated, obs.observed)
            if bad:
                key, diff, tol = bad
                raise Failed(
                    f"simulate(true x, {what}{', true unknowns' if truth else ''}) differs from "
                    f"observed[{key!r}] by up to {diff:.3g} (tolerance {tol:.2g}): replay exactly what "
                    f"the client computes, or declare Observation(exact=False) if it adds randomness "
                    f"the server cannot replay"
                )
            worst = max(worst, max(float((simulated[k].detach() - v).abs().max()) for k, v in obs.observed.items()))
        return f"simulate(true inputs) reproduces observed (largest difference {worst:.2g})"

    def simulate_vmap(self) -> str:
        c = self.ctx
        xs, _, softs, guesses = candidate(c.obs, generator(self.seed, "check", "restarts"), restarts=2)
        try:
            batched = torch.func.vmap(c.obs.simulate)(xs, softs, guesses)
        except Exception as exc:
            raise Warned(
                f"simulate() does not run under torch.func.vmap ({first_line(exc)}); "
                f"attacks fall back to a slower loop over restarts"
            ) from None
        for r in range(2):
            single = simulate_checked(c.obs, xs[r], softs[r], {k: v[r] for k, v in guesses.items()})
            try:
                bad = mismatch({k: batched[k][r] for k in single}, single)
            except (KeyError, IndexError, TypeError):
                raise Failed("under vmap simulate() returns other keys or shapes than without it") from None
            if bad:
                raise Failed(
                    f"under vmap simulate()[{bad[0]!r}] differs from the unbatched result by "
                    f"{bad[1]:.3g}: batched restarts would optimise the wrong objective"
                )
        return "vmap over 2 candidates runs and matches a loop"
