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

What the server observes (``attack_setting``): ``local`` is the protocol's own exchange and the
threat model to judge HyperFL by — the hypernetwork update after the attacked client's round over its
own local data: the attacked batch first, then ``attack_local_batches`` − 1 further mini-batches of
the client's other examples (``LocalData.others``, from the harness), in a fixed order the server
knows. Unaware and adaptive attackers do not know those other examples: they reconstruct every
example of the round (``public.num_images``) and the target's are scored by best match; the oracle is
handed them too. A round on the attacked batch alone would let the head epoch fit it and starve the
later gradients, which flatters the defense. ``fedsgd`` (the CLI default, because it is fast) is a
stronger-attacker variant the protocol never sends: the hypernetwork gradient of one batch.

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
  embedding and head through the unrolled round;
* ``oracle`` is handed the true embedding and head (and, in the local setting, the client's other
  examples of the round): an upper bound on what the attacker *knows* (not on what leaks: its
  optimisation through the full hypernetwork can do worse than ``adaptive``).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import functional_call

from bench.defense import ClientState, Defense, FLTask, ServerState
from bench.errors import BenchError
from bench.functional import forward, loss_gradient, sgd_update
from bench.options import Option
from bench.sgd_client import apply_uploads, payload_bytes, public_model
from bench.threat import LocalData, Observation, PublicKnowledge, Simulator, Tensors, Unknown, Upload

EMBEDDING = "embedding"
HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"
PRIVATE = (EMBEDDING, HEAD_WEIGHT, HEAD_BIAS)
HYPER = "hypernetwork."  # prefix of the hypernetwork's parameters inside the client model
LOCAL = "local."         # prefix of the feature extractor a client keeps after its round (evaluate=local)
MAX_HYPERNETWORK_PARAMETERS = 500_000_000


def _module_key(name: str) -> str:
    """ModuleDict keys cannot contain dots: 'conv1.weight' → 'conv1__weight'."""
    return name.replace(".", "__")


class HyperNetwork(nn.Module):
    """Linear(embedding→hidden) + ReLU, then one Linear(hidden→numel) generator head per tensor."""

    def __init__(self, shapes: Mapping[str, torch.Size], embedding_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.shapes = {name: torch.Size(shape) for name, shape in shapes.items()}
        self.mlp = nn.Sequential(nn.Linear(embedding_dim, hidden_dim), nn.ReLU())
        self.heads = nn.ModuleDict({_module_key(n): nn.Linear(hidden_dim, s.numel()) for n, s in self.shapes.items()})

    def forward(self, embedding: torch.Tensor) -> Tensors:
        features = self.mlp(embedding)
        return {name: self.heads[_module_key(name)](features).view(shape) for name, shape in self.shapes.items()}


class HyperFLModel(nn.Module):
    """A client's whole model: embedding → hypernetwork → feature extractor, then the private head.

    Its parameters are ``hypernetwork.*`` (shared), ``embedding`` and ``head.*`` (private). The
    target network is held but not registered as a submodule: its feature extractor is generated
    and its head is ``self.head``, so it contributes no parameters of its own.
    """

    def __init__(self, target: nn.Module, classifier: str, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__()
        if any(True for _ in target.buffers()):
            raise BenchError("hyperfl needs a target network without buffers (BatchNorm statistics); "
                             "valid models: 'cnn' (the paper's), 'lenet'")
        prefix = classifier + "."
        shapes = {n: p.shape for n, p in target.named_parameters() if not n.startswith(prefix)}
        self.classifier = classifier
        self.hypernetwork = HyperNetwork(shapes, embedding_dim, hidden_dim)
        self.embedding = nn.Parameter(torch.randn(embedding_dim))  # nn.Embedding(1, d) draws N(0, 1)
        self.head = copy.deepcopy(target.get_submodule(classifier))
        self.__dict__["target"] = target

    def head_params(self, weight: torch.Tensor, bias: torch.Tensor) -> Tensors:
        return {f"{self.classifier}.weight": weight, f"{self.classifier}.bias": bias}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generated = self.hypernetwork(self.embedding)
        self.target.train(self.training)
        return functional_call(self.target, {**generated, **self.head_params(self.head.weight, self.head.bias)}, (x,))


@dataclass(frozen=True)
class HyperFLProtocol:
    """The local round the server fixes (public knowledge)."""

    head_epochs: int
    head_lr: float
    local_epochs: int
    lr: float
    momentum: float
    weight_decay: float
    max_grad_norm: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _sgd_step(params: Tensors, grads: Tensors, velocity: Tensors | None, lr: float, momentum: float,
              weight_decay: float, inplace: bool) -> tuple[Tensors, Tensors]:
    """One step of torch.optim.SGD: :func:`bench.functional.sgd_update`, or with ``inplace`` (the victim,
    which owns ``params`` and ``grads``) the same arithmetic without a new buffer per operation: with a
    13.7 M-parameter hypernetwork the step is memory-bound (15 vs 90 ms on one core)."""
    if inplace:
        for k, p in params.items():
            d = grads[k]
            if weight_decay:
                d.add_(p, alpha=weight_decay)
            if momentum and velocity is not None:
                d.add_(velocity[k], alpha=momentum)
            p.add_(d, alpha=-lr)
        return params, grads
    new, velocity = sgd_update(params, grads, velocity, lr, momentum, weight_decay)
    return new, velocity if velocity is not None else grads


def _clip(grads: Tensors, keys: Iterable[str], max_norm: float, inplace: bool) -> Tensors:
    """torch.nn.utils.clip_grad_norm_ on the group ``keys`` (total 2-norm, eps 1e-6), without branching,
    so it stays differentiable and works under vmap."""
    keys = list(keys)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grads[k]) for k in keys]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if inplace:
        for k in keys:
            grads[k].mul_(coef)
        return grads
    return {**grads, **{k: grads[k] * coef for k in keys}}


