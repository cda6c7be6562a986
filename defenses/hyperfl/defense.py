"""HyperFL (Guo et al., AAAI 2025, arXiv 2412.07187): clients share a hypernetwork, never their model.

Each client holds a private embedding (dim 64) and a private classifier head. A hypernetwork —
Linear 64→128 + ReLU, then one Linear 128→numel "generator head" per tensor — turns the embedding
into *every* weight and bias of the target network's feature extractor (every parameter but the
classifier head ``task.classifier``). A round, as in the official code (Pengxin-Guo/HyperFL,
``cnn/methods/hyperfl.py``): ``head_epochs`` (1) epoch(s) of SGD on the head alone (lr 0.1, momentum
0.5, weight decay 5e-4), then the local epochs on hypernetwork + embedding (lr 0.02, momentum 0.5,
weight decay 5e-4, each group's gradient norm clipped to 50); optimiser state starts afresh each
phase. Only the hypernetwork is uploaded (as its update); the server averages the clients'
hypernetworks weighted by local data size. Embedding and head never leave the client.

The generator heads use PyTorch's default Linear initialisation, as the official code does
(``generator_init=default``): every generated tensor then starts at the same scale, whatever its layer's
fan-in, several times its layer's own default scale, so the generated network starts overconfident.
``generator_init=fan_in`` scales each head to its layer's fan-in (docs/hyperfl.md measures both).

What the server observes depends on the attacked round (``--round``, :mod:`bench.round`): in a
``local`` round — the protocol's own exchange and the threat model to judge HyperFL by — the
hypernetwork update after the client's round (head epochs, then local epochs) over the round's local
examples, in the fixed batch order the server knows; every example of the round is a target. At
``fedsgd`` (the CLI default, because it is fast) the hypernetwork gradient of one batch: a
stronger-attacker variant the protocol never sends.

The attacker's knowledge level (``--knowledge``) says what the honest-but-curious server knows:

* ``unaware`` knows the protocol, the hypernetwork and the architecture and uses fixed random guesses
  of the embedding and head (a generic attack, as far as the paper's setting can be determined);
* ``adaptive`` exploits the mechanism. From one FedSGD hypernetwork gradient, the gradient of each
  generator head's bias *is* the gradient of the generated tensor, and the head's weight gradient
  is that times hᵀ (h = the hypernetwork's hidden features), so h, and with it the generated
  feature extractor, follow exactly: the attack then faces plain FedSGD on the target network with
  only the classifier head unknown (optimised with the images). After a local round the same
  ratio, taken on the data part of the update (its weight-decay drift removed exactly: see
  :func:`weight_decay_factor`), estimates the embedding, which starts a joint optimisation of
  embedding and head through the unrolled round (``local_replay=round``), or, with
  ``local_replay=generated``, the same ratio on every generator head gives the generated network and
  the weighted sum of the round's per-step gradients of it (SGD's coefficients are public), which the
  attack matches on the generated network alone — far cheaper per step;
* ``oracle`` is handed the true embedding and head: an upper bound on what the attacker *knows* (not
  on what leaks: its optimisation through the full hypernetwork can do worse than ``adaptive``).

The adaptive attacker's closed-form readings live in :mod:`bench.defenses.hyperfl.attacker`; what they
recover is compared with the truth only by :meth:`HyperFL.diagnostics` (evaluator-only, never in the
Observation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from bench.defense import ClientState, Defense, FLTask, ServerState
from bench.errors import BenchError
from bench.functional import forward
from bench.options import Option
from bench.sgd_defense import apply_uploads, payload_bytes
from bench.threat import LocalData, Observation, Tensors, Upload

from bench.defenses.hyperfl.model import (
    EMBEDDING,
    HEAD_BIAS,
    HEAD_WEIGHT,
    HYPER,
    LOCAL,
    MAX_HYPERNETWORK_PARAMETERS,
    HyperFLModel,
    HyperNetwork,
    prefixed,
    private_state,
    unprefixed,
)
from bench.defenses.hyperfl.observation import ThreatModel
from bench.defenses.hyperfl.recovery import recover_from_gradient
from bench.defenses.hyperfl.round import (
    HyperFLProtocol,
    local_round,
)
from typing import Any, cast


class HyperFL(ThreatModel, Defense):
    """HyperFL (Guo et al. 2025): a shared hypernetwork generates each client's feature extractor."""

    name = "hyperfl"
    description = __doc__
    default_model = "cnn"
    #: unaware: fixed random guesses of embedding and head; adaptive: exploits the hypernetwork (recovers the
    #: generated feature extractor, optimises the head, and the embedding after a local round); oracle: is
    #: handed the true embedding and head.
    knowledge_levels = ("adaptive", "unaware", "oracle")
    round_kinds = ("fedsgd", "local")
    client_optimiser = {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay"}
    options = (
        Option(
            "local_replay",
            str,
            "round",
            "local round, adaptive attacker: round = optimise embedding and head through the unrolled round "
            "and the hypernetwork (exact replay); generated = read the generated network and the steps' summed "
            "gradients off the update's data part and match those on the generated network alone",
            choices=("round", "generated"),
        ),
        Option("embedding_dim", int, 64, "client embedding size", min=1),
        Option("hidden_dim", int, 128, "hypernetwork hidden width", min=1),
        Option("head_epochs", int, 1, "epochs on the classifier head alone at the start of a round", min=0),
        Option("head_lr", float, 0.1, "SGD learning rate of the head phase", min=0.0, min_exclusive=True),
        Option(
            "local_epochs",
            int,
            0,
            "epochs on hypernetwork + embedding per round; 0 = the protocol's "
            "--local-epochs (the official code's single local_epoch setting, 5, set by the quick/paper presets)",
            min=0,
        ),
        Option("lr", float, 0.02, "SGD learning rate of hypernetwork + embedding", min=0.0, min_exclusive=True),
        Option("momentum", float, 0.5, "SGD momentum of both phases", min=0.0, max=1.0),
        Option("weight_decay", float, 5e-4, "SGD weight decay of both phases", min=0.0),
        Option(
            "max_grad_norm",
            float,
            50.0,
            "gradient-norm clip of hypernetwork and embedding (each group)",
            min=0.0,
            min_exclusive=True,
        ),
        Option(
            "generator_init",
            str,
            "default",
            "initialisation of the generator heads: default = PyTorch's Linear init, as the official code "
            "(the generated tensors then have the same scale whatever their layer's fan-in); fan_in = scaled so "
            "each generated tensor starts with the variance of its layer's own default init",
            choices=("default", "fan_in"),
        ),
        Option(
            "client_init",
            str,
            "private",
            "private: each client draws its own embedding and head; shared: "
            "all start from one draw, as the official code's deep copies of the global model (which the "
            "server then knows)",
            choices=("private", "shared"),
        ),
        Option(
            "evaluate",
            str,
            "global",
            "model a client is scored with: global = generated by the aggregated "
            "hypernetwork (what it holds after the round, like fedavg's global model); local = its model at "
            "the end of its local round (what the official code reports)",
            choices=("global", "local"),
        ),
    )

    def setup(self, task: FLTask) -> None:
        super().setup(task)
        target = task.new_model()
        generated = sum(p.numel() for n, p in target.named_parameters() if not n.startswith(task.classifier + "."))
        hidden, dim = self.opt.hidden_dim, self.opt.embedding_dim
        size = generated * (hidden + 1) + (dim + 1) * hidden  # generator heads + the first layer
        if size > MAX_HYPERNETWORK_PARAMETERS:  # checked before allocating it
            raise BenchError(
                f"hyperfl's hypernetwork for {task.model_name} would have {size:,} parameters; "
                f"use a smaller model such as 'cnn'"
            )
        self.model = HyperFLModel(target, task.classifier, dim, hidden)
        self.protocol = HyperFLProtocol(
            head_epochs=self.opt.head_epochs,
            head_lr=self.opt.head_lr,
            local_epochs=self.opt.local_epochs or task.local_epochs,
            lr=self.opt.lr,
            momentum=self.opt.momentum,
            weight_decay=self.opt.weight_decay,
            max_grad_norm=self.opt.max_grad_norm,
        )
        self._shared_private: Tensors | None = None

    # -- state -----------------------------------------------------------------------------------

    def _fresh_private(self) -> Tensors:
        """A new embedding (N(0, 1), as nn.Embedding) and head (the target network's own initialisation)."""
        head = cast(nn.Linear, self.task.new_model().get_submodule(self.task.classifier))
        embedding = torch.randn(self.opt.embedding_dim).to(self.task.device)
        return {EMBEDDING: embedding, HEAD_WEIGHT: head.weight.detach().clone(), HEAD_BIAS: head.bias.detach().clone()}

    def init_server(self) -> ServerState:
        net = HyperNetwork(
            self.model.hypernetwork.shapes,
            self.opt.embedding_dim,
            self.opt.hidden_dim,
            self.opt.generator_init,
            self.model.fan_in,
        )
        state = {k: v.detach().to(self.task.device) for k, v in net.state_dict().items()}
        self._shared_private = self._fresh_private() if self.opt.client_init == "shared" else None
        return state

    def init_client(self, client_id: int) -> ClientState:
        if self.opt.client_init == "shared":
            if self._shared_private is None:
                raise RuntimeError("init_server must run before init_client")
            return {k: v.clone() for k, v in self._shared_private.items()}
        return self._fresh_private()

    # -- training --------------------------------------------------------------------------------

    def client_update(
        self, server: ServerState, client: ClientState, data: LocalData, generator: torch.Generator | None
    ) -> Upload:
        start = time.perf_counter()
        p = self.protocol
        head_batches = [b for _ in range(p.head_epochs) for b in data.batches(generator)]
        hyper_batches = [b for _ in range(p.local_epochs) for b in data.batches(generator)]
        hyper = prefixed(server)
        self.model.train()
        new_hyper, private = local_round(
            self.model, hyper, private_state(client), head_batches, hyper_batches, p, create_graph=False
        )
        client.update(private)
        if self.opt.evaluate == "local":
            with torch.no_grad():
                generated = cast(Tensors, forward(self.model.hypernetwork, unprefixed(new_hyper), private[EMBEDDING]))
            client.update({LOCAL + k: v.detach() for k, v in generated.items()})
        payload = {k: (new_hyper[HYPER + k] - server[k]).detach() for k in server}
        return Upload(
            payload=payload,
            num_examples=len(data),
            kind="update",
            metrics={"bytes_uploaded": payload_bytes(payload), "client_seconds": time.perf_counter() - start},
        )

    def diagnostics(
        self, server: ServerState, client: ClientState, target: LocalData, obs: Observation
    ) -> dict[str, Any]:
        """How close the adaptive attacker's readings come to the truth (evaluator-only, for the row): the
        generated network it recovered against the one the client's embedding generates, the embedding it
        read off a FedSGD gradient, and the cosine of its embedding estimate after a local round."""
        if obs.knowledge != "adaptive":
            return {}
        truth = private_state(client)
        out: dict[str, Any] = {}
        if obs.unknowns.keys() == {EMBEDDING, HEAD_WEIGHT, HEAD_BIAS}:  # the joint optimisation's starting estimate
            estimate = obs.unknowns[EMBEDDING].guess
            out["embedding_estimate_cosine"] = float(
                torch.nn.functional.cosine_similarity(estimate.double(), truth[EMBEDDING].double(), dim=0)
            )
            return out
        with torch.no_grad():
            true_generated = cast(Tensors, forward(self.model.hypernetwork, dict(server), truth[EMBEDDING]))
        recovered = dict(obs.public.model.named_parameters())
        out["recovered_weight_max_error"] = max(
            float((recovered[k].detach() - v).abs().max()) for k, v in true_generated.items()
        )
        if self.round.kind == "fedsgd":
            with torch.no_grad():
                gradient = self.send(server, truth, target)
            embedding = recover_from_gradient(server, gradient, self.model.hypernetwork.shapes).embedding
            if embedding is not None:
                out["recovered_embedding_max_error"] = float((embedding - truth[EMBEDDING]).abs().max())
        return out

    def evaluated_model(self) -> str:
        """Each client's own model: the hypernetwork's output for its private embedding, and its private head."""
        return "personalised"

    def aggregate(self, server: ServerState, uploads: Sequence[Upload]) -> ServerState:
        """The size-weighted mean of the clients' new hypernetworks (old + update)."""
        return apply_uploads(server, uploads, self.protocol.lr)

    @torch.no_grad()
    def predict(self, server: ServerState, client: ClientState, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        if self.opt.evaluate == "local" and any(k.startswith(LOCAL) for k in client):
            generated = {k[len(LOCAL) :]: v for k, v in client.items() if k.startswith(LOCAL)}
            params = {**generated, **self.model.head_params(client[HEAD_WEIGHT], client[HEAD_BIAS])}
            return functional_call(self.model.target, params, (x,))
        return forward(self.model, {**prefixed(server), **private_state(client)}, x)
