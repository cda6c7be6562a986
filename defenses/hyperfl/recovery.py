"""What the adaptive attacker reads off the hypernetwork's gradient or update in closed form: the hidden
features, the generated feature extractor and its gradient, and the embedding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from bench.threat import Tensors

from bench.defenses.hyperfl.model import HyperNetwork
from bench.defenses.hyperfl.round import HyperFLProtocol


@dataclass(frozen=True)
class Recovered:
    """What one FedSGD hypernetwork gradient gives away: hidden features, generated tensors, their gradients."""

    hidden: torch.Tensor
    generated: Tensors
    gradients: Tensors
    embedding: torch.Tensor | None


def recover_from_gradient(
    server: Mapping[str, torch.Tensor], gradient: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]
) -> Recovered:
    """Invert the generator heads' structure (no optimisation).

    For the head generating tensor k, ∂L/∂b_k = g_k (the generated tensor's gradient) and
    ∂L/∂W_k = g_k hᵀ, so h = Σ_k (∂L/∂W_k)ᵀ g_k / Σ_k ‖g_k‖² and the generated tensor is W_k h + b_k.
    The first layer gives the embedding the same way: ∂L/∂A = δ eᵀ and ∂L/∂c = δ.
    """
    num: torch.Tensor | float = 0.0
    den: torch.Tensor | float = 0.0
    grads = {}
    for name, shape in shapes.items():  # in float64: the ratio sums ~10^5 products
        weight, bias = HyperNetwork.head_keys(name)
        g = gradient[bias].double()
        num = num + gradient[weight].double().T @ g
        den = den + g.dot(g)
        grads[name] = gradient[bias].view(shape)
    hidden = torch.as_tensor(num) / torch.as_tensor(den).clamp_min(1e-300)  # a zero gradient carries nothing
    generated = {}
    for name, shape in shapes.items():
        weight, bias = HyperNetwork.head_keys(name)
        value = server[weight].double() @ hidden + server[bias].double()
        generated[name] = value.to(server[bias].dtype).view(shape)
    first_w, first_b = HyperNetwork.FIRST_WEIGHT, HyperNetwork.FIRST_BIAS
    delta = gradient[first_b].double()
    embedding = None
    if float(delta.dot(delta)) > 0:
        embedding = gradient[first_w].double().T @ delta / delta.dot(delta)
        embedding = embedding.to(gradient[first_b].dtype)
    hidden = hidden.to(gradient[first_b].dtype)
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


def step_coefficients(lr: float, momentum: float, weight_decay: float, steps: int) -> list[float]:
    """β_s with p_T − a_T·p_0 = Σ_s β_s·g_s over ``steps`` steps of ``torch.optim.SGD`` (see
    :func:`weight_decay_factor`): the recurrence run on a unit gradient at step s and p_0 = 0."""
    out = []
    for s in range(steps):
        p, v = 0.0, 0.0
        for t in range(steps):
            v = momentum * v + (1.0 if t == s else 0.0) + weight_decay * p
            p -= lr * v
        out.append(p)
    return out


def first_layer_data_part(
    server: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor], p: HyperFLProtocol, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first layer's update minus its exact weight-decay drift (float64): Σ_s b_s·coef_s·δ_s e_sᵀ and
    Σ_s b_s·coef_s·δ_s, what the data did to (A, c) over the ``steps`` hypernetwork steps of the round
    (the head phase does not touch the hypernetwork)."""
    drift = weight_decay_factor(p.lr, p.momentum, p.weight_decay, steps) - 1
    first_w, first_b = HyperNetwork.FIRST_WEIGHT, HyperNetwork.FIRST_BIAS
    a = update[first_w].double() - drift * server[first_w].double()
    c = update[first_b].double() - drift * server[first_b].double()
    return a, c


def estimate_embedding(
    server: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor], p: HyperFLProtocol, steps_per_epoch: int
) -> torch.Tensor:
    """The embedding as the first layer's update shows it after a local round (an estimate).

    The data part of the update (:func:`first_layer_data_part`, the weight-decay drift removed exactly)
    is (Σ_s β_s δ_s e_sᵀ, Σ_s β_s δ_s): the same ratio as for one gradient, Aᵀc / ‖c‖², gives e exactly
    when the embedding e_s did not move during the round, and a weighted mean of the e_s otherwise.
    """
    a, c = first_layer_data_part(server, update, p, p.local_epochs * steps_per_epoch)
    return (a.T @ c / c.dot(c).clamp_min(1e-300)).to(update[HyperNetwork.FIRST_BIAS].dtype)
