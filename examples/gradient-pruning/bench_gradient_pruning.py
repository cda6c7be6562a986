"""Gradient pruning: the defense evaluated in Deep Leakage from Gradients (Zhu et al., NeurIPS 2019, Sec. 5).

Each client runs plain FedSGD/FedAvg and, before sending, zeroes the entries of smallest magnitude:
with ``ratio`` = p, the ⌊p·n⌋ smallest |entries| become 0 (ties at the threshold too). DLG found this
the most effective of the defenses it tried that leave training unchanged, reporting that its
attack stopped producing recognisable images once more than about 20 % of the entries were pruned.

Per layer or global? DLG describes the defense as gradient compression that "prunes gradients with
small magnitudes to zero", citing Deep Gradient Compression (Lin et al., ICLR 2018), which selects
its threshold layer by layer; the public re-implementations of DLG's defense (GradAttack's
``GradPruneDefense``, Soteria's evaluation code) threshold each parameter tensor at its own
quantile too. So ``scope="layer"`` (the default) prunes every parameter tensor separately;
``scope="global"`` uses one threshold over all tensors (top-k sparsification of the whole update).

What the honest-but-curious server can use: it receives the pruned tensors, so it knows which
entries are zero. Knowledge ``adaptive`` (default) is the attacker that exploits this: it replays
the client's SGD on candidate data and zeroes the same entries, which reproduces the observation
exactly. Knowledge ``unaware`` (``--knowledge unaware``) is the attacker DLG evaluated, which matches
the unpruned gradient of its candidate against the pruned one (``Observation.exact=False``).

Written only with bench's public plug-in API (``bench.plugin``): an ``SGDDefense`` (a ``Defense`` whose
clients run the plain FedSGD/FedAvg client; it supplies setup, training, aggregation, prediction
and the observation) that implements only its ``transform`` (the pruning) and ``replay`` (the
adaptive attacker's masking).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from bench.plugin import SGD_OPTIONS, LocalData, Option, SGDDefense, ServerState, Tensors


def _threshold(magnitudes: torch.Tensor, ratio: float) -> torch.Tensor | None:
    """The ⌊ratio·n⌋-th smallest magnitude (None when nothing is to be pruned)."""
    k = math.floor(ratio * magnitudes.numel() + 1e-9)
    return magnitudes.flatten().kthvalue(k).values if k > 0 else None


def prune(tensors: Mapping[str, torch.Tensor], ratio: float, scope: str) -> Tensors:
    """Zero the smallest-magnitude fraction ``ratio`` of the entries, per tensor or over all tensors."""
    if scope == "global":
        shared = _threshold(torch.cat([t.detach().abs().flatten() for t in tensors.values()]), ratio)
        thresholds = {k: shared for k in tensors}
    else:
        thresholds = {k: _threshold(t.detach().abs(), ratio) for k, t in tensors.items()}
    return {
        k: t if thresholds[k] is None else torch.where(t.abs() > thresholds[k], t, torch.zeros_like(t))
        for k, t in tensors.items()
    }


def sparse_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Bytes on the wire if each tensor goes dense or as (32-bit index, value) pairs, whichever is smaller."""
    total = 0
    for t in tensors.values():
        nonzero = int(torch.count_nonzero(t))
        total += min(t.numel() * t.element_size(), nonzero * (t.element_size() + 4))
    return total


class GradientPruning(SGDDefense):
    """Gradient pruning (DLG, Zhu et al. 2019): clients zero the smallest-magnitude fraction of what they send."""

    name = "pruning"
    description = __doc__
    options = (
        Option(
            "ratio",
            float,
            0.2,
            "fraction of entries zeroed, smallest magnitudes first (DLG's prune ratio)",
            min=0.0,
            max=1.0,
        ),
        Option(
            "scope",
            str,
            "layer",
            "'layer': each parameter tensor keeps its own largest entries (as DLG's "
            "cited gradient compression does); 'global': one threshold over all tensors",
            choices=("layer", "global"),
        ),
        *SGD_OPTIONS,
    )

    def transform(
        self, payload: Tensors, data: LocalData, server: ServerState, generator: torch.Generator | None
    ) -> Tensors:
        return prune(payload, self.opt.ratio, self.opt.scope)

    def replay(self, simulated: Tensors, observed: Tensors | None) -> Tensors:
        """The adaptive server zeroes the entries it saw zeroed (it sees none inside an aggregate)."""
        if observed is None:
            return simulated
        return {k: v * (observed[k] != 0).to(v.dtype) for k, v in simulated.items()}

    def upload_bytes(self, payload: Tensors) -> int:
        return sparse_bytes(payload)

    def public_parameters(self) -> dict[str, Any]:
        return {"prune_ratio": self.opt.ratio, "prune_scope": self.opt.scope}

    def payload_metrics(self, payload: Tensors) -> dict[str, Any]:
        return {
            "kept_fraction": sum(int(torch.count_nonzero(v)) for v in payload.values())
            / sum(v.numel() for v in payload.values())
        }
