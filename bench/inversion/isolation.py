"""Single examples that a batch's gradient of one linear layer still gives away exactly.

For a batch, a linear layer's gradient sums the examples: row j of ∂L/∂W is Σᵢ δᵢⱼ xᵢᵀ and ∂L/∂bⱼ is
Σᵢ δᵢⱼ. Where only one example i reaches unit j with a non-zero upstream gradient — a ReLU above the
layer that is off for the others, or a class present once for the classifier — the row divided by its
bias entry is that example's input, exactly; and every such row of the same example gives the *same*
vector. Rows that mix examples agree with no other row (their mixing weights differ from row to row).
So rows whose ratios agree are single examples' inputs: the sparse-activation / class-isolation
observation behind the "linear layer leakage" attacks on batches (Geiping et al., NeurIPS 2020, §3;
Fowl et al., "Robbing the Fed", ICLR 2022, make it hold by design with a malicious layer — here it is
what an honest model happens to give away). The same holds for an aggregate of several clients'
one-example gradients of one model (secure aggregation's mean), and for the summed gradients of
several one-example steps where the layer's weights barely move.

Works from the :class:`~bench.threat.Observation` alone (through :func:`bench.inversion.linear.as_gradient`).
The analytic attack (:mod:`attacks.analytic.batch`) reports what this finds but matches the whole row
space instead: with a LeakyReLU no unit is exactly off, so agreeing rows are near-isolations, and as a
hard term of the matching they hurt on the tuning seeds of ``he``. ``benchmarks/hyperfl_local_isolation.py``
measures what it exposes in HyperFL's local round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.inversion.linear import LeakyLayer, as_gradient
from bench.threat import Observation


@dataclass(frozen=True)
class Isolated:
    """One example's input to the layer, read off the rows that agree on it."""

    features: torch.Tensor  # [in_features]
    rows: int  # how many of the layer's rows agree on it


def agreeing_groups(ratios: torch.Tensor, tolerance: float) -> list[list[int]]:
    """Indices of rows whose vectors agree to ``tolerance`` (relative distance), two rows or more per
    group, greedily from the row with the most agreeing partners."""
    norms = ratios.norm(dim=1, keepdim=True)
    close = torch.cdist(ratios, ratios) / ((norms + norms.T) / 2).clamp_min(1e-300) < tolerance
    left = set(range(len(ratios)))
    groups = []
    for j in sorted(left, key=lambda j: (-int(close[j].sum()), j)):
        if j not in left:
            continue
        members = sorted(i for i in left if bool(close[j, i]))
        left -= set(members)
        if len(members) > 1:
            groups.append(members)
    return groups


def isolated_inputs(obs: Observation, layer: LeakyLayer, tolerance: float = 1e-4) -> list[Isolated]:
    """The inputs of single examples among the observation's ``num_images`` that ``layer``'s gradient
    exposes exactly (at most ``num_images``, most agreeing rows first); empty when no two rows agree
    (noise, pruning, or every unit reached by several examples)."""
    dw = as_gradient(obs, layer.weight_key).double()
    db = as_gradient(obs, layer.bias_key).double()
    keep = (db != 0) & (dw != 0).any(1)
    if int(keep.sum()) < 2:
        return []
    ratios = dw[keep] / db[keep, None]
    dtype = obs.observed[layer.bias_key].dtype
    groups = agreeing_groups(ratios, tolerance)[: obs.public.num_images]
    return [Isolated(ratios[g].mean(0).to(dtype), len(g)) for g in groups]
