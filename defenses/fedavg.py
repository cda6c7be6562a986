"""FedAvg / FedSGD — no protection: the baseline every defense is compared with.

Each client runs plain local SGD from the global parameters and sends what it computed: its
gradient on one batch when the round is a single step (FedSGD, the default attack setting), or its
parameter update after several steps (FedAvg, ``local_steps=E``). The server averages the uploads
weighted by the clients' numbers of examples. The honest-but-curious server observes the target
client's upload exactly, and simulates it by replaying the same local computation on candidate data.
"""
from __future__ import annotations

from bench.sgd_client import SGDDefense


class FedAvg(SGDDefense):
    """FedAvg/FedSGD, no protection: the server sees each client's gradient or update exactly."""

    name = "fedavg"
    description = __doc__
    #: Nothing to be aware of: the attacker replays the client exactly.
    knowledge_levels = ("adaptive",)
    # The official HyperFL code's FedAvg client (SGD lr 0.02, momentum 0.5, weight decay 5e-4); `bench train
    # --preset quick|paper` applies the preset of the same name (its 5 local epochs come with the federation).
    presets = {name: {"lr": 0.02, "momentum": 0.5, "weight_decay": 5e-4} for name in ("hyperfl-paper", "quick", "paper")}
