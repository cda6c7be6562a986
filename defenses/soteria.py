"""Soteria — perturbing the data representation (Sun et al., CVPR 2021; jeremy313/Soteria).

Soteria protects the layer whose input is the data representation r: the convolutional features
entering the fully connected part of the network. In the authors' LeNet and ConvNet that is their
only linear layer, the classifier; on a network with several (the HyperFL paper's CNN: fc1 576→128,
then the classifier fc2) it is the first, which the later Soteria code calls ``feature_fc1``, and it
is the default here (``layer=first``). ``layer=classifier`` (or any linear module's name) defends
another; which layer is defended decides the verdict, since an attack reads whichever linear layer
is left unprotected (the analytic attack reads the first one). For each representation feature f it
scores how little the feature reveals per unit of input change,

    s_f = Σ_n ‖∂r_f(x_n)/∂x_n‖₂ / (r_f(x_n) + 0.1)        (summed over the client's examples)

and zeroes the defended layer's weight-gradient columns of the features whose score lies below the
``ratio`` quantile (the authors' pruning rate; their Inverting-Gradients example uses 60 %). Every
other tensor is sent unchanged. The mask is computed on the client's own data in eval mode, one
Jacobian per example (``torch.func.jacrev``), which is the defense's compute cost: on one mini-batch
(``mask_on=batch``, default: the batch the defended gradient comes from in the authors' FedSGD
setting, and the first mini-batch of a multi-step round) or on every local example (``mask_on=all``,
a Jacobian per example per round: on a CPU, hours per training run of 10 clients × 200 examples).

What the server can use: it receives the masked gradient, so it sees which columns are zero.
Knowledge ``adaptive`` (default) zeroes the same columns in its replay (exact); ``unaware`` is the
attacker of the paper's evaluation, which matches the unmodified gradient of its candidate
(``Observation.exact=False``).

Written only with bench's public API: a :class:`bench.sgd_defense.SGDDefense` that implements its
``transform`` (the mask) and ``replay`` (the adaptive attacker's masking); ``bench.functional``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bench.plugin import (
    SGD_OPTIONS,
    BenchError,
    LocalData,
    Option,
    SGDDefense,
    ServerState,
    Tensors,
    forward,
    split_state,
)

#: Added to the representation in the score's denominator, as in the authors' code.
OFFSET = 0.1


def representation(
    model: nn.Module,
    layer: str,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """The input of ``layer`` (flattened per example) when ``model`` runs on ``x``."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    try:
        forward(model, params, x, buffers)
    finally:
        handle.remove()
    return seen[0].flatten(1)


def feature_scores(
    model: nn.Module, layer: str, server: Mapping[str, torch.Tensor], x: torch.Tensor, chunk: int = 16
) -> torch.Tensor:
    """s_f = Σ_n ‖∂r_f(x_n)/∂x_n‖ / (r_f(x_n) + 0.1) for every feature f of ``layer``'s input."""
    params, buffers = split_state(model, server)
    params = {k: v.detach() for k, v in params.items()}
    model.eval()

    def features(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = representation(model, layer, params, buffers, image[None])[0]
        return r, r.detach()  # the Jacobian's function and, as aux, its value (one forward pass)

    total = None
    for start in range(0, len(x), chunk):
        images = x[start : start + chunk].detach()
        jacobians, r = torch.func.vmap(torch.func.jacrev(features, has_aux=True))(images)  # [n, F, C, H, W], [n, F]
        scores = (jacobians.flatten(2).norm(dim=2) / (r + OFFSET)).sum(0)
        total = scores if total is None else total + scores
    assert total is not None
    return total


def defended_layer(model: nn.Module, choice: str, classifier: str) -> str:
    """The module name of the defended linear layer (see the ``layer`` option); a bad choice is a BenchError."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if choice == "first":
        if not linear:
            raise BenchError("soteria needs a linear layer to defend; the model has none")
        return linear[0]
    if choice == "classifier":
        return classifier
    if choice not in linear:
        raise BenchError(
            f"soteria layer {choice!r} is not a linear layer of the model; valid: 'first', 'classifier', "
            f"{', '.join(repr(n) for n in linear)}"
        )
    return choice


def column_mask(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """1 for the features kept, 0 for those whose |score| is below the ``ratio`` quantile of the scores."""
    threshold = torch.quantile(scores.double(), ratio).to(scores.dtype)
    return (scores.abs() >= threshold).to(scores.dtype)


class Soteria(SGDDefense):
    """Soteria (Sun et al. 2021): zero the head's gradient columns of the features that reveal the input most."""

    name = "soteria"
    description = __doc__
    options = (
        Option(
            "ratio",
            float,
            0.6,
            "fraction of the representation's features whose classifier-gradient columns "
            "are zeroed (the authors' pruning rate; 0.6 in their Inverting-Gradients example)",
            min=0.0,
            max=1.0,
        ),
        Option(
            "layer",
            str,
            "first",
            "the defended linear layer, whose input is the representation: 'first' (the first linear layer, fed "
            "by the convolutional features: the paper's choice), 'classifier' (the last), or a module name",
        ),
        Option(
            "mask_on",
            str,
            "batch",
            "the examples the feature scores are computed on: 'batch' (one mini-batch, "
            "the first of the round) or 'all' (every local example: a Jacobian each, per round)",
            choices=("batch", "all"),
        ),
        *SGD_OPTIONS,
    )

    def setup(self, task) -> None:
        super().setup(task)
        self.layer = defended_layer(self.model, self.opt.layer, task.classifier)
        self.weight = f"{self.layer}.weight"

    def transform(
        self, payload: Tensors, data: LocalData, server: ServerState, generator: torch.Generator | None
    ) -> Tensors:
        """``payload`` with the defended columns of the classifier weight's gradient/update zeroed."""
        x = data.x if self.opt.mask_on == "all" else data.x[: data.batch_size]
        mask = column_mask(feature_scores(self.model, self.layer, server, x), self.opt.ratio)
        return {**payload, self.weight: payload[self.weight] * mask.to(payload[self.weight])}

    def replay(self, simulated: Tensors, observed: Tensors | None) -> Tensors:
        """The adaptive server zeroes the columns it saw zeroed (it sees none inside an aggregate)."""
        if observed is None:
            return simulated
        kept = (observed[self.weight] != 0).any(dim=0).to(observed[self.weight].dtype)
        return {**simulated, self.weight: simulated[self.weight] * kept}

    def public_parameters(self) -> dict[str, Any]:
        return {"soteria_ratio": self.opt.ratio, "defended_layer": self.layer}

    def payload_metrics(self, payload: Tensors) -> dict[str, Any]:
        columns = payload[self.weight].shape[1]
        return {
            "defended_layer": self.layer,
            "defended_features": columns - int((payload[self.weight] != 0).any(dim=0).sum()),
            "representation_features": columns,
        }
