"""The plain local-SGD client of FedSGD/FedAvg, written once for the real client and for the attacker's
simulator (the victim and the simulator run the same loss and the same math): its protocol and options,
one round (``client_round``), the server's FedAvg step (``apply_uploads``), what the server knows
(``sgd_public_knowledge``) and the differentiable replay (``sgd_simulator``)."""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bench.defense import FLTask
from bench.functional import GradientFn, forward, loss_gradient, sgd_steps
from bench.options import Option
from bench.threat import LocalData, PublicKnowledge, Simulator, Tensors, Upload


Batches = list[tuple[torch.Tensor, torch.Tensor]]

#: ``PublicKnowledge.protocol`` key: the coefficient of the parameters added to an observed gradient (a FedSGD
#: client sends ∇L + wd·θ); absent or 0 when the observed gradient is the loss gradient alone.
GRADIENT_DECAY = "weight_decay_in_gradient"

#: The declared options of a plain SGD client; a defense built on it lists them in its ``options``
#: and builds its protocol with :meth:`SGDProtocol.from_options`.
SGD_OPTIONS: tuple[Option, ...] = (
    Option(
        "lr",
        float,
        0.02,
        "client learning rate (also the server's step for FedSGD gradients)",
        min=0.0,
        min_exclusive=True,
    ),
    Option(
        "local_steps",
        int,
        0,
        "local SGD steps per round; 0 = local_epochs passes over the local "
        "data (one batch in the attack setting: FedSGD)",
        min=0,
    ),
    Option("momentum", float, 0.0, "client SGD momentum", min=0.0, max=1.0),
    Option("weight_decay", float, 0.0, "client SGD weight decay", min=0.0),
)


@dataclass(frozen=True)
class SGDProtocol:
    """The local-training protocol the server fixes (public knowledge).

    ``local_steps`` = 0 means ``local_epochs`` passes over the local data; otherwise exactly that many
    SGD steps, cycling over the local mini-batches. One step in all shares the gradient (FedSGD);
    more share the update (FedAvg).
    """

    lr: float
    local_steps: int = 0
    local_epochs: int = 1
    momentum: float = 0.0
    weight_decay: float = 0.0

    @classmethod
    def from_options(cls, opt: Any, local_epochs: int = 1) -> "SGDProtocol":
        """The protocol of a component that declares :data:`SGD_OPTIONS` (``self.opt``)."""
        return cls(
            lr=opt.lr,
            local_steps=opt.local_steps,
            local_epochs=local_epochs,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
        )

    def schedule(self, data: LocalData, generator: torch.Generator | None = None) -> Batches:
        """The sequence of mini-batches the client trains on (shuffled per epoch when a generator is given)."""
        if self.local_steps == 0:
            return [b for _ in range(self.local_epochs) for b in data.batches(generator)]
        epochs = (data.batches(generator) for _ in itertools.count())
        return list(itertools.islice(itertools.chain.from_iterable(epochs), self.local_steps))

    def num_steps(self, data: LocalData) -> int:
        """How many local SGD steps :meth:`schedule` takes on ``data``."""
        return self.local_steps or self.local_epochs * data.steps_per_epoch()

    def shares_gradient(self, data: LocalData) -> bool:
        return self.num_steps(data) == 1

    def as_dict(self) -> dict[str, float | int]:
        return {
            "lr": self.lr,
            "local_steps": self.local_steps,
            "local_epochs": self.local_epochs,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
        }


def split_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[Tensors, Tensors]:
    """(parameters, buffers) of a state dict, using the model's own naming."""
    param_names = {name for name, _ in model.named_parameters()}
    params = {k: v for k, v in state.items() if k in param_names}
    buffers = {k: v for k, v in state.items() if k not in param_names}
    return params, buffers


def initial_state(model: nn.Module) -> Tensors:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def local_payload(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    batches: Batches,
    protocol: SGDProtocol,
    create_graph: bool,
    gradient: GradientFn = loss_gradient,
) -> tuple[Tensors, Literal["gradient", "update"]]:
    """What a FedSGD/FedAvg client sends: the gradient (one step) or the update (final − initial).

    ``gradient`` forms each step's gradient (DP-SGD passes its clipped, noised one).
    """
    if len(batches) == 1:
        xb, yb = batches[0]
        grads = gradient(model, params, xb, yb, buffers, create_graph=create_graph)
        if protocol.weight_decay:
            grads = {k: g + protocol.weight_decay * params[k] for k, g in grads.items()}
        return grads, "gradient"
    final = sgd_steps(
        model,
        params,
        batches,
        protocol.lr,
        protocol.momentum,
        protocol.weight_decay,
        buffers,
        create_graph=create_graph,
        gradient=gradient,
    )
    return {k: final[k] - params[k] for k in params}, "update"


def payload_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


