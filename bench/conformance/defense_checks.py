"""``bench check-defense``: does a defense keep the contract attacks and the harness rely on?

Runs the defense on a tiny case (see :mod:`bench.conformance.case`) and checks, one named check each:
its interface and options; that ``observe`` returns a well-formed Observation and mutates nothing;
that ``simulate`` has observed's keys/shapes/dtypes, is differentiable in x, soft labels and the
unknowns, reproduces the observation on the true inputs (unless the Observation declares
``exact=False``), and works under ``torch.func.vmap``; that ``client_update``, ``aggregate`` and
``predict`` return the right things and one round trains; that nothing of a client's private state
reaches the server; and that the same seed gives the same tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch

from bench import registry
from bench.conformance.case import BATCH, TinyCase, observe_case, start_case
from bench.conformance.component import open_report
from bench.contract import (
    candidate,
    check_observation,
    describe,
    tensor_dict,
)
from bench.conformance.report import Failed, Report, Skipped, Warned
from bench.conformance.simulate_checks import SimulateChecks, _clone, _informative, _unchanged, check_upload, mismatch
from bench.defense import KNOWLEDGE_LEVELS, Defense
from bench.seeding import generator
from bench.components import Choice, model_choice
from bench.round import Round
from bench.threat import Tensors


class DefenseChecks(SimulateChecks):
    """The checks of one defense, sharing the state they build up (ctx)."""

    def __init__(
        self,
        spec: str,
        args: Mapping[str, Any],
        model: Choice | None,
        seed: int,
        device: torch.device,
        knowledge: str | None = None,
    ) -> None:
        self.spec, self.args, self.model, self.seed, self.device = spec, dict(args), model, seed, device
        self.knowledge = knowledge
        self.ctx = SimpleNamespace()

    # -- building blocks -------------------------------------------------------------------------
    def create(self) -> Defense:
        defense: Defense = registry.create("defense", self.spec, self.args)  # type: ignore[assignment]
        defense.use_knowledge(self.knowledge)
        return defense

    def start(self, d: Defense) -> tuple[TinyCase, Tensors, list[Tensors]]:
        return start_case(d, self.model, self.seed, self.device)

    # -- the checks ------------------------------------------------------------------------------
    def setup(self) -> str:
        c = self.ctx
        c.case, c.server, c.clients = self.start(c.defense)
        tensor_dict(c.server, "init_server()", floating=False)
        for i, client in enumerate(c.clients):
            tensor_dict(client, f"init_client({i})", floating=False, allow_empty=True)
        c.initial_clients = [_clone(s) for s in c.clients]
        values = sum(t.numel() for t in c.server.values())
        private = f"{len(c.clients[0])} tensors" if c.clients[0] else "none"
        return (
            f"model {c.case.model_name}; server state {len(c.server)} tensors ({values:,} values); "
            f"private client state: {private}"
        )

    def knowledge_check(self) -> str:
        """The declared knowledge levels are sound, and every one of them builds an Observation that says so."""
        d = self.ctx.defense
        levels = getattr(d, "knowledge_levels", None)
        if not isinstance(levels, tuple) or not levels or not all(isinstance(v, str) and v for v in levels):
            raise Failed(f"knowledge_levels must be a non-empty tuple of names, got {levels!r}")
        if d.default_knowledge not in levels:
            raise Failed(f"default_knowledge {d.default_knowledge!r} is not among knowledge_levels {levels}")
        unknown = [v for v in levels if v not in KNOWLEDGE_LEVELS]
        for level in levels:
            other = self.create()
            other.use_knowledge(level)
            case, server, clients = self.start(other)
            obs = observe_case(other, case, server, clients, self.seed)
            if getattr(obs, "knowledge", None) != level:
                raise Failed(
                    f"asked for knowledge level {level!r}, observe() returned an Observation with "
                    f"knowledge {getattr(obs, 'knowledge', None)!r}"
                )
        note = f" (not standard, document them: {', '.join(unknown)})" if unknown else ""
        return f"levels {', '.join(levels)}{note}; default {d.default_knowledge}; each builds its own Observation"

    def observe_check(self) -> str:
        c = self.ctx
        server, clients = _clone(c.server), [_clone(s) for s in c.clients]
        task = c.case.task
        c.obs = check_observation(
            observe_case(c.defense, c.case, c.server, c.clients, self.seed), BATCH, task.image_shape, task.num_classes
        )
        _unchanged(server, c.server, "server", "observe()")
        for i, before in enumerate(clients):
            _unchanged(before, c.clients[i], f"client {i} state", "observe()")
        obs = c.obs
        unknowns = f", unknowns {', '.join(obs.unknowns)}" if obs.unknowns else ""
        return (
            f"{len(obs.observed)} {obs.public.observed_kind} tensors{unknowns}; knowledge {obs.knowledge!r}; "
            f"exact={obs.exact}"
        )

    def local_round(self) -> str:
        """A defense that declares local rounds builds one (2 epochs over 4 examples in batches of 2) whose
        simulator, on the true inputs, reproduces what the client sent (unless it declares exact=False)."""
        kinds = getattr(self.ctx.defense, "round_kinds", ("fedsgd",))
        if "local" not in kinds:
            raise Skipped("the defense declares FedSGD rounds only (round_kinds)")
        d = self.create()
        round_ = d.use_round(Round("local", BATCH, 2 * BATCH, 2))
        case, server, clients = self.start(d)
        target, other = case.clients
        task = case.task
        obs = d.observe(server, clients[0], target, [(clients[1], other)], generator(self.seed, "check", "observe"))
        obs = check_observation(obs, len(target), task.image_shape, task.num_classes)
        if not obs.exact:
            return f"{obs.public.observed_kind} after {round_.label()}; exact=False, so simulate is not compared"
        x, y = target.x, target.y
        if obs.public.num_images > len(target):  # an aggregate: the other member's examples follow
            x, y = torch.cat([x, other.x]), torch.cat([y, other.y])
        truth = d.true_unknowns(clients[0], obs) if obs.unknowns else {}
        if obs.public.num_images != len(x) or truth is None:
            raise Skipped("the observation covers inputs this check cannot supply; simulate not compared")
        bad = mismatch(obs.simulate(x, y, truth), obs.observed)
        if bad:
            raise Failed(
                f"after {round_.label()}, simulate(true inputs) differs from observed[{bad[0]!r}] by up to "
                f"{bad[1]:.3g}: replay the round the client ran (bench.round), or declare exact=False"
            )
        return f"{obs.public.observed_kind} after {round_.label()} is replayed exactly by simulate"

    def client_update(self) -> str:
        c = self.ctx
        c.uploads = []
        for i, (client, data) in enumerate(zip(c.clients, c.case.clients)):
            server = _clone(c.server)
            upload = check_upload(
                c.defense.client_update(c.server, client, data, generator(self.seed, "check", "round", i)), len(data)
            )
            _unchanged(server, c.server, "server", "client_update()")
            c.uploads.append(upload)
        first = c.uploads[0]
        metrics = ", ".join(sorted(first.metrics)) or "none"
        return (
            f"{first.kind} of {len(first.payload)} tensors from each of 2 clients "
            f"({c.case.clients[0].steps_per_epoch()} mini-batches each); metrics: {metrics}"
        )

    def matches_client(self) -> str:
        c = self.ctx
        try:
            obs = c.defense.observe(
                c.server, copy.deepcopy(c.clients[0]), c.case.target, [], generator(self.seed, "check", "observe")
            )
        except Exception as exc:
            raise Skipped(f"observe() with no other client raised {type(exc).__name__}; not comparable") from None
        upload = c.defense.client_update(c.server, copy.deepcopy(c.clients[0]), c.case.target, None)
        common = {
            k: v
            for k, v in obs.observed.items()
            if k in upload.payload
            and isinstance(upload.payload[k], torch.Tensor)
            and upload.payload[k].shape == v.shape
        }
        if not common:
            raise Skipped("observed and uploaded tensors share no name and shape; not comparable")
        bad = mismatch(upload.payload, common)
        if bad and not obs.exact:
            raise Skipped(
                "observe() and client_update() differ on the target batch, as expected for an "
                "Observation that declares exact=False (randomness is drawn independently)"
            )
        if bad:
            raise Warned(
                f"observe() and client_update() disagree on the target batch (observed[{bad[0]!r}] by up "
                f"to {bad[1]:.3g}): fine when the server sees an aggregate or observes in eval mode, "
                f"otherwise privacy and utility measure different protocols"
            )
        return f"observe() sees what client_update() sends for the same batch ({len(common)} tensors compared)"

    def private_state(self) -> str:
        c = self.ctx
        private = {
            f"client {i} state[{k!r}]": t
            for i, states in enumerate(zip(c.initial_clients, c.clients))
            for s in states
            for k, t in s.items()
            if isinstance(t, torch.Tensor) and _informative(t)
        }
        sent = {f"observed[{k!r}]": t for k, t in c.obs.observed.items()}
        for i, u in enumerate(c.uploads):
            sent |= {f"client {i}'s Upload.payload[{k!r}]": t for k, t in u.payload.items()}
            sent |= {f"client {i}'s Upload.buffers[{k!r}]": t for k, t in u.buffers.items()}
        for p_name, p in private.items():
            for s_name, s in sent.items():
                if s.shape == p.shape and s.dtype == p.dtype and s.device == p.device and torch.equal(s, p.detach()):
                    raise Failed(f"{p_name} is sent to the server as {s_name}: private state must stay on the client")
        # the state observe() saw, not the one client_update() may have changed in place
        truth = c.defense.true_unknowns(c.initial_clients[0], c.obs) if c.obs.unknowns else {}
        for name, value in (truth or {}).items():
            guess = c.obs.unknowns[name].guess
            if c.obs.unknowns[name].revealed:  # handed over by declaration (an oracle), not leaked
                continue
            if guess.shape == value.shape and torch.equal(guess.detach(), value.detach()):
                raise Failed(
                    f"the server's guess of unknown {name!r} is the client's true value: the guess must "
                    f"be the server's own stand-in (or declared Unknown(revealed=True), an oracle's)"
                )
        if not private:
            return "the client keeps no private state"
        return f"none of {len(private)} private tensors appears in an upload or the observation"

    def aggregate(self) -> str:
        c = self.ctx
        server = _clone(c.server)
        new = tensor_dict(c.defense.aggregate(c.server, c.uploads), "aggregate()", floating=False)
        _unchanged(server, c.server, "server", "aggregate()")
        if set(new) != set(c.server):
            raise Failed(
                f"aggregate() returned keys {sorted(set(new) ^ set(c.server))[:3]} that differ from the server state's"
            )
        for k, v in c.server.items():
            if new[k].shape != v.shape or new[k].dtype != v.dtype or new[k].device != v.device:
                raise Failed(f"aggregate()[{k!r}] is {describe(new[k])}, the server state has {describe(v)}")
        c.new_server = new
        changed = sum(not torch.equal(new[k], v) for k, v in c.server.items())
        if not changed:
            raise Warned("one round of training left every server tensor unchanged")
        return f"next server state has the same {len(new)} tensors; {changed} changed after one round"

    def predict(self) -> str:
        c = self.ctx
        states = [("initial", c.server)] + ([("trained", c.new_server)] if hasattr(c, "new_server") else [])
        want = (BATCH, c.case.task.num_classes)
        for when, server in states:
            with torch.no_grad():
                logits = c.defense.predict(server, c.clients[0], c.case.target.x)
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want or not logits.is_floating_point():
                got = describe(logits) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise Failed(f"predict() ({when} state) returned {got}, expected logits {list(want)} floating point")
            if not bool(torch.isfinite(logits).all()):
                raise Failed(f"predict() ({when} state) returned non-finite logits")
        return f"logits {list(want)} from the {' and the '.join(w for w, _ in states)} server state"

    def deterministic(self) -> str:
        def one_run() -> dict[str, Tensors]:
            d = self.create()
            case, server, clients = self.start(d)
            obs = observe_case(d, case, server, clients, self.seed)
            x, _, soft, guesses = candidate(obs, generator(self.seed, "check", "candidate"))
            upload = d.client_update(server, clients[0], case.clients[0], generator(self.seed, "check", "round", 0))
            return {
                "init_server()": _clone(server),
                "observed": _clone(obs.observed),
                "simulate()": _clone(obs.simulate(x, soft, guesses)),
                "Upload.payload": _clone(upload.payload),
            }

        a, b = one_run(), one_run()
        for what, tensors in a.items():
            for key, value in tensors.items():
                if not torch.equal(value, b[what][key]):
                    diff = (
                        f" by up to {float((value.double() - b[what][key].double()).abs().max()):.3g}"
                        if value.is_floating_point() and value.shape == b[what][key].shape
                        else ""
                    )
                    raise Failed(
                        f"two runs with seed {self.seed} differ in {what}[{key!r}]{diff}: "
                        f"draw randomness only from the generator passed in (or torch's seeded global RNG)"
                    )
        return "two runs with the same seed give identical initial state, observation, simulation and upload"

    # -- orchestration ---------------------------------------------------------------------------
    def run(self) -> Report:
        report, defense = open_report("defense", self.spec, self.args, created="setup")
        if defense is None:
            return report
        defense.use_knowledge(self.knowledge)  # type: ignore[attr-defined]  # an unknown level: bad input (exit 2)
        self.ctx.defense = defense
        model = model_choice(self.model, self.ctx.defense).name
        report.title = (
            f"check-defense {self.spec!r} on a tiny case: {BATCH} synthetic 3x32x32 images per batch, "
            f"10 classes, model {model}, seed {self.seed}, device {self.device}"
        )
        steps = [
            ("setup", self.setup, ()),
            ("observe", self.observe_check, ("setup",)),
            ("knowledge", self.knowledge_check, ("observe",)),
            ("simulate-shapes", self.simulate_shapes, ("observe",)),
            ("simulate-grad", self.simulate_grad, ("simulate-shapes",)),
            ("simulate-consistent", self.simulate_consistent, ("simulate-shapes",)),
            ("simulate-vmap", self.simulate_vmap, ("simulate-shapes",)),
            ("local-round", self.local_round, ("setup",)),
            ("client-update", self.client_update, ("setup",)),
            ("matches-client", self.matches_client, ("observe", "client-update")),
            ("private-state", self.private_state, ("observe", "client-update")),
            ("aggregate", self.aggregate, ("client-update",)),
            ("predict", self.predict, ("setup",)),
            ("deterministic", self.deterministic, ("observe", "client-update")),
        ]
        for name, fn, after in steps:
            report.check(name, fn, after)
        return report


def check_defense(
    spec: str,
    args: Mapping[str, Any] | None = None,
    model: Choice | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    knowledge: str | None = None,
) -> Report:
    """Run every defense check; the report says which passed (``report.failed`` when any failed).

    Raises BenchError for bad input (an unknown name, invalid option values, an unknown model).
    """
    if model is not None:
        registry.create("model", model.name, model.args)  # invalid model options are bad input, not a failed check
    return DefenseChecks(spec, args or {}, model, seed, torch.device(device), knowledge).run()
