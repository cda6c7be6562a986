"""The analytic attack on an observation that mixes several examples: the leaky layer's row space.

For a batch of B examples (or an aggregate of one-example gradients, or the summed steps of a local
round), a linear layer's gradient is M = [∂L/∂W, ∂L/∂b] = Σ_b δ_b [x_b, 1]: rank B, and its row space
S is spanned by the examples' augmented inputs [x_b, 1]. So each example's input lies in the affine
space A = {v : [v, 1] ∈ S} (B − 1 dimensions in ``in_features``: a line for two examples), read off
the top B right singular vectors of M; where a row of M is reached by one example only (a ReLU-type
unit off for the others, a class present once), that row divided by its bias entry is the
example's input (:mod:`bench.inversion.isolation`). Such rows are counted in the row's ``info`` but
not matched as a separate term: with the paper CNN's LeakyReLU no unit is exactly off, so agreeing
rows are near-isolations (a group can even split one example in two), and as a hard term they
lowered the PSNR on the tuning seeds of ``he`` (one target of six from 19.3 to 12.9 dB, the others
within ±0.9 dB). Every exact isolated input lies in A anyway.

The B candidate images are recovered together. Their inputs φ_b at the layer give, by least squares,
the upstream gradients that explain M best, D = M Aᵀ(AAᵀ)⁻¹ with A = [φ_b, 1] (variable projection,
Golub & Pereyra 1973); the matching loss is

    Σ_b ‖φ_b − P_A φ_b‖² / ‖P_A φ_b‖²  +  ‖M − D A‖² / ‖M‖²            (features: in A, and spanning S)
    + (1 − cos(Σ_b J_θ(x_b)ᵀ Wᵀ D_b, g_below))                              (head-free replay, summed)

plus TV and the pixel box, Adam with restarts as for one example. Gradient matching through the
observation's simulator (Inverting Gradients) competes on the same loss (:func:`compete`), and
labels read off the classifier are assigned to the images by the public network
(:func:`assign_labels`). At B = 1 every term is the one of
the one-example recovery up to the scale-free form of the feature term. Everything here is exact for
an aggregate of one-example gradients of one network (secure aggregation's mean, ``he``); for a local
round it is exact up to the weights' drift between the steps (momentum weights are absorbed into D).
The peel and the descent need one example's gradient and do not run here.

Where the spectrum shows fewer than B directions above the rest (σ_{k+1} < 0.1·σ_k at some k < B but
not at B), only k examples are readable — in HyperFL's local round, the head epoch that starts the
round can fit an example so well that its gradient falls below the float32 spacing of the parameters
the client sends — and the row space matched is those k directions (one: a point, that example's
input exactly); every candidate then answers for one of them. ``info`` records the spectrum, the rank
used and ``rank_gap`` (near 1: no drop anywhere, nothing readable, the attack matches noise).
Where one example alone is readable, the observation is that example's gradient up to the others'
rounding, and the analytic attack hands it to the one-example pipeline (:func:`as_one_example`; the
peel runs where its own checks pass) and answers with that image for every candidate (:func:`widen`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from collections.abc import Sequence
from typing import Any

import torch

from bench.attack import Reconstruction
from bench.attacks.analytic.plan import cosine_distance, minimise_in_box
from bench.inversion import image_init, infer_labels, total_variation
from bench.inversion.isolation import Isolated, isolated_inputs
from bench.inversion.linear import LeakyLayer, as_gradient, layer_input, lower_keys, replay_function
from bench.progress import Progress
from bench.threat import Observation, Tensors


@dataclass
class BatchPlan:
    """What the analytic attack reads off a several-example observation before the image recovery."""

    obs: Observation
    layer: LeakyLayer
    keys: list[str]  # the observed layers below the leaky layer, replayed
    state: Tensors  # the public network's parameters and buffers
    observed: torch.Tensor  # M = [∂L/∂W, ∂L/∂b], [out, in + 1]
    basis: torch.Tensor  # [in + 1, B] orthonormal basis of M's top-B row space
    isolated: list[Isolated]  # inputs of single examples read off agreeing rows
    below: list[torch.Tensor]  # the observed gradients of ``keys``
    spectrum: list[float]  # M's singular values 1 .. B + 1, relative to the first

    @property
    def rank(self) -> int:
        """The rank of the row space matched: the examples whose inputs the reading holds."""
        return int(self.basis.shape[1])

    def info(self) -> dict[str, Any]:
        """What the row reports about the reading."""
        b, r = self.obs.public.num_images, self.rank
        return {
            "method": "linear-layer leakage of a batch (row space + isolated rows) + joint head-free inversion",
            "layer": self.layer.name,
            "features": self.layer.in_features,
            "examples": b,
            "row_space_rank": r,
            "singular_values_relative": self.spectrum,
            "rank_gap": self.spectrum[r] / self.spectrum[r - 1] if len(self.spectrum) > r else 0.0,
            "isolated_examples": len(self.isolated),
            "isolated_rows": [iso.rows for iso in self.isolated],
            "replayed": list(self.keys),
        }


GAP = 0.1  # σ_{k+1}/σ_k below this: the examples' part of the spectrum ends at k


def row_space_rank(spectrum: list[float], examples: int) -> int:
    """How many of the top singular directions hold examples' inputs: ``examples`` where the spectrum
    drops after them (or runs out); otherwise the last clear drop before (the other examples' gradients
    are below the observation's resolution, e.g. a local round whose head epoch already fitted them,
    under float32 rounding); ``examples`` again where no drop exists (nothing is readable: noise)."""
    if len(spectrum) <= examples or spectrum[examples] < GAP * spectrum[examples - 1]:
        return examples
    drops = [k for k in range(1, examples) if spectrum[k] < GAP * spectrum[k - 1]]
    return drops[-1] if drops else examples


def batch_plan(obs: Observation, layer: LeakyLayer) -> BatchPlan | str:
    """The reading of ``layer``'s gradient for ``obs.public.num_images`` examples, or why there is none."""
    b = obs.public.num_images
    if b > layer.out_features:
        return f"{b} examples exceed {layer.name}'s {layer.out_features} rows: its gradient cannot separate them"
    dw = as_gradient(obs, layer.weight_key).double()
    db = as_gradient(obs, layer.bias_key).double()
    observed = torch.cat([dw, db[:, None]], 1)
    if not bool(observed.abs().sum() > 0):
        return f"{layer.name}'s observed gradient is zero: nothing to read"
    _, s, vh = torch.linalg.svd(observed / observed.abs().max(), full_matrices=False)
    spectrum = [float(v) for v in (s[: b + 1] / s[0])]
    rank = row_space_rank(spectrum, b)
    model = obs.public.model
    state = {k: v.detach() for k, v in [*model.named_parameters(), *model.named_buffers()]}
    keys = lower_keys(obs, layer.name)
    dtype = obs.observed[layer.bias_key].dtype
    return BatchPlan(
        obs=obs,
        layer=layer,
        keys=keys,
        state=state,
        observed=observed.to(dtype),
        basis=vh[:rank].T.contiguous().to(dtype),
        isolated=isolated_inputs(obs, layer),
        below=[as_gradient(obs, k) for k in keys],
        spectrum=spectrum,
    )


