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

from bench.defense import ClientState, ServerState
from bench.sgd_client import (SGDDefense, client_round, observe_sgd_client, payload_bytes, sgd_public_knowledge,
                              sgd_simulator)
from bench.threat import LocalData, Observation, Upload


class FedAvg(SGDDefense):
    """FedAvg/FedSGD, no protection: the server sees each client's gradient or update exactly."""

    name = "fedavg"
    description = __doc__
    # The official HyperFL code's FedAvg client (SGD lr 0.02, momentum 0.5, weight decay 5e-4); `bench train
    # --preset quick|paper` applies the preset of the same name (its 5 local epochs come with the federation).
    presets = {name: {"lr": 0.02, "momentum": 0.5, "weight_decay": 5e-4} for name in ("hyperfl-paper", "quick", "paper")}

    def client_update(self, server: ServerState, client: ClientState, data: LocalData,
                      generator: torch.Generator | None) -> Upload:
        return client_round(self.model, server, data, self.protocol, generator)

    def observe(self, server: ServerState, client: ClientState, target: LocalData,
                cohort: Sequence[tuple[ClientState, LocalData]], generator: torch.Generator | None) -> Observation:
        observed, kind = observe_sgd_client(self.model, server, target, self.protocol)
        return Observation(observed=observed,
                           public=sgd_public_knowledge(self.model, server, self.task, target, self.protocol, kind),
                           simulate=sgd_simulator(self.model, server, target.batch_size, self.protocol),
                           metrics={"bytes_uploaded": payload_bytes(observed)})