def local_round(model: HyperFLModel, hyper: Tensors, private: Tensors, head_batches: Batches,
                hyper_batches: Batches, p: HyperFLProtocol, create_graph: bool) -> tuple[Tensors, Tensors]:
    """One HyperFL round as pure functions: head phase, then hypernetwork + embedding phase.

    ``hyper`` holds the hypernetwork's parameters (``hypernetwork.*`` names), ``private`` the
    embedding and head. Returns the new (hyper, private). The victim runs it without ``create_graph``
    (updating copies in place); with it the whole round stays differentiable in the data and in
    ``private`` (the explicit unrolled reference that ``factored_round_update``, the attacker's
    simulator, is tested and timed against).
    """
    inplace = not create_graph
    if inplace:  # the victim updates its own copies
        hyper = {k: v.detach().clone() for k, v in hyper.items()}
        private = {k: v.detach().clone() for k, v in private.items()}
    head = {HEAD_WEIGHT: private[HEAD_WEIGHT], HEAD_BIAS: private[HEAD_BIAS]}
    fixed = {**hyper, EMBEDDING: private[EMBEDDING]}
    velocity = None
    for xb, yb in head_batches:
        grads = loss_gradient(model, head, xb, yb, fixed, create_graph=create_graph)
        head, velocity = _sgd_step(head, grads, velocity, p.head_lr, p.momentum, p.weight_decay, inplace)
    trainable = {**hyper, EMBEDDING: private[EMBEDDING]}
    velocity = None
    for xb, yb in hyper_batches:
        grads = loss_gradient(model, trainable, xb, yb, head, create_graph=create_graph)
        grads = _clip(grads, hyper.keys(), p.max_grad_norm, inplace)
        grads = _clip(grads, [EMBEDDING], p.max_grad_norm, inplace)
        trainable, velocity = _sgd_step(trainable, grads, velocity, p.lr, p.momentum, p.weight_decay, inplace)
    new_hyper = {k: trainable[k] for k in hyper}
    return new_hyper, {EMBEDDING: trainable[EMBEDDING], **head}


def hyper_gradient(model: HyperFLModel, hyper: Tensors, private: Tensors, x: torch.Tensor, y: torch.Tensor,
                   create_graph: bool) -> Tensors:
    """FedSGD: the gradient of the batch loss with respect to the hypernetwork only."""
    return loss_gradient(model, hyper, x, y, private, create_graph=create_graph)


