"""HyperFL (Guo et al., AAAI 2025, arXiv 2412.07187) as a package.

* :mod:`bench.defenses.hyperfl.model`: the hypernetwork and the client's model (its tensors' names, the
  private pieces);
* :mod:`bench.defenses.hyperfl.round`: one local round as pure functions, and the attacker's factored replay of it;
* :mod:`bench.defenses.hyperfl.recovery`: what the adaptive attacker reads off an upload in closed form;
* :mod:`bench.defenses.hyperfl.defense`: the defense, its training and its threat model (knowledge levels).
"""

from bench.defenses.hyperfl.defense import HyperFL
from bench.defenses.hyperfl.model import EMBEDDING, HEAD_BIAS, HEAD_WEIGHT, PRIVATE, HyperFLModel, HyperNetwork
from bench.defenses.hyperfl.recovery import (
    estimate_embedding,
    first_layer_data_part,
    recover_from_gradient,
    weight_decay_factor,
)
from bench.defenses.hyperfl.round import HyperFLProtocol, hyper_gradient, local_round

__all__ = [
    "EMBEDDING",
    "HEAD_BIAS",
    "HEAD_WEIGHT",
    "PRIVATE",
    "HyperFL",
    "HyperFLModel",
    "HyperFLProtocol",
    "HyperNetwork",
    "estimate_embedding",
    "first_layer_data_part",
    "hyper_gradient",
    "local_round",
    "recover_from_gradient",
    "weight_decay_factor",
]
