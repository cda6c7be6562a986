"""What the honest-but-curious server observes of a HyperFL client, at each knowledge level: the upload (the
hypernetwork gradient of one batch at FedSGD, its update after a local round) and the attacker's replay of it
(:class:`ThreatModel`, a mixin of :class:`bench.defenses.hyperfl.defense.HyperFL`). The adaptive attacker's
closed-form readings are in :mod:`bench.defenses.hyperfl.attacker`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import nn

from bench.defense import ClientState, FLTask, ServerState
from bench.round import Round
from bench.sgd import pass_data, payload_bytes, public_model
from bench.threat import LocalData, Observation, PublicKnowledge, Simulator, Tensors, Unknown

from bench.defenses.hyperfl.attacker import derived_fedsgd, derived_local
from bench.defenses.hyperfl.model import (
    EMBEDDING,
    HEAD_BIAS,
    HEAD_WEIGHT,
    HYPER,
    PRIVATE,
    HyperFLModel,
    prefixed,
    private_state,
    unprefixed,
)
from bench.defenses.hyperfl.recovery import estimate_embedding
from bench.defenses.hyperfl.round import (
    HyperFLProtocol,
    StackedHeads,
    factored_round_update,
    hyper_gradient,
    local_round,
)

DESCRIPTIONS = {
    EMBEDDING: "the client's private embedding",
    HEAD_WEIGHT: "the private classifier head's weight",
    HEAD_BIAS: "the private classifier head's bias",
}
NOTES = {
    "unaware": "hyperfl/unaware: embedding and head are fixed random guesses; the true ones never leave the client",
    "adaptive": "hyperfl/adaptive: embedding (started from its estimate out of the update's rank-one structure) "
    "and head are optimised with the images through the unrolled local round",
    "oracle": "hyperfl/oracle: the attacker is handed the true embedding and head (an upper bound on what it "
    "knows, not on what leaks)",
}


class ThreatModel:
    """HyperFL's threat model: ``observe`` for every knowledge level, and the attacker's simulators. Mixed into
    the defense, whose protocol, model and options it reads (``self.protocol``, ``self.model``, ``self.opt``)."""

    protocol: HyperFLProtocol
    model: HyperFLModel
    task: FLTask
    opt: Any
    knowledge: str
    round: Round
    _fresh_private: Callable[[], Tensors]  # the defense's: a new embedding and head, drawn as a client draws them

    def round_protocol(self) -> HyperFLProtocol:
        """The protocol of the attacked round: the round's local epochs and head epochs (or HyperFL's own)."""
        r = self.round
        if r.kind == "fedsgd":
            return self.protocol
        return replace(self.protocol, head_epochs=r.head_epochs_or(self.opt.head_epochs), local_epochs=r.local_epochs)

    def send(self, server: ServerState, private: Tensors, target: LocalData) -> Tensors:
        """What the client sends for ``target`` in the attack setting (fixed batch order, eval mode): the
        hypernetwork gradient of the batch (FedSGD), or its update after the round over ``target``."""
        self.model.eval()
        hyper = prefixed(server)
        if self.round.kind == "fedsgd":
            return unprefixed(hyper_gradient(self.model, hyper, private, target.x, target.y, create_graph=False))
        batches = list(target.batches())
        p = self.round_protocol()
        new_hyper, _ = local_round(
            self.model, hyper, private, batches * p.head_epochs, batches * p.local_epochs, p, create_graph=False
        )
        return {k: new_hyper[HYPER + k] - server[k] for k in server}

    def simulator(self, server: ServerState, batch_size: int, examples: int) -> Simulator:
        """The attacker's differentiable replay of :meth:`send` for candidate data and unknowns (``x``: the
        round's ``examples`` in round order, or one copy of them per pass, pass-major)."""
        server = {k: v.detach() for k, v in server.items()}
        hyper, p, model = prefixed(server), self.round_protocol(), self.model
        heads = StackedHeads.of(server, model.hypernetwork.shapes) if self.round.kind == "local" else None

        def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
            model.eval()
            private = {k: unknowns[k] for k in PRIVATE}
            if heads is None:
                return unprefixed(hyper_gradient(model, hyper, private, x, y, create_graph=True))
            passes = pass_data(x, y, batch_size, examples, p.head_epochs + p.local_epochs)
            if len(passes) == 1:
                passes = passes * (p.head_epochs + p.local_epochs)
            batches = [list(d.batches()) for d in passes]
            head = [b for bs in batches[: p.head_epochs] for b in bs]
            return factored_round_update(
                model, server, heads, private, head, [b for bs in batches[p.head_epochs :] for b in bs], p
            )

        return simulate

    def observe(
        self,
        server: ServerState,
        client: ClientState,
        target: LocalData,
        cohort: Sequence[tuple[ClientState, LocalData]],
        generator: torch.Generator | None,
    ) -> Observation:
        truth = {k: v.detach().clone() for k, v in private_state(client).items()}
        with torch.no_grad():
            observed = {k: v.detach() for k, v in self.send(server, truth, target).items()}
        kind: Literal["gradient", "update"] = "gradient" if self.round.kind == "fedsgd" else "update"
        metrics: dict[str, Any] = {"bytes_uploaded": payload_bytes(observed)}
        p = self.round_protocol()
        attacker = self.knowledge
        guess = self._guess(generator)
        values = truth if attacker == "oracle" else guess
        public = PublicKnowledge(
            model=self._public_model(server, values),
            num_images=len(target),
            image_shape=self.task.image_shape,
            num_classes=self.task.num_classes,
            mean=self.task.mean,
            std=self.task.std,
            observed_kind=kind,
            classifier_key=None,
            protocol={**p.as_dict(), "batch_size": target.batch_size, "round": self.round.as_dict()},
        )
        if attacker == "adaptive" and kind == "gradient":
            return derived_fedsgd(self.model, server, observed, target, guess, public, metrics)
        if attacker == "adaptive" and self.opt.local_replay == "generated":
            return derived_local(self.model, server, observed, target, p, guess, public, metrics)
        if attacker == "adaptive":
            guess[EMBEDDING] = estimate_embedding(server, observed, p, target.steps_per_epoch())
        unknowns = {
            k: Unknown(
                tuple(values[k].shape),
                DESCRIPTIONS[k],
                values[k],
                optimisable=attacker == "adaptive",
                revealed=attacker == "oracle",
            )
            for k in PRIVATE
        }
        notes = [NOTES[attacker]]
        if kind == "update":
            notes.append(
                f"hyperfl/local: the client's round ran over its {len(target)} local examples in batches of "
                f"{target.batch_size} ({p.head_epochs} head epoch(s), then {p.local_epochs} epoch(s)); all are "
                f"reconstructed"
            )
        return Observation(
            observed=observed,
            public=public,
            simulate=self.simulator(server, target.batch_size, len(target)),
            unknowns=unknowns,
            knowledge=attacker,
            notes=tuple(notes),
            metrics=metrics,
            passes=p.head_epochs + p.local_epochs if kind == "update" else 1,
        )

    def _guess(self, generator: torch.Generator | None) -> Tensors:
        """The server's own stand-ins for embedding and head, drawn as a client draws them but from the
        attack's random stream (torch's global RNG is left as it was)."""
        seed = int(torch.randint(2**62, (1,), generator=generator or torch.Generator().manual_seed(0)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._fresh_private()

    def _public_model(self, server: ServerState, private: Tensors) -> nn.Module:
        return public_model(self.model, {**prefixed(server), **private})