@dataclass(frozen=True)
class StackedHeads:
    """All generator heads as one Linear(hidden → every generated value): row blocks are the tensors."""

    weight: torch.Tensor  # [N, hidden]
    bias: torch.Tensor    # [N]
    shapes: Mapping[str, torch.Size]

    @classmethod
    def of(cls, server: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]) -> StackedHeads:
        keys = [f"heads.{_module_key(n)}" for n in shapes]
        return cls(torch.cat([server[f"{k}.weight"] for k in keys]).detach(),
                   torch.cat([server[f"{k}.bias"] for k in keys]).detach(), dict(shapes))

    def split(self, flat: torch.Tensor) -> Tensors:
        """Row blocks of ``flat`` ([N] or [N, hidden]) by generated tensor."""
        out, start = {}, 0
        for name, shape in self.shapes.items():
            n = shape.numel()
            out[name] = flat[start:start + n]
            start += n
        return out


def factored_round_update(model: HyperFLModel, server: Mapping[str, torch.Tensor], heads: StackedHeads,
                          private: Tensors, head_batches: Batches, hyper_batches: Batches,
                          p: HyperFLProtocol) -> Tensors:
    """The hypernetwork update of :func:`local_round`, computed without materialising each step.

    Every step changes the stacked generator heads (W, b) by a multiple of themselves (weight decay)
    plus rank-one terms g_s h_sᵀ (g_s: the generated values' gradient at step s, h_s: the hidden
    features), momentum and clipping only rescaling those terms. So W_t = a_t·W_0 + Σ_s β_ts g_s h_sᵀ
    and b_t = a_t·b_0 + Σ_s β_ts g_s with scalar a_t and β_ts, and each step needs only products with
    W_0 instead of updating all 13.7 M parameters: the same arithmetic as the victim's round up to
    float rounding (checked by the tests), several times cheaper to differentiate through.
    """
    target = model.target
    target.eval()
    w0, b0 = heads.weight, heads.bias
    a_mlp, c_mlp, emb = server["mlp.0.weight"], server["mlp.0.bias"], private[EMBEDDING]
    head = {HEAD_WEIGHT: private[HEAD_WEIGHT], HEAD_BIAS: private[HEAD_BIAS]}
    generated = heads.split(w0 @ torch.relu(a_mlp @ emb + c_mlp) + b0)
    generated = {n: v.view(heads.shapes[n]) for n, v in generated.items()}
    velocity = None
    for xb, yb in head_batches:
        grads = loss_gradient(target, model.head_params(head[HEAD_WEIGHT], head[HEAD_BIAS]), xb, yb, generated)
        grads = {HEAD_WEIGHT: grads[f"{model.classifier}.weight"], HEAD_BIAS: grads[f"{model.classifier}.bias"]}
        head, velocity = _sgd_step(head, grads, velocity, p.head_lr, p.momentum, p.weight_decay, False)
    head_params = model.head_params(head[HEAD_WEIGHT], head[HEAD_BIAS])
    small = {"A": a_mlp, "c": c_mlp, EMBEDDING: emb}
    small_velocity = None
    scale, scale_velocity = 1.0, 0.0          # a_t and its momentum buffer
    beta: list[torch.Tensor] = []             # β_ts for s < t
    gamma: list[torch.Tensor] = []            # their momentum buffers
    gs: list[torch.Tensor] = []
    hs: list[torch.Tensor] = []
    for t, (xb, yb) in enumerate(hyper_batches):
        pre = small["A"] @ small[EMBEDDING] + small["c"]
        h = torch.relu(pre)
        flat = scale * (w0 @ h + b0)
        if gs:
            g_mat, h_mat, b_vec = torch.stack(gs, 1), torch.stack(hs, 1), torch.stack(beta)
            flat = flat + g_mat @ (b_vec * (h_mat.T @ h + 1))
        phi = {n: v.view(heads.shapes[n]) for n, v in heads.split(flat).items()}
        grads = loss_gradient(target, phi, xb, yb, head_params, create_graph=True)
        g = torch.cat([grads[n].reshape(-1) for n in heads.shapes])
        dh = scale * (w0.T @ g)
        if gs:
            dh = dh + h_mat @ (b_vec * (g_mat.T @ g))
        delta = dh * (pre > 0).to(dh.dtype)
        d_small = {"A": torch.outer(delta, small[EMBEDDING]), "c": delta, EMBEDDING: small["A"].T @ delta}
        norm = torch.sqrt(g.dot(g) * (h.dot(h) + 1) + (d_small["A"] ** 2).sum() + delta.dot(delta))
        coef = torch.clamp(p.max_grad_norm / (norm + 1e-6), max=1.0)
        d_small["A"], d_small["c"] = d_small["A"] * coef, d_small["c"] * coef
        d_small = _clip(d_small, [EMBEDDING], p.max_grad_norm, False)
        small, small_velocity = _sgd_step(small, d_small, small_velocity, p.lr, p.momentum, p.weight_decay, False)
        # the stacked heads, in coefficients: the step is wd·W_t + coef·g_t h_tᵀ
        d_scale = p.weight_decay * scale
        d_beta = [p.weight_decay * b for b in beta] + [coef]
        if t and p.momentum:
            scale_velocity = p.momentum * scale_velocity + d_scale
            gamma = [p.momentum * v + d for v, d in zip(gamma + [torch.zeros_like(coef)], d_beta)]
        else:
            scale_velocity, gamma = d_scale, d_beta
        scale = scale - p.lr * scale_velocity
        beta = [b - p.lr * v for b, v in zip(beta + [torch.zeros_like(coef)], gamma)]
        gs.append(g)
        hs.append(h)
    update = {"mlp.0.weight": small["A"] - a_mlp, "mlp.0.bias": small["c"] - c_mlp}
    if gs:
        g_mat, h_mat, b_vec = torch.stack(gs, 1), torch.stack(hs, 1), torch.stack(beta)
        d_weight = (scale - 1) * w0 + (g_mat * b_vec) @ h_mat.T
        d_bias = (scale - 1) * b0 + g_mat @ b_vec
    else:
        d_weight, d_bias = torch.zeros_like(w0), torch.zeros_like(b0)
    for name, block in heads.split(d_weight).items():
        update[f"heads.{_module_key(name)}.weight"] = block
    for name, block in heads.split(d_bias).items():
        update[f"heads.{_module_key(name)}.bias"] = block
    return update


