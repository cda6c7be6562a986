"""What the analytic attack knows of one target before its image recovery, and how a candidate image is scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.inversion import adam
from bench.inversion.linear import LayerReading
from bench.inversion.optimise import RestartsResult
from bench.progress import Progress
from bench.inversion.peel import MatchTarget
from bench.inversion.recursive import ConvBlock
from bench.threat import Observation, Tensors


@dataclass
class Plan:
    """One target's closed-form reading and what its image recovery matches."""

    obs: Observation
    reading: LayerReading
    keys: list[str]  # the observed layers below the matched input, replayed
    state: Tensors  # the public network's parameters and buffers
    upstream: torch.Tensor  # u = Wᵀδ at the leaky layer's input
    below: list[torch.Tensor]  # the observed gradients of ``keys``
    chain: list[ConvBlock] | str  # the convolutions R-GAP's recursion inverts, or why it does not run
    convs: list[ConvBlock] | str  # every convolution block below the leaky layer, or why they are not a chain
    target: MatchTarget
    peel: dict[str, Any]  # which blocks were peeled, how well, and why it stopped
    examples: int = 1  # the observation's examples (> 1: the others are below its resolution; see batch.py)
    batch: dict[str, Any] | None = None  # the several-example reading that found one example readable

    def group(self) -> tuple:
        """Targets with equal groups can share one tensor."""
        shapes = tuple((k, tuple(v.shape)) for k, v in self.state.items())
        return (
            type(self.obs.public.model),
            shapes,
            self.reading.layer.name,
            self.target.layer,
            tuple(self.keys),
            tuple(self.obs.public.image_shape),
            self.obs.public.pixel_bounds()[0].device.type,
        )


def matching_loss(
    replay: Callable[..., tuple[torch.Tensor, list[torch.Tensor]]],
    feature_weight: float,
    replay_weight: float,
    state: Tensors,
    image: torch.Tensor,
    phi: torch.Tensor,
    mask: torch.Tensor,
    upstream: torch.Tensor,
    observed: list[torch.Tensor],
) -> torch.Tensor:
    """One candidate's matching loss (without TV): the relative feature misfit at the matched input plus
    the cosine distance of the head-free replay of the layers below (``replay``: replay_function's).

    The cosine does not depend on the scale of the upstream gradient or of the observed gradients, so
    both are brought to a unit peak first: a confidently classified example's gradients can be ~1e-16,
    and the product of two such squared norms underflows float32 to 0, whose square root has no
    gradient (NaN: the recovery never moves). Where the observed gradients below are exactly zero, the
    replay term is a constant 1 and the features alone drive the recovery."""
    u = upstream / upstream.abs().max().clamp_min(1e-30)
    got, grads = replay(state, image, u)
    loss = feature_weight * (((got - phi) * mask) ** 2).sum() / ((phi * mask) ** 2).sum().clamp_min(1e-20)
    if grads:
        loss = loss + replay_weight * cosine_distance(grads, observed)
    return loss


def cosine_distance(replayed: list[torch.Tensor], observed: list[torch.Tensor]) -> torch.Tensor:
    """1 − cos between the replayed and the observed gradients of the layers below, over all of them
    at once; the observed ones are brought to a unit peak first (see :func:`matching_loss`)."""
    peak = torch.stack([o.abs().max() for o in observed]).max().clamp_min(1e-30)
    unit = [o / peak for o in observed]
    dot = torch.stack([(g * o).sum() for g, o in zip(replayed, unit)]).sum()
    simulated = torch.stack([(g * g).sum() for g in replayed]).sum().clamp_min(1e-30).sqrt()
    seen = torch.stack([(o * o).sum() for o in unit]).sum().clamp_min(1e-30).sqrt()
    return 1 - dot / (simulated * seen)


def minimise_in_box(
    opt: Any,
    x: torch.Tensor,
    objective: Callable[[], torch.Tensor],
    bounds: tuple[torch.Tensor, torch.Tensor],
    progress: Progress,
    description: str,
) -> RestartsResult:
    """Adam on the candidates ``x`` (restarts first) with the analytic attack's settings (``opt``: its
    options; the signed gradient and the step decay as configured), the pixel box after every step."""
    low, high = bounds

    def box() -> None:
        x.copy_(torch.maximum(torch.minimum(x, high), low))

    return adam(
        [x],
        objective,
        opt.iterations,
        progress,
        lr=opt.lr,
        signed=[x] if opt.signed else [],
        decay=opt.decay,
        project=box,
        description=description,
    )
