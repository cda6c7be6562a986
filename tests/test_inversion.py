"""The shared attack machinery: label rules, distances and priors, the Adam loop, batched restarts."""

import dataclasses

import pytest
import torch

from bench.round import Round
from bench.inversion import (
    BestIterates,
    GradientMatching,
    adam,
    count_labels,
    idlg_label,
    infer_labels,
    step_milestones,
    total_variation,
)
from bench.inversion.objective import cosine_distance, layerwise_cosine_distance
from bench.models.base import classifier_of
from bench.progress import SilentProgress
from bench.threat import LocalData, Observation
from bench.defenses.fedavg import FedAvg
from tests.helpers import lenet_task


def fedavg_obs(labels, seed=0, size=16, local_steps=0, num_classes=10, model=None):
    """A fresh LeNet (or ``model``) under FedAvg observing random images with the given labels."""
    torch.manual_seed(seed)
    task = lenet_task(image_shape=(3, size, size), num_classes=num_classes)
    if model is not None:
        task = dataclasses.replace(
            task,
            new_model=lambda: model.build((3, size, size), num_classes),
            classifier=classifier_of(model.build((3, size, size), num_classes)),
        )
    d = FedAvg()
    if local_steps:
        d.use_round(Round("local", len(labels), len(labels), local_steps))
    d.setup(task)
    y = torch.tensor(labels)
    x = torch.rand(len(labels), 3, size, size) * 2 - 1
    return x, y, d.observe(d.init_server(), {}, LocalData(x, y, len(labels)), [], None)


# ---- label rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [0, 3, 9])
def test_idlg_rule_reads_the_label_of_one_image(label):
    _, y, obs = fedavg_obs([label], seed=label)
    assert idlg_label(obs).tolist() == [label]
    labels, source = infer_labels(obs)
    assert labels.tolist() == [label] and source.startswith("idlg")


def test_idlg_rule_reads_an_update_as_well_as_a_gradient():
    _, y, obs = fedavg_obs([4, 4], seed=1, local_steps=2)  # a 2-step FedAvg update of a batch of 2
    assert obs.public.observed_kind == "update"
    assert sorted(infer_labels(obs)[0].tolist()) == [4, 4]


def test_count_rule_on_an_ideal_signal_recovers_repeated_labels():
    # g_c = s (1/K - n_c/N) for counts {2: 2, 5: 1, 9: 1}, N = 4, K = 10, s = 0.7
    counts = torch.zeros(10)
    counts[2], counts[5], counts[9] = 2, 1, 1
    signal = 0.7 * (1 / 10 - counts / 4)
    assert count_labels(signal, 4).tolist() == [2, 2, 5, 9]
    assert count_labels(signal, 6).tolist() == [2, 2, 2, 5, 9, 9] or count_labels(signal, 6).tolist() == [
        2,
        2,
        2,
        5,
        5,
        9,
    ]


def test_count_rule_takes_the_most_negative_when_more_classes_are_negative_than_images():
    signal = torch.tensor([-0.1, 0.3, -0.5, -0.2, 0.5])
    assert sorted(count_labels(signal, 2).tolist()) == [2, 3]


@pytest.mark.parametrize("labels", [[1, 1, 3, 7], [0, 0, 0, 5], [2, 4, 6, 8]])
def test_batch_rule_recovers_label_counts_from_a_fresh_lenet(labels):
    _, _, obs = fedavg_obs(labels, seed=sum(labels))
    inferred, source = infer_labels(obs, torch.Generator().manual_seed(0))
    assert sorted(inferred.tolist()) == sorted(labels)
    assert source == "counts (classifier bias), offset-corrected"


def test_offset_correction_fixes_a_network_with_a_class_preference():
    # The U(-0.5, 0.5) LeNet predicts the same class confidently for any input; that class' signal is
    # positive even when present, so the uncorrected rule misses it.
    _, _, obs = fedavg_obs([1, 1, 3, 7], seed=3)
    assert sorted(infer_labels(obs)[0].tolist()) != [1, 1, 3, 7]
    assert sorted(infer_labels(obs, torch.Generator().manual_seed(0))[0].tolist()) == [1, 1, 3, 7]


def test_batch_rule_falls_back_to_weight_rows_without_a_bias():
    _, _, obs = fedavg_obs([1, 1, 3, 7], seed=3)
    no_bias = Observation({k: v for k, v in obs.observed.items() if k != "fc.bias"}, obs.public, obs.simulate)
    inferred, source = infer_labels(no_bias, torch.Generator().manual_seed(0))
    assert sorted(inferred.tolist()) == [1, 1, 3, 7]
    assert source == "counts (classifier weight rows), offset-corrected"


def test_no_label_rule_without_the_classifier():
    _, _, obs = fedavg_obs([3])
    hidden = Observation(obs.observed, dataclasses.replace(obs.public, classifier_key=None), obs.simulate)
    assert infer_labels(hidden) is None and idlg_label(hidden) is None


# ---- distances and priors ------------------------------------------------------------------------


