"""Label inference from what the server observes (analytic rules, no optimisation).

Two rules, both reading the classifier layer's observed gradient (or update):

* one image — iDLG (Zhao et al. 2020): the true class is the classifier-weight row with a negative
  sum (:func:`idlg_label`);
* a batch — a count rule in the style of Wainakh et al. 2022 ("User-level label leakage from
  gradients", LLG) and breaching's "bias-corrected" strategy (:func:`count_labels`), applied to the
  classifier bias gradient when the server sees it, else to the weight rows' sums, after removing
  the network's own class preference (:func:`prediction_offset`, Wainakh et al.'s white-box
  offset, estimated here through the observation's simulator on random inputs).

Both need the server to observe the classifier layer (``public.classifier_key``). When it does not
(e.g. HyperFL keeps the head private) they return ``None`` and attacks optimise labels instead.
"""

from __future__ import annotations

import torch

from bench.threat import Observation


def _as_gradient(obs: Observation, tensor: torch.Tensor) -> torch.Tensor:
    """An observed update (new − old = −lr·gradient after one step) reads like a gradient once negated."""
    g = tensor.detach()
    return -g if obs.public.observed_kind == "update" else g


def classifier_signal(obs: Observation) -> torch.Tensor | None:
    """The classifier weight's gradient as seen by the server, or ``None`` when it is not observed.

    An observed *update* is sign-flipped so that both read like a gradient.
    """
    key = obs.public.classifier_key
    if key is None or key not in obs.observed:
        return None
    return _as_gradient(obs, obs.observed[key])


def _bias_key(weight_key: str) -> str | None:
    return weight_key[: -len("weight")] + "bias" if weight_key.endswith("weight") else None


def classifier_bias_signal(obs: Observation) -> torch.Tensor | None:
    """The classifier bias's gradient (same module as ``classifier_key``, parameter ``bias``), or
    ``None`` when the layer has no bias or the server does not observe it."""
    key = obs.public.classifier_key
    if key is None:
        return None
    bias_key = _bias_key(key)
    if bias_key is None or bias_key not in obs.observed or obs.observed[bias_key].dim() != 1:
        return None
    return _as_gradient(obs, obs.observed[bias_key])


def idlg_label(obs: Observation) -> torch.Tensor | None:
    """iDLG (Zhao et al. 2020): for one image, the true class is the row of the classifier weight
    gradient with a negative sum (softmax − one-hot is negative only there, and the layer's inputs are
    non-negative after a sigmoid/ReLU). Returns a [1] tensor, or ``None`` when the rule cannot apply."""
    g = classifier_signal(obs)
    if g is None:
        return None
    return torch.argmin(g.sum(dim=-1)).reshape(1)


def count_labels(signal: torch.Tensor, num_images: int) -> torch.Tensor:
    """Labels of a batch of ``num_images`` from a per-class signal (bias gradient or weight-row sums).

    For mean cross-entropy the signal of class c is g_c = (1/N) Σ_n s_n (p_nc − y_nc), with s_n ≥ 0
    (s_n = 1 for the bias; the sum of the layer's non-negative inputs for the weight rows). Assuming
    near-uniform predictions p ≈ 1/K and similar s_n ≈ s, g_c ≈ s (1/K − n_c/N): a class is present
    exactly when its signal is negative, and each of its examples lowers g_c by s/N. The classes
    present (P, k = |P|) give s = −Σ_P g_c / (1 − k/K), hence the impact s/N of one example.

    Stage 1: one label for each class with a negative signal (the N most negative if more than N are).
    Stage 2: while labels are missing, give one to the class whose signal, raised by s/N for each
    label it already has, is the lowest (Wainakh et al.'s procedure; breaching's "bias-corrected").
    When no signal is negative (far from the assumptions), the N lowest classes are returned.
    """
    g = signal.detach().to("cpu", torch.float64).flatten()
    num_classes = g.numel()
    present = torch.nonzero(g < 0).flatten()
    if len(present) == 0:
        return torch.argsort(g)[:num_images]
    if len(present) >= num_images:
        return present[torch.argsort(g[present])[:num_images]]
    share = max(1.0 - len(present) / num_classes, 1.0 / num_classes)
    impact = -float(g[present].sum()) / share / num_images  # s / N > 0
    labels = present.tolist()
    adjusted = g.clone()
    adjusted[present] += impact
    while len(labels) < num_images:
        c = int(torch.argmin(adjusted))
        labels.append(c)
        adjusted[c] += impact
    return torch.tensor(sorted(labels))


def _per_class(obs: Observation, tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """The per-class signal in ``tensors[key]``: the bias gradient, or the weight rows' sums."""
    g = _as_gradient(obs, tensors[key])
    return (g if g.dim() == 1 else g.sum(dim=-1)).to("cpu", torch.float64)


def prediction_offset(obs: Observation, key: str, generator: torch.Generator, draws: int = 4) -> torch.Tensor:
    """The per-class signal a batch of random inputs with *uniform* soft labels produces.

    With uniform labels the signal is s (p̄_c − 1/K): the network's preference for class c whatever
    the input. Subtracting it from the observed s (p̄_c − n_c/N) leaves s (1/K − n_c/N), the ideal
    signal :func:`count_labels` assumes. Networks with confident predictions independent of the input
    (the U(−0.5, 0.5) sigmoid LeNet of DLG/iDLG) need this; near-uniform ones are unaffected. Random
    normal inputs in the normalised space (the attacks' own initialisation), averaged over ``draws``
    batches; the server's guesses stand in for unknowns.
    """
    n, k = obs.public.num_images, obs.public.num_classes
    device = next(iter(obs.observed.values())).device
    total = torch.zeros(k, dtype=torch.float64)
    for _ in range(draws):
        x = torch.randn((n, *obs.public.image_shape), generator=generator).to(device)
        y = torch.full((n, k), 1.0 / k, device=device)
        total += _per_class(obs, obs.simulate(x, y, obs.unknown_guesses()), key)
    return total / draws


def infer_labels(obs: Observation, generator: torch.Generator | None = None) -> tuple[torch.Tensor, str] | None:
    """Labels the server can read off the observation, with the rule used, or ``None``.

    One image: :func:`idlg_label`. A batch: :func:`count_labels` on the classifier bias gradient if
    observed, else on the classifier weight rows' sums, corrected by :func:`prediction_offset` when a
    ``generator`` is given. Labels are a multiset: their order carries no information (the gradient
    is invariant to permuting the batch).
    """
    n = obs.public.num_images
    if n == 1:
        label = idlg_label(obs)
        return None if label is None else (label, "idlg (classifier weight rows)")
    weight_key = obs.public.classifier_key
    if weight_key is None or weight_key not in obs.observed:
        return None
    bias_key = _bias_key(weight_key)
    if bias_key is not None and classifier_bias_signal(obs) is not None:
        key, source = bias_key, "counts (classifier bias)"
    else:
        key, source = weight_key, "counts (classifier weight rows)"
    signal = _per_class(obs, dict(obs.observed), key)
    if generator is not None:
        signal = signal - prediction_offset(obs, key, generator)
        source += ", offset-corrected"
    return count_labels(signal, n), source
