"""Invariants of the Observation contract, checked on the FedAvg defense."""

import torch

from bench.round import Round
from bench.functional import loss_gradient, sgd_steps
from bench.threat import LocalData
from bench.defenses.fedavg import FedAvg
from tests.helpers import lenet_task


def setup(**options):
    torch.manual_seed(0)
    d = FedAvg(**options)
    d.setup(lenet_task())
    return d, d.init_server()


def batch(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LocalData(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), n)


def test_fedsgd_observes_the_gradient_and_simulate_reproduces_it():
    d, server = setup()
    data = batch()
    obs = d.observe(server, {}, data, [], None)
    assert obs.public.observed_kind == "gradient" and obs.public.num_images == 2
    model = d.task.new_model()
    names = [n for n, _ in model.named_parameters()]
    assert list(obs.observed) == names
    for name, p in model.named_parameters():
        assert obs.observed[name].shape == p.shape and obs.observed[name].dtype == torch.float32
    sim = obs.simulate(data.x, data.y, {})
    assert all(torch.allclose(sim[k], obs.observed[k], atol=1e-7) for k in obs.observed)
    assert obs.public.classifier_key == "fc.weight" and obs.public.classifier_key in obs.observed


def test_multi_step_update_is_simulated_by_unrolling():
    d, server = setup(lr=0.1, momentum=0.5)
    d.use_round(Round("local", 2, 4, 2))
    data = LocalData(batch(4).x, batch(4).y, 2)
    obs = d.observe(server, {}, data, [], None)
    assert obs.public.observed_kind == "update" and obs.public.protocol["local_epochs"] == 2
    sim = obs.simulate(data.x, data.y, {})
    assert all(torch.allclose(sim[k], obs.observed[k], atol=1e-6) for k in obs.observed)
    x = data.x.clone().requires_grad_(True)
    loss = sum(v.pow(2).sum() for v in obs.simulate(x, data.y, {}).values())
    (gx,) = torch.autograd.grad(loss, x)
    assert gx.abs().sum() > 0  # differentiable through the unrolled steps


def test_simulate_under_vmap_matches_a_loop():
    d, server = setup()
    data = batch(1)
    obs = d.observe(server, {}, data, [], None)
    xs = torch.randn(3, 1, 3, 32, 32)
    ys = data.y.expand(3, 1)
    batched = torch.func.vmap(lambda x, y: obs.simulate(x, y, {}))(xs, ys)
    for r in range(3):
        single = obs.simulate(xs[r], ys[r], {})
        assert all(torch.allclose(batched[k][r], single[k], atol=1e-6) for k in single)


def test_soft_one_hot_labels_give_the_hard_label_gradient():
    d, server = setup()
    model = d.task.new_model()
    params = {k: v for k, v in server.items()}
    data = batch(2)
    hard = loss_gradient(model, params, data.x, data.y, create_graph=False)
    soft = loss_gradient(model, params, data.x, torch.nn.functional.one_hot(data.y, 10).float(), create_graph=False)
    assert all(torch.allclose(hard[k], soft[k], atol=1e-6) for k in hard)


def test_functional_sgd_matches_torch_optim():
    torch.manual_seed(1)
    model = lenet_task().new_model()
    data = batch(4)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    ours = sgd_steps(
        model, params, [(data.x, data.y)] * 3, lr=0.05, momentum=0.9, weight_decay=1e-3, create_graph=False
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(data.x), data.y).backward()
        opt.step()
    assert all(torch.allclose(ours[k], p, atol=1e-6) for k, p in model.named_parameters())


def test_aggregation_is_the_example_weighted_mean():
    d, server = setup(lr=0.5)
    a = d.client_update(server, {}, batch(1, seed=1), None)
    b = d.client_update(server, {}, LocalData(batch(3, seed=2).x, batch(3, seed=2).y, 3), None)
    assert a.kind == b.kind == "gradient" and a.num_examples == 1 and b.num_examples == 3
    new = d.aggregate(server, [a, b])
    for k in a.payload:
        assert torch.allclose(new[k], server[k] - 0.5 * (0.25 * a.payload[k] + 0.75 * b.payload[k]), atol=1e-6)
    assert a.metrics["bytes_uploaded"] == 4 * sum(v.numel() for v in a.payload.values())


def test_observe_does_not_mutate_state():
    d, server = setup()
    d.use_round(Round("local", 2, 2, 2))
    before = {k: v.clone() for k, v in server.items()}
    d.observe(server, {}, batch(2), [], None)
    assert all(torch.equal(before[k], server[k]) for k in server)


def test_pixel_bounds():
    d, server = setup()
    lo, hi = d.observe(server, {}, batch(1), [], None).public.pixel_bounds()
    assert torch.allclose(lo.flatten(), torch.full((3,), -2.0)) and torch.allclose(hi.flatten(), torch.full((3,), 2.0))
