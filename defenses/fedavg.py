"""FedAvg / FedSGD — no protection: the baseline every defense is compared with.

Each client runs plain local SGD from the global parameters and sends what it computed: its
gradient on one batch (``--round fedsgd``, the default attack setting), or its parameter update after
its local epochs (FedAvg: training, and ``--round local``). The server averages the uploads
weighted by the clients' numbers of examples. The honest-but-curious server observes the target
client's upload exactly, and simulates it by replaying the same local computation on candidate data.

``finetune=head`` (``fedavg-ft``, the personalised baseline): before it is evaluated, each client
takes the current global model and fine-tunes its classifier head (``task.classifier``) alone on its
own training data — ``finetune_epochs`` epochs (0: the protocol's local epochs) of SGD with the
client's lr, momentum and weight decay, mini-batches shuffled — and predicts with the global
feature extractor and that head. This is ``LocalUpdate_FedAvg.local_fine_tuning`` of the official
HyperFL code (``cnn/methods/fedavg.py``: the ``classifier_weight_keys`` trainable, ``local_epoch``
epochs, ``SGD(lr=args.lr, momentum=0.5, weight_decay=5e-4)``), the fine-tuned FedAvg baseline of
personalised FL against which a private head is judged. The official ``federated_main.py`` does not
call it; the FedAvg accuracy it reports is each client's model after its full local training round
(every parameter), before aggregation. The fine-tuned head never leaves the client and never feeds
the next round: training (and so every attack) is plain FedAvg.
"""

from __future__ import annotations

import torch

from bench.defense import ClientState, ServerState
from bench.functional import forward, sgd_steps
from bench.options import Option
from bench.sgd_defense import SGD_OPTIONS, SGDDefense, predict_logits, split_state
from bench.threat import LocalData, Tensors

#: Client-state prefix of the fine-tuned head (private; used by ``predict`` only).
FINETUNED = "finetuned."
FINETUNE = ("none", "head")


class FedAvg(SGDDefense):
    """FedAvg/FedSGD, no protection: the server sees each client's gradient or update exactly."""

    name = "fedavg"
    description = __doc__
    #: Nothing to be aware of: the attacker replays the client exactly.
    knowledge_levels = ("adaptive",)
    options = (
        *SGD_OPTIONS,
        Option(
            "finetune",
            str,
            "none",
            "head: before evaluation each client fine-tunes the classifier head on its "
            "own training data (FedAvg + FT, the personalised baseline); none: the global model as is",
            choices=FINETUNE,
        ),
        Option(
            "finetune_epochs",
            int,
            0,
            "epochs of head fine-tuning; 0 = the protocol's --local-epochs (as the official code's local_fine_tuning)",
            min=0,
        ),
    )
    # The official HyperFL code's FedAvg client (SGD lr 0.02, momentum 0.5, weight decay 5e-4); `bench train
    # --protocol quick|paper` applies the preset of the same name (its 5 local epochs come with the federation).
    presets = {
        name: {"lr": 0.02, "momentum": 0.5, "weight_decay": 5e-4} for name in ("hyperfl-paper", "quick", "paper")
    }

    def evaluated_model(self) -> str:
        return "global+finetuned-head" if self.opt.finetune == "head" else "global"

    def _head_keys(self) -> list[str]:
        prefix = self.task.classifier + "."
        return [k for k, _ in self.model.named_parameters() if k.startswith(prefix)]

    def personalise(
        self, server: ServerState, client: ClientState, data: LocalData, generator: torch.Generator | None
    ) -> None:
        """Fine-tune the head of the current global model on ``data`` (``finetune=head``; module docstring)."""
        if self.opt.finetune != "head":
            return
        params, buffers = split_state(self.model, server)
        head = {k: params[k].detach().clone() for k in self._head_keys()}
        frozen = {
            **{k: v.detach() for k, v in params.items() if k not in head},
            **{k: v.clone() for k, v in buffers.items()},
        }
        epochs = self.opt.finetune_epochs or self.protocol.local_epochs
        batches = [b for _ in range(epochs) for b in data.batches(generator)]
        self.model.train()
        with torch.enable_grad():
            tuned = sgd_steps(
                self.model,
                head,
                batches,
                self.protocol.lr,
                self.protocol.momentum,
                self.protocol.weight_decay,
                frozen,
                create_graph=False,
            )
        client.update({FINETUNED + k: v.detach() for k, v in tuned.items()})

    def predict(self, server: ServerState, client: Tensors, x: torch.Tensor) -> torch.Tensor:
        if self.opt.finetune != "head" or not any(k.startswith(FINETUNED) for k in client):
            return predict_logits(self.model, server, x)
        params, buffers = split_state(self.model, server)
        params.update({k[len(FINETUNED) :]: v for k, v in client.items() if k.startswith(FINETUNED)})
        self.model.eval()
        return forward(self.model, params, x, buffers)


class FedAvgFT(FedAvg):
    """FedAvg + fine-tuning: the global model with a classifier head each client fine-tunes on its own data."""

    name = "fedavg-ft"
    description = __doc__
    options = tuple(
        Option(o.name, o.type, "head", o.help, choices=o.choices) if o.name == "finetune" else o for o in FedAvg.options
    )
