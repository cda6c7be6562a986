"""The worked example (examples/gradient-pruning): what it prunes, what the server sees and replays."""

import math
import sys
from pathlib import Path

import pytest
import torch

from bench.sgd_defense import SGD_OPTIONS
from bench.defenses.fedavg import FedAvg
from tests.test_observation import batch
from tests.helpers import lenet_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "gradient-pruning"))
from bench_gradient_pruning import GradientPruning, prune, sparse_bytes  # noqa: E402


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(10, 7, generator=g), "b": 5 * torch.randn(13, generator=g)}


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.2, 0.5, 0.9, 1.0])
def test_layer_scope_zeroes_the_smallest_fraction_of_each_tensor(ratio):
    original = tensors()
    pruned = prune(original, ratio, "layer")
    for k, t in original.items():
        zeroed = pruned[k] == 0
        assert int(zeroed.sum()) == math.floor(ratio * t.numel() + 1e-9)
        if zeroed.any() and (~zeroed).any():
            assert t[zeroed].abs().max() < t[~zeroed].abs().min()  # the smallest magnitudes went
        assert torch.equal(pruned[k][~zeroed], t[~zeroed])  # the rest is sent unchanged


def test_global_scope_uses_one_threshold_over_all_tensors():
    original = tensors()
    pruned = prune(original, 0.5, "global")
    total = sum(t.numel() for t in original.values())
    assert sum(int((p == 0).sum()) for p in pruned.values()) == total // 2
    # b's entries are 5x larger, so a global threshold prunes a smaller share of b than of a
    assert int((pruned["b"] == 0).sum()) / 13 < int((pruned["a"] == 0).sum()) / 70


def setup(**options):
    torch.manual_seed(0)
    d = GradientPruning(**options)
    d.setup(lenet_task())
    ref = FedAvg(**{o.name: d.config[o.name] for o in SGD_OPTIONS})  # the same client, unpruned
    ref.setup(d.task)
    return d, ref, d.init_server()


def test_observe_is_fedavg_pruned_and_the_masked_replay_is_exact():
    d, ref, server = setup(ratio=0.5)
    data = batch(2)
    obs, clean = d.observe(server, {}, data, [], None), ref.observe(server, {}, data, [], None)
    assert obs.exact and obs.knowledge == "adaptive"
    for k, v in prune(clean.observed, 0.5, "layer").items():
        assert torch.equal(obs.observed[k], v)
    sim = obs.simulate(data.x, data.y, {})
    assert all(torch.equal(sim[k], obs.observed[k]) for k in sim)
    assert 0.49 < obs.metrics["kept_fraction"] < 0.51


def test_the_clean_replay_ignores_the_pruning_and_says_so():
    d, ref, server = setup()
    d.use_knowledge("unaware")
    data = batch(2)
    obs = d.observe(server, {}, data, [], None)
    assert not obs.exact and obs.knowledge == "unaware" and d.opt.ratio == 0.2
    assert any("ignores pruning's mechanism" in n for n in obs.notes)
    sim, full = obs.simulate(data.x, data.y, {}), ref.observe(server, {}, data, [], None).observed
    assert all(torch.allclose(sim[k], full[k]) for k in sim)


def test_clients_send_pruned_updates_and_fewer_bytes():
    d, ref, server = setup(ratio=0.9)
    data = batch(4)
    data.batch_size = 2  # two local steps: one epoch over two mini-batches
    upload = d.client_update(server, {}, data, None)
    dense = ref.client_update(server, {}, data, None)
    assert upload.kind == "update"
    for k, v in prune(dense.payload, 0.9, "layer").items():
        assert torch.equal(upload.payload[k], v)
    assert upload.metrics["bytes_uploaded"] < 0.25 * dense.metrics["bytes_uploaded"]
    assert sparse_bytes({"x": torch.ones(10)}) == 40  # dense when nothing is zero
