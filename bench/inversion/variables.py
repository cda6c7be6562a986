"""The attacker's free variables: candidate images and the private unknowns it may optimise."""
from __future__ import annotations

import torch

from bench.threat import Observation, Tensors


def image_init(obs: Observation, generator: torch.Generator, restarts: int | None = None) -> torch.Tensor:
    """Random-normal candidate images in normalised space: [N, C, H, W], or [R, N, C, H, W]."""
    shape = (obs.public.num_images, *obs.public.image_shape)
    if restarts is not None:
        shape = (restarts, *shape)
    device = next(iter(obs.observed.values())).device
    return torch.randn(shape, generator=generator).to(device)


def unknown_variables(obs: Observation) -> tuple[Tensors, list[torch.Tensor]]:
    """Copies of the server's guesses of the unknowns; those marked optimisable require grad.

    Returns (all unknowns by name, the ones to optimise).
    """
    values: Tensors = {}
    free: list[torch.Tensor] = []
    for name, unknown in obs.unknowns.items():
        tensor = unknown.guess.detach().clone()
        if unknown.optimisable:
            tensor.requires_grad_(True)
            free.append(tensor)
        values[name] = tensor
    return values, free