def _affine_misfit(phi: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Σ_b relative distance² of each input φ_b from the affine space {v : [v, 1] ∈ span(basis)}.

    The nearest point is the least-squares combination of the basis whose last entry is 1 (a
    constrained least squares, solved by its KKT system for the B coefficients)."""
    v, last = basis[:-1], basis[-1]  # [in, B], [B]
    gram = v.T @ v  # [B, B]
    b = basis.shape[1]
    kkt = torch.zeros(b + 1, b + 1, dtype=phi.dtype, device=phi.device)
    kkt[:b, :b] = 2 * gram
    kkt[:b, b] = last
    kkt[b, :b] = last
    rhs = torch.cat([2 * (phi @ v), torch.ones(phi.shape[0], 1, dtype=phi.dtype, device=phi.device)], 1)
    coef = torch.linalg.solve(kkt, rhs.T)[:b]  # [B, n]
    nearest = (v @ coef).T  # [n, in]
    return (((phi - nearest) ** 2).sum(1) / (nearest**2).sum(1).clamp_min(1e-20)).sum()


def batch_matching_loss(
    plan: BatchPlan, feature_weight: float, replay_weight: float, images: torch.Tensor
) -> torch.Tensor:
    """The matching loss (without TV) of B candidate images [B, C, H, W] against a several-example reading."""
    model, layer = plan.obs.public.model, plan.layer
    phi = layer_input(model, layer.name, plan.state, images)  # [B, in]
    ones = torch.ones(phi.shape[0], 1, dtype=phi.dtype, device=phi.device)
    augmented = torch.cat([phi, ones], 1)  # [B, in + 1]
    m = plan.observed / plan.observed.abs().max()
    gram = (augmented @ augmented.T).double()  # B × B: solved in float64, with a small ridge for coinciding inputs
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    d = torch.linalg.solve(gram + 1e-9 * gram.diagonal().mean() * eye, (augmented @ m.T).double()).T.to(phi.dtype)
    loss = _affine_misfit(phi, plan.basis) + ((m - d @ augmented) ** 2).sum() / (m**2).sum()
    loss = feature_weight * loss
    if replay_weight and plan.keys:
        replay = replay_function(plan.obs, layer.name, plan.keys)
        weight = plan.state[layer.weight_key]
        u = d.T @ weight  # [B, in]: each example's upstream gradient at the layer's input
        u = u / u.abs().max().clamp_min(1e-30)
        _, grads = torch.func.vmap(replay, in_dims=(None, 0, 0))(plan.state, images, u)
        summed = [g.sum(0) for g in grads]  # the examples' gradients add up in the observation
        loss = loss + replay_weight * cosine_distance(summed, plan.below)
    return loss


def true_features(plan: BatchPlan, images: torch.Tensor) -> torch.Tensor:
    """The layer's inputs of the given images (for tests and benchmarks: what the reading should contain)."""
    with torch.no_grad():
        return layer_input(plan.obs.public.model, plan.layer.name, plan.state, images)


def recover_batch(
    opt: Any, tv_weights: Sequence[float], plan: BatchPlan, generator: torch.Generator, progress: Progress
) -> Reconstruction:
    """The B images of one several-example target, restarts in one tensor (``opt``: the analytic
    attack's options; ``tv_weights``: each restart's TV weight). The restart with the lowest matching
    loss (without TV) wins."""
    restarts = len(tv_weights)
    x = image_init(plan.obs, generator, restarts=restarts).requires_grad_(True)  # [R, B, C, H, W]
    low, high = plan.obs.public.pixel_bounds(x.device)
    priors = torch.tensor(list(tv_weights), dtype=x.dtype, device=x.device)

    def matching(images: torch.Tensor) -> torch.Tensor:
        return batch_matching_loss(plan, opt.feature_weight, opt.replay_weight, images)

    batched = torch.func.vmap(matching)

    def objective() -> torch.Tensor:
        losses = batched(x)
        if opt.tv:
            losses = losses + priors * torch.func.vmap(torch.func.vmap(total_variation))(x).sum(1)
        return losses

    description = f"analytic (batch of {plan.obs.public.num_images})"
    result = minimise_in_box(opt, x, objective, (low, high), progress, description)
    best = result.values[0]
    with torch.no_grad():
        scores = batched(best).detach().cpu().double()
    scores = torch.where(torch.isfinite(result.losses), scores, torch.full_like(scores, float("inf")))
    pick = int(torch.argmin(scores.nan_to_num(nan=float("inf"))))
    inferred = infer_labels(plan.obs, generator)
    labels, source = (None, "none: the classifier is not observed (labels not claimed)")
    if inferred is not None:
        labels = assign_labels(plan.obs, best[pick].detach(), inferred[0].to(x.device))
        source = inferred[1] + ", assigned to the images by the public network's predictions"
    info = {
        **plan.info(),
        "feature_source": "row space" + (" + isolated rows" if plan.isolated else ""),
        "label_source": source,
        "selected_restart": pick,
        "selected_tv": float(tv_weights[pick]),
        "restart_losses": [float(s) for s in scores],
        "best_objective": float(result.losses[pick]),
        "improved": result.improved(pick),
    }
    return Reconstruction(
        images=best[pick].detach(),
        labels=labels,
        loss=float(scores[pick]),
        iterations=result.iterations,
        diverged=bool(result.diverged[pick]),
        info=info,
    )


def as_one_example(obs: Observation) -> Observation:
    """The observation read as one example's gradient: for a row space of rank 1, where the other
    examples' gradients are below the observation's resolution."""
    return replace(obs, public=replace(obs.public, num_images=1))


def widen(rec: Reconstruction, examples: int, reading: dict[str, Any]) -> Reconstruction:
    """One readable example's reconstruction as the answer for all ``examples`` candidates (scored by
    best match, as every several-example observation is), with the several-example reading in ``info``."""
    rec.images = rec.images.expand(examples, *rec.images.shape[1:]).clone()
    if rec.labels is not None:
        rec.labels = rec.labels.expand(examples).clone()
    rec.info = {**rec.info, "readable_examples": 1, "several_example_reading": reading}
    return rec


def assign_labels(obs: Observation, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The inferred labels (a multiset, read off the classifier) put in the order of ``images``: the
    permutation the public network finds most likely (every permutation up to 6 examples, greedily
    beyond). The gradient matching attacks tie image b to label b by optimising with it; the row space
    does not, so the images found here need the assignment."""
    with torch.no_grad():
        logp = torch.log_softmax(obs.public.model(images), dim=1).double().cpu()  # [B, K]
    pool = labels.tolist()
    if len(pool) <= 6:
        best = max(
            itertools.permutations(range(len(pool))),
            key=lambda o: sum(float(logp[b, pool[j]]) for b, j in enumerate(o)),
        )
        return labels[list(best)]
    order: list[int] = []
    for b in range(len(pool)):
        j = max((j for j in range(len(pool)) if j not in order), key=lambda j: float(logp[b, pool[j]]))
        order.append(j)
    return labels[order]


def compete(
    plan: BatchPlan, rec: Reconstruction, rival: Reconstruction, feature_weight: float, replay_weight: float
) -> Reconstruction:
    """The row-space recovery against gradient matching on the same observation: the images with the
    lower row-space matching loss win (a NaN never wins). On trained networks the row space alone can
    admit wrong images (a low loss far from the truth), where matching the whole gradient through the
    observation's simulator, head and labels included, does not; at the true images the loss is zero."""
    with torch.no_grad():
        score = float(
            batch_matching_loss(plan, feature_weight, replay_weight, rival.images[: plan.obs.public.num_images])
        )
    won = score < rec.loss
    result = rival if won else rec
    result.info = {
        **rec.info,
        **({"rival": rival.info} if won else {}),
        "competition": {
            "row_space_loss": rec.loss,
            "gradient_matching_images_loss": score,
            "won": "gradient matching (Inverting Gradients)" if won else "row space",
        },
    }
    if won:
        result.loss = score
    return result