def _prefixed(server: Mapping[str, torch.Tensor]) -> Tensors:
    return {HYPER + k: v for k, v in server.items()}


def _unprefixed(hyper: Mapping[str, torch.Tensor]) -> Tensors:
    return {k[len(HYPER):]: v for k, v in hyper.items()}


def _private(client: Mapping[str, torch.Tensor]) -> Tensors:
    return {k: client[k] for k in PRIVATE}


class HyperFL(Defense):
    """HyperFL (Guo et al. 2025): a shared hypernetwork generates each client's feature extractor."""

    name = "hyperfl"
    description = __doc__
    default_model = "cnn"
    #: unaware: fixed random guesses of embedding and head; adaptive: exploits the hypernetwork (recovers the
    #: generated feature extractor, optimises the head, and the embedding after a local round); oracle: is
    #: handed the true embedding and head.
    knowledge_levels = ("adaptive", "unaware", "oracle")
    options = (
        Option("attack_setting", str, "fedsgd", "what the attacked client sends: local = the protocol's "
               "hypernetwork update after its round over its local data (the attacked batch first); fedsgd = a "
               "stronger-attacker variant, the hypernetwork gradient of the target batch (training always runs "
               "the full round)", choices=("fedsgd", "local")),
        Option("attack_local_batches", int, 2, "local setting: mini-batches of the attacked client's round (of the "
               "attack's batch size, the attacked batch first, then the client's other local examples); 0 = its "
               "whole local set", min=0),
        Option("embedding_dim", int, 64, "client embedding size", min=1),
        Option("hidden_dim", int, 128, "hypernetwork hidden width", min=1),
        Option("head_epochs", int, 1, "epochs on the classifier head alone at the start of a round", min=0),
        Option("head_lr", float, 0.1, "SGD learning rate of the head phase", min=0.0, min_exclusive=True),
        Option("local_epochs", int, 0, "epochs on hypernetwork + embedding per round; 0 = the protocol's "
               "--local-epochs (the official code's single local_epoch setting, 5, set by the quick/paper presets)",
               min=0),
        Option("lr", float, 0.02, "SGD learning rate of hypernetwork + embedding", min=0.0, min_exclusive=True),
        Option("momentum", float, 0.5, "SGD momentum of both phases", min=0.0, max=1.0),
        Option("weight_decay", float, 5e-4, "SGD weight decay of both phases", min=0.0),
        Option("max_grad_norm", float, 50.0, "gradient-norm clip of hypernetwork and embedding (each group)",
               min=0.0, min_exclusive=True),
        Option("client_init", str, "private", "private: each client draws its own embedding and head; shared: "
               "all start from one draw, as the official code's deep copies of the global model (which the "
               "server then knows)", choices=("private", "shared")),
        Option("evaluate", str, "global", "model a client is scored with: global = generated by the aggregated "
               "hypernetwork (what it holds after the round, like fedavg's global model); local = its model at "
               "the end of its local round (what the official code reports)", choices=("global", "local")),
    )

    def setup(self, task: FLTask) -> None:
        super().setup(task)
        target = task.new_model()
        generated = sum(p.numel() for n, p in target.named_parameters() if not n.startswith(task.classifier + "."))
        hidden, dim = self.opt.hidden_dim, self.opt.embedding_dim
        size = generated * (hidden + 1) + (dim + 1) * hidden  # generator heads + the first layer
        if size > MAX_HYPERNETWORK_PARAMETERS:  # checked before allocating it
            raise BenchError(f"hyperfl's hypernetwork for {task.model_name} would have {size:,} parameters; "
                             f"use a smaller model such as 'cnn'")
        self.model = HyperFLModel(target, task.classifier, dim, hidden)
        self.protocol = HyperFLProtocol(
            head_epochs=self.opt.head_epochs, head_lr=self.opt.head_lr,
            local_epochs=self.opt.local_epochs or task.local_epochs, lr=self.opt.lr, momentum=self.opt.momentum,
            weight_decay=self.opt.weight_decay, max_grad_norm=self.opt.max_grad_norm)
        self._shared_private: Tensors | None = None

    # -- state -----------------------------------------------------------------------------------

    def _fresh_private(self) -> Tensors:
        """A new embedding (N(0, 1), as nn.Embedding) and head (the target network's own initialisation)."""
        head = self.task.new_model().get_submodule(self.task.classifier)
        embedding = torch.randn(self.opt.embedding_dim).to(self.task.device)
        return {EMBEDDING: embedding, HEAD_WEIGHT: head.weight.detach().clone(), HEAD_BIAS: head.bias.detach().clone()}

    def init_server(self) -> ServerState:
        net = HyperNetwork(self.model.hypernetwork.shapes, self.opt.embedding_dim, self.opt.hidden_dim)
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

    def client_update(self, server: ServerState, client: ClientState, data: LocalData,
                      generator: torch.Generator | None) -> Upload:
        start = time.perf_counter()
        p = self.protocol
        head_batches = [b for _ in range(p.head_epochs) for b in data.batches(generator)]
        hyper_batches = [b for _ in range(p.local_epochs) for b in data.batches(generator)]
        hyper = _prefixed(server)
        self.model.train()
        new_hyper, private = local_round(self.model, hyper, _private(client), head_batches, hyper_batches, p,
                                         create_graph=False)
        client.update(private)
        if self.opt.evaluate == "local":
            with torch.no_grad():
                generated = forward(self.model.hypernetwork, _unprefixed(new_hyper), private[EMBEDDING])
            client.update({LOCAL + k: v.detach() for k, v in generated.items()})
        payload = {k: (new_hyper[HYPER + k] - server[k]).detach() for k in server}
        return Upload(payload=payload, num_examples=len(data), kind="update",
                      metrics={"bytes_uploaded": payload_bytes(payload),
                               "client_seconds": time.perf_counter() - start})

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
            generated = {k[len(LOCAL):]: v for k, v in client.items() if k.startswith(LOCAL)}
            params = {**generated, **self.model.head_params(client[HEAD_WEIGHT], client[HEAD_BIAS])}
            return functional_call(self.model.target, params, (x,))
        return forward(self.model, {**_prefixed(server), **_private(client)}, x)

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
        return LocalData(torch.cat([target.x, ox]), torch.cat([target.y, oy]), target.batch_size,
                         population=target.population)

    def _send(self, server: ServerState, private: Tensors, target: LocalData) -> Tensors:
        """What the client sends for ``target`` in the attack setting (fixed batch order, eval mode): the
        FedSGD gradient of the batch, or the update after its round on :meth:`round_data`."""
        self.model.eval()
        hyper = _prefixed(server)
        if self.opt.attack_setting == "fedsgd":
            return _unprefixed(hyper_gradient(self.model, hyper, private, target.x, target.y, create_graph=False))
        batches = list(self.round_data(target).batches())
        p = self.protocol
        new_hyper, _ = local_round(self.model, hyper, private, batches * p.head_epochs, batches * p.local_epochs,
                                   p, create_graph=False)
        return {k: new_hyper[HYPER + k] - server[k] for k in server}

    def simulator(self, server: ServerState, batch_size: int,
                  known: tuple[torch.Tensor, torch.Tensor] | None = None) -> Simulator:
        """The attacker's differentiable replay of :meth:`_send` for candidate data and unknowns.

        ``x`` holds the round's examples in round order (the attacked batch first); with ``known`` (the
        oracle's view of the client's other examples) ``x`` is the attacked batch and the known examples
        follow it as constants.
        """
        server = {k: v.detach() for k, v in server.items()}
        hyper, p, model = _prefixed(server), self.protocol, self.model
        heads = StackedHeads.of(server, model.hypernetwork.shapes) if self.opt.attack_setting == "local" else None
        classes = self.task.num_classes

        def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
            model.eval()
            private = {k: unknowns[k] for k in PRIVATE}
            if heads is None:
                return _unprefixed(hyper_gradient(model, hyper, private, x, y, create_graph=True))
            if known is not None:
                kx, ky = known
                if y.dim() == 2:  # soft labels: the known labels as probabilities
                    ky = torch.nn.functional.one_hot(ky, classes).to(y.dtype)
                x, y = torch.cat([x, kx]), torch.cat([y, ky])
            batches = list(LocalData(x, y, batch_size).batches())
            return factored_round_update(model, server, heads, private, batches * p.head_epochs,
                                         batches * p.local_epochs, p)

        return simulate

    def observe(self, server: ServerState, client: ClientState, target: LocalData,
                cohort: Sequence[tuple[ClientState, LocalData]], generator: torch.Generator | None) -> Observation:
        truth = {k: v.detach().clone() for k, v in _private(client).items()}
        with torch.no_grad():
            observed = {k: v.detach() for k, v in self._send(server, truth, target).items()}
        kind = "gradient" if self.opt.attack_setting == "fedsgd" else "update"
        metrics = {"bytes_uploaded": payload_bytes(observed)}
        protocol = {**self.protocol.as_dict(), "batch_size": target.batch_size,
                    "attack_setting": self.opt.attack_setting}
        attacker = self.knowledge
        if attacker == "adaptive" and kind == "gradient":
            return self._adaptive_fedsgd(server, observed, truth, target, generator, protocol, metrics)
        round_data = self.round_data(target)
        others = len(round_data) - len(target)
        if kind == "update":
            metrics.update({"round_examples": len(round_data), "round_batches_per_epoch": round_data.steps_per_epoch(),
                            "other_examples_known": attacker == "oracle" and others > 0})
        guess = self._guess(generator)
        if attacker == "adaptive":
            estimate = estimate_embedding(server, observed, self.protocol, round_data.steps_per_epoch())
            metrics["embedding_estimate_cosine"] = float(torch.nn.functional.cosine_similarity(
                estimate, truth[EMBEDDING], dim=0))
            guess[EMBEDDING] = estimate
        values = truth if attacker == "oracle" else guess
        descriptions = {EMBEDDING: "the client's private embedding", HEAD_WEIGHT: "the private classifier head's weight",
                        HEAD_BIAS: "the private classifier head's bias"}
        unknowns = {k: Unknown(tuple(values[k].shape), descriptions[k], values[k], optimisable=attacker == "adaptive",
                               revealed=attacker == "oracle") for k in PRIVATE}
        notes = [{
            "unaware": "hyperfl/unaware: embedding and head are fixed random guesses; the true ones never leave the client",
            "adaptive": "hyperfl/adaptive: embedding (started from its estimate out of the update's rank-one "
                        "structure) and head are optimised with the images through the unrolled local round",
            "oracle": "hyperfl/oracle: the attacker is handed the true embedding and head (an upper bound on what it "
                      "knows, not on what leaks)",
        }[attacker]]
        known = None
        num_images = len(target)
        if others and attacker == "oracle":
            known = (round_data.x[len(target):], round_data.y[len(target):])
            notes.append(f"hyperfl/local: the client's round ran over {len(round_data)} examples (the attacked batch "
                         f"first, then {others} other local examples); the oracle is also handed those {others}, "
                         f"so it reconstructs the attacked batch only")
        elif others:
            num_images = len(round_data)
            notes.append(f"hyperfl/local: the client's round ran over {len(round_data)} examples (the attacked batch "
                         f"first, then {others} other local examples, batch order known); the attacker knows none of "
                         f"them, reconstructs all {num_images} and the target's are scored by best match")
        elif kind == "update":
            notes.append(f"hyperfl/local: the round ran over the attacked batch alone ({len(target)} examples: the "
                         f"harness gave no other local examples, or the client has none)")
        public = PublicKnowledge(
            model=self._public_model(server, values), num_images=num_images, image_shape=self.task.image_shape,
            num_classes=self.task.num_classes, mean=self.task.mean, std=self.task.std, observed_kind=kind,
            classifier_key=None, protocol={**protocol, "round_examples": len(round_data)})
        # with unknown other examples, simulate needs all of the round's images, not the target's alone
        return Observation(observed=observed, public=public,
                           simulate=self.simulator(server, target.batch_size, known),
                           unknowns=unknowns, knowledge=attacker, notes=tuple(notes),
                           metrics=metrics, exact=num_images == len(target))

    def _guess(self, generator: torch.Generator | None) -> Tensors:
        """The server's own stand-ins for embedding and head, drawn as a client draws them but from the
        attack's random stream (torch's global RNG is left as it was)."""
        seed = int(torch.randint(2**62, (1,), generator=generator or torch.Generator().manual_seed(0)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._fresh_private()

    def _public_model(self, server: ServerState, private: Tensors) -> nn.Module:
        return public_model(self.model, {**_prefixed(server), **private})

    def _adaptive_fedsgd(self, server: ServerState, observed: Tensors, truth: Tensors, target: LocalData,
                         generator: torch.Generator | None, protocol: dict, metrics: dict) -> Observation:
        """The adaptive attacker's derived observation: the generated feature extractor and its gradient."""
        recovered = recover_from_gradient(server, observed, self.model.hypernetwork.shapes)
        with torch.no_grad():
            true_generated = forward(self.model.hypernetwork, dict(server), truth[EMBEDDING])
        metrics["recovered_weight_max_error"] = max(
            float((recovered.generated[k] - true_generated[k]).abs().max()) for k in true_generated)
        if recovered.embedding is not None:
            metrics["recovered_embedding_max_error"] = float((recovered.embedding - truth[EMBEDDING]).abs().max())
        target_net = self.model.target
        generated = recovered.generated
        guess = self._guess(generator)
        head = {HEAD_WEIGHT: guess[HEAD_WEIGHT], HEAD_BIAS: guess[HEAD_BIAS]}
        model = self.model

        def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
            target_net.eval()
            head_params = model.head_params(unknowns[HEAD_WEIGHT], unknowns[HEAD_BIAS])
            return loss_gradient(target_net, generated, x, y, head_params, create_graph=True)

        public_net = public_model(target_net, {**generated, **model.head_params(head[HEAD_WEIGHT], head[HEAD_BIAS])})
        unknowns = {
            HEAD_WEIGHT: Unknown(tuple(head[HEAD_WEIGHT].shape), "the private classifier head's weight",
                                 head[HEAD_WEIGHT], optimisable=True),
            HEAD_BIAS: Unknown(tuple(head[HEAD_BIAS].shape), "the private classifier head's bias",
                               head[HEAD_BIAS], optimisable=True),
        }
        public = PublicKnowledge(
            model=public_net, num_images=len(target), image_shape=self.task.image_shape,
            num_classes=self.task.num_classes, mean=self.task.mean, std=self.task.std, observed_kind="gradient",
            classifier_key=None, protocol={**protocol, "derived": "generated feature extractor and its gradient"})
        note = ("hyperfl/adaptive: the generated feature extractor and its gradient were recovered exactly from the "
                "hypernetwork gradient (generator-head bias gradient = generated-tensor gradient; weight gradient = "
                "that times the hidden features); the classifier head is optimised with the images")
        return Observation(observed=recovered.gradients, public=public, simulate=simulate, unknowns=unknowns,
                           knowledge="adaptive", notes=(note,), metrics=metrics)


@dataclass(frozen=True)
class Recovered:
    """What one FedSGD hypernetwork gradient gives away: hidden features, generated tensors, their gradients."""

    hidden: torch.Tensor
    generated: Tensors
    gradients: Tensors
    embedding: torch.Tensor | None


def recover_from_gradient(server: Mapping[str, torch.Tensor], gradient: Mapping[str, torch.Tensor],
                          shapes: Mapping[str, torch.Size]) -> Recovered:
    """Invert the generator heads' structure (no optimisation).

    For the head generating tensor k, ∂L/∂b_k = g_k (the generated tensor's gradient) and
    ∂L/∂W_k = g_k hᵀ, so h = Σ_k (∂L/∂W_k)ᵀ g_k / Σ_k ‖g_k‖² and the generated tensor is W_k h + b_k.
    The first layer gives the embedding the same way: ∂L/∂A = δ eᵀ and ∂L/∂c = δ.
    """
    num = den = 0
    grads = {}
    for name, shape in shapes.items():  # in float64: the ratio sums ~10^5 products
        key = f"heads.{_module_key(name)}"
        g = gradient[f"{key}.bias"].double()
        num = num + gradient[f"{key}.weight"].double().T @ g
        den = den + g.dot(g)
        grads[name] = gradient[f"{key}.bias"].view(shape)
    hidden = num / den.clamp_min(1e-300)  # a zero gradient carries nothing to recover
    generated = {}
    for name, shape in shapes.items():
        key = f"heads.{_module_key(name)}"
        value = server[f"{key}.weight"].double() @ hidden + server[f"{key}.bias"].double()
        generated[name] = value.to(server[f"{key}.bias"].dtype).view(shape)
    delta = gradient["mlp.0.bias"].double()
    embedding = None
    if float(delta.dot(delta)) > 0:
        embedding = gradient["mlp.0.weight"].double().T @ delta / delta.dot(delta)
        embedding = embedding.to(gradient["mlp.0.bias"].dtype)
    hidden = hidden.to(gradient["mlp.0.bias"].dtype)
    return Recovered(hidden, generated, grads, embedding)


def weight_decay_factor(lr: float, momentum: float, weight_decay: float, steps: int) -> float:
    """a_T with p_T = a_T·p_0 after ``steps`` steps of ``torch.optim.SGD`` whose data gradients are all zero.

    SGD is linear in (p_0, g_0, …, g_{T−1}): with d_t = g_t + wd·p_t, v_t = momentum·v_{t−1} + d_t (v_{−1} = 0,
    which is PyTorch's first-step buffer v_0 = d_0) and p_{t+1} = p_t − lr·v_t, the update splits exactly into
    (a_T − 1)·p_0, the weight-decay drift that depends on p_0 alone, plus Σ_s b_s·g_s, the data part.
    a_T is that recurrence run on the scalar p_0 = 1 (clipping scales only g_t, so it does not enter).
    """
    p, v = 1.0, 0.0
    for _ in range(steps):
        v = momentum * v + weight_decay * p
        p -= lr * v
    return p


def first_layer_data_part(server: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor],
                          p: HyperFLProtocol, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first layer's update minus its exact weight-decay drift (float64): Σ_s b_s·coef_s·δ_s e_sᵀ and
    Σ_s b_s·coef_s·δ_s, what the data did to (A, c) over the ``steps`` hypernetwork steps of the round
    (the head phase does not touch the hypernetwork)."""
    drift = weight_decay_factor(p.lr, p.momentum, p.weight_decay, steps) - 1
    a = update["mlp.0.weight"].double() - drift * server["mlp.0.weight"].double()
    c = update["mlp.0.bias"].double() - drift * server["mlp.0.bias"].double()
    return a, c


def estimate_embedding(server: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor],
                       p: HyperFLProtocol, steps_per_epoch: int) -> torch.Tensor:
    """The embedding as the first layer's update shows it after a local round (an estimate).

    The data part of the update (:func:`first_layer_data_part`, the weight-decay drift removed exactly)
    is (Σ_s β_s δ_s e_sᵀ, Σ_s β_s δ_s): the same ratio as for one gradient, Aᵀc / ‖c‖², gives e exactly
    when the embedding e_s did not move during the round, and a weighted mean of the e_s otherwise.
    """
    a, c = first_layer_data_part(server, update, p, p.local_epochs * steps_per_epoch)
    return (a.T @ c / c.dot(c).clamp_min(1e-300)).to(update["mlp.0.bias"].dtype)
