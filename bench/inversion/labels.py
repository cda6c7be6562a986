"""Label inference from what the server observes (analytic rules, no optimisation)."""
from __future__ import annotations

import torch

from bench.threat import Observation


def classifier_signal(obs: Observation) -> torch.Tensor | None:
    """The classifier weight's gradient as seen by the server, or ``None`` when it is not observed.

    An observed *update* (new − old = −lr·gradient after one step) is sign-flipped so that both
    read like a gradient.
    """
    key = obs.public.classifier_key
    if key is None or key not in obs.observed:
        return None
    g = obs.observed[key].detach()
    return -g if obs.public.observed_kind == "update" else g


def idlg_label(obs: Observation) -> torch.Tensor | None:
    """iDLG (Zhao et al. 2020): for one image, the true class is the row of the classifier weight
    gradient with a negative sum (softmax − one-hot is negative only there, and the layer's inputs are
    non-negative after a sigmoid/ReLU). Returns a [1] tensor, or ``None`` when the rule cannot apply."""
    g = classifier_signal(obs)
    if g is None:
        return None
    return torch.argmin(g.sum(dim=-1)).reshape(1)
