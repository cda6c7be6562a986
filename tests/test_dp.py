"""The dp defense: clipping and noise as specified, Opacus' accounting, the simulator, one-line errors."""

import math
import warnings

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from bench.round import Round
from bench.cli import main
from bench.conformance import check_defense
from bench.errors import BenchError
from bench.functional import loss_gradient, per_example_gradients
from bench.models.convnet import ConvNet
from bench.results import read_rows, to_jsonable
from bench.threat import LocalData
from bench.defenses.dp import DP, RDP_ORDERS, _spent, dp_sgd_gradient, epsilon_spent, global_norm, privacy_spent
from bench.defenses.fedavg import FedAvg
from tests.helpers import lenet_task


def make(defense=DP, task=None, round_=None, **options):
    torch.manual_seed(0)
    d = defense(**options)
    d.setup(task or lenet_task())
    if round_ is not None:
        d.use_round(round_)
    return d, d.init_server()


#: One epoch over 4 examples in batches of 2 (two steps).
EPOCH_OF_4 = Round("local", 2, 4, 1)


def batch(n=4, seed=0, batch_size=None, population=None):
    g = torch.Generator().manual_seed(seed)
    return LocalData(
        torch.randn(n, 3, 32, 32, generator=g),
        torch.randint(0, 10, (n,), generator=g),
        batch_size or n,
        population=population,
    )


def params_of(d, server):
    return {k: server[k] for k, _ in d.model.named_parameters()}


def test_per_example_gradients_match_one_example_at_a_time():
    d, server = make()
    data = batch(3)
    per = per_example_gradients(d.model, params_of(d, server), data.x, data.y)
    for i in range(3):
        one = loss_gradient(d.model, params_of(d, server), data.x[i : i + 1], data.y[i : i + 1], create_graph=False)
        assert all(torch.allclose(per[k][i], one[k], atol=1e-6) for k in one)


def test_each_example_is_clipped_to_the_norm_and_the_mean_taken():
    d, server = make()
    data = batch(5)
    params = params_of(d, server)
    per = per_example_gradients(d.model, params, data.x, data.y)
    norms = global_norm(per, batch_dims=1)
    clip = float(norms.median())  # some examples above the norm, some below
    assert (norms > clip).any() and (norms < clip).any()
    ours = dp_sgd_gradient(clip)(d.model, params, data.x, data.y)
    clipped = [{k: g[i] * min(1.0, clip / (float(norms[i]) + 1e-6)) for k, g in per.items()} for i in range(5)]
    assert all(math.isclose(float(global_norm(c)), min(clip, float(n)), rel_tol=1e-4) for c, n in zip(clipped, norms))
    for k in ours:
        assert torch.allclose(ours[k], sum(c[k] for c in clipped) / 5, atol=1e-6)


@pytest.mark.parametrize("level", ["sample", "client"])
def test_noise_is_gaussian_with_std_sigma_times_clip(level):
    sigma, clip, b = 0.7, 0.05, 4
    noisy, _ = make(level=level, clip=clip, noise_multiplier=sigma)
    clean, server = make(level=level, clip=clip, noise_multiplier=0.0)
    data = batch(b)
    g = torch.Generator().manual_seed(5)
    reference = clean.observe(server, {}, data, [], None).observed
    noise = torch.cat(
        [
            (noisy.observe(server, {}, data, [], g).observed[k] - v).flatten()
            for _ in range(4)
            for k, v in reference.items()
        ]
    ).double()
    expected = sigma * clip / (b if level == "sample" else 1)  # DP-SGD averages the noised sum over the batch
    assert noise.numel() > 50_000
    assert abs(float(noise.mean())) < 4 * expected / math.sqrt(noise.numel())
    assert abs(float(noise.std()) / expected - 1) < 0.02
    kurtosis = float(((noise - noise.mean()) ** 4).mean() / noise.var() ** 2)
    assert abs(kurtosis - 3) < 0.1


