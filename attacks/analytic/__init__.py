"""Analytic — linear-layer leakage, then inversion of the layers below (defense-agnostic).

Step 1, closed form (:mod:`bench.inversion.linear`): the first observed linear layer with a bias
gives its own input, ``x = (∂L/∂W)ᵀ δ / ‖δ‖²`` with δ = ∂L/∂b, exactly for one example's FedSGD
gradient (Phong et al. 2018; Geiping et al. 2020, §3; the "linear layer leakage" line of work),
and δ, the upstream gradient at that layer's output. For the HyperFL paper's CNN this is fc1's 576
convolutional features; for an MLP whose first layer is linear, it is the image itself.

Step 1b, peeling (:mod:`bench.inversion.peel`): where a convolution block just below has fewer output
positions than channels, its weight gradient's row space is the span of its input's patches, which
fixes that input up to a scale the block's known output sets, without its max-pool switches. Going
down while this holds (``peel``), the lowest input reached replaces φ̂ below, with the exact upstream
gradient there; on the HyperFL paper's CNN this is conv3's 32×6×6 input (``info["peel"]`` says
which blocks, and why it stopped). Where it reaches the image itself, the image is the answer.

Step 2, inversion of the layers below: candidate images minimise

    feature_weight · ‖φ(x) − φ̂‖² / ‖φ̂‖²  +  replay_weight · (1 − cos(J_θ(x)ᵀ Wᵀδ, g_below))  +  tv · TV(x)

where φ is the layer's input, φ̂ the recovered one, and the second term is the *head-free replay*:
the gradients of the layers below, recomputed for the candidate from the recovered δ — no
classifier head, no label, no unknown of the client is needed (so HyperFL's private head does not
stand in the way once its generated feature extractor is known). Adam on the signed image gradient
(lr 0.1, ×0.1 at 3/8, 5/8, 7/8), the pixel box after every step, restarts in one tensor; the
restart with the lowest matching loss (without TV) wins, as in Inverting Gradients. By default three
restarts use TV weights tv, 2·tv and tv/2 (``tv_spread``): which prior suits an image varies from
target to target, and the matching loss picks it (on the tuning seeds of FedAvg's CNN this beat both
one restart and four restarts at the same tv, and 4000 steps beat 2000 and 8000). The sweeps use one
restart and 2000 steps, for their time budget.

Several targets whose observations have the same shapes are optimised in one tensor
(``target_batch``): ``vmap`` over each target's own network, image and recovered quantities.

Labels come from the observed classifier (iDLG's rule for one image, a count rule for batches) when
the server sees it, or from δ when the leaky layer *is* the classifier (δ = softmax − one-hot is
negative only at the true class); otherwise none are claimed (``label_acc`` is then null).

Step 3, R-GAP's recursion (:mod:`bench.inversion.recursive`; Zhu & Blaschko, ICLR 2021): where the
layers below are a chain of convolutions with invertible activations and no max-pool (DLG's sigmoid
LeNet, R-GAP's CNN6), each convolution's input is solved in closed form from its forward pass and its
observed weight gradient, top to bottom, starting from step 1's reading. The image it gives competes
with step 2's: the one with the lower matching loss wins (``info["recursion"]`` says which). Through a
max-pool the recursion needs the pool's switches, which only an estimate can give
(``recursion="switches"`` takes them from step 2's image); on the HyperFL paper's CNN they are mostly
wrong even from a 40 dB estimate (near-ties within the windows), so ``auto`` skips it there.

Step 4, one block further down (:mod:`attacks.analytic.descent`, ``descend``): below the matched
input lies a block behind a max-pool (conv2 under conv3's peeled input). Its input is solved from
its known output, upstream gradient and weight gradient, with the switches *searched* by the block's
own residual (:mod:`bench.inversion.switches`) from the step-2 image's. A second recovery (step 2,
same settings and generator) matches that input and replays the layers below it. The answer is the
mean of the two images (``average``, the default), or the one with the lower matching loss
(``compete``). The mean was chosen on the tuning seeds of FedAvg's CNN. There the matching loss
almost always preferred the first image, which was fitted to it, even where the second was several
dB closer. ``benchmarks/descent.py`` measures all of this on reporting seeds, with a control: the mean
of two recoveries of the *same* input, which shows what the searched block input adds beyond
averaging. It runs only on an exact reading, and not after a closed-form answer (step 1b's image,
step 3's) won; ``info["descent"]`` says what ran. Pulling restarts toward their mean is
GradInversion's "group consistency" (Yin et al., CVPR 2021); the switch search and the descent are
ours.

Several examples (a batch, an aggregate over clients as ``he`` decrypts, the steps of a local round;
:mod:`attacks.analytic.batch`): the leaky layer's gradient has rank B, its row space holds every
example's augmented input, so each image is recovered against that affine space, the upstream
gradients come from a least-squares fit of the candidates' inputs, and the replay sums the examples'
lower gradients. The B images are recovered together; peeling, the recursion and the descent need one
example's gradient and do not run. Gradient matching through the observation's simulator (Inverting
Gradients with this attack's settings) runs beside it, and the images with the lower row-space
matching loss win (``info["competition"]``): on trained networks the row space alone admits wrong
images that match it well. The exception is where the spectrum shows one example alone above the
observation's resolution (a local round whose head epoch fitted the others, under float32 rounding):
that observation is read as the example's own gradient and goes through steps 1–4, and its image
answers for every candidate (``info["readable_examples"]``). Rows whose ratios agree (units one example reaches alone,
:mod:`bench.inversion.isolation`) are counted in ``info`` but not matched: with the paper CNN's
LeakyReLU no unit is exactly off, and as a hard term they hurt on the tuning seeds of ``he``.

Where it degrades, it says so in ``info`` (``feature_source``, ``not_exact_because``, for a batch
``rank_gap``: how far the gradient is from rank B) and keeps going: an update after several local
steps, noise (dp), zeroed entries (pruning, Soteria). When no observed linear layer with a bias
exists, or the examples outnumber its rows, the attack falls back to gradient matching through the
observation's simulator (Inverting Gradients with this attack's iterations, TV and restarts) and
records ``fallback``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from bench.attack import Attack, Reconstruction
from bench.attacks.analytic.batch import BatchPlan, as_one_example, batch_plan, compete, recover_batch, widen
from bench.attacks.analytic.descent import descend
from bench.attacks.analytic.options import OPTIONS
from bench.attacks.analytic.plan import Plan, matching_loss, minimise_in_box
from bench.attacks.ig import InvertingGradients
from bench.inversion import image_init, infer_labels, total_variation
from bench.inversion.linear import as_gradient, leaky_layers, lower_keys, read_layer, replay_function
from bench.inversion.peel import REACHED_IMAGE, MatchTarget, peel_chain
from bench.inversion.recursive import conv_chain, invert_chain, recursion_chain
from bench.progress import Progress
from bench.threat import Observation


class Analytic(Attack):
    """Analytic: exact input of the first observed linear layer, then head-free inversion of the layers below."""

    name = "analytic"
    description = __doc__
    options = OPTIONS

    @property
    def targets_per_call(self) -> int:
        return int(self.opt.target_batch)

    def reconstruct(self, obs: Observation, generator: torch.Generator, progress: Progress) -> Reconstruction:
        return self.reconstruct_many([obs], [generator], progress)[0]

    def reconstruct_many(
        self, observations: Sequence[Observation], generators: Sequence[torch.Generator], progress: Progress
    ) -> list[Reconstruction]:
        plans = [self._plan(obs) for obs in observations]
        out: list[Reconstruction | None] = [None] * len(plans)
        groups: dict[tuple, list[int]] = {}
        for i, plan in enumerate(plans):
            if isinstance(plan, Plan):
                groups.setdefault(plan.group(), []).append(i)
        for members in groups.values():
            group = [plan for i in members if isinstance(plan := plans[i], Plan)]
            gens = [generators[i] for i in members]
            recs = descend(
                group,
                self._recover(group, gens, progress),
                self.opt.descend,
                bool(self.opt.replay_weight),
                lambda lower, members, gens=gens: self._recover(lower, [gens[i] for i in members], progress),
                self._score,
            )
            for i, rec, plan in zip(members, recs, group):
                out[i] = widen(rec, plan.examples, plan.batch) if plan.batch is not None else rec
        for i, plan in enumerate(plans):
            if isinstance(plan, BatchPlan):
                rec = recover_batch(self.opt, self.tv_weights(self.opt.restarts), plan, generators[i], progress)
                rival = self._fallback(plan.obs, generators[i], progress, "a rival of the row-space recovery")
                out[i] = compete(plan, rec, rival, self.opt.feature_weight, self.opt.replay_weight)
        for i, plan in enumerate(plans):
            if out[i] is None:
                out[i] = self._fallback(observations[i], generators[i], progress, str(plan))
        return [r for r in out if r is not None]

    # --- step 1: the closed form ------------------------------------------------------------------
    def _plan(self, obs: Observation) -> Plan | BatchPlan | str:
        """The target's plan, or why the closed form does not apply (then: the fallback)."""
        layers = leaky_layers(obs)
        if not layers:
            return "no observed linear layer with a bias (whose input could be read off the gradient)"
        if self.opt.layer != "first":
            layers = [layer for layer in layers if layer.name == self.opt.layer]
            if not layers:
                return f"layer {self.opt.layer!r} is not an observed linear layer with a bias"
        layer = layers[0]
        if obs.public.num_images != 1:
            batch = batch_plan(obs, layer)
            if isinstance(batch, BatchPlan) and batch.rank == 1:  # one example readable: its own pipeline
                one = self._plan(as_one_example(obs))
                if isinstance(one, Plan):
                    one.examples, one.batch = obs.public.num_images, batch.info()
                    return one
            return batch
        reading = read_layer(obs, layer)
        if not bool(reading.known.any()) or not bool(reading.delta.abs().sum() > 0):
            return f"{layer.name}'s observed gradient is zero: nothing to read"
        model = obs.public.model
        state = {k: v.detach() for k, v in [*model.named_parameters(), *model.named_buffers()]}
        upstream = state[layer.weight_key].T @ reading.delta
        known = reading.known.to(reading.features.dtype)
        top = MatchTarget(layer.name, reading.features, known, upstream)
        blocks = conv_chain(model, layer.name)  # the convolutions below: traced once, for both steps
        target, peel = (
            peel_chain(obs, top, state, blocks)
            if self.opt.peel == "auto"
            else (top, {"blocks": [], "stopped": "off (peel='off')"})
        )
        keys = lower_keys(obs, target.layer) if self.opt.replay_weight else []
        below = [as_gradient(obs, k) for k in keys]
        chain = recursion_chain(obs, layer.name, state, self.opt.recursion, blocks)
        return Plan(obs, reading, keys, state, upstream, below, chain, blocks, target, peel)

    # --- step 2: the layers below, several targets in one tensor ------------------------------------
    def _recover(
        self, plans: list[Plan], generators: Sequence[torch.Generator], progress: Progress
    ) -> list[Reconstruction]:
        first = plans[0]
        restarts, targets = self.opt.restarts, len(plans)
        replay = replay_function(first.obs, first.target.layer, first.keys)
        device = first.upstream.device

        def stack(values: Sequence[torch.Tensor]) -> torch.Tensor:  # [T, ...] → [T·R, ...]
            return torch.stack(list(values)).repeat_interleave(restarts, dim=0)

        state = {k: stack([p.state[k] for p in plans]) for k in first.state}
        features = stack([p.target.features for p in plans])
        known = stack([p.target.known for p in plans])
        upstream = stack([p.target.upstream for p in plans])
        below = [stack([p.below[j] for p in plans]) for j in range(len(first.keys))]
        x = torch.cat([image_init(p.obs, g, restarts=restarts)[:, 0] for p, g in zip(plans, generators)])
        x = x.to(device).requires_grad_(True)
        low, high = first.obs.public.pixel_bounds(device)
        fw, rw, tv = self.opt.feature_weight, self.opt.replay_weight, self.opt.tv
        priors = torch.tensor(self.tv_weights(restarts), dtype=x.dtype, device=device).repeat(targets)

        matching = partial(matching_loss, replay, fw, rw)
        batched = torch.func.vmap(matching)

        def objective() -> torch.Tensor:
            losses = batched(state, x, features, known, upstream, below)
            if tv:
                losses = losses + priors * torch.func.vmap(total_variation)(x)
            return losses

        description = f"analytic ×{targets}" if targets > 1 else "analytic"
        result = minimise_in_box(self.opt, x, objective, (low, high), progress, description)
        best = result.values[0]
        with torch.no_grad():
            scores = batched(state, best, features, known, upstream, below).detach().cpu().double()
        scores = torch.where(torch.isfinite(result.losses), scores, torch.full_like(scores, float("inf")))
        out = []
        for t, (plan, g) in enumerate(zip(plans, generators)):
            rows = slice(t * restarts, (t + 1) * restarts)
            pick = int(torch.argmin(scores[rows].nan_to_num(nan=float("inf"))))
            index = t * restarts + pick
            image, loss = best[index], float(scores[index])

            recursion: dict[str, Any]
            if isinstance(plan.chain, str):
                recursion = {"ran": False, "why_not": plan.chain}
            else:
                gradients = {b.weight_key: as_gradient(plan.obs, b.weight_key) for b in plan.chain}
                candidate, residuals = invert_chain(
                    plan.chain, plan.state, gradients, plan.reading.features, plan.upstream, image
                )
                candidate = torch.maximum(torch.minimum(candidate, high), low)
                rival = self._score(plan, candidate)
                won = rival < loss  # a NaN never wins
                recursion = {
                    "ran": True,
                    "method": "R-GAP recursion (Zhu & Blaschko 2021)",
                    "blocks": [b.name for b in plan.chain],
                    "relative_residuals": residuals,
                    "matching_loss": rival,
                    "won": won,
                }
                if won:
                    image, loss = candidate, rival
            if plan.peel["stopped"] == REACHED_IMAGE:  # the lowest peeled input is the image itself
                direct = torch.maximum(torch.minimum(plan.target.features.reshape(image.shape), high), low)
                rival = self._score(plan, direct)
                plan.peel["won"] = rival < loss
                if plan.peel["won"]:
                    image, loss = direct, rival
            labels, label_source = self._labels(plan, g)
            info: dict[str, Any] = {
                "method": "linear-layer leakage + head-free inversion of the layers below",
                "layer": plan.reading.layer.name,
                "features": plan.reading.layer.in_features,
                "features_known": int(plan.reading.known.sum()),
                "feature_source": "exact" if plan.reading.exact else "estimate",
                "replayed": list(plan.keys),
                "label_source": label_source,
                "selected_restart": pick,
                "selected_tv": self.tv_weights(restarts)[pick],
                "restart_losses": [float(s) for s in scores[rows]],
                "best_objective": float(result.losses[index]),
                "improved": result.improved(index),
                "targets_together": targets,
                "recursion": recursion,
                "peel": plan.peel,
                "matched_input_of": plan.target.layer,
            }
            if not plan.reading.exact:
                info["not_exact_because"] = plan.reading.why_not_exact
            out.append(
                Reconstruction(
                    images=image[None].detach(),
                    labels=labels,
                    loss=loss,
                    iterations=result.iterations,
                    diverged=bool(result.diverged[index]),
                    info=info,
                )
            )
        return out

    def _score(self, plan: Plan, image: torch.Tensor) -> float:
        """The matching loss of a candidate image (in the box) against ``plan``, scored like the restarts."""
        replay = replay_function(plan.obs, plan.target.layer, plan.keys)
        tg = plan.target
        with torch.no_grad():
            return float(
                matching_loss(
                    replay,
                    self.opt.feature_weight,
                    self.opt.replay_weight,
                    plan.state,
                    image,
                    tg.features,
                    tg.known,
                    tg.upstream,
                    plan.below,
                )
            )

    def _labels(self, plan: Plan, generator: torch.Generator) -> tuple[torch.Tensor | None, str]:
        inferred = infer_labels(plan.obs, generator)
        if inferred is not None:
            return inferred[0].to(plan.upstream.device), inferred[1]
        classifier = plan.obs.public.classifier_key
        if classifier is not None and plan.reading.layer.weight_key == classifier:
            return torch.argmin(plan.reading.delta).reshape(1), "delta (softmax − one-hot) of the classifier"
        return None, "none: the classifier is not observed (labels not claimed)"

    def tv_weights(self, restarts: int) -> list[float]:
        """The TV weight of each restart: tv × spread^k for k = 0, 1, −1, 2, −2, …"""
        steps = [(k + 1) // 2 * (1 if k % 2 else -1) for k in range(restarts)]
        return [self.opt.tv * self.opt.tv_spread**k for k in steps]

    # --- the fallback -----------------------------------------------------------------------------
    def _fallback(self, obs: Observation, generator: torch.Generator, progress: Progress, why: str) -> Reconstruction:
        ig = InvertingGradients(
            iterations=self.opt.iterations,
            restarts=self.opt.restarts,
            lr=self.opt.lr,
            tv=self.opt.tv,
            signed=self.opt.signed,
            decay=self.opt.decay,
        )
        rec = ig.reconstruct(obs, generator, progress)
        rec.info = {
            **rec.info,
            "method": "gradient matching through the simulator (Inverting Gradients)",
            "fallback": why,
        }
        return rec
