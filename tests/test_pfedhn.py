"""pFedHN: the server's vector-Jacobian step against a hand computation, the exact observation, a short training run."""

import pytest
import torch

from bench.round import Round
from bench import registry
from bench.cli import main
from bench.errors import BenchError
from bench.results import read_rows
from bench.threat import LocalData
from bench.defenses.pfedhn import EMBEDDINGS, INDEX, MOMENTUM, PFedHN, _module_key
from tests.helpers import lenet_task

TINY = {"max_clients": 3, "embedding_dim": 3, "hidden_dim": 4, "n_hidden": 1, "inner_steps": 2}


def tiny(**options) -> PFedHN:
    d = registry.create("defense", "pfedhn", {**TINY, **options})
    d.setup(lenet_task())
    torch.manual_seed(0)
    return d


def data(n=4, batch=2, seed=1) -> LocalData:
    g = torch.Generator().manual_seed(seed)
    return LocalData(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), batch)


def hand_gradient(d: PFedHN, server, index: int, minus_delta: dict) -> dict:
    """The hypernetwork gradient of <θ, θ − θ̃> written out layer by layer (one hidden layer, n_hidden=1)."""
    v = server[EMBEDDINGS][index]
    w1, b1, w2, b2 = (server[k] for k in ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"))
    pre = w1 @ v + b1
    a = torch.relu(pre)
    h = w2 @ a + b2
    grads, gh = {}, torch.zeros_like(h)
    for name in d.shapes:
        key = f"heads.{_module_key(name)}"
        delta = minus_delta[name].reshape(-1)
        grads[f"{key}.weight"] = torch.outer(delta, h)
        grads[f"{key}.bias"] = delta
        gh = gh + server[f"{key}.weight"].T @ delta
    grads["mlp.2.weight"], grads["mlp.2.bias"] = torch.outer(gh, a), gh
    ga = (w2.T @ gh) * (pre > 0)
    grads["mlp.0.weight"], grads["mlp.0.bias"] = torch.outer(ga, v), ga
    table = torch.zeros_like(server[EMBEDDINGS])
    table[index] = w1.T @ ga
    grads[EMBEDDINGS] = table
    return grads


def test_server_step_is_the_vjp_of_the_generated_weights_clipped_then_sgd():
    d = tiny(lr=0.05, embed_lr=0.02, momentum=0.9, weight_decay=1e-3, max_grad_norm=0.1)
    server = d.init_server()
    client = d.init_client(2)
    upload = d.client_update(server, client, data(), torch.Generator().manual_seed(3))
    assert upload.kind == "update" and int(upload.payload[INDEX]) == 2
    # θ − θ̃ = −Δθ
    grads = hand_gradient(d, server, 2, {k: -upload.payload[k] for k in d.shapes})
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
    coef = min(1.0, 0.1 / (float(total) + 1e-6))
    assert coef < 1  # the clip is active in this case
    new = d.aggregate(server, [upload])
    for k, g in grads.items():
        lr = 0.02 if k == EMBEDDINGS else 0.05
        step = coef * g + 1e-3 * server[k]  # momentum buffer starts as the first step's direction
        torch.testing.assert_close(new[MOMENTUM + k], step, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(new[k], server[k] - lr * step, rtol=1e-5, atol=1e-7)
    # only the client's own embedding gets a gradient; the others only decay
    torch.testing.assert_close(new[EMBEDDINGS][0], server[EMBEDDINGS][0] * (1 - 0.02 * 1e-3))


def test_uploads_step_in_order_each_with_the_vjp_at_the_rounds_hypernetwork():
    d = tiny(lr=0.05, momentum=0.5, weight_decay=0.0, max_grad_norm=1e9, inner_steps=1)
    server = d.init_server()
    uploads = [
        d.client_update(server, d.init_client(i), data(seed=i), torch.Generator().manual_seed(i)) for i in (0, 1)
    ]
    assert all(u.kind == "gradient" for u in uploads)  # one inner step: θ − θ̃ = inner_lr × direction
    g0, g1 = (
        hand_gradient(d, server, i, {k: d.opt.inner_lr * u.payload[k] for k in d.shapes}) for i, u in enumerate(uploads)
    )
    new = d.aggregate(server, uploads)
    for k in g0:
        after_first = server[k] - 0.05 * g0[k]
        buffer = 0.5 * g0[k] + g1[k]
        torch.testing.assert_close(new[MOMENTUM + k], buffer, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(new[k], after_first - 0.05 * buffer, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 3])
def test_observation_is_the_clients_upload_and_the_simulator_replays_it_exactly(steps):
    d = tiny(inner_steps=steps, inner_max_grad_norm=0.05)  # a clip that binds: replayed too
    d.use_round(Round("fedsgd", 2) if steps == 1 else Round("local", 2, 2))  # local: its own inner steps
    server = d.init_server()
    client = d.init_client(1)
    target = data(n=2, batch=2)
    obs = d.observe(server, client, target, [], None)
    assert obs.knowledge == "adaptive" and obs.exact and not obs.unknowns
    assert obs.public.observed_kind == ("gradient" if steps == 1 else "update")
    assert obs.public.classifier_key == "fc.weight" and (obs.public.protocol["local_steps"] or 1) == steps
    theta = d.generate(server, client[INDEX])
    for k, v in obs.public.model.state_dict().items():  # the server knows the generated weights exactly
        assert torch.equal(v, theta[k])
    upload = d.client_update(server, client, target, None)
    simulated = obs.simulate(target.x, target.y, {})
    for k, v in obs.observed.items():
        assert torch.equal(upload.payload[k], v)
        torch.testing.assert_close(simulated[k], v, rtol=1e-5, atol=1e-7)
    if steps == 1:  # the sent direction is the clipped gradient + weight decay: θ̃ = θ − inner_lr × direction
        g = torch.cat([v.flatten() for k, v in obs.observed.items()])
        decay = torch.cat([d.opt.inner_weight_decay * theta[k].flatten() for k in obs.observed])
        assert float((g - decay).norm()) == pytest.approx(0.05, rel=1e-4)


def test_predict_uses_each_clients_personalised_network():
    d = tiny()
    server = d.init_server()
    x = data().x
    a, b = (d.predict(server, d.init_client(i), x) for i in (0, 1))
    assert a.shape == (4, 10) and not torch.allclose(a, b)


def test_too_many_clients_and_models_with_buffers_are_one_line_errors():
    d = tiny()
    with pytest.raises(
        BenchError, match="max_clients=3 clients, so client 3 has none; use --defense-arg max_clients=N"
    ):
        d.init_client(3)
    with pytest.raises(BenchError, match="without buffers"):
        registry.create("defense", "pfedhn", {}).setup(
            lenet_task(model=registry.create("model", "convnet", {"width": 4}))
        )


def test_two_rounds_of_training_run(tmp_path):
    out = tmp_path / "train"
    assert (
        main(
            [
                "train",
                "--defense",
                "pfedhn",
                "--defense-arg",
                "inner_steps=5",
                "--rounds",
                "2",
                "--clients",
                "4",
                "--train-per-client",
                "20",
                "--test-per-client",
                "10",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    row = read_rows(out / "results.jsonl")[0][0]
    assert row["defense"] == "pfedhn" and len(row["accuracy_per_round"]) == 2
    assert row["history"][-1]["server_seconds"] > 0 and row["bytes_uploaded_per_client_per_round"] > 0


def test_training_rows_say_each_client_is_scored_with_its_own_generated_network():
    assert registry.create("defense", "pfedhn", {}).evaluated_model() == "personalised"
