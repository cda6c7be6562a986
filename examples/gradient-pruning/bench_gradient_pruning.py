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
entries are zero. ``simulator="masked"`` (default) is the attacker that exploits this: it replays
the client's SGD on candidate data and zeroes the same entries, which reproduces the observation
exactly. ``simulator="clean"`` is the attacker DLG evaluated, which matches the unpruned gradient
of its candidate against the pruned one (``Observation.exact=False``: no candidate reproduces it).

Written only with bench's public API: ``bench.sgd_client.SGDDefense`` (a ``bench.Defense`` whose
clients run the plain FedSGD/FedAvg client: it supplies setup, init_server, aggregate and predict),
the SGD client, its simulator and what the server knows about it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch

from bench import ClientState, LocalData, Observation, Option, ServerState, Tensors, Upload
from bench.sgd_client import (SGD_OPTIONS, SGDDefense, client_round, observe_sgd_client, payload_bytes,
                              sgd_public_knowledge, sgd_simulator)



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
    return {k: t if thresholds[k] is None else torch.where(t.abs() > thresholds[k], t, torch.zeros_like(t))
            for k, t in tensors.items()}


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
        Option("ratio", float, 0.2, "fraction of entries zeroed, smallest magnitudes first (DLG's prune ratio)",
               min=0.0, max=1.0),
        Option("scope", str, "layer", "'layer': each parameter tensor keeps its own largest entries (as DLG's "
               "cited gradient compression does); 'global': one threshold over all tensors",
               choices=("layer", "global")),
        Option("simulator", str, "masked", "the server's replay: 'masked' zeroes the entries it saw zeroed "
               "(adaptive, exact); 'clean' ignores the pruning, as DLG's attack did", choices=("masked", "clean")),
        *SGD_OPTIONS,
    )
    presets = {"dlg-paper": {"simulator": "clean"}}

    def client_update(self, server: ServerState, client: ClientState, data: LocalData,
                      generator: torch.Generator | None) -> Upload:
        upload = client_round(self.model, server, data, self.protocol, generator)
        payload = prune(upload.payload, self.opt.ratio, self.opt.scope)
        metrics = {**upload.metrics, "bytes_uploaded": sparse_bytes(payload) + payload_bytes(upload.buffers)}
        return dataclasses.replace(upload, payload=payload, metrics=metrics)

    def observe(self, server: ServerState, client: ClientState, target: LocalData,
                cohort: Sequence[tuple[ClientState, LocalData]], generator: torch.Generator | None) -> Observation:
        sent, kind = observe_sgd_client(self.model, server, target, self.protocol)
        observed = prune(sent, self.opt.ratio, self.opt.scope)
        clean = sgd_simulator(self.model, server, target.batch_size, self.protocol)
        if self.opt.simulator == "masked":
            masks = {k: (v != 0).to(v.dtype) for k, v in observed.items()}

            def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
                return {k: v * masks[k] for k, v in clean(x, y, unknowns).items()}
        else:
            simulate = clean
        public = sgd_public_knowledge(self.model, server, self.task, target, self.protocol, kind,
                                      prune_ratio=self.opt.ratio, prune_scope=self.opt.scope)
        kept = sum(int(torch.count_nonzero(v)) for v in observed.values()) / sum(v.numel() for v in observed.values())
        masked = self.opt.simulator == "masked"
        return Observation(
            observed=observed, public=public, simulate=simulate, exact=masked,
            knowledge="full" if masked else "defense-unaware",
            notes=("the server sees which entries were pruned and zeroes them in its replay" if masked else
                   "the attacker ignores the pruning (DLG's evaluation): it matches unpruned candidate gradients",),
            metrics={"bytes_uploaded": sparse_bytes(observed), "kept_fraction": kept})
