"""The attacker's free variables: candidate images, label logits and the private unknowns it may optimise.

With ``restarts=R`` every variable gets a leading restart dimension, so all restarts are optimised
in one tensor (see :func:`bench.inversion.optimise.adam`).
"""

from __future__ import annotations

import torch

from bench.threat import Observation, Tensors


def observation_device(obs: Observation) -> torch.device:
    return next(iter(obs.observed.values())).device


def image_init(obs: Observation, generator: torch.Generator, restarts: int | None = None) -> torch.Tensor:
    """Random-normal candidate images in normalised space: [N, C, H, W], or [R, N, C, H, W]."""
    shape: tuple[int, ...] = (obs.public.num_images, *obs.public.image_shape)
    if restarts is not None:
        shape = (restarts, *shape)
    return torch.randn(shape, generator=generator).to(observation_device(obs))


def label_logits_init(obs: Observation, generator: torch.Generator, restarts: int | None = None) -> torch.Tensor:
    """Random-normal label logits (DLG's soft labels): [N, K], or [R, N, K]."""
    shape: tuple[int, ...] = (obs.public.num_images, obs.public.num_classes)
    if restarts is not None:
        shape = (restarts, *shape)
    return torch.randn(shape, generator=generator).to(observation_device(obs))


def unknown_variables(obs: Observation, restarts: int | None = None) -> tuple[Tensors, list[torch.Tensor]]:
    """Copies of the server's guesses of the unknowns; those marked optimisable require grad.

    With ``restarts=R`` each guess is repeated along a new leading dimension (every restart starts
    from the same guess and optimises its own copy). Returns (all unknowns by name, the ones to optimise).
    """
    values: Tensors = {}
    free: list[torch.Tensor] = []
    for name, unknown in obs.unknowns.items():
        tensor = unknown.guess.detach()
        tensor = tensor.clone() if restarts is None else tensor.expand(restarts, *tensor.shape).clone()
        if unknown.optimisable:
            tensor.requires_grad_(True)
            free.append(tensor)
        values[name] = tensor
    return values, free