def client_round(
    model: nn.Module,
    server: Mapping[str, torch.Tensor],
    data: LocalData,
    protocol: SGDProtocol,
    generator: torch.Generator | None,
    gradient: GradientFn = loss_gradient,
    attack_setting: bool = False,
) -> Upload:
    """One round of local training: what a plain SGD client sends.

    In training, train mode (BatchNorm statistics update and are sent along) and mini-batches shuffled
    by ``generator``. In the ``attack_setting``, eval mode (as Inverting Gradients attacks, so
    BatchNorm uses running statistics) and the fixed mini-batch order the server's simulator replays.
    """
    start = time.perf_counter()
    params, buffers = split_state(model, server)
    buffers = {k: v.clone() for k, v in buffers.items()}
    model.train(not attack_setting)
    schedule = protocol.schedule(data, None if attack_setting else generator)
    payload, kind = local_payload(model, params, buffers, schedule, protocol, create_graph=False, gradient=gradient)
    payload = {k: v.detach() for k, v in payload.items()}
    return Upload(
        payload=payload,
        num_examples=len(data),
        kind=kind,
        buffers=buffers,
        metrics={
            "bytes_uploaded": payload_bytes(payload) + payload_bytes(buffers),
            "client_seconds": time.perf_counter() - start,
        },
    )


def weighted_mean(tensors: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> Tensors:
    total = float(sum(weights))
    return {k: torch.stack([w / total * t[k] for t, w in zip(tensors, weights)]).sum(0) for k in tensors[0]}


def apply_uploads(server: Mapping[str, torch.Tensor], uploads: Sequence[Upload], lr: float) -> Tensors:
    """FedAvg's server step: example-weighted mean of the uploads applied to the global state.

    Gradients are applied with the protocol's ``lr`` (FedSGD); updates are added. Floating buffers
    become the weighted mean of the clients' buffers; integer ones (step counters) the maximum.
    """
    weights = [u.num_examples for u in uploads]
    mean = weighted_mean([u.payload for u in uploads], weights)
    new = dict(server)
    for k, v in mean.items():
        new[k] = server[k] - lr * v if uploads[0].kind == "gradient" else server[k] + v
    if uploads[0].buffers:
        for k in uploads[0].buffers:
            values = [u.buffers[k] for u in uploads]
            new[k] = (
                weighted_mean([{k: v} for v in values], weights)[k]
                if values[0].is_floating_point()
                else torch.stack(values).max(0).values
            )
    return new


def public_model(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of the network holding the parameters the server sent, in eval mode."""
    copy_ = copy.deepcopy(model)
    copy_.load_state_dict(dict(state))
    return copy_.eval()


def predict_logits(model: nn.Module, server: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits of the global model (the server's parameters and buffers) in eval mode: ``Defense.predict``
    of every defense whose clients use the global model as is."""
    params, buffers = split_state(model, server)
    model.eval()
    return forward(model, params, x, buffers)


def sgd_public_knowledge(
    model: nn.Module,
    server: Mapping[str, torch.Tensor],
    task: FLTask,
    target: LocalData,
    protocol: SGDProtocol,
    kind: Literal["gradient", "update"],
    **protocol_extra: object,
) -> PublicKnowledge:
    """What the server knows about a plain SGD client's computation on ``target``: the model it sent,
    the task's geometry and normalisation, the protocol (plus ``protocol_extra``, e.g. a defense's
    public parameters), and that it sees the classifier's weight gradient/update."""
    return PublicKnowledge(
        model=public_model(model, server),
        num_images=len(target),
        image_shape=task.image_shape,
        num_classes=task.num_classes,
        mean=task.mean,
        std=task.std,
        observed_kind=kind,
        classifier_key=f"{task.classifier}.weight",
        protocol={
            **protocol.as_dict(),
            "batch_size": target.batch_size,
            # a one-step (FedSGD) upload is the loss gradient plus weight_decay × the parameters sent
            GRADIENT_DECAY: protocol.weight_decay if kind == "gradient" else 0.0,
            **protocol_extra,
        },
    )


def observe_sgd_client(
    model: nn.Module,
    server: Mapping[str, torch.Tensor],
    target: LocalData,
    protocol: SGDProtocol,
    gradient: GradientFn = loss_gradient,
) -> tuple[Tensors, Literal["gradient", "update"]]:
    """What a plain SGD client sends for ``target`` in the attack setting (:func:`client_round` with
    ``attack_setting``): the payload and its kind."""
    upload = client_round(model, server, target, protocol, None, gradient, attack_setting=True)
    return upload.payload, upload.kind


def sgd_simulator(
    model: nn.Module,
    server: Mapping[str, torch.Tensor],
    batch_size: int,
    protocol: SGDProtocol,
    gradient: GradientFn = loss_gradient,
) -> Simulator:
    """The attacker's differentiable replay of :func:`observe_sgd_client` for candidate inputs.

    It runs a private copy of the network that holds the server's state as its own parameters, so
    that the first (for FedSGD: the only) gradient is taken without swapping tensors in and out.
    """
    own = public_model(model, server)
    params = dict(own.named_parameters())
    buffers = dict(own.named_buffers())

    def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
        if own.training:
            own.eval()
        batches = protocol.schedule(LocalData(x, y, batch_size))
        payload, _ = local_payload(own, params, buffers, batches, protocol, create_graph=True, gradient=gradient)
        return payload

    return simulate
