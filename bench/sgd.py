"""The plain local-SGD client of FedSGD/FedAvg, written once for the real client and for the attacker's
simulator (the victim and the simulator run the same loss and the same math): its protocol and options,
one round (``client_round``), the server's FedAvg step (``apply_uploads``), what the server knows
(``sgd_public_knowledge``) and the differentiable replay (``sgd_simulator``)."""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from bench.defense import FLTask
from bench.functional import GradientFn, forward, loss_gradient, sgd_steps
from bench.options import Option
from bench.round import Round
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
    Option("momentum", float, 0.0, "client SGD momentum", min=0.0, max=1.0),
    Option("weight_decay", float, 0.0, "client SGD weight decay", min=0.0),
    Option(
        "head_lr",
        float,
        0.1,
        "learning rate of a round's head epochs (the classifier alone, before the local epochs), when the "
        "attacked round has any (--head-epochs; HyperFL's head phase uses 0.1)",
        min=0.0,
        min_exclusive=True,
    ),
)

#: The roles of :data:`SGD_OPTIONS` in the client's local SGD (``Defense.client_optimiser``).
SGD_CLIENT_OPTIMISER: dict[str, str] = {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay"}


@dataclass(frozen=True)
class SGDProtocol:
    """The local-training protocol the server fixes (public knowledge).

    ``local_steps`` = 0 means ``head_epochs`` passes over the local data on the classifier ``head`` alone
    (module prefix; with ``head_lr``, the optimiser state starting afresh), then ``local_epochs`` passes on
    every parameter; otherwise exactly ``local_steps`` SGD steps on every parameter, cycling over the local
    mini-batches (pFedHN's inner loop). ``upload``: what the client sends — ``gradient`` (FedSGD: the one
    step's gradient), ``update`` (FedAvg: final − initial parameters) or ``auto`` (the gradient exactly
    when the round is one step; training).
    """

    lr: float
    local_steps: int = 0
    local_epochs: int = 1
    momentum: float = 0.0
    weight_decay: float = 0.0
    head_epochs: int = 0
    head_lr: float = 0.1
    head: str | None = None
    upload: Literal["auto", "gradient", "update"] = "auto"

    @classmethod
    def from_options(cls, opt: Any, local_epochs: int = 1, head: str | None = None) -> "SGDProtocol":
        """The training protocol of a component that declares :data:`SGD_OPTIONS` (``self.opt``)."""
        return cls(
            lr=opt.lr,
            local_epochs=local_epochs,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            head_lr=opt.head_lr,
            head=head,
        )

    def for_round(self, round_: Round, own_head_epochs: int = 0) -> "SGDProtocol":
        """This client's protocol in the attacked round ``round_`` (:mod:`bench.round`): one gradient at
        FedSGD; the round's epochs (and head epochs, else ``own_head_epochs``) and an update otherwise."""
        if round_.kind == "fedsgd":
            return replace(self, local_steps=0, local_epochs=1, head_epochs=0, upload="gradient")
        if self.local_steps:  # a fixed number of steps is the method's own loop (pFedHN): the round gives the data
            return replace(self, upload="update")
        return replace(
            self,
            local_epochs=round_.local_epochs,
            head_epochs=round_.head_epochs_or(own_head_epochs),
            upload="update",
        )

    def head_schedule(self, data: LocalData, generator: torch.Generator | None = None) -> Batches:
        """The mini-batches of the head epochs (none without a head phase)."""
        if self.local_steps or not self.head_epochs:
            return []
        return [b for _ in range(self.head_epochs) for b in data.batches(generator)]

    def schedule(self, data: LocalData, generator: torch.Generator | None = None) -> Batches:
        """The mini-batches the client trains every parameter on (shuffled per epoch when a generator is given)."""
        if self.local_steps == 0:
            return [b for _ in range(self.local_epochs) for b in data.batches(generator)]
        epochs = (data.batches(generator) for _ in itertools.count())
        return list(itertools.islice(itertools.chain.from_iterable(epochs), self.local_steps))

    def num_steps(self, data: LocalData) -> int:
        """How many local SGD steps the round takes on ``data`` (the head phase's included)."""
        if self.local_steps:
            return self.local_steps
        return (self.local_epochs + self.head_epochs) * data.steps_per_epoch()

    @property
    def passes(self) -> int:
        """Passes over the local data in the round (head epochs included); 1 for a fixed number of steps."""
        return 1 if self.local_steps else self.head_epochs + self.local_epochs

    def pass_schedules(self, passes: Sequence[LocalData]) -> tuple[Batches, Batches]:
        """(head batches, batches) of a round whose passes each run over their own data: ``passes`` holds one
        :class:`LocalData` per pass, or a single one that every pass reuses (fixed order)."""
        if len(passes) == 1:
            return self.head_schedule(passes[0]), self.schedule(passes[0])
        if len(passes) != self.passes:
            raise ValueError(f"the round has {self.passes} passes over the data, got {len(passes)} copies")
        head = [b for d in passes[: self.head_epochs] for b in d.batches()]
        return head, [b for d in passes[self.head_epochs :] for b in d.batches()]

    def sends_gradient(self, data: LocalData) -> bool:
        if self.upload == "auto":
            return self.num_steps(data) == 1
        return self.upload == "gradient"

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {
            "lr": self.lr,
            "local_steps": self.local_steps,
            "local_epochs": self.local_epochs,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "head_epochs": self.head_epochs,
            "head_lr": self.head_lr,
            "upload": self.upload,
        }


def pass_data(x: torch.Tensor, y: torch.Tensor, batch_size: int, examples: int, passes: int) -> list[LocalData]:
    """The round's data per pass over it: ``x`` holds ``examples`` rows (every pass reuses them) or
    ``passes`` × ``examples`` rows (pass p uses rows p·examples … (p+1)·examples − 1)."""
    if len(x) == examples or passes == 1:
        return [LocalData(x, y, batch_size)]
    if len(x) != examples * passes:
        raise ValueError(
            f"simulate takes the round's {examples} images or {passes} copies of them ({examples * passes}), "
            f"got {len(x)}"
        )
    return [
        LocalData(x[p * examples : (p + 1) * examples], y[p * examples : (p + 1) * examples], batch_size)
        for p in range(passes)
    ]


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
    head_batches: Batches | None = None,
) -> tuple[Tensors, Literal["gradient", "update"]]:
    """What a FedSGD/FedAvg client sends: the gradient (one step) or the update (final − initial).

    ``head_batches`` train the classifier (``protocol.head``) alone first, with ``protocol.head_lr`` and
    optimiser state of its own; ``gradient`` forms each step's gradient (DP-SGD passes its clipped, noised one).
    """
    sends_gradient = protocol.upload == "gradient" or (protocol.upload == "auto" and len(batches) == 1)
    if sends_gradient and not head_batches:
        if len(batches) != 1:
            raise ValueError(f"a gradient upload is one step; the schedule has {len(batches)}")
        xb, yb = batches[0]
        grads = gradient(model, params, xb, yb, buffers, create_graph=create_graph)
        if protocol.weight_decay:
            grads = {k: g + protocol.weight_decay * params[k] for k, g in grads.items()}
        return grads, "gradient"
    current = dict(params)
    if head_batches:
        if protocol.head is None:
            raise ValueError("a head phase needs the protocol's classifier (SGDProtocol.head)")
        prefix = protocol.head + "."
        head = {k: v for k, v in current.items() if k.startswith(prefix)}
        rest = {**buffers, **{k: v for k, v in current.items() if not k.startswith(prefix)}}
        head = sgd_steps(
            model,
            head,
            head_batches,
            protocol.head_lr,
            protocol.momentum,
            protocol.weight_decay,
            rest,
            create_graph=create_graph,
            gradient=gradient,
        )
        # The local epochs differentiate with respect to the parameters as they are after the head phase; with
        # a graph, the untouched ones get nodes of their own, so that their gradient does not run back through
        # the head phase (the trained head depends on them).
        current = {k: head[k] if k in head else (v.clone() if create_graph else v) for k, v in current.items()}
    final = sgd_steps(
        model,
        current,
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
    order = None if attack_setting else generator
    head = protocol.head_schedule(data, order)
    schedule = protocol.schedule(data, order)
    payload, kind = local_payload(
        model, params, buffers, schedule, protocol, create_graph=False, gradient=gradient, head_batches=head
    )
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
    examples: int | None = None,
) -> Simulator:
    """The attacker's differentiable replay of :func:`observe_sgd_client` for candidate inputs.

    ``x`` holds the round's ``examples`` images, or one copy of them per pass over the data
    (``protocol.passes`` × ``examples`` rows, pass-major: :func:`pass_data`), so an attack can give each
    epoch images of its own (Dimitrov et al. 2022). It runs a private copy of the network that holds the
    server's state as its own parameters, so that the first (for FedSGD: the only) gradient is taken
    without swapping tensors in and out.
    """
    own = public_model(model, server)
    params = dict(own.named_parameters())
    buffers = dict(own.named_buffers())

    def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
        if own.training:
            own.eval()
        head, main = protocol.pass_schedules(pass_data(x, y, batch_size, examples or len(x), protocol.passes))
        payload, _ = local_payload(
            own, params, buffers, main, protocol, create_graph=True, gradient=gradient, head_batches=head
        )
        return payload

    return simulate
