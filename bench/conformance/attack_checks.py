"""``bench check-attack``: does an attack keep the contract the harness relies on?

Runs the attack on a tiny case (a FedSGD observation of two 3×32×32 images from a built-in defense,
``fedavg`` unless another is named) and checks: its interface and options; that ``reconstruct``
returns images of the right shape and dtype with finite values, labels of the right shape and range,
and recordable info, without touching the observation; that it reports progress; that the same
generator seed gives the same reconstruction; and that it handles unknowns (a fixture observation in
which the classifier head is private, one unknown optimisable and one not).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, cast

import torch

from bench import registry
from bench.attack import Attack, Reconstruction
from bench.conformance.case import BATCH, observe_case, private_head_observation, start_case
from bench.conformance.component import open_report
from bench.contract import validate_observation, validate_reconstruction
from bench.conformance.report import Failed, Report, Warned
from bench.defense import Defense
from bench.seeding import generator
from bench.components import Choice
from bench.threat import Observation


class RecordingProgress:
    """A Progress that counts what the attack reports."""

    def __init__(self) -> None:
        self.starts = 0
        self.steps = 0

    def start(self, total: int, description: str = "") -> None:
        self.starts += 1

    def advance(self, steps: int = 1, loss: float | None = None) -> None:
        self.steps += steps

    def close(self) -> None:
        pass


def _snapshot(obs: Observation) -> dict[str, torch.Tensor]:
    return {
        **{f"observed[{k!r}]": v.clone() for k, v in obs.observed.items()},
        **{f"unknowns[{k!r}].guess": u.guess.detach().clone() for k, u in obs.unknowns.items()},
    }


def _untouched(before: Mapping[str, torch.Tensor], obs: Observation) -> None:
    after = _snapshot(obs)
    for key, value in before.items():
        if not torch.equal(value, after[key]):
            raise Failed(
                f"reconstruct() modified {key}: copy what you optimise (see bench.inversion.unknown_variables)"
            )


class AttackChecks:
    def __init__(
        self, spec: str, args: Mapping[str, Any], defense: Choice, model: Choice | None, seed: int, device: torch.device
    ) -> None:
        self.spec, self.args, self.defense, self.model = spec, dict(args), defense, model
        self.seed, self.device = seed, device
        self.ctx = SimpleNamespace()

    def create(self) -> Attack:
        return registry.create("attack", self.spec, self.args)  # type: ignore[return-value]

    def attack(self, attack: Attack, obs: Observation, progress: Any = None) -> Reconstruction:
        return attack.reconstruct(obs, generator(self.seed, "check", "attack"), progress or RecordingProgress())

    def fixture(self) -> str:
        c = self.ctx
        defense = cast(Defense, registry.create("defense", self.defense.name, self.defense.args))
        c.case, server, clients = start_case(defense, self.model, self.seed, self.device)
        obs = observe_case(defense, c.case, server, clients, self.seed)
        task = c.case.task
        c.obs = validate_observation(
            obs, BATCH, task.image_shape, task.num_classes, generator(self.seed, "check", "validate")
        )
        return (
            f"{self.defense.name} observes a {c.obs.public.observed_kind} of {BATCH} images (model {c.case.model_name})"
        )

    def reconstruct(self) -> str:
        c = self.ctx
        before = _snapshot(c.obs)
        c.progress = RecordingProgress()
        began = time.perf_counter()
        c.rec = validate_reconstruction(self.attack(c.attack, c.obs, c.progress), c.obs)
        seconds = time.perf_counter() - began
        _untouched(before, c.obs)
        rec = c.rec
        labels = "no labels" if rec.labels is None else f"labels {rec.labels.tolist()}"
        return (
            f"images {list(rec.images.shape)} {str(rec.images.dtype).removeprefix('torch.')}, {labels}, "
            f"loss {rec.loss:.3g}, {rec.iterations} iterations, {seconds:.1f} s"
        )

    def progress(self) -> str:
        p = self.ctx.progress
        if not p.starts or not p.steps:
            raise Warned("reconstruct() never called progress.start()/advance(): `bench run` shows no progress bar")
        return f"reported {p.steps} steps"

    def deterministic(self) -> str:
        c = self.ctx
        again = self.attack(self.create(), c.obs)
        same = torch.equal(c.rec.images.detach(), again.images.detach())
        same_labels = (c.rec.labels is None and again.labels is None) or (
            c.rec.labels is not None and again.labels is not None and torch.equal(c.rec.labels, again.labels)
        )
        if not (same and same_labels):
            what = "images" if not same else "labels"
            raise Failed(
                f"two runs with the same generator seed returned different {what}: draw all randomness "
                f"from the generator argument"
            )
        return "the same generator seed gives the same images and labels"

    def unknowns(self) -> str:
        c = self.ctx
        obs, _ = private_head_observation(c.case.task, c.case.target, self.seed)
        obs = validate_observation(
            obs, BATCH, c.case.task.image_shape, c.case.task.num_classes, generator(self.seed, "check", "validate")
        )
        before = _snapshot(obs)
        rec = validate_reconstruction(self.attack(self.create(), obs), obs)
        _untouched(before, obs)
        free = sum(u.optimisable for u in obs.unknowns.values())
        return (
            f"valid reconstruction when the classifier head is unknown ({len(obs.unknowns)} unknowns, {free} "
            f"optimisable; images {list(rec.images.shape)})"
        )

    def run(self) -> Report:
        report, attack = open_report("attack", self.spec, self.args, created="reconstruct")
        if attack is None:
            return report
        self.ctx.attack = attack
        report.title = (
            f"check-attack {self.spec!r} on a tiny case: {BATCH} synthetic 3x32x32 images, 10 classes, "
            f"observed through {self.defense.name!r}, seed {self.seed}, device {self.device}"
        )
        report.check("fixture", self.fixture)
        report.check("reconstruct", self.reconstruct, ("fixture",))
        report.check("progress", self.progress, ("reconstruct",))
        report.check("deterministic", self.deterministic, ("reconstruct",))
        report.check("unknowns", self.unknowns, ("fixture",))
        return report


def check_attack(
    spec: str,
    args: Mapping[str, Any] | None = None,
    defense: Choice | None = None,
    model: Choice | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Report:
    """Run every attack check. Raises BenchError for bad input (unknown names, invalid option values)."""
    defense = defense or Choice("fedavg")
    # the defense and model only build the fixture: invalid options are bad input, not a failed check
    registry.create("defense", defense.name, defense.args)
    if model is not None:
        registry.create("model", model.name, model.args)
    return AttackChecks(spec, args or {}, defense, model, seed, torch.device(device)).run()
