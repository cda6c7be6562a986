"""HyperFL: the protocol matches the official code's semantics, and its threat model is exact."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.round import Round
from bench.defense import FLTask
from bench.errors import BenchError
from bench.functional import cross_entropy, forward
from bench.inversion import GradientMatching
from tests.helpers import QUICK_TRAIN, cnn_task
from bench.models.convnet import ConvNet
from bench.threat import LocalData, Upload
from bench.defenses.hyperfl import (
    EMBEDDING,
    HEAD_BIAS,
    HEAD_WEIGHT,
    PRIVATE,
    HyperFL,
    HyperFLModel,
    HyperFLProtocol,
    estimate_embedding,
    first_layer_data_part,
    hyper_gradient,
    local_round,
    weight_decay_factor,
)


class Tiny(nn.Module):
    """conv 1→2 k3 + fc 32→4 feature extractor, head fc2 4→3 (on 1×6×6 images)."""

    classifier_name = "fc2"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.fc1 = nn.Linear(32, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc2(F.leaky_relu(self.fc1(F.leaky_relu(self.conv1(x)).flatten(1))))


def tiny_task(local_epochs=1):
    return FLTask(
        new_model=Tiny,
        model_name="tiny",
        classifier="fc2",
        image_shape=(1, 6, 6),
        num_classes=3,
        mean=(0.5,),
        std=(0.25,),
        device=torch.device("cpu"),
        local_epochs=local_epochs,
    )


def tiny(seed=0, knowledge=None, setting="fedsgd", examples=None, batch=1, epochs=1, head=None, **options):
    """A tiny HyperFL attacked at ``setting`` (fedsgd, or a local round of ``epochs`` epochs over ``examples``
    examples in batches of ``batch``; ``head``: its head epochs, None = HyperFL's own)."""
    torch.manual_seed(seed)
    options = {"embedding_dim": 3, "hidden_dim": 5, **options}
    d = HyperFL(**options)
    d.use_knowledge(knowledge)
    if setting == "local":
        d.use_round(Round("local", batch, examples, epochs, head))
    d.setup(tiny_task())
    server = d.init_server()
    return d, server, d.init_client(0)


def data(n=4, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LocalData(torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g), batch)


@pytest.mark.parametrize("shape, generated", [((3, 32, 32), 106_400), ((1, 28, 28), 115_776)])
def test_hypernetwork_generates_every_feature_extractor_tensor_of_the_paper_cnn(shape, generated):
    torch.manual_seed(0)
    d = HyperFL()
    d.setup(cnn_task(shape))
    target = d.task.new_model()
    expected = {n: p.shape for n, p in target.named_parameters() if not n.startswith("fc2.")}
    with torch.no_grad():
        out = d.model.hypernetwork(torch.randn(64))
    assert {n: t.shape for n, t in out.items()} == expected
    assert sum(t.numel() for t in out.values()) == generated
    # the official CIFAR hypernetwork: 64→128 + one head per tensor = 13.7 M parameters
    server = d.init_server()
    assert sum(v.numel() for v in server.values()) == 64 * 128 + 128 + 129 * generated
    assert d.predict(server, d.init_client(0), torch.randn(2, *shape)).shape == (2, 10)


def test_only_the_hypernetwork_update_is_uploaded():
    d, server, client = tiny()
    before = {k: v.clone() for k, v in client.items()}
    upload = d.client_update(server, client, data(), torch.Generator().manual_seed(1))
    assert upload.kind == "update" and not upload.buffers and upload.num_examples == 4
    assert set(upload.payload) == set(server) == set(d.model.hypernetwork.state_dict())
    assert all(upload.payload[k].shape == server[k].shape for k in server)
    # the private pieces moved on the client and appear nowhere in what it sent
    assert set(client) == set(PRIVATE) and all(not torch.equal(client[k], before[k]) for k in PRIVATE)
    sent = torch.cat([v.flatten() for v in upload.payload.values()])
    for k in PRIVATE:
        for value in (client[k], before[k]):
            flat = value.flatten()
            windows = sent.unfold(0, flat.numel(), 1)
            assert not torch.isclose(windows, flat, atol=1e-6).all(dim=1).any(), k
    assert upload.metrics["bytes_uploaded"] == 4 * sum(v.numel() for v in server.values())
    obs = HyperFL(embedding_dim=3, hidden_dim=5)
    obs.use_knowledge("unaware")
    obs.setup(tiny_task())
    assert set(obs.observe(server, client, data(2, 2), [], None).observed) == set(server)


def test_aggregation_is_the_size_weighted_mean_of_the_new_hypernetworks():
    d, server, _ = tiny()
    g = torch.Generator().manual_seed(3)
    new = [{k: v + torch.randn(v.shape, generator=g) for k, v in server.items()} for _ in range(3)]
    sizes = [10, 30, 60]
    uploads = [Upload({k: n[k] - server[k] for k in server}, s) for n, s in zip(new, sizes)]
    merged = d.aggregate(server, uploads)
    for k in server:
        expected = sum(s / 100 * n[k] for n, s in zip(new, sizes))
        assert torch.allclose(merged[k], expected, atol=1e-6)


def test_local_round_equals_the_official_code_with_torch_optimisers():
    """One round as cnn/methods/hyperfl.py runs it: SGD on the head, then SGD on hypernetwork +
    embedding with each group's gradient norm clipped (a small clip so clipping is active)."""
    d, server, client = tiny(head_epochs=1, local_epochs=2, max_grad_norm=0.05)
    batches = data(4, 2)
    ref = copy.deepcopy(d.model)
    ref.hypernetwork.load_state_dict(server)
    with torch.no_grad():
        for k in PRIVATE:
            ref.get_parameter(k).copy_(client[k])
    opt = torch.optim.SGD(ref.head.parameters(), lr=0.1, momentum=0.5, weight_decay=5e-4)
    for x, y in batches.batches():
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    opt = torch.optim.SGD(
        [{"params": ref.hypernetwork.parameters()}, {"params": [ref.embedding]}],
        lr=0.02,
        momentum=0.5,
        weight_decay=5e-4,
    )
    for _ in range(2):
        for x, y in batches.batches():
            opt.zero_grad()
            ref.zero_grad()
            F.cross_entropy(ref(x), y).backward()
            norm = torch.nn.utils.clip_grad_norm_(ref.hypernetwork.parameters(), 0.05)
            torch.nn.utils.clip_grad_norm_([ref.embedding], 0.05)
            opt.step()
    assert norm > 0.05
    upload = d.client_update(server, client, batches, None)
    for k, v in ref.hypernetwork.state_dict().items():
        assert torch.allclose(server[k] + upload.payload[k], v, atol=1e-6), k
    for k in PRIVATE:
        assert torch.allclose(client[k], ref.get_parameter(k), atol=1e-6), k


def test_gradients_through_the_hypernetwork_match_finite_differences():
    d, server, client = tiny()
    model = d.model.double()
    hyper = {f"hypernetwork.{k}": v.double() for k, v in server.items()}
    private = {k: v.double() for k, v in client.items()}
    batch = data(2, 2)
    x, y = batch.x.double(), batch.y
    grads = hyper_gradient(model, hyper, private, x, y, create_graph=False)

    def loss(h):
        return float(cross_entropy(forward(model, {**h, **private}, x), y))

    g = torch.Generator().manual_seed(0)
    for name in (
        "hypernetwork.mlp.0.weight",
        "hypernetwork.heads.conv1__weight.weight",
        "hypernetwork.heads.fc1__bias.bias",
    ):
        for _ in range(3):
            idx = tuple(int(torch.randint(0, s, (1,), generator=g)) for s in hyper[name].shape)
            eps = 1e-6
            plus, minus = dict(hyper), dict(hyper)
            plus[name] = hyper[name].clone()
            plus[name][idx] += eps
            minus[name] = hyper[name].clone()
            minus[name][idx] -= eps
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            assert abs(numeric - float(grads[name][idx])) < 1e-6 * max(1.0, abs(numeric)), (name, idx)


@pytest.mark.parametrize("setting", ["fedsgd", "local"])
@pytest.mark.parametrize("attacker", ["unaware", "adaptive", "oracle"])
def test_simulate_with_the_true_data_and_unknowns_reproduces_the_observation(setting, attacker):
    d, server, client = tiny(knowledge=attacker, setting=setting, examples=2, epochs=2)
    target = data(1 if setting == "fedsgd" else 2, 1)
    obs = d.observe(server, client, target, [], torch.Generator().manual_seed(5))
    assert obs.knowledge == attacker and obs.public.classifier_key is None
    assert obs.public.observed_kind == ("gradient" if setting == "fedsgd" else "update")
    truth = {k: client[k] for k in obs.unknowns}
    sim = obs.simulate(target.x, target.y, truth)
    assert set(sim) == set(obs.observed)
    for k in obs.observed:
        assert torch.allclose(sim[k], obs.observed[k], atol=1e-5, rtol=1e-4), k
    expected = {"unaware": False, "adaptive": True, "oracle": False}[attacker]
    assert all(u.optimisable == expected for u in obs.unknowns.values())
    if attacker == "oracle":
        assert all(torch.equal(u.guess, client[k]) for k, u in obs.unknowns.items())
    if attacker == "unaware":
        assert all(not torch.equal(u.guess, client[k]) for k, u in obs.unknowns.items())


def test_observe_does_not_touch_the_client_or_the_server():
    d, server, client = tiny(setting="local", examples=2)
    s0, c0 = {k: v.clone() for k, v in server.items()}, {k: v.clone() for k, v in client.items()}
    d.observe(server, client, data(2, 1), [], None)
    assert all(torch.equal(server[k], s0[k]) for k in s0) and all(torch.equal(client[k], c0[k]) for k in c0)


def test_adaptive_attacker_recovers_the_generated_weights_from_one_fedsgd_gradient():
    torch.manual_seed(0)
    d = HyperFL()
    d.setup(cnn_task((3, 32, 32)))
    server, client = d.init_server(), d.init_client(0)
    g = torch.Generator().manual_seed(0)
    target = LocalData(torch.randn(1, 3, 32, 32, generator=g), torch.tensor([4]), 1)
    obs = d.observe(server, client, target, [], g)
    with torch.no_grad():
        truth = forward(d.model.hypernetwork, server, client[EMBEDDING])
    net = obs.public.model
    for name, value in truth.items():
        assert torch.allclose(net.get_parameter(name), value, rtol=1e-5, atol=1e-5 * float(value.abs().max())), name
    diagnostics = d.diagnostics(server, client, target, obs)  # the evaluator's, never in the observation
    assert diagnostics["recovered_embedding_max_error"] < 1e-4 and diagnostics["recovered_weight_max_error"] < 1e-4
    assert not set(diagnostics) & set(obs.metrics)
    # it now faces FedSGD on the CNN with only the head unknown: the observed tensors are the generated
    # feature extractor's gradient, reproduced by its simulator with the true head
    assert set(obs.observed) == set(truth) and set(obs.unknowns) == {HEAD_WEIGHT, HEAD_BIAS}
    sim = obs.simulate(target.x, target.y, {k: client[k] for k in obs.unknowns})
    assert all(
        torch.allclose(sim[k], obs.observed[k], rtol=1e-4, atol=1e-6 * float(obs.observed[k].abs().max())) for k in sim
    )


def obs_grad_is_informative(d, server, client, target):
    """Some hidden unit is active, so the first layer's gradient is not zero."""
    hyper = {f"hypernetwork.{k}": v for k, v in server.items()}
    grads = hyper_gradient(d.model, hyper, {k: client[k] for k in PRIVATE}, target.x, target.y, create_graph=False)
    return float(grads["hypernetwork.mlp.0.bias"].abs().max()) > 1e-4


def test_embedding_estimate_from_a_one_step_update_is_exact():
    d, server, client = tiny(setting="local", examples=1, head=0, hidden_dim=16)
    target = data(1, 1)
    assert obs_grad_is_informative(d, server, client, target)
    obs = d.observe(server, client, target, [], None)
    estimate = estimate_embedding(server, obs.observed, d.round_protocol(), 1)
    assert torch.allclose(estimate, client[EMBEDDING], atol=1e-4)
    assert obs.unknowns[EMBEDDING].guess.allclose(estimate)


@pytest.mark.parametrize("setting", ["fedsgd", "local"])
@pytest.mark.parametrize("attacker", ["unaware", "adaptive"])
def test_simulators_are_differentiable_and_vmappable(setting, attacker):
    d, server, client = tiny(knowledge=attacker, setting=setting, examples=2, batch=2)
    target = data(2, 2)
    obs = d.observe(server, client, target, [], torch.Generator().manual_seed(1))
    objective = GradientMatching(obs, distance="cosine")
    x = torch.randn(3, 2, 1, 6, 6, requires_grad=True)
    y = torch.softmax(torch.randn(3, 2, 3), -1).requires_grad_(True)
    unknowns = {k: u.guess.expand(3, *u.shape).clone().requires_grad_(u.optimisable) for k, u in obs.unknowns.items()}
    losses = objective.loss_batched(x, y, unknowns)
    assert losses.shape == (3,) and not hasattr(objective, "vmap_failed")
    looped = torch.stack([objective.loss(x[r], y[r], {k: v[r] for k, v in unknowns.items()}) for r in range(3)])
    assert torch.allclose(losses, looped, atol=1e-5)
    losses.sum().backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    for k, v in unknowns.items():
        if v.requires_grad:
            assert v.grad.abs().sum() > 0, k


def test_shared_init_gives_every_client_the_same_start_and_private_init_does_not():
    d, _, a = tiny(client_init="shared")
    b = d.init_client(1)
    assert all(torch.equal(a[k], b[k]) for k in PRIVATE)
    d, _, a = tiny(client_init="private")
    b = d.init_client(1)
    assert not torch.equal(a[EMBEDDING], b[EMBEDDING])


def test_evaluate_local_scores_the_model_at_the_end_of_the_local_round():
    d, server, client = tiny(evaluate="local")
    upload = d.client_update(server, client, data(), None)
    new = d.aggregate(server, [upload, Upload({k: -v for k, v in upload.payload.items()}, 4)])
    x = data(3, 3, seed=9).x
    local = {k: server[k] + upload.payload[k] for k in server}
    expected = forward(
        d.model, {**{f"hypernetwork.{k}": v for k, v in local.items()}, **{k: client[k] for k in PRIVATE}}, x
    )
    assert torch.allclose(d.predict(new, client, x), expected, atol=1e-6)


def test_models_with_batchnorm_are_refused_with_a_one_line_error():
    task = FLTask(
        new_model=lambda: ConvNet(width=4).build((3, 32, 32), 10),
        model_name="convnet",
        classifier="fc",
        image_shape=(3, 32, 32),
        num_classes=10,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=torch.device("cpu"),
    )
    with pytest.raises(BenchError, match="without buffers"):
        HyperFL().setup(task)


def test_unaware_guesses_are_drawn_like_a_clients_from_the_attack_stream_only():
    d, _, client = tiny(knowledge="unaware")
    state = torch.get_rng_state()
    a, b = d._guess(torch.Generator().manual_seed(0)), d._guess(torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) and a[k].shape == client[k].shape for k in PRIVATE)
    assert a[HEAD_WEIGHT].abs().max() <= 0.5  # nn.Linear(4, 3): U(-1/2, 1/2)
    assert isinstance(d.model, HyperFLModel)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_factored_simulator_matches_the_victim_when_clipping_is_active(momentum):
    d, server, client = tiny(
        knowledge="oracle", setting="local", examples=2, epochs=3, max_grad_norm=1e-3, momentum=momentum
    )
    target = data(2, 1)
    obs = d.observe(server, client, target, [], None)
    sim = obs.simulate(target.x, target.y, {k: client[k] for k in PRIVATE})
    for k in obs.observed:
        assert torch.allclose(sim[k], obs.observed[k], atol=1e-6, rtol=1e-4), k


