"""What the honest-but-curious server observes of a HyperFL client, at each knowledge level: the observation
(the hypernetwork gradient at FedSGD, its update after a local round) and the attacker's replay of it
(:class:`ThreatModel`, a mixin of :class:`bench.defenses.hyperfl.defense.HyperFL`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from bench.defense import ClientState, FLTask, ServerState
from bench.functional import forward, loss_gradient
from bench.sgd_defense import payload_bytes, public_model
from bench.threat import LocalData, Observation, PublicKnowledge, Simulator, Tensors, Unknown

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
from bench.defenses.hyperfl.recovery import (
    estimate_embedding,
    recover_from_gradient,
    step_coefficients,
    weight_decay_factor,
)
from bench.defenses.hyperfl.round import (
    HyperFLProtocol,
    StackedHeads,
    factored_round_update,
    hyper_gradient,
    local_round,
)
from typing import Any, Literal


class ThreatModel:
    """HyperFL's threat model: ``observe`` for every knowledge level, and the attacker's simulators. Mixed into
    the defense, whose protocol, model and options it reads (``self.protocol``, ``self.model``, ``self.opt``)."""

    protocol: HyperFLProtocol
    model: HyperFLModel
    task: FLTask
    opt: Any
    knowledge: str
    _fresh_private: Callable[[], Tensors]  # the defense's: a new embedding and head, drawn as a client draws them

    # -- the threat model ------------------------------------------------------------------------

    def round_data(self, target: LocalData) -> LocalData:
        """The attacked client's local data for its round in the ``local`` setting: the attacked batch first,
        then ``attack_local_batches`` − 1 further mini-batches of its other local examples (``target.others``,
        all of them with 0), in a fixed order the server knows; the target alone when the harness gave no
        other examples (or the client has none)."""
        if self.opt.attack_setting != "local" or target.others is None or len(target.others[0]) == 0:
            return target
        limit = None if self.opt.attack_local_batches == 0 else (self.opt.attack_local_batches - 1) * target.batch_size
        ox, oy = (t[:limit] for t in target.others)
        return LocalData(
            torch.cat([target.x, ox]), torch.cat([target.y, oy]), target.batch_size, population=target.population
        )

    def _send(self, server: ServerState, private: Tensors, target: LocalData) -> Tensors:
        """What the client sends for ``target`` in the attack setting (fixed batch order, eval mode): the
        FedSGD gradient of the batch, or the update after its round on :meth:`round_data`."""
        self.model.eval()
        hyper = prefixed(server)
        if self.opt.attack_setting == "fedsgd":
            return unprefixed(hyper_gradient(self.model, hyper, private, target.x, target.y, create_graph=False))
        batches = list(self.round_data(target).batches())
        p = self.protocol
        new_hyper, _ = local_round(
            self.model, hyper, private, batches * p.head_epochs, batches * p.local_epochs, p, create_graph=False
        )
        return {k: new_hyper[HYPER + k] - server[k] for k in server}

    def simulator(
        self, server: ServerState, batch_size: int, known: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> Simulator:
        """The attacker's differentiable replay of :meth:`_send` for candidate data and unknowns.

        ``x`` holds the round's examples in round order (the attacked batch first); with ``known`` (the
        oracle's view of the client's other examples) ``x`` is the attacked batch and the known examples
        follow it as constants.
        """
        server = {k: v.detach() for k, v in server.items()}
        hyper, p, model = prefixed(server), self.protocol, self.model
        heads = StackedHeads.of(server, model.hypernetwork.shapes) if self.opt.attack_setting == "local" else None
        classes = self.task.num_classes

        def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
            model.eval()
            private = {k: unknowns[k] for k in PRIVATE}
            if heads is None:
                return unprefixed(hyper_gradient(model, hyper, private, x, y, create_graph=True))
            if known is not None:
                kx, ky = known
                if y.dim() == 2:  # soft labels: the known labels as probabilities
                    ky = torch.nn.functional.one_hot(ky, classes).to(y.dtype)
                x, y = torch.cat([x, kx]), torch.cat([y, ky])
            batches = list(LocalData(x, y, batch_size).batches())
            return factored_round_update(
                model, server, heads, private, batches * p.head_epochs, batches * p.local_epochs, p
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
            observed = {k: v.detach() for k, v in self._send(server, truth, target).items()}
        kind: Literal["gradient", "update"] = "gradient" if self.opt.attack_setting == "fedsgd" else "update"
        metrics: dict[str, Any] = {"bytes_uploaded": payload_bytes(observed)}
        protocol = {
            **self.protocol.as_dict(),
            "batch_size": target.batch_size,
            "attack_setting": self.opt.attack_setting,
        }
        attacker = self.knowledge
        if attacker == "adaptive" and kind == "gradient":
            return self._adaptive_fedsgd(server, observed, truth, target, generator, protocol, metrics)
        if attacker == "adaptive" and self.opt.local_replay == "generated":
            return self._adaptive_local_generated(server, observed, truth, target, generator, protocol, metrics)
        round_data = self.round_data(target)
        others = len(round_data) - len(target)
        if kind == "update":
            metrics.update(
                {
                    "round_examples": len(round_data),
                    "round_batches_per_epoch": round_data.steps_per_epoch(),
                    "other_examples_known": attacker == "oracle" and others > 0,
                }
            )
        guess = self._guess(generator)
        if attacker == "adaptive":
            estimate = estimate_embedding(server, observed, self.protocol, round_data.steps_per_epoch())
            metrics["embedding_estimate_cosine"] = float(
                torch.nn.functional.cosine_similarity(estimate, truth[EMBEDDING], dim=0)
            )
            guess[EMBEDDING] = estimate
        values = truth if attacker == "oracle" else guess
        descriptions = {
            EMBEDDING: "the client's private embedding",
            HEAD_WEIGHT: "the private classifier head's weight",
            HEAD_BIAS: "the private classifier head's bias",
        }
        unknowns = {
            k: Unknown(
                tuple(values[k].shape),
                descriptions[k],
                values[k],
                optimisable=attacker == "adaptive",
                revealed=attacker == "oracle",
            )
            for k in PRIVATE
        }
        notes = [
            {
                "unaware": "hyperfl/unaware: embedding and head are fixed random guesses; the true ones never leave "
                "the client",
                "adaptive": "hyperfl/adaptive: embedding (started from its estimate out of the update's rank-one "
                "structure) and head are optimised with the images through the unrolled local round",
                "oracle": "hyperfl/oracle: the attacker is handed the true embedding and head (an upper bound on "
                "what it "
                "knows, not on what leaks)",
            }[attacker]
        ]
        known = None
        num_images = len(target)
        if others and attacker == "oracle":
            known = (round_data.x[len(target) :], round_data.y[len(target) :])
            notes.append(
                f"hyperfl/local: the client's round ran over {len(round_data)} examples (the attacked batch "
                f"first, then {others} other local examples); the oracle is also handed those {others}, "
                f"so it reconstructs the attacked batch only"
            )
        elif others:
            num_images = len(round_data)
            notes.append(
                f"hyperfl/local: the client's round ran over {len(round_data)} examples (the attacked batch "
                f"first, then {others} other local examples, batch order known); the attacker knows none of "
                f"them, reconstructs all {num_images} and the target's are scored by best match"
            )
        elif kind == "update":
            notes.append(
                f"hyperfl/local: the round ran over the attacked batch alone ({len(target)} examples: the "
                f"harness gave no other local examples, or the client has none)"
            )
        public = PublicKnowledge(
            model=self._public_model(server, values),
            num_images=num_images,
            image_shape=self.task.image_shape,
            num_classes=self.task.num_classes,
            mean=self.task.mean,
            std=self.task.std,
            observed_kind=kind,
            classifier_key=None,
            protocol={**protocol, "round_examples": len(round_data)},
        )
        # with unknown other examples, simulate needs all of the round's images, not the target's alone
        return Observation(
            observed=observed,
            public=public,
            simulate=self.simulator(server, target.batch_size, known),
            unknowns=unknowns,
            knowledge=attacker,
            notes=tuple(notes),
            metrics=metrics,
            exact=num_images == len(target),
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

    def _adaptive_fedsgd(
        self,
        server: ServerState,
        observed: Tensors,
        truth: Tensors,
        target: LocalData,
        generator: torch.Generator | None,
        protocol: dict,
        metrics: dict,
    ) -> Observation:
        """The adaptive attacker's derived observation: the generated feature extractor and its gradient."""
        note = (
            "hyperfl/adaptive: the generated feature extractor and its gradient were recovered exactly from the "
            "hypernetwork gradient (generator-head bias gradient = generated-tensor gradient; weight gradient = "
            "that times the hidden features); the classifier head is optimised with the images"
        )
        return self._on_generated(
            server,
            observed,
            truth,
            generator,
            [1.0],
            len(target),
            len(target),
            "gradient",
            {**protocol, "derived": "generated feature extractor and its gradient"},
            metrics,
            note,
            exact=True,
        )

    def _adaptive_local_generated(
        self,
        server: ServerState,
        observed: Tensors,
        truth: Tensors,
        target: LocalData,
        generator: torch.Generator | None,
        protocol: dict,
        metrics: dict,
    ) -> Observation:
        """The adaptive attacker's derived observation after a local round: with the weight-decay drift removed
        (exactly), every generator head's update is Σ_s β_s·(g_s, g_s h_sᵀ) over the round's hypernetwork steps
        (β_s: SGD's public coefficients), so the ratio that is exact for one gradient gives the hidden features
        (a weighted mean over the steps), the generated network, and Σ_s β_s g_s, which a replay of the steps'
        gradients on that network matches. Estimates: the generated network moves a little between steps, the
        embedding too, and gradient clipping (inactive at these norms) would rescale a step."""
        round_data = self.round_data(target)
        steps = round_data.steps_per_epoch() * self.protocol.local_epochs
        p = self.protocol
        drift = weight_decay_factor(p.lr, p.momentum, p.weight_decay, steps) - 1
        data = {k: observed[k].double() - drift * server[k].double() for k in observed}
        note = (
            f"hyperfl/adaptive (local_replay=generated): the generated network and the SGD-weighted sum of its "
            f"gradients over the round's {steps} hypernetwork steps were read off the update's data part (estimates: "
            f"the network moves between steps); all {len(round_data)} examples of the round are reconstructed on "
            f"the generated network, the head optimised with them, and the target's scored by best match"
        )
        return self._on_generated(
            server,
            data,
            truth,
            generator,
            step_coefficients(p.lr, p.momentum, p.weight_decay, steps),
            target.batch_size,
            len(round_data),
            "update",
            {**protocol, "round_examples": len(round_data), "derived": "generated network and summed step gradients"},
            metrics,
            note,
            exact=len(round_data) == len(target) and steps == 1 and p.head_epochs == 0,
        )

    def _on_generated(
        self,
        server: ServerState,
        gradient: Tensors,
        truth: Tensors,
        generator: torch.Generator | None,
        beta: list[float],
        batch_size: int,
        num_images: int,
        kind: Literal["gradient", "update"],
        protocol: dict,
        metrics: dict,
        note: str,
        exact: bool,
    ) -> Observation:
        """An observation on the generated network read off ``gradient`` (Σ_s β_s of the hypernetwork's step
        gradients; one FedSGD gradient: β = [1]), with the private head as the only unknown (optimised).
        Step s of the replay takes the round's mini-batch s (of ``batch_size``, cycling over the epochs)."""
        recovered = recover_from_gradient(server, gradient, self.model.hypernetwork.shapes)
        with torch.no_grad():
            true_generated = forward(self.model.hypernetwork, dict(server), truth[EMBEDDING])
        metrics["recovered_weight_max_error"] = max(
            float((recovered.generated[k] - true_generated[k]).abs().max()) for k in true_generated
        )
        if recovered.embedding is not None:
            metrics["recovered_embedding_max_error"] = float((recovered.embedding - truth[EMBEDDING]).abs().max())
        dtype = next(iter(server.values())).dtype
        observed = {k: v.to(dtype) for k, v in recovered.gradients.items()}
        model, generated = self.model, recovered.generated

        def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
            model.target.eval()
            head_params = model.head_params(unknowns[HEAD_WEIGHT], unknowns[HEAD_BIAS])
            batches = -(-len(x) // batch_size)
            total: Tensors = {}
            for s, b in enumerate(beta):
                i = (s % batches) * batch_size
                grads = loss_gradient(
                    model.target,
                    generated,
                    x[i : i + batch_size],
                    y[i : i + batch_size],
                    head_params,
                    create_graph=True,
                )
                total = (
                    {k: total[k] + b * g for k, g in grads.items()} if total else {k: b * g for k, g in grads.items()}
                )
            return total

        guess = self._guess(generator)
        head = {HEAD_WEIGHT: guess[HEAD_WEIGHT], HEAD_BIAS: guess[HEAD_BIAS]}
        public_net = public_model(model.target, {**generated, **model.head_params(head[HEAD_WEIGHT], head[HEAD_BIAS])})
        unknowns = {
            HEAD_WEIGHT: Unknown(
                tuple(head[HEAD_WEIGHT].shape),
                "the private classifier head's weight",
                head[HEAD_WEIGHT],
                optimisable=True,
            ),
            HEAD_BIAS: Unknown(
                tuple(head[HEAD_BIAS].shape), "the private classifier head's bias", head[HEAD_BIAS], optimisable=True
            ),
        }
        public = PublicKnowledge(
            model=public_net,
            num_images=num_images,
            image_shape=self.task.image_shape,
            num_classes=self.task.num_classes,
            mean=self.task.mean,
            std=self.task.std,
            observed_kind=kind,
            classifier_key=None,
            protocol=protocol,
        )
        return Observation(
            observed=observed,
            public=public,
            simulate=simulate,
            unknowns=unknowns,
            knowledge="adaptive",
            notes=(note,),
            metrics=metrics,
            exact=exact,
        )