def test_client_level_clips_the_whole_upload():
    d, server = make(level="client", clip=0.01, noise_multiplier=0.0, round_=EPOCH_OF_4)
    obs = d.observe(server, {}, batch(4, batch_size=2), [], None)
    assert math.isclose(float(global_norm(obs.observed)), 0.01, rel_tol=1e-4)
    plain, _ = make(FedAvg, round_=EPOCH_OF_4)
    raw = plain.observe(server, {}, batch(4, batch_size=2), [], None).observed
    scale = 0.01 / float(global_norm(raw))
    assert all(torch.allclose(obs.observed[k], raw[k] * scale, atol=1e-7) for k in raw)


@pytest.mark.parametrize(
    "options, round_",
    [
        ({"level": "sample"}, EPOCH_OF_4),
        ({"level": "client"}, EPOCH_OF_4),
        ({"level": "sample", "momentum": 0.5}, Round("local", 2, 4, 2)),
    ],
)
def test_simulate_true_data_reproduces_the_noise_free_observation(options, round_):
    d, server = make(noise_multiplier=0.0, clip=0.5, round_=round_, **options)
    data = batch(4, batch_size=2)
    obs = d.observe(server, {}, data, [], None)
    sim = obs.simulate(data.x, data.y, {})
    assert all(torch.allclose(sim[k], obs.observed[k], atol=1e-6) for k in obs.observed)


def test_simulator_works_under_vmap_and_is_differentiable():
    d, server = make(noise_multiplier=0.0, clip=0.5)
    data = batch(2)
    obs = d.observe(server, {}, data, [], None)
    xs = torch.randn(3, 2, 3, 32, 32)
    batched = torch.func.vmap(lambda x, y: obs.simulate(x, y, {}))(xs, data.y.expand(3, 2))
    single = obs.simulate(xs[1], data.y, {})
    assert all(torch.allclose(batched[k][1], single[k], atol=1e-6) for k in single)
    x = data.x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(sum(v.pow(2).sum() for v in obs.simulate(x, data.y, {}).values()), x)
    assert gx.abs().sum() > 0


def test_no_noise_and_no_clipping_is_fedavg():
    d, server = make(noise_multiplier=0.0, clip=1e9)
    f, _ = make(FedAvg)
    data = batch(3)
    ours, theirs = d.observe(server, {}, data, [], None), f.observe(server, {}, data, [], None)
    assert all(torch.allclose(ours.observed[k], theirs.observed[k], atol=1e-6) for k in theirs.observed)
    assert ours.metrics["epsilon"] == math.inf and any("no privacy" in n for n in ours.notes)
    assert to_jsonable(dict(ours.metrics))["epsilon"] is None  # rows record ∞ as null
    one = batch(1)  # a batch of one: bit-identical observation and simulator, so attacks behave identically
    ours, theirs = d.observe(server, {}, one, [], None), f.observe(server, {}, one, [], None)
    x, y = torch.randn(1, 3, 32, 32), torch.softmax(torch.randn(1, 10), -1)
    assert all(torch.equal(ours.observed[k], theirs.observed[k]) for k in theirs.observed)
    assert all(torch.equal(a, theirs.simulate(x, y, {})[k]) for k, a in ours.simulate(x, y, {}).items())


def test_epsilon_is_opacus_rdp_accountant_for_the_steps_taken():
    sigma, q, steps = 1.1, 0.01, 1000
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=sigma, sample_rate=q)
    alphas = list(RDP_ORDERS)
    assert epsilon_spent([(sigma, q, steps)], 1e-5) == pytest.approx(
        accountant.get_epsilon(1e-5, alphas=alphas), rel=1e-12
    )
    # a client that trained two rounds of 5 steps at q = 2/10, then is observed for one step at q = 1/10
    d, server = make(noise_multiplier=sigma, delta=1e-5)
    client = {}
    for r in range(2):
        up = d.client_update(server, client, batch(10, seed=r, batch_size=2), torch.Generator().manual_seed(r))
    reference = RDPAccountant()
    for _ in range(10):
        reference.step(noise_multiplier=sigma, sample_rate=0.2)
    assert up.metrics["epsilon"] == pytest.approx(reference.get_epsilon(1e-5, alphas=alphas), rel=1e-9)
    assert up.metrics["dp_steps"] == 10 and up.metrics["delta"] == 1e-5
    obs = d.observe(server, client, batch(1, population=10), [], torch.Generator().manual_seed(9))
    reference.step(noise_multiplier=sigma, sample_rate=0.1)
    assert obs.metrics["epsilon"] == pytest.approx(reference.get_epsilon(1e-5, alphas=alphas), rel=1e-9)
    assert obs.metrics["sample_rate"] == 0.1 and obs.metrics["dp_steps"] == 11


