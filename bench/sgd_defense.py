"""``SGDDefense``: the base of defenses in the FedAvg family, which change only what a client sends (through
hooks), on top of the plain SGD client of :mod:`bench.sgd`. Its names are re-exported here, so a plug-in
needs one import (better: ``bench.plugin``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from bench.defense import ClientState, Defense, FLTask, ServerState
from bench.functional import GradientFn, loss_gradient
from bench.threat import LocalData, Observation, Simulator, Tensors, Upload

from bench.sgd import (
    GRADIENT_DECAY,
    SGD_CLIENT_OPTIMISER,
    SGD_OPTIONS,
    Batches,
    SGDProtocol,
    apply_uploads,
    client_round,
    initial_state,
    local_payload,
    observe_sgd_client,
    payload_bytes,
    predict_logits,
    public_model,
    sgd_public_knowledge,
    sgd_simulator,
    split_state,
    weighted_mean,
)


__all__ = [
    "Batches",
    "GRADIENT_DECAY",
    "SGDDefense",
    "SGDProtocol",
    "SGD_CLIENT_OPTIMISER",
    "SGD_OPTIONS",
    "apply_uploads",
    "client_round",
    "initial_state",
    "local_payload",
    "observe_sgd_client",
    "payload_bytes",
    "predict_logits",
    "public_model",
    "sgd_public_knowledge",
    "sgd_simulator",
    "split_state",
    "weighted_mean",
]


class SGDDefense(Defense):
    """Base of defenses in the FedAvg family: clients run the plain SGD client on the global model and
    the server averages what they send. A subclass changes only what a client sends, through hooks:

    * :meth:`step_gradient`: the gradient each local step uses (DP-SGD: clipped and noised per example);
    * :meth:`transform`: what the client does to its upload before sending it (pruning, Soteria's
      mask, DP-FedAvg's clip and noise, quantisation), and :meth:`replay`, the adaptive attacker's
      replay of it given what it observed (e.g. zeroing the entries it saw zeroed);
    * :meth:`account`: bookkeeping in the client's private state (DP's accountant), returned as metrics.

    Training (:meth:`client_update`) and the attack (:meth:`observe`) run the *same* client step: the
    observation is ``client_update`` in the attack setting (eval mode, fixed mini-batch order, the attacked
    round's protocol: :attr:`active_protocol`) on a copy of the client's state, so what the server observes
    is exactly what the client would send. Both round kinds run (:mod:`bench.round`): FedSGD (one gradient)
    and a local round (head epochs on ``task.classifier`` where the round has any, then local epochs).
    Knowledge levels: ``adaptive`` replays the public steps (:meth:`replay_gradient`, :meth:`replay`);
    a defense with a mechanism also offers ``unaware``, whose simulator is plain FedAvg.

    Supplies ``setup`` (``self.model``, ``self.protocol`` from the declared :data:`SGD_OPTIONS`),
    ``init_server`` (a fresh network's state), ``aggregate`` (:func:`apply_uploads`) and ``predict``
    (:func:`predict_logits`). Declare ``options = (..., *SGD_OPTIONS)``.
    """

    options = SGD_OPTIONS
    knowledge_levels: ClassVar[tuple[str, ...]] = ("adaptive", "unaware")
    round_kinds: ClassVar[tuple[str, ...]] = ("fedsgd", "local")
    client_optimiser: ClassVar[dict[str, str]] = SGD_CLIENT_OPTIMISER

    def setup(self, task: FLTask) -> None:
        super().setup(task)
        self.model = task.new_model()
        self.protocol = SGDProtocol.from_options(self.opt, task.local_epochs, head=task.classifier)
        self._attack_setting = False

    @property
    def active_protocol(self) -> SGDProtocol:
        """The protocol of the step being run: the attacked round's in the attack setting
        (:meth:`SGDProtocol.for_round` of :attr:`round`), the training protocol otherwise."""
        return self.protocol.for_round(self.round) if self._attack_setting else self.protocol

    def init_server(self) -> ServerState:
        return initial_state(self.task.new_model())

    def aggregate(self, server: ServerState, uploads: Sequence[Upload]) -> ServerState:
        return apply_uploads(server, uploads, self.protocol.lr)

    def predict(self, server: ServerState, client: Tensors, x: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.model, server, x)

    # --- hooks: what a defense of the family changes (defaults: plain FedAvg) -----------------------
    def step_gradient(self, data: LocalData, generator: torch.Generator | None) -> GradientFn:
        """The gradient each local step of the client uses on ``data``."""
        return loss_gradient

    def replay_gradient(self, data: LocalData) -> GradientFn:
        """The adaptive attacker's replay of :meth:`step_gradient`: its deterministic, public part."""
        return loss_gradient

    def transform(
        self, payload: Tensors, data: LocalData, server: ServerState, generator: torch.Generator | None
    ) -> Tensors:
        """What the client does to its upload before sending it (default: nothing)."""
        return payload

    def replay(self, simulated: Tensors, observed: Tensors | None) -> Tensors:
        """The adaptive attacker's replay of :meth:`transform` on a simulated upload, given what it
        observed of this client's upload (``None`` when the server sees only an aggregate, e.g. inside
        ``he``: replay what does not need it). Default: nothing to replay."""
        return simulated

    def exact_replay(self) -> bool:
        """Whether the adaptive replay reproduces the observation on the true inputs (False: noise)."""
        return True

    def upload_bytes(self, payload: Tensors) -> int:
        """Bytes on the wire for ``payload`` (default: dense)."""
        return payload_bytes(payload)

    def payload_metrics(self, payload: Tensors) -> dict[str, Any]:
        """What the defense reports about a sent payload (e.g. the share of entries kept), into the metrics."""
        return {}

    def account(self, client: ClientState, data: LocalData) -> dict[str, Any]:
        """Bookkeeping of one round in the client's private state (e.g. DP's accountant); its metrics."""
        return {}

    def public_parameters(self) -> dict[str, Any]:
        """The defense's public parameters, added to ``PublicKnowledge.protocol``."""
        return {}

    def observation_notes(self, target: LocalData, observed: Tensors) -> list[str]:
        """Caveats of this threat model, recorded in the row."""
        return []

    # --- the client step, once for training and for the attack --------------------------------------
    def client_update(
        self, server: ServerState, client: ClientState, data: LocalData, generator: torch.Generator | None
    ) -> Upload:
        start = time.perf_counter()
        upload = client_round(
            self.model,
            server,
            data,
            self.active_protocol,
            generator,
            self.step_gradient(data, generator),
            attack_setting=self._attack_setting,
        )
        payload = {k: v.detach() for k, v in self.transform(upload.payload, data, server, generator).items()}
        metrics = {
            "bytes_uploaded": self.upload_bytes(payload) + payload_bytes(upload.buffers),
            **self.payload_metrics(payload),
            **self.account(client, data),
            "client_seconds": time.perf_counter() - start,
        }
        return dataclasses.replace(upload, payload=payload, metrics=metrics)

    def simulator(self, server: ServerState, batch_size: int, observed: Tensors, data: LocalData) -> Simulator:
        """The attacker's replay of the attacked round: plain FedAvg (``unaware``), or the public steps of the
        defense (``adaptive``)."""
        protocol = self.protocol.for_round(self.round)
        if self.knowledge == "unaware":
            return sgd_simulator(self.model, server, batch_size, protocol, examples=len(data))
        gradient = self.replay_gradient(data)
        clean = sgd_simulator(self.model, server, batch_size, protocol, gradient=gradient, examples=len(data))
        if type(self).replay is SGDDefense.replay:
            return clean
        return lambda x, y, unknowns: self.replay(clean(x, y, unknowns), observed)

    def observe(
        self,
        server: ServerState,
        client: ClientState,
        target: LocalData,
        cohort: Sequence[tuple[ClientState, LocalData]],
        generator: torch.Generator | None,
    ) -> Observation:
        self._attack_setting = True
        try:
            upload = self.client_update(server, {k: v.clone() for k, v in client.items()}, target, generator)
        finally:
            self._attack_setting = False
        observed = upload.payload
        unaware = self.knowledge == "unaware"
        has_mechanism = "unaware" in self.knowledge_levels
        notes = self.observation_notes(target, observed)
        if unaware:
            notes.append(f"knowledge 'unaware': the attacker ignores {self.name}'s mechanism and replays plain FedAvg")
        public = sgd_public_knowledge(
            self.model,
            server,
            self.task,
            target,
            self.protocol.for_round(self.round),
            upload.kind,
            round=self.round.as_dict(),
            passes=self.protocol.for_round(self.round).passes,
            **self.public_parameters(),
        )
        return Observation(
            observed=observed,
            public=public,
            simulate=self.simulator(server, target.batch_size, observed, target),
            knowledge=self.knowledge,
            notes=tuple(notes),
            metrics=dict(upload.metrics),
            exact=(not has_mechanism) or (not unaware and self.exact_replay()),
            passes=public.protocol["passes"],
        )
