"""DP — differential privacy as a package.

* :mod:`bench.defenses.dp.mechanism`: clipping, noise and DP-SGD's step gradient;
* :mod:`bench.defenses.dp.accounting`: Opacus' RDP analysis over a wide order grid, budgets, calibration;
* :mod:`bench.defenses.dp.defense`: the defense (DP-SGD or per-client clipping and noise), its threat model.
"""

from bench.defenses.dp.accounting import RDP_ORDERS, _spent, calibrated_noise_multiplier, epsilon_spent, privacy_spent
from bench.defenses.dp.defense import DP
from bench.defenses.dp.mechanism import clip_tensors, dp_sgd_gradient, global_norm

__all__ = [
    "DP",
    "RDP_ORDERS",
    "_spent",
    "calibrated_noise_multiplier",
    "clip_tensors",
    "dp_sgd_gradient",
    "epsilon_spent",
    "global_norm",
    "privacy_spent",
]
