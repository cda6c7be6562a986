"""The analytic attack on an observation that mixes several examples (attacks/analytic/batch.py): the
leaky layer's row space holds every example's input, the matching loss is zero at the true images, and
the attack recovers a batch instead of falling back to gradient matching."""

from __future__ import annotations

import pytest
import torch

from bench.attacks.analytic import Analytic
from bench.attacks.analytic.batch import BatchPlan, _affine_misfit, batch_matching_loss, batch_plan, true_features
from bench.defenses.fedavg import FedAvg
from bench.inversion.linear import leaky_layers
from bench.metrics import psnr_per_image
from bench.progress import SilentProgress
from tests.helpers import cnn_task
from tests.test_analytic import observe


def _plan(n: int = 2, seed: int = 0, smooth: bool = False) -> tuple[BatchPlan, torch.Tensor]:
    obs, target = observe(FedAvg(), cnn_task(), n=n, seed=seed, smooth=smooth)
    plan = batch_plan(obs, leaky_layers(obs)[0])
    assert isinstance(plan, BatchPlan), plan
    return plan, target.x


def test_each_examples_input_lies_in_the_row_space_of_the_batch_gradient():
    plan, x = _plan(n=3)
    phi = true_features(plan, x).double()
    assert plan.rank == 3 and plan.spectrum[3] < 1e-5  # rank 3: one direction per example
    assert float(_affine_misfit(phi, plan.basis.double())) < 1e-9
    other = true_features(plan, torch.randn_like(x)).double()  # other images' inputs do not
    assert float(_affine_misfit(other, plan.basis.double())) > 1e-3


def test_the_matching_loss_is_zero_at_the_true_images_and_not_at_one_image_twice():
    plan, x = _plan(n=2)
    at_truth = float(batch_matching_loss(plan, 1.0, 1.0, x))
    assert at_truth < 1e-4
    twice = torch.stack([x[0], x[0]])  # both candidates on one example: the row space is not spanned
    assert float(batch_matching_loss(plan, 1.0, 1.0, twice)) > 100 * max(at_truth, 1e-6)
    assert float(batch_matching_loss(plan, 1.0, 1.0, x.flip(0))) == pytest.approx(at_truth, abs=1e-5)  # unordered


def test_the_attack_recovers_a_batch_of_two_without_falling_back():
    obs, target = observe(FedAvg(), cnn_task(), n=2, seed=3, smooth=True)
    rec = Analytic(iterations=300, restarts=1).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert "fallback" not in rec.info and rec.info["examples"] == 2 and rec.images.shape[0] == 2
    assert rec.info["rank_gap"] < 1e-5 and rec.labels is not None and rec.labels.shape == (2,)
    start = torch.randn((2, *target.x.shape[1:]), generator=torch.Generator().manual_seed(0))

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:  # the smooth images' pixels are 0.25·x + 0.5
        return float(psnr_per_image((a[None] * 0.25 + 0.5).clamp(0, 1), (b[None] * 0.25 + 0.5).clamp(0, 1))[0])

    best = [max(psnr(r, t) for r in rec.images) for t in target.x]
    baseline = [psnr(s, t) for s, t in zip(start, target.x)]
    assert min(b - a for a, b in zip(baseline, best)) > 3  # both examples found, well above the start


def test_only_the_examples_above_the_resolution_are_matched():
    from bench.attacks.analytic.batch import row_space_rank

    assert row_space_rank([1.0, 0.2, 1e-7], 2) == 2  # a clear drop after both examples
    assert row_space_rank([1.0, 1e-6, 0.98e-6], 2) == 1  # the second example below the resolution
    assert row_space_rank([1.0, 0.97, 0.96], 2) == 2  # no drop anywhere: noise, nothing to prefer
    assert row_space_rank([1.0, 0.3], 2) == 2  # the spectrum runs out (fewer rows than examples + 1)


def test_a_single_readable_example_goes_to_the_one_example_pipeline():
    """Two examples whose second gradient is far below the first's (a fitted example, under rounding):
    the row space has rank 1, so the observation is read as the first example's gradient, peeled as one,
    and its image answers for both candidates."""
    import dataclasses

    from bench.attacks.analytic.plan import Plan

    first, _ = observe(FedAvg(), cnn_task(), seed=0)
    second, _ = observe(FedAvg(), cnn_task(), seed=5)
    mixed = dataclasses.replace(
        first,
        observed={k: v + 1e-9 * second.observed[k] for k, v in first.observed.items()},
        public=dataclasses.replace(first.public, num_images=2),
    )
    attack = Analytic(iterations=3, restarts=1)
    plan = attack._plan(mixed)
    assert isinstance(plan, Plan) and plan.examples == 2 and plan.batch is not None
    assert plan.batch["row_space_rank"] == 1 and plan.peel["blocks"] == ["conv3"]
    rec = attack.reconstruct(mixed, torch.Generator().manual_seed(0), SilentProgress())
    assert rec.images.shape[0] == 2 and torch.equal(rec.images[0], rec.images[1])
    assert rec.info["readable_examples"] == 1


def test_labels_follow_the_images_and_the_lower_row_space_loss_wins():
    from bench.attacks.analytic.batch import assign_labels

    plan, x = _plan(n=2, seed=1)
    model = plan.obs.public.model
    with torch.no_grad():
        predicted = model(x).argmax(1)
    if predicted[0] != predicted[1]:  # the network tells the two apart: the assignment follows it
        assert assign_labels(plan.obs, x, predicted.flip(0)).tolist() == predicted.tolist()
    obs = plan.obs
    rec = Analytic(iterations=20, restarts=1).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    contest = rec.info["competition"]
    assert contest["won"] in ("row space", "gradient matching (Inverting Gradients)")
    assert rec.loss == min(contest["row_space_loss"], contest["gradient_matching_images_loss"])
