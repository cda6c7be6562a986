"""Soteria: the feature scores, the column mask, what the server sees and replays."""

import torch

from bench.conformance import check_defense
from bench.functional import forward
from bench.sgd_defense import SGD_OPTIONS
from bench.defenses.fedavg import FedAvg
from bench.defenses.soteria import Soteria, column_mask, feature_scores
from bench.threat import LocalData
from tests.helpers import lenet_task


def batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LocalData(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g), n)


def setup(shape=(3, 16, 16), **options):
    torch.manual_seed(0)
    d = Soteria(**options)
    d.setup(lenet_task(image_shape=shape))
    ref = FedAvg(**{o.name: d.config[o.name] for o in SGD_OPTIONS})
    ref.setup(d.task)
    return d, ref, d.init_server()


def brute_force_scores(model, server, x):
    """One backward pass per feature, as the authors' loop does: Σ_n ‖∂r_f/∂x_n‖ / (r_f(x_n) + 0.1)."""
    params = {k: v for k, v in server.items()}
    x = x.clone().requires_grad_(True)
    feats = []
    handle = model.fc.register_forward_pre_hook(lambda _, inputs: feats.append(inputs[0]))
    forward(model.eval(), params, x)
    handle.remove()
    r = feats[0].flatten(1)
    scores = torch.zeros(r.shape[1])
    for f in range(r.shape[1]):
        (gx,) = torch.autograd.grad(r[:, f].sum(), x, retain_graph=True)
        scores[f] = (gx.flatten(1).norm(dim=1) / (r[:, f].detach() + 0.1)).sum()
    return scores


def test_feature_scores_match_one_backward_pass_per_feature():
    d, _, server = setup()
    x = batch(3).x
    fast = feature_scores(d.model, "fc", server, x, chunk=2)
    assert fast.shape == (192,)  # 12 channels x 4 x 4 features enter LeNet's classifier at 16x16
    assert torch.allclose(fast, brute_force_scores(d.model, server, x), rtol=1e-4, atol=1e-6)


def test_the_mask_drops_the_lowest_scoring_fraction():
    scores = torch.linspace(1, 2, 100)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    mask = column_mask(scores, 0.6)
    assert int((mask == 0).sum()) == 60 and scores[mask == 0].max() < scores[mask == 1].min()
    assert bool(column_mask(scores, 0.0).all())


def test_observe_zeroes_classifier_columns_only_and_the_masked_replay_is_exact():
    d, ref, server = setup(ratio=0.5)
    data = batch(2)
    obs, clean = d.observe(server, {}, data, [], None), ref.observe(server, {}, data, [], None)
    for k, v in clean.observed.items():
        if k != "fc.weight":
            assert torch.equal(obs.observed[k], v)
    zero_columns = (obs.observed["fc.weight"] == 0).all(0)
    assert int(zero_columns.sum()) == 96 == obs.metrics["defended_features"]
    assert torch.equal(obs.observed["fc.weight"][:, ~zero_columns], clean.observed["fc.weight"][:, ~zero_columns])
    sim = obs.simulate(data.x, data.y, {})
    assert obs.exact and all(torch.equal(sim[k], obs.observed[k]) for k in sim)


def test_the_clean_replay_ignores_the_defense():
    d, ref, server = setup()
    d.use_knowledge("unaware")
    data = batch(1)
    obs = d.observe(server, {}, data, [], None)
    sim, full = obs.simulate(data.x, data.y, {}), ref.observe(server, {}, data, [], None).observed
    assert not obs.exact and obs.knowledge == "unaware"
    assert all(torch.allclose(sim[k], full[k]) for k in sim)


def test_soteria_passes_check_defense():
    report = check_defense("soteria", {"momentum": "0.5"})
    assert all(r.status == "pass" for r in report.results), report.render()