def test_attack_after_training_rounds_runs_end_to_end(tmp_path):
    from bench.cli import main
    from bench.results import read_rows

    args = [
        "run",
        "--defense",
        "hyperfl",
        "--attack",
        "dlg",
        "--attack-arg",
        "iterations=2",
        "--attack-arg",
        "max_iter=2",
        "--dataset",
        "digits",
        "--model",
        "lenet",
        "--clients",
        "2",
        "--train-per-client",
        "20",
        "--test-per-client",
        "10",
        "--attack-round",
        "1",
        "--quiet",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    row = read_rows(tmp_path / "results.jsonl")[0][0]
    assert row["knowledge"] == "adaptive" and row["attack_round"] == 1 and HyperFL.default_model == "cnn"
    assert row["diagnostics"]["recovered_weight_max_error"] < 1e-3
    assert "recovered_weight_max_error" not in row["defense_metrics"]
    assert row["config"]["run"]["knowledge"] == "adaptive"


def test_train_presets_apply_the_protocol_the_model_and_the_defense_preset():
    from bench.protocols import resolve
    from bench.components import Choice

    r = resolve("quick", Choice("fedavg"), Choice("photos"), None, {"clients": None, "rounds": 3})
    assert r.defense.args == {"preset": "quick"} and r.model.name == "cnn"
    assert r.federation.clients == 10 and r.federation.local_epochs == 5 and r.federation.rounds == 3
    assert resolve("quick", Choice("hyperfl"), Choice("photos"), None, {}).federation.rounds == 20
    r = resolve("paper", Choice("hyperfl"), Choice("cifar10"), Choice("lenet"), {})
    assert r.defense.args == {} and r.model.name == "lenet" and r.extra["defense_preset_applied"] is None
    assert (r.federation.clients, r.federation.rounds, r.federation.train_per_client, r.federation.test_per_client) == (
        20,
        200,
        600,
        300,
    )
    r = resolve("paper", Choice("fedavg", {"preset": "hyperfl-paper", "lr": "0.1"}), Choice("emnist"), None, {})
    assert r.defense.args == {"preset": "hyperfl-paper", "lr": "0.1"} and r.federation.train_per_client == 1000
    r = resolve(None, Choice("fedavg"), Choice("photos"), None, {"clients": 4})
    assert r.model is None and r.federation.clients == 4 and r.extra == {}
    with pytest.raises(BenchError, match="unknown training protocol 'fast'; valid: 'quick' or 'paper'"):
        resolve("fast", Choice("fedavg"), Choice("photos"), None, {})


def test_train_cli_applies_a_preset_under_explicit_flags(tmp_path):
    from bench.cli import main
    from bench.results import read_rows

    args = [*QUICK_TRAIN.format(defense="hyperfl", extra="").split(), str(tmp_path)]
    assert main(args) == 0
    row = read_rows(tmp_path / "results.jsonl")[0][0]
    fed = row["config"]["run"]["federation"]
    assert (fed["clients"], fed["rounds"], fed["batch_size"], fed["partition"]) == (2, 1, 50, "dominant")
    assert row["config"]["run"]["protocol"] == "quick" and row["model"] == "lenet"
    hyper = row["bytes_uploaded_per_client_per_round"]
    assert hyper > 0 and 0 <= row["final_accuracy"] <= 1


@pytest.mark.parametrize("attacker", ["adaptive", "unaware", "oracle"])
def test_hyperfl_conforms_under_every_attacker(attacker):
    """bench check-defense, FedSGD; the oracle hands over the true embedding and head by declaration
    (Unknown.revealed), which the private-state check accepts, while an unaware guess must differ."""
    from bench.conformance import check_defense
    from bench.components import Choice

    report = check_defense("hyperfl", {}, Choice("lenet"), knowledge=attacker)
    # FedSGD observes one hypernetwork gradient, training uploads a round's update: matches-client may warn
    assert all(
        r.status in ("pass", "skip") or (r.name, r.status) == ("matches-client", "warn") for r in report.results
    ), report.render()
    assert "private-state" in {r.name for r in report.results if r.status == "pass"}


def test_an_attacked_round_holds_its_examples_and_the_clients_population():
    whole = data(6, 2, seed=3)
    batch = whole.attacked_batch(torch.tensor([4, 1]))
    assert torch.equal(batch.x, whole.x[[4, 1]]) and batch.population == 6 and batch.batch_size == 2


@pytest.mark.parametrize("attacker", ["unaware", "adaptive", "oracle"])
def test_a_local_round_runs_over_the_rounds_examples_and_every_one_is_a_target(attacker):
    """The attacked client's round is the protocol's: its head epoch, then its local epochs over the round's
    examples (here 2 batches of 1), so the head epoch does not just fit one image. Every attacker
    reconstructs all of the round's examples; the oracle is handed the embedding and head only."""
    d, server, client = tiny(knowledge=attacker, setting="local", examples=2, epochs=2)
    target = data(2, 1, seed=1)
    obs = d.observe(server, client, target, [], torch.Generator().manual_seed(5))
    batches = list(target.batches())
    d.model.eval()
    new, _ = local_round(
        d.model,
        {f"hypernetwork.{k}": v for k, v in server.items()},
        dict(client),
        batches,
        batches * 2,
        d.round_protocol(),
        create_graph=False,
    )
    for k in server:
        assert torch.allclose(obs.observed[k], new[f"hypernetwork.{k}"] - server[k], atol=1e-7), k
    assert obs.public.num_images == 2 and obs.exact and obs.passes == 3
    assert obs.public.protocol["round"] == {**Round("local", 1, 2, 2).as_dict()}
    sim = obs.simulate(target.x, target.y, {k: client[k] for k in obs.unknowns})
    assert all(torch.allclose(sim[k], obs.observed[k], atol=1e-5, rtol=1e-4) for k in obs.observed)
    alone = tiny(knowledge=attacker, setting="local", examples=1, epochs=2)[0]
    one = alone.observe(server, client, data(1, 1, seed=1), [], torch.Generator().manual_seed(5))
    assert not torch.allclose(one.observed["mlp.0.weight"], obs.observed["mlp.0.weight"])


def test_generator_heads_can_start_at_their_layers_fan_in():
    """generator_init=fan_in: each generated tensor starts with about its layer's own default-init variance;
    the official default init generates every tensor at one scale, larger for layers of large fan-in."""
    torch.manual_seed(0)
    d = HyperFL(generator_init="fan_in")
    d.setup(cnn_task((3, 32, 32)))
    std = {}
    for init in ("fan_in", "default"):
        torch.manual_seed(0)
        other = HyperFL(generator_init=init)
        other.setup(cnn_task((3, 32, 32)))
        server = other.init_server()
        generated = [forward(other.model.hypernetwork, server, torch.randn(64)) for _ in range(8)]
        std[init] = {k: float(torch.stack([g[k] for g in generated]).std()) for k in generated[0]}
    fan_in = d.model.fan_in
    for k in ("conv1.weight", "conv3.weight", "fc1.weight"):
        want = (1 / (3 * fan_in[k])) ** 0.5
        assert 0.5 * want < std["fan_in"][k] < 2 * want, k
        assert std["default"][k] > 3 * want, k  # the official init: several times the layer's own scale
    assert abs(std["default"]["fc1.weight"] / std["default"]["conv1.weight"] - 1) < 0.5


@pytest.mark.parametrize("momentum, steps", [(0.0, 1), (0.5, 7), (0.9, 25)])
def test_weight_decay_drift_of_the_first_layer_is_removed_exactly(momentum, steps):
    """torch.optim.SGD with weight decay and momentum: with zero data gradient the drift-free update is
    zero; with a data gradient of a fixed embedding e (δ_t eᵀ, δ_t) the estimate is e, to float64
    precision — where the first-order drift of the earlier estimate left an error."""
    p = HyperFLProtocol(
        head_epochs=1, head_lr=0.1, local_epochs=1, lr=0.5, momentum=momentum, weight_decay=0.05, max_grad_norm=50.0
    )
    g = torch.Generator().manual_seed(0)
    a0, c0 = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    e = torch.randn(3, generator=g, dtype=torch.float64)
    for with_data in (False, True):
        a, c = a0.clone().requires_grad_(), c0.clone().requires_grad_()
        opt = torch.optim.SGD([a, c], lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        for _ in range(steps):
            delta = torch.randn(6, generator=g, dtype=torch.float64) * with_data
            a.grad, c.grad = torch.outer(delta, e), delta.clone()
            opt.step()
        server = {"mlp.0.weight": a0, "mlp.0.bias": c0}
        update = {"mlp.0.weight": (a - a0).detach(), "mlp.0.bias": (c - c0).detach()}
        data_a, data_c = first_layer_data_part(server, update, p, steps)
        if not with_data:
            assert float(data_a.abs().max()) < 1e-14 and float(data_c.abs().max()) < 1e-14
            assert weight_decay_factor(p.lr, p.momentum, p.weight_decay, steps) == pytest.approx(
                float((a[0, 0] / a0[0, 0]).detach()), rel=1e-12
            )
        else:
            assert torch.allclose(estimate_embedding(server, update, p, steps), e, atol=1e-10)
    if steps > 1:  # the earlier first-order drift, lr·wd·Σ_t Σ_s≤t momentum^(t−s), is not exact
        first_order = p.lr * p.weight_decay * sum(sum(momentum ** (t - s) for s in range(t + 1)) for t in range(steps))
        assert abs(first_order - (1 - weight_decay_factor(p.lr, p.momentum, p.weight_decay, steps))) > 1e-4


def test_the_harness_runs_hyperfls_local_round_from_the_cli(tmp_path):
    from bench.cli import main
    from bench.results import read_rows

    args = [
        "run",
        "--defense",
        "hyperfl",
        "--round",
        "local",
        "--local-examples",
        "2",
        "--attack",
        "dlg",
        "--attack-arg",
        "iterations=1",
        "--attack-arg",
        "max_iter=1",
        "--dataset",
        "digits",
        "--model",
        "lenet",
        "--clients",
        "2",
        "--train-per-client",
        "6",
        "--test-per-client",
        "2",
        "--quiet",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    row = read_rows(tmp_path / "results.jsonl")[0][0]
    assert row["round"]["local_examples"] == 2 and row["num_reconstructed"] == 2
    assert (
        "embedding_estimate_cosine" in row["diagnostics"] and "embedding_estimate_cosine" not in row["defense_metrics"]
    )


def test_the_generated_replay_of_a_local_round_is_exact_for_one_step_and_close_for_two():
    """local_replay=generated: the update's data part gives the generated network and Σ_s β_s g_s; with one
    hypernetwork step that is exact (the true images and head replay it), with two the network moves a
    little between the steps and the replay is close, not exact."""
    d, server, client = tiny(knowledge="adaptive", setting="local", examples=1, local_replay="generated", head=0)
    head = {k: client[k] for k in (HEAD_WEIGHT, HEAD_BIAS)}
    one = d.observe(server, client, data(1, 1, seed=1), [], torch.Generator().manual_seed(5))
    assert one.exact and one.public.num_images == 1
    assert d.diagnostics(server, client, data(1, 1, seed=1), one)["recovered_weight_max_error"] < 1e-5
    sim = one.simulate(data(1, 1, seed=1).x, data(1, 1, seed=1).y, head)
    assert all(torch.allclose(sim[k], one.observed[k], rtol=1e-4, atol=1e-7) for k in one.observed)
    d.use_round(Round("local", 1, 2, 1, 0))
    target = data(2, 1, seed=1)
    two = d.observe(server, client, target, [], torch.Generator().manual_seed(5))
    assert not two.exact and two.public.num_images == 2 and any("local_replay=generated" in n for n in two.notes)
    sim = two.simulate(target.x, target.y, head)
    cos = sum((sim[k] * two.observed[k]).sum() for k in sim) / (
        sum((v**2).sum() for v in sim.values()).sqrt() * sum((v**2).sum() for v in two.observed.values()).sqrt()
    )
    assert float(cos.detach()) > 0.99
