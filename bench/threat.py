"""The threat model as types: what a client holds, what it sends, and what the server observes.

An honest-but-curious server runs the protocol faithfully and tries to reconstruct a target
client's private batch from what that client sends. Everything it can use is in an
:class:`Observation`; the Observation is the only contract between a defense and an attack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]

#: simulate(x, y, unknowns) -> tensors with the same keys and shapes as ``Observation.observed``.
#: ``x`` are candidate inputs in the model's (normalised) input space, shape [num_images, C, H, W];
#: ``y`` are integer labels [num_images] or label probabilities [num_images, num_classes];
#: ``unknowns`` are candidate values of the private pieces the server does not have.
Simulator = Callable[[torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor]], Tensors]


@dataclass
class LocalData:
    """A client's private examples and the mini-batch size the protocol fixes.

    ``x`` is normalised model input, ``y`` integer labels. ``batches`` yields one epoch in order, or
    shuffled when a generator is given (training). Attack cases keep the order fixed so the server's
    simulator, which knows the protocol, replays the same mini-batches. ``population`` is the size of
    the client's whole local training set when ``x`` is only a sample of it (an attacked batch), for
    privacy accounting (DP's sampling rate batch/population); ``None`` means ``x`` is the whole set.
    """

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    population: int | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(self, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        if generator is None:  # fixed order: plain slices (views), also valid under vmap
            for start in range(0, n, self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            return
        order = torch.randperm(n, generator=generator).to(self.x.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]

    def attacked_batch(self, rows: torch.Tensor) -> LocalData:
        """The examples ``rows`` of this (whole) local set as an attacked round's data: ``population`` is
        this set's size."""
        rows = rows.to(self.x.device)
        return LocalData(self.x[rows], self.y[rows], self.batch_size, population=len(self))

    def population_size(self) -> int:
        """Examples in the client's whole local set (``population``, else ``len(self)``)."""
        return len(self) if self.population is None else int(self.population)

    def steps_per_epoch(self) -> int:
        return -(-len(self) // self.batch_size)


@dataclass
class Upload:
    """What one client sends to the server in one round.

    ``kind`` says whether ``payload`` is a gradient (FedSGD) or a parameter update (new − old).
    ``buffers`` is non-trainable state also sent in the clear (BatchNorm running statistics).
    ``metrics`` carries per-client costs (bytes, seconds) and privacy bookkeeping, copied into rows.
    """

    payload: Tensors
    num_examples: int
    kind: Literal["gradient", "update"] = "update"
    buffers: Tensors = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PublicKnowledge:
    """What the server legitimately knows about the target client's computation.

    ``model`` is the network with the parameters the server sent (for inspection, e.g. to read the
    architecture); attacks interact with the client's computation only through ``simulate``.
    ``classifier_key`` names the observed entry holding the classifier's weight gradient/update
    (rows = classes) when the server sees it, for analytic label inference; ``None`` otherwise.
    """

    model: nn.Module
    num_images: int
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    observed_kind: Literal["gradient", "update"]
    classifier_key: str | None = None
    protocol: Mapping[str, Any] = field(default_factory=dict)

    def pixel_bounds(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of valid inputs (images in [0, 1], normalised), shape [C, 1, 1]."""
        mean = torch.tensor(self.mean, device=device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=device).view(-1, 1, 1)
        return (0 - mean) / std, (1 - mean) / std


@dataclass(frozen=True)
class Unknown:
    """A private piece of the client's computation the server does not have.

    ``guess`` is the server's own stand-in (e.g. a freshly initialised classifier head). An attack
    may use the guess as is, or optimise it together with the images when ``optimisable`` is True
    (the adaptive attacker). ``revealed`` declares that the guess *is* the client's true value, handed
    to the attacker on purpose (an oracle: an upper bound on leakage), so it is not a leak.
    """

    shape: tuple[int, ...]
    description: str
    guess: torch.Tensor
    optimisable: bool = False
    revealed: bool = False


@dataclass(frozen=True)
class Observation:
    """Everything the server can use to attack one target client.

    ``observed``: the tensors the server actually receives for that client (or the decrypted
    aggregate, when the defense only reveals an aggregate). ``simulate``: a differentiable function
    computing what the client would have sent for candidate inputs (see :data:`Simulator`).
    ``knowledge`` names the attacker's knowledge level the defense built it for (``Defense.knowledge``,
    see :data:`bench.defense.KNOWLEDGE_LEVELS`), recorded in every result row. ``notes`` are
    plain-language caveats about this threat model, also recorded. ``metrics`` are what the defense
    reports about this exchange (bytes sent, seconds, privacy spent), copied into the row.
    ``exact`` says whether ``simulate`` on the client's true inputs (and true unknowns) reproduces
    ``observed`` up to floating-point error; a defense whose client adds randomness or loss the server
    cannot replay (DP noise, quantisation, an unaware attacker's simulator) sets it False, and the
    conformance check (``bench check-defense``) then does not demand that equality. ``passes``: how many
    passes over the data the round makes (a local round's epochs, head epochs included); where it is above
    1, ``simulate`` also takes one copy of the images per pass (``passes × num_images`` rows, pass-major:
    pass p uses rows p·num_images …), so an attack can give each epoch images of its own (Dimitrov et al.,
    "Data Leakage in Federated Averaging", 2022); 1 where it takes only the one set of images.
    """

    observed: Tensors
    public: PublicKnowledge
    simulate: Simulator
    unknowns: Mapping[str, Unknown] = field(default_factory=dict)
    knowledge: str = "adaptive"
    notes: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    exact: bool = True
    passes: int = 1

    def unknown_guesses(self) -> Tensors:
        return {name: u.guess for name, u in self.unknowns.items()}
