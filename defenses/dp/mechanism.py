"""DP's mechanism: clipping (per example or of a whole upload) and Gaussian noise, and DP-SGD's step
gradient (Abadi et al. 2016, as Opacus computes it)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from bench.functional import GradientFn, per_example_gradients
from bench.threat import Tensors


LEVELS = ("sample", "client")
#: ClientState key of the client's accountant history: rows (σ, q, steps) as Opacus' RDPAccountant keeps them, σ being
#: the accounting noise multiplier (σ / 2 at client level: sensitivity 2C).
HISTORY = "dp_history"
DEFAULT_NOISE_MULTIPLIER = 1.0
#: Opacus' guard against division by zero in the clipping factor C / (‖g‖ + 1e-6).
NORM_EPS = 1e-6


def clip_factor(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """min(1, C / ‖g‖): the factor that brings a gradient of norm ``norms`` to norm ≤ C (Opacus' formula)."""
    return (clip / (norms + NORM_EPS)).clamp(max=1.0)


def global_norm(tensors: Mapping[str, torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
    """L2 norm over all tensors together, per leading index when ``batch_dims`` = 1."""
    return torch.sqrt(torch.stack([t.flatten(batch_dims).pow(2).sum(-1) for t in tensors.values()]).sum(0))


def gaussian_noise(like: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, std²) noise shaped like ``like``, drawn on CPU from ``generator`` (device-independent streams)."""
    return std * torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


def clip_tensors(tensors: Mapping[str, torch.Tensor], clip: float) -> Tensors:
    """The tensors scaled together to global L2 norm ≤ C (DP-FedAvg's clipping of a whole update)."""
    factor = clip_factor(global_norm(tensors), clip)
    return {k: t * factor for k, t in tensors.items()}


def add_noise(tensors: Mapping[str, torch.Tensor], std: float, generator: torch.Generator | None) -> Tensors:
    return {k: t + gaussian_noise(t, std, generator) for k, t in tensors.items()} if std else dict(tensors)


def dp_sgd_gradient(clip: float, noise_multiplier: float = 0.0, generator: torch.Generator | None = None) -> GradientFn:
    """DP-SGD's step gradient: (Σᵢ clip(gᵢ, C) + N(0, σ²C²)) / B, as a drop-in for ``loss_gradient``.

    With ``noise_multiplier`` = 0 it is the attacker's deterministic replay (differentiable in the
    inputs and usable under ``vmap``).
    """

    def gradient(
        model: nn.Module,
        params: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        buffers: Mapping[str, torch.Tensor] | None = None,
        create_graph: bool = True,
    ) -> Tensors:
        per_example = per_example_gradients(model, params, x, y, buffers, create_graph=create_graph)
        factor = clip_factor(global_norm(per_example, batch_dims=1), clip)
        summed = {k: torch.tensordot(factor, g, dims=1) for k, g in per_example.items()}
        summed = add_noise(summed, noise_multiplier * clip, generator)
        return {k: v / x.shape[0] for k, v in summed.items()}

    return gradient