@pytest.mark.parametrize("sigma, expected", [(0.5, 10.73), (1.0, 4.73), (2.0, 2.17), (4.0, 1.01)])
def test_exchange_epsilon_is_one_step_without_amplification(sigma, expected):
    """Opacus' RDP analysis of one Gaussian step at q = 1, δ = 1e-5 (REFERENCES.md), reported next to
    the accounted ε, which credits the sampling rate q = 1/299 of an attacked image."""
    d, server = make(noise_multiplier=sigma, clip=0.5)
    obs = d.observe(server, {}, batch(1, population=299), [], torch.Generator().manual_seed(0))
    assert obs.metrics["epsilon_exchange"] == pytest.approx(expected, abs=0.01)
    assert obs.metrics["exchange_steps"] == 1 and obs.metrics["sample_rate"] == pytest.approx(1 / 299)
    assert obs.metrics["epsilon"] == pytest.approx(epsilon_spent([(sigma, 1 / 299, 1)], 1e-5), rel=1e-12)
    assert obs.metrics["epsilon"] < obs.metrics["epsilon_exchange"]
    assert not obs.metrics["epsilon_order_at_edge"] and "sensitivity C" in obs.metrics["dp_model"]


def test_exchange_epsilon_composes_the_steps_that_contain_an_example():
    d, server = make(noise_multiplier=1.0, round_=Round("local", 2, 2, 3))  # the attacked batch is in all 3 steps
    obs = d.observe(server, {}, batch(2, population=100), [], torch.Generator().manual_seed(0))
    assert obs.metrics["exchange_steps"] == 3
    assert obs.metrics["epsilon_exchange"] == pytest.approx(epsilon_spent([(1.0, 1.0, 3)], 1e-5), rel=1e-12)
    d, _ = make(noise_multiplier=1.0)  # a training round of one epoch over 5 batches: each example in 1 step
    up = d.client_update(server, {}, batch(10, batch_size=2), torch.Generator().manual_seed(0))
    assert up.metrics["exchange_steps"] == 1 and up.metrics["dp_steps"] == 5
    assert up.metrics["epsilon_exchange"] == pytest.approx(4.73, abs=0.01)


SETTINGS = [
    (sigma, q, steps)
    for sigma in (0.1, 0.5, 1.0, 4.0)
    for q in (1.0, 1 / 299, 50 / 600)
    for steps in (1, 10, 100, 1000)
]


def test_the_optimal_rdp_order_is_interior_for_every_reported_setting():
    """Opacus' own get_privacy_spent on bench's order grid returns the best order: never the first or the
    last, and Opacus does not warn (its default grid, which stops at 63, puts σ = 4, q = 1/299 there)."""
    from opacus.accountants.analysis import rdp as analysis

    for sigma, q, steps in SETTINGS:
        rdp = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(RDP_ORDERS))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            eps, order = analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=1e-5)
        assert RDP_ORDERS[0] < order < RDP_ORDERS[-1] and not caught, (sigma, q, steps, order)
        assert eps == pytest.approx(epsilon_spent([(sigma, q, steps)], 1e-5), rel=1e-12)
        assert not privacy_spent([(sigma, q, steps)], 1e-5).at_edge
    default = analysis.compute_rdp(q=1 / 299, noise_multiplier=4.0, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS)
    with pytest.warns(UserWarning, match="largest alpha"):
        floor, _ = analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=default, delta=1e-5)
    assert floor == pytest.approx(0.103, abs=1e-3) and epsilon_spent([(4.0, 1 / 299, 1)], 1e-5) < 0.035


def _log_a_by_integration(q, sigma, alpha):
    """log E_{z~N(0,σ²)} [((1 − q) + q·exp((2z − 1)/(2σ²)))^α] by the trapezoid rule: the sampled Gaussian
    mechanism's RDP times (α − 1) (Mironov et al. 2019), independent of Opacus' series."""
    z = np.linspace(-40 * sigma, 40 * sigma + alpha, 400_001)
    log_ratio = np.logaddexp(np.log1p(-q), np.log(q) + (2 * z - 1) / (2 * sigma**2))
    log_f = alpha * log_ratio - z**2 / (2 * sigma**2) - 0.5 * np.log(2 * np.pi * sigma**2)
    top = log_f.max()
    return top + np.log(np.trapezoid(np.exp(log_f - top), z))


