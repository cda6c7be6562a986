"""FedAvg / FedSGD — no protection: the baseline every defense is compared with.

Each client runs plain local SGD from the global parameters and sends what it computed: its
gradient on one batch when the round is a single step (FedSGD, the default attack setting), or its
parameter update after several steps (FedAvg, ``local_steps=E``). The server averages the uploads
weighted by the clients' numbers of examples. The honest-but-curious server observes the target
client's upload exactly, and simulates it by replaying the same local computation on candidate data.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.defense import ClientState, Defense, ServerState
from bench.functional import forward
from bench.sgd_client import (SGD_OPTIONS, SGDProtocol, apply_uploads, client_round, initial_state,
                              observe_sgd_client, payload_bytes, public_model, sgd_simulator, split_state)
from bench.threat import LocalData, Observation, PublicKnowledge, Upload

__all__ = ["SGD_OPTIONS", "FedAvg"]  # SGD_OPTIONS lives in bench.sgd_client; re-exported for old imports


class FedAvg(Defense):
    """FedAvg/FedSGD, no protection: the server sees each client's gradient or update exactly."""

    name = "fedavg"
    description = __doc__
    options = SGD_OPTIONS
    # The official HyperFL code's FedAvg client (SGD lr 0.02, momentum 0.5, weight decay 5e-4); `bench train
    # --preset quick|paper` applies the preset of the same name (its 5 local epochs come with the federation).
    presets = {name: {"lr": 0.02, "momentum": 0.5, "weight_decay": 5e-4} for name in ("hyperfl-paper", "quick", "paper")}

    def setup(self, task) -> None:
        super().setup(task)
        self.model = task.new_model()
        self.protocol = SGDProtocol(lr=self.opt.lr, local_steps=self.opt.local_steps,
                                    local_epochs=task.local_epochs, momentum=self.opt.momentum,
                                    weight_decay=self.opt.weight_decay)

    def init_server(self) -> ServerState:
        return initial_state(self.task.new_model())

    def client_update(self, server: ServerState, client: ClientState, data: LocalData,
                      generator: torch.Generator | None) -> Upload:
        return client_round(self.model, server, data, self.protocol, generator)

    def aggregate(self, server: ServerState, uploads: Sequence[Upload]) -> ServerState:
        return apply_uploads(server, uploads, self.protocol.lr)

    def predict(self, server: ServerState, client: ClientState, x: torch.Tensor) -> torch.Tensor:
        params, buffers = split_state(self.model, server)
        self.model.eval()
        return forward(self.model, params, x, buffers)

    def observe(self, server: ServerState, client: ClientState, target: LocalData,
                cohort: Sequence[tuple[ClientState, LocalData]], generator: torch.Generator | None) -> Observation:
        observed, kind = observe_sgd_client(self.model, server, target, self.protocol)
        public = PublicKnowledge(
            model=public_model(self.model, server), num_images=len(target), image_shape=self.task.image_shape,
            num_classes=self.task.num_classes, mean=self.task.mean, std=self.task.std, observed_kind=kind,
            classifier_key=f"{self.task.classifier}.weight",
            protocol={**self.protocol.as_dict(), "batch_size": target.batch_size})
        return Observation(observed=observed, public=public,
                           simulate=sgd_simulator(self.model, server, target.batch_size, self.protocol),
                           metrics={"bytes_uploaded": payload_bytes(observed)})
