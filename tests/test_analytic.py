"""The analytic attack: linear-layer leakage is exact, the head-free replay is the true gradient, and the
attack degrades honestly (and says so) where the closed form does not hold."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bench.attacks.analytic import Analytic
from bench.defense import FLTask
from bench.functional import loss_gradient
from bench.inversion.linear import layer_input, leaky_layers, lower_keys, read_layer, replay_function
from bench.metrics import psnr_per_image
from bench.progress import SilentProgress
from bench.threat import LocalData
from bench.defenses.dp import DP
from bench.defenses.fedavg import FedAvg
from bench.defenses.hyperfl import HyperFL
from tests.helpers import cnn_task, lenet_task, local_steps, module_task


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def mlp_task() -> FLTask:
    return module_task(MLP, "mlp", "fc2", (3, 2, 2), 3)


def observe(defense, task, n=1, seed=0, knowledge=None, smooth=False):
    """What the server observes of a random target batch (``smooth``: an image with natural-image-like
    smoothness, upsampled from 4×4, where a TV prior helps as it does on photos)."""
    torch.manual_seed(seed)
    defense.use_knowledge(knowledge)
    defense.setup(task)
    server = defense.init_server()
    client = defense.init_client(0)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((n, *task.image_shape), generator=g)
    if smooth:
        coarse = torch.rand((n, task.image_shape[0], 4, 4), generator=g)
        x = (torch.nn.functional.interpolate(coarse, size=task.image_shape[1:], mode="bilinear") - 0.5) / 0.25
    y = torch.randint(0, task.num_classes, (n,), generator=g)
    target = LocalData(x, y, n)
    return defense.observe(server, client, target, [], torch.Generator().manual_seed(seed + 2)), target


def test_the_linear_layers_input_is_recovered_exactly_and_in_forward_order():
    obs, target = observe(FedAvg(), cnn_task())
    layers = leaky_layers(obs)
    assert [layer.name for layer in layers] == ["fc1", "fc2"] and layers[0].in_features == 576
    reading = read_layer(obs, layers[0])
    truth = layer_input(obs.public.model, "fc1", dict(obs.public.model.named_parameters()), target.x)[0]
    assert reading.exact and bool(reading.known.all())
    assert torch.allclose(reading.features, truth, atol=1e-5, rtol=1e-5)
    # an MLP's first layer reads the image itself
    obs, target = observe(FedAvg(), mlp_task())
    reading = read_layer(obs, leaky_layers(obs)[0])
    assert torch.allclose(reading.features, target.x.flatten(), atol=1e-5)


def test_weight_decay_in_a_fedsgd_gradient_is_removed_before_the_ratio():
    obs, target = observe(FedAvg(weight_decay=0.05), cnn_task())
    reading = read_layer(obs, leaky_layers(obs)[0])
    truth = layer_input(obs.public.model, "fc1", dict(obs.public.model.named_parameters()), target.x)[0]
    assert torch.allclose(reading.features, truth, atol=1e-5, rtol=1e-5)


def test_the_head_free_replay_equals_the_true_lower_gradients_for_the_true_image():
    obs, target = observe(FedAvg(), cnn_task())
    layer = leaky_layers(obs)[0]
    reading = read_layer(obs, layer)
    keys = lower_keys(obs, layer.name)
    assert keys == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias"]
    params = {k: v.detach() for k, v in obs.public.model.named_parameters()}
    replay = replay_function(obs, layer.name, keys)
    features, grads = replay(params, target.x[0], params["fc1.weight"].T @ reading.delta)
    true = loss_gradient(obs.public.model, params, target.x, target.y, create_graph=False)
    for k, g in zip(keys, grads):
        assert torch.allclose(g, true[k], atol=1e-6, rtol=1e-4), k
    assert torch.allclose(features, reading.features, atol=1e-5, rtol=1e-5)


def test_it_needs_neither_the_head_nor_the_label_against_hyperfls_adaptive_observation():
    obs, target = observe(HyperFL(), cnn_task(), smooth=True)
    assert obs.public.classifier_key is None and "fc2.weight" not in obs.observed
    reading = read_layer(obs, leaky_layers(obs)[0])
    assert reading.layer.name == "fc1" and reading.exact
    rec = Analytic(iterations=300).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert rec.labels is None and rec.info["feature_source"] == "exact" and "conv1.weight" in rec.info["replayed"]
    truth, got = (target.x * 0.25 + 0.5).clamp(0, 1), (rec.images * 0.25 + 0.5).clamp(0, 1)
    flat = torch.full_like(truth, float(truth.mean()))
    # far above the no-information guess (a flat image of the true mean colour, even) after 300 steps
    assert float(psnr_per_image(truth, got)[0]) > float(psnr_per_image(truth, flat)[0]) + 5


def test_an_mlp_image_is_recovered_by_the_feature_match_alone():
    obs, target = observe(FedAvg(), mlp_task())
    rec = Analytic(iterations=400, tv=0.0, replay_weight=0.0).reconstruct(obs, torch.Generator(), SilentProgress())
    assert torch.allclose(rec.images, target.x.clamp(-2, 2), atol=1e-2)
    assert int(rec.labels[0]) == int(target.y[0])


def test_targets_share_a_tensor_and_each_keeps_its_own_random_stream():
    cases = [observe(FedAvg(), cnn_task(), seed=s) for s in range(3)]
    attack = Analytic(iterations=30, target_batch=3)
    gens = [torch.Generator().manual_seed(10 + s) for s in range(3)]
    together = attack.reconstruct_many([o for o, _ in cases], gens, SilentProgress())
    assert [r.info["targets_together"] for r in together] == [3, 3, 3]
    alone = attack.reconstruct(cases[1][0], torch.Generator().manual_seed(11), SilentProgress())
    assert torch.allclose(together[1].images, alone.images, atol=5e-2)  # the same problem, up to float order


def test_noise_and_updates_are_estimates_and_say_why():
    obs, _ = observe(DP(noise_multiplier=0.5), lenet_task())
    rec = Analytic(iterations=5).reconstruct(obs, torch.Generator(), SilentProgress())
    assert rec.info["feature_source"] == "estimate" and any("noise" in w for w in rec.info["not_exact_because"])
    obs, _ = observe(local_steps(FedAvg(), 3), cnn_task())
    reading = read_layer(obs, leaky_layers(obs)[0])
    assert not reading.exact and any("update" in w for w in reading.why_not_exact)


def test_zeroed_entries_are_left_out_of_the_ratio_not_read_as_zero():
    obs, target = observe(FedAvg(), cnn_task())
    layer = leaky_layers(obs)[0]
    dw = obs.observed["fc1.weight"].clone()
    dw[:, :100] = 0  # a defense zeroed 100 input columns
    dw[5, 200:300] = 0  # and some single entries
    pruned = dataclasses.replace(obs, observed={**obs.observed, "fc1.weight": dw})
    reading = read_layer(pruned, layer)
    truth = layer_input(obs.public.model, "fc1", dict(obs.public.model.named_parameters()), target.x)[0]
    assert int(reading.known.sum()) == 476 and not reading.exact
    assert torch.allclose(reading.features[100:], truth[100:], atol=1e-5, rtol=1e-5)


def test_without_a_readable_layer_it_falls_back_to_gradient_matching_and_says_so():
    obs, _ = observe(HyperFL(embedding_dim=3, hidden_dim=5), cnn_task(), knowledge="unaware")
    assert leaky_layers(obs) == []
    rec = Analytic(iterations=2).reconstruct(obs, torch.Generator(), SilentProgress())
    assert "no observed linear layer" in rec.info["fallback"]
    obs, _ = observe(FedAvg(), cnn_task(), n=200)  # more examples than fc1 has rows: no row space separates them
    rec = Analytic(iterations=1).reconstruct(obs, torch.Generator(), SilentProgress())
    assert "exceed fc1's 128 rows" in rec.info["fallback"] and rec.images.shape[0] == 200


@pytest.mark.parametrize("layer, fragment", [("fc9", "not an observed linear layer")])
def test_an_unknown_layer_name_falls_back(layer, fragment):
    obs, _ = observe(FedAvg(), cnn_task())
    rec = Analytic(iterations=2, layer=layer).reconstruct(obs, torch.Generator(), SilentProgress())
    assert fragment in rec.info["fallback"]


def test_a_batch_gradient_still_gives_away_the_inputs_of_examples_a_unit_sees_alone():
    from bench.inversion.isolation import isolated_inputs

    obs, target = observe(FedAvg(), mlp_task(), n=2, seed=2)
    layer = leaky_layers(obs)[0]
    found = isolated_inputs(obs, layer)
    assert found, "no unit of fc1 is reached by one example alone at this seed"
    truth = target.x.flatten(1)
    for f in found:  # each is one example's input, exactly
        assert min(float((f.features - t).abs().max()) for t in truth) < 1e-5 and f.rows >= 2
    noisy = dataclasses.replace(obs, observed={k: v + 1e-3 * torch.randn_like(v) for k, v in obs.observed.items()})
    assert isolated_inputs(noisy, layer) == []  # noise: no two rows agree any more


def test_the_replay_term_survives_a_confidently_classified_examples_tiny_gradients():
    """A saturated loss gives gradients of ~1e-16; the product of two squared norms then underflows
    float32, and the recovery must neither stall on a NaN gradient nor change its loss."""
    from dataclasses import replace

    from bench.attacks.analytic.plan import matching_loss
    from bench.inversion.linear import replay_function

    obs, target = observe(FedAvg(), cnn_task())
    attack = Analytic()
    plan = attack._plan(obs)
    tiny = replace(
        plan,
        target=replace(plan.target, upstream=plan.target.upstream * 1e-20),
        below=[b * 1e-20 for b in plan.below],
    )
    x = target.x[0].clone()
    assert abs(attack._score(tiny, x) - attack._score(plan, x)) < 1e-4
    image = torch.randn_like(x).requires_grad_(True)
    replay = replay_function(obs, plan.target.layer, plan.keys)
    tg = tiny.target
    loss = matching_loss(replay, 1.0, 1.0, plan.state, image, tg.features, tg.known, tg.upstream, tiny.below)
    (grad,) = torch.autograd.grad(loss, image)
    assert torch.isfinite(grad).all() and float(grad.abs().max()) > 0