@pytest.mark.parametrize(
    "sigma, q, reference", [(1.0, 1 / 299, 0.742), (4.0, 1 / 299, None), (2.76, 1 / 189, None), (10.6, 50 / 600, None)]
)
def test_epsilon_at_its_optimal_order_agrees_with_direct_integration(sigma, q, reference):
    """Where bench reads the RDP curve (the optimal order), Opacus' series equals a direct numerical
    integral; with q = 1/299, σ = 1 the wide grid gives REFERENCES.md's 0.742."""
    from opacus.accountants.analysis import rdp as analysis

    spent = privacy_spent([(sigma, q, 1)], 1e-5)
    order = spent.order
    series = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=[order])[0]
    assert series == pytest.approx(_log_a_by_integration(q, sigma, order) / (order - 1), rel=1e-6)
    if reference is not None:
        assert spent.epsilon == pytest.approx(reference, abs=0.002)


def test_an_optimum_on_the_grid_edge_is_not_hidden():
    """σ = 30 at q = 1/299 has its optimal order beyond the grid: Opacus' warning reaches the user and
    the row says so."""
    _spent.cache_clear()
    d, server = make(noise_multiplier=30.0)
    with pytest.warns(UserWarning, match="largest alpha"):
        obs = d.observe(server, {}, batch(1, population=299), [], torch.Generator().manual_seed(0))
    assert obs.metrics["epsilon_order_at_edge"] and obs.metrics["epsilon_order"] == RDP_ORDERS[-1]


def test_client_level_accounts_local_dp_with_replace_one_sensitivity():
    """The server sees one client's clipped, noised upload alone: replace-one neighbours differ by up
    to 2C, so σ = 2 spends what σ = 1 spends on sensitivity C (one step, q = 1)."""
    d, server = make(level="client", noise_multiplier=2.0, clip=0.1)
    client = {}
    up = d.client_update(server, client, batch(4, batch_size=2), torch.Generator().manual_seed(0))
    assert up.metrics["epsilon"] == pytest.approx(4.73, abs=0.01) == up.metrics["epsilon_exchange"]
    assert up.metrics["accounting_noise_multiplier"] == 1.0 and up.metrics["noise_multiplier"] == 2.0
    assert up.metrics["sensitivity"] == pytest.approx(0.2) and "replace-one" in up.metrics["dp_model"]
    assert up.metrics["sample_rate"] == 1.0 and up.metrics["dp_steps"] == 1
    up = d.client_update(server, client, batch(4, batch_size=2), torch.Generator().manual_seed(1))
    assert up.metrics["epsilon"] == pytest.approx(epsilon_spent([(1.0, 1.0, 2)], 1e-5), rel=1e-12)
    assert up.metrics["epsilon_exchange"] == pytest.approx(4.73, abs=0.01)
    calibrated, _ = make(level="client", target_epsilon=8.0, epochs=50)
    sigma = calibrated.noise_multiplier(1.0)
    assert 7.9 < epsilon_spent([(sigma / 2, 1.0, 50)], 1e-5) <= 8.0  # the budget holds at sensitivity 2C
    assert epsilon_spent([(sigma, 1.0, 50)], 1e-5) < 4.5  # what sensitivity C would (wrongly) have claimed


