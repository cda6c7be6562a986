"""The adaptive attacker's derived observations of a HyperFL client: what it reads off the upload in closed
form (:mod:`bench.defenses.hyperfl.recovery`) turned into an observation on the generated network.

* After a FedSGD hypernetwork gradient: the generated feature extractor and its gradient, exactly
  (each generator head's bias gradient *is* the generated tensor's gradient).
* After a local round (``local_replay=generated``): with the known weight-decay drift removed, the
  generator heads' update is Σ_s β_s·(g_s, g_s h_sᵀ) over the round's hypernetwork steps (β_s: SGD's
  public coefficients), so the same ratio gives the hidden features (a weighted mean over the steps),
  the generated network, and Σ_s β_s g_s, which a replay of the steps' gradients on that network
  matches. Estimates: the generated network and the embedding move between steps, and gradient
  clipping would rescale a step.

Either way the attack then faces the generated CNN with only the private classifier head unknown
(optimised with the images). Nothing here sees the client's private state: how close these readings
come to it is measured by :meth:`bench.defenses.hyperfl.HyperFL.diagnostics` for the row only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from bench.functional import loss_gradient
from bench.sgd import public_model
from bench.threat import LocalData, Observation, PublicKnowledge, Tensors, Unknown

from bench.defenses.hyperfl.model import HEAD_BIAS, HEAD_WEIGHT, HyperFLModel
from bench.defenses.hyperfl.recovery import recover_from_gradient, step_coefficients, weight_decay_factor
from bench.defenses.hyperfl.round import HyperFLProtocol


def derived_fedsgd(
    model: HyperFLModel,
    server: Mapping[str, torch.Tensor],
    observed: Tensors,
    target: LocalData,
    guess: Tensors,
    public: PublicKnowledge,
    metrics: dict[str, Any],
) -> Observation:
    """The observation the adaptive attacker derives from one hypernetwork gradient: the generated feature
    extractor and its gradient, recovered exactly."""
    note = (
        "hyperfl/adaptive: the generated feature extractor and its gradient were recovered exactly from the "
        "hypernetwork gradient (generator-head bias gradient = generated-tensor gradient; weight gradient = "
        "that times the hidden features); the classifier head is optimised with the images"
    )
    protocol = {**public.protocol, "derived": "generated feature extractor and its gradient"}
    return on_generated(model, server, observed, guess, [1.0], target.batch_size, public, protocol, metrics, note, True)


def derived_local(
    model: HyperFLModel,
    server: Mapping[str, torch.Tensor],
    observed: Tensors,
    target: LocalData,
    p: HyperFLProtocol,
    guess: Tensors,
    public: PublicKnowledge,
    metrics: dict[str, Any],
) -> Observation:
    """The observation the adaptive attacker derives from a local round's update (``local_replay=generated``):
    the generated network and the SGD-weighted sum of its gradients over the round's hypernetwork steps."""
    steps = target.steps_per_epoch() * p.local_epochs
    drift = weight_decay_factor(p.lr, p.momentum, p.weight_decay, steps) - 1
    data = {k: observed[k].double() - drift * server[k].double() for k in observed}
    note = (
        f"hyperfl/adaptive (local_replay=generated): the generated network and the SGD-weighted sum of its "
        f"gradients over the round's {steps} hypernetwork steps were read off the update's data part (estimates: "
        f"the network moves between steps); all {len(target)} examples of the round are reconstructed on the "
        f"generated network, the head optimised with them"
    )
    protocol = {**public.protocol, "derived": "generated network and summed step gradients"}
    exact = steps == 1 and p.head_epochs == 0
    beta = step_coefficients(p.lr, p.momentum, p.weight_decay, steps)
    return on_generated(model, server, data, guess, beta, target.batch_size, public, protocol, metrics, note, exact)


def on_generated(
    model: HyperFLModel,
    server: Mapping[str, torch.Tensor],
    gradient: Tensors,
    guess: Tensors,
    beta: list[float],
    batch_size: int,
    public: PublicKnowledge,
    protocol: dict[str, Any],
    metrics: dict[str, Any],
    note: str,
    exact: bool,
) -> Observation:
    """An observation on the generated network read off ``gradient`` (Σ_s β_s of the hypernetwork's step
    gradients; one FedSGD gradient: β = [1]), with the private head as the only unknown (optimised).
    Step s of the replay takes the round's mini-batch s (of ``batch_size``, cycling over the epochs)."""
    recovered = recover_from_gradient(server, gradient, model.hypernetwork.shapes)
    dtype = next(iter(server.values())).dtype
    observed = {k: v.to(dtype) for k, v in recovered.gradients.items()}
    generated = recovered.generated

    def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
        model.target.eval()
        head_params = model.head_params(unknowns[HEAD_WEIGHT], unknowns[HEAD_BIAS])
        batches = -(-len(x) // batch_size)
        total: Tensors = {}
        for s, b in enumerate(beta):
            i = (s % batches) * batch_size
            grads = loss_gradient(
                model.target, generated, x[i : i + batch_size], y[i : i + batch_size], head_params, create_graph=True
            )
            total = {k: total[k] + b * g for k, g in grads.items()} if total else {k: b * g for k, g in grads.items()}
        return total

    head = {HEAD_WEIGHT: guess[HEAD_WEIGHT], HEAD_BIAS: guess[HEAD_BIAS]}
    public_net = public_model(model.target, {**generated, **model.head_params(head[HEAD_WEIGHT], head[HEAD_BIAS])})
    unknowns = {
        HEAD_WEIGHT: Unknown(
            tuple(head[HEAD_WEIGHT].shape), "the private classifier head's weight", head[HEAD_WEIGHT], optimisable=True
        ),
        HEAD_BIAS: Unknown(
            tuple(head[HEAD_BIAS].shape), "the private classifier head's bias", head[HEAD_BIAS], optimisable=True
        ),
    }
    kind: Literal["gradient", "update"] = public.observed_kind
    derived = PublicKnowledge(
        model=public_net,
        num_images=public.num_images,
        image_shape=public.image_shape,
        num_classes=public.num_classes,
        mean=public.mean,
        std=public.std,
        observed_kind=kind,
        classifier_key=None,
        protocol=protocol,
    )
    return Observation(
        observed=observed,
        public=derived,
        simulate=simulate,
        unknowns=unknowns,
        knowledge="adaptive",
        notes=(note,),
        metrics=metrics,
        exact=exact,
    )
