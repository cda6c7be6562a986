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

    def __init__(self, shapes: Mapping[str, torch.Size], embedding_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.shapes = {name: torch.Size(shape) for name, shape in shapes.items()}
        self.mlp = nn.Sequential(nn.Linear(embedding_dim, hidden_dim), nn.ReLU())
        self.heads = nn.ModuleDict({_module_key(n): nn.Linear(hidden_dim, s.numel()) for n, s in self.shapes.items()})

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
        self.hypernetwork = HyperNetwork(shapes, embedding_dim, hidden_dim)
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


def prefixed(server: Mapping[str, torch.Tensor]) -> Tensors:
    return {HYPER + k: v for k, v in server.items()}


def unprefixed(hyper: Mapping[str, torch.Tensor]) -> Tensors:
    return {k[len(HYPER) :]: v for k, v in hyper.items()}


def private_state(client: Mapping[str, torch.Tensor]) -> Tensors:
    return {k: client[k] for k in PRIVATE}