def test_cosine_distance_values():
    a = [torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 2.0]])]
    assert cosine_distance(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert cosine_distance(a, [-t for t in a]).item() == pytest.approx(2.0)
    assert cosine_distance(a, [3 * t for t in a]).item() == pytest.approx(0.0, abs=1e-7)  # magnitude-invariant
    # one global cosine: <(1,0,0,2), (0,1,0,2)> / (√5 √5) = 4/5
    b = [torch.tensor([0.0, 1.0]), torch.tensor([[0.0, 2.0]])]
    assert cosine_distance(a, b).item() == pytest.approx(1 - 4 / 5)
    # per layer: (1 - 0) + (1 - 1) = 1
    assert layerwise_cosine_distance(a, b).item() == pytest.approx(1.0)


def test_total_variation_value():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # mean |Δx| = 1, mean |Δy| = 2
    assert total_variation(x).item() == pytest.approx(3.0)
    assert total_variation(torch.ones(2, 3, 5, 5)).item() == 0.0


# ---- the Adam loop ---------------------------------------------------------------------------------


def test_step_milestones_match_the_reference():
    assert step_milestones(4800) == [1799, 2999, 4203]  # float floor division, as in the reference


def test_signed_adam_moves_every_coordinate_by_lr_on_the_first_step():
    v = torch.tensor([[0.5, -2.0, 3.0], [1.0, 1.0, 1.0]], requires_grad=True)
    c = torch.tensor([[1e-6, -4.0, 100.0], [2.0, -0.001, 5.0]])
    start = v.detach().clone()
    result = adam([v], lambda: (v * c).sum(dim=1), 1, SilentProgress(), lr=0.1, signed=[v], decay=False)
    assert torch.allclose(v.detach() - start, -0.1 * c.sign(), atol=1e-5)
    assert torch.allclose(result.values[0], v.detach())  # the linear objective improved: last = best


def test_adam_returns_the_best_iterate_per_restart():
    v = torch.tensor([[3.0], [-3.0]], requires_grad=True)
    calls = []

    def objective():  # every evaluation after the first is penalised: the start is best
        calls.append(1)
        return (v - 1).pow(2).sum(dim=1) + 10.0 * (len(calls) - 1)

    result = adam([v], objective, 5, SilentProgress(), lr=0.5, decay=False)
    assert not torch.equal(v.detach(), torch.tensor([[3.0], [-3.0]]))
    assert result.values[0].tolist() == [[3.0], [-3.0]] and result.losses.tolist() == [4.0, 16.0]
    assert result.initial_losses.tolist() == [4.0, 16.0] and not result.improved(0) and not result.improved(1)


def test_adam_reports_improvement_per_restart():
    v = torch.tensor([[3.0], [1.0]], requires_grad=True)  # restart 1 starts at the optimum
    result = adam([v], lambda: (v - 1).pow(2).sum(dim=1), 5, SilentProgress(), lr=0.5, decay=False)
    assert result.improved(0) and not result.improved(1)


def test_adam_projects_after_every_step_and_records_divergence_per_restart():
    v = torch.zeros(3, 2, requires_grad=True)
    seen = []

    def objective():
        seen.append(v.detach().clone())
        loss = -v.sum(dim=1)  # pushes every coordinate up, against the box
        return torch.where(torch.arange(3) == 1, loss * (float("nan") if len(seen) > 3 else 1.0), loss)

    result = adam(
        [v], objective, 6, SilentProgress(), lr=0.3, signed=[v], decay=False, project=lambda: v.clamp_(max=0.5)
    )
    assert all(float(s.max()) <= 0.5 for s in seen)
    assert result.diverged.tolist() == [False, True, False] and result.iterations == 6
    assert torch.isfinite(result.values[0]).all() and torch.isfinite(v).all()


def test_adam_stops_when_every_restart_diverged():
    v = torch.zeros(2, 1, requires_grad=True)
    result = adam([v], lambda: v.sum(dim=1) * float("nan"), 10, SilentProgress(), decay=False)
    assert result.diverged.all() and result.iterations == 1


def test_best_iterates_restore_only_selected_restarts():
    v = torch.zeros(2, 2)
    best = BestIterates([v])
    best.offer(torch.tensor([1.0, 1.0]))
    v += 5
    best.restore(torch.tensor([True, False]))
    assert v.tolist() == [[0.0, 0.0], [5.0, 5.0]]


# ---- batched restarts ------------------------------------------------------------------------------


@pytest.mark.parametrize("local_steps", [0, 2])
def test_vmapped_restarts_equal_sequential_runs(local_steps):
    """Adam on the sum of R restarts' losses (one vmapped tensor) = R independent runs."""
    _, y, obs = fedavg_obs([2, 5], seed=7, size=8, local_steps=local_steps)
    objective = GradientMatching(obs, distance="cosine", tv=1e-2)
    init = torch.randn(2, 2, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def run(start):
        x = start.clone().requires_grad_(True)
        labels = y.expand(len(start), -1)
        out = adam(
            [x],
            lambda: objective.loss_batched(x, labels, {}),
            6,
            SilentProgress(),
            lr=0.1,
            signed=[x],
            project=lambda: x.clamp_(-1.5, 1.5),
        )
        return out.values[0], out.losses

    batched, batched_losses = run(init)
    assert not hasattr(objective, "vmap_failed")
    for r in range(2):
        alone, alone_loss = run(init[r : r + 1])
        assert torch.allclose(batched[r], alone[0], atol=1e-4)
        assert batched_losses[r].item() == pytest.approx(alone_loss[0].item(), rel=1e-4, abs=1e-6)