def test_target_epsilon_is_calibrated_with_opacus():
    """The HyperFL paper's setting (ε = 4, δ = 1e-5, q = 50/600, 200 rounds × 5 epochs) gives σ ≈ 10.6."""
    d, server = make(preset="hyperfl-paper")
    assert d.opt.clip == 0.04 and d.opt.target_epsilon == 4.0 and d.opt.epochs == 1000
    sigma = d.noise_multiplier(50 / 600)
    assert sigma == pytest.approx(10.6, abs=0.1)
    spent = epsilon_spent([(sigma, 50 / 600, int(1000 / (50 / 600)))], 1e-5)
    assert 3.9 < spent <= 4.0


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"clip": -1.0}, "option 'clip' must be > 0.0"),
        ({"clip": 0.0}, "option 'clip' must be > 0.0"),
        ({"target_epsilon": 0.0, "epochs": 1}, "option 'target_epsilon' must be > 0.0"),
        ({"target_epsilon": -2.0, "epochs": 1}, "option 'target_epsilon' must be > 0.0"),
        ({"noise_multiplier": -0.1}, "option 'noise_multiplier' must be >= 0.0"),
        ({"delta": 0.0}, "option 'delta' must be > 0.0"),
        ({"level": "user"}, "must be 'sample' or 'client'"),
        ({"noise_multiplier": 1.0, "target_epsilon": 2.0, "epochs": 3}, "noise_multiplier or target_epsilon, not both"),
        ({"target_epsilon": 2.0}, "target_epsilon needs epochs"),
        ({"preset": "hyperfl-paper", "noise_multiplier": 1.0}, "noise_multiplier or target_epsilon, not both"),
    ],
)
def test_bad_options_are_one_line_errors(options, fragment):
    with pytest.raises(BenchError, match=fragment) as info:
        DP(**options)
    assert "\n" not in str(info.value)


def test_models_with_batch_norm_are_refused():
    with pytest.raises(BenchError, match="without BatchNorm"):
        DP().setup(lenet_task(model=ConvNet()))


def test_unreachable_target_epsilon_is_a_one_line_error():
    d, server = make(target_epsilon=1e-4, epochs=1000, delta=1e-5)
    with pytest.raises(BenchError, match="cannot reach target_epsilon"):
        d.observe(server, {}, batch(2), [], None)


def test_cli_rows_carry_epsilon_and_delta(tmp_path):
    args = [
        "--attack",
        "dlg",
        "--attack-arg",
        "iterations=2",
        "--attack-arg",
        "max_iter=2",
        "--clients",
        "4",
        "--quiet",
    ]
    assert (
        main(["run", "--defense", "dp", "--defense-arg", "noise_multiplier=0.5", *args, "--output-dir", str(tmp_path)])
        == 0
    )
    row = read_rows(tmp_path / "results.jsonl")[0][0]
    metrics = row["defense_metrics"]
    assert metrics["epsilon"] > 0 and metrics["delta"] == 1e-5 and metrics["noise_multiplier"] == 0.5
    assert 0 < metrics["sample_rate"] < 1  # q = batch / the client's local training set
    assert (
        main(
            [
                "train",
                "--defense",
                "dp",
                "--rounds",
                "2",
                "--clients",
                "3",
                "--train-per-client",
                "20",
                "--test-per-client",
                "10",
                "--batch-size",
                "10",
                "--output-dir",
                str(tmp_path / "train"),
            ]
        )
        == 0
    )
    train = read_rows(tmp_path / "train" / "results.jsonl")[0][0]
    history = train["history"]
    assert history[0]["epsilon"] < history[1]["epsilon"] and history[1]["dp_steps"] == 4
    assert history[1]["delta"] == 1e-5
    assert history[0]["epsilon_exchange"] == history[1]["epsilon_exchange"] == pytest.approx(4.73, abs=0.01)
    assert "add/remove one example" in history[1]["dp_model"] and history[1]["level"] == "sample"


def test_cli_bad_dp_option_is_one_line_exit_2(tmp_path, capsys):
    code = main(
        ["run", "--defense", "dp", "--attack", "dlg", "--defense-arg", "clip=-1", "--output-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "clip" in err


@pytest.mark.parametrize(
    "args, skipped",
    [
        ({"noise_multiplier": "0"}, set()),
        ({"noise_multiplier": "0", "level": "client"}, set()),
        ({}, {"simulate-consistent", "matches-client"}),
    ],
)
def test_dp_conforms(args, skipped):
    """bench check-defense: with σ = 0 every check passes (the simulator replays exactly); with noise the
    observation declares exact=False and the two replay checks are skipped, the rest pass."""
    report = check_defense("dp", args)
    assert {r.name for r in report.results if r.status == "skip"} == skipped, report.render()
    assert all(r.status in ("pass", "skip") for r in report.results), report.render()
