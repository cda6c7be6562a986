"""HyperFL's model: the hypernetwork that generates a feature extractor from a client embedding, the
client's whole model around it, and the names of the private pieces."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from bench.errors import BenchError
from bench.threat import Tensors
from typing import cast


EMBEDDING = "embedding"
HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"
PRIVATE = (EMBEDDING, HEAD_WEIGHT, HEAD_BIAS)
HYPER = "hypernetwork."  # prefix of the hypernetwork's parameters inside the client model
LOCAL = "local."  # prefix of the feature extractor a client keeps after its round (evaluate=local)
MAX_HYPERNETWORK_PARAMETERS = 500_000_000


def _module_key(name: str) -> str:
    """ModuleDict keys cannot contain dots: 'conv1.weight' → 'conv1__weight'."""
    return name.replace(".", "__")


class HyperNetwork(nn.Module):
    """Linear(embedding→hidden) + ReLU, then one Linear(hidden→numel) generator head per tensor.

    Its tensors' names, used wherever the server state or an upload is read by key:
    :data:`FIRST_WEIGHT`/:data:`FIRST_BIAS` (the first layer) and :meth:`head_keys` (a generator head).
    """

    FIRST_WEIGHT, FIRST_BIAS = "mlp.0.weight", "mlp.0.bias"  # self.mlp[0]: Linear(embedding → hidden)

    @staticmethod
    def head_keys(name: str) -> tuple[str, str]:
        """The (weight, bias) keys of the generator head of the generated tensor ``name``."""
        key = f"heads.{_module_key(name)}"
        return f"{key}.weight", f"{key}.bias"

    def __init__(
        self,
        shapes: Mapping[str, torch.Size],
        embedding_dim: int,
        hidden_dim: int,
        init: str = "default",
        fan_in: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.shapes = {name: torch.Size(shape) for name, shape in shapes.items()}
        self.mlp = nn.Sequential(nn.Linear(embedding_dim, hidden_dim), nn.ReLU())
        self.heads = nn.ModuleDict({_module_key(n): nn.Linear(hidden_dim, s.numel()) for n, s in self.shapes.items()})
        if init == "fan_in":
            self.scale_to_fan_in(fan_in or {}, embedding_dim, hidden_dim)
        elif init != "default":
            raise BenchError(f"unknown generator init {init!r}; valid: 'default', 'fan_in'")

    @torch.no_grad()
    def scale_to_fan_in(self, fan_in: Mapping[str, int], embedding_dim: int, hidden_dim: int) -> None:
        """Redraw each generator head so that, at initialisation and in expectation over the embedding's
        N(0, 1) draw, the tensor it generates has the variance of PyTorch's default initialisation of the
        target layer, 1 / (3 · fan_in): head bias 0, head weight U(−a, a) with a² = 1 / (fan_in · hidden · E[h²]).
        E[h²] is the hidden features' second moment under the first layer's own default initialisation:
        h = ReLU(A e + c) with A, c ~ U(±1/√d) and e ~ N(0, 1) gives Var(A e + c) = (d + 1) / (3d) and
        E[h²] = Var / 2. (The same aim as hyperfan-in, Chang, Flokas and Lipson, ICLR 2020.)"""
        second_moment = (embedding_dim + 1) / (3 * embedding_dim) / 2
        for name in self.shapes:
            head = cast(nn.Linear, self.heads[_module_key(name)])
            bound = (1.0 / (fan_in[name] * hidden_dim * second_moment)) ** 0.5
            head.weight.uniform_(-bound, bound)
            head.bias.zero_()

    def forward(self, embedding: torch.Tensor) -> Tensors:
        features = self.mlp(embedding)
        return {name: self.heads[_module_key(name)](features).view(shape) for name, shape in self.shapes.items()}


class HyperFLModel(nn.Module):
    target: nn.Module  # held, not registered (see below)
    """A client's whole model: embedding → hypernetwork → feature extractor, then the private head.

    Its parameters are ``hypernetwork.*`` (shared), ``embedding`` and ``head.*`` (private). The
    target network is held but not registered as a submodule: its feature extractor is generated
    and its head is ``self.head``, so it contributes no parameters of its own.
    """

    def __init__(self, target: nn.Module, classifier: str, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__()
        if any(True for _ in target.buffers()):
            raise BenchError(
                "hyperfl needs a target network without buffers (BatchNorm statistics); "
                "valid models: 'cnn' (the paper's), 'lenet'"
            )
        prefix = classifier + "."
        shapes = {n: p.shape for n, p in target.named_parameters() if not n.startswith(prefix)}
        self.classifier = classifier
        self.hypernetwork = HyperNetwork(
            shapes, embedding_dim, hidden_dim
        )  # a template: parameters come from the server
        self.fan_in = target_fan_in(target, shapes)
        self.embedding = nn.Parameter(torch.randn(embedding_dim))  # nn.Embedding(1, d) draws N(0, 1)
        self.head = copy.deepcopy(target.get_submodule(classifier))
        self.__dict__["target"] = target

    def head_params(self, weight: torch.Tensor, bias: torch.Tensor) -> Tensors:
        return {f"{self.classifier}.weight": weight, f"{self.classifier}.bias": bias}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generated = self.hypernetwork(self.embedding)
        self.target.train(self.training)
        head = cast(nn.Linear, self.head)
        return functional_call(self.target, {**generated, **self.head_params(head.weight, head.bias)}, (x,))


def target_fan_in(target: nn.Module, names: Mapping[str, object]) -> dict[str, int]:
    """The fan-in PyTorch's default initialisation uses for each generated tensor (its module's weight's:
    input features × kernel size), for a layer's weight and its bias alike."""
    out = {}
    for name in names:
        module_name, _, _ = name.rpartition(".")
        weight = cast(torch.Tensor, target.get_submodule(module_name).weight)
        out[name] = int(weight[0].numel())
    return out


def prefixed(server: Mapping[str, torch.Tensor]) -> Tensors:
    return {HYPER + k: v for k, v in server.items()}


def unprefixed(hyper: Mapping[str, torch.Tensor]) -> Tensors:
    return {k[len(HYPER) :]: v for k, v in hyper.items()}


def private_state(client: Mapping[str, torch.Tensor]) -> Tensors:
    return {k: client[k] for k in PRIVATE}
