"""iDLG and Inverting Gradients end to end on tiny cases, and their guarantees."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench.attacks.idlg import IDLG
from bench.attacks.ig import InvertingGradients
from bench.data.embedded import build_photos
from bench.functional import loss_gradient
from bench.metrics import psnr_per_image
from bench.progress import SilentProgress
from bench.round import Round
from bench.threat import LocalData, Observation, Unknown
from bench.defenses.fedavg import FedAvg
from tests.helpers import exploding, lenet_task

SILENT = SilentProgress()


def photo_case(seed=0, size=16, batch=1, local_steps=0):
    """Photos at 16×16 in raw [0, 1] pixels (as in the DLG/iDLG papers) on a fresh U(-0.5, 0.5) LeNet."""
    data = build_photos(500, 100)
    torch.manual_seed(seed)
    task = dataclasses.replace(lenet_task(image_shape=(3, size, size)), mean=(0.0,) * 3, std=(1.0,) * 3)
    d = FedAvg()
    if local_steps:
        d.use_round(Round("local", batch, batch, local_steps))
    d.setup(task)
    idx = torch.arange(batch) * 450 + seed * 37  # different source photos → different labels
    x = F.interpolate(data.train_x[idx], size=(size, size), mode="bilinear", antialias=True)
    y = data.train_y[idx]
    return x, y, d.observe(d.init_server(), {}, LocalData(x, y, batch), [], None)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- iDLG --------------------------------------------------------------------------------------


def test_idlg_reads_the_label_recovers_one_image_and_stops_at_its_tolerance():
    x, y, obs = photo_case()
    rec = IDLG(iterations=40).reconstruct(obs, gen(), SILENT)
    assert not rec.diverged and rec.labels.tolist() == y.tolist()
    assert rec.info["label_source"].startswith("idlg")
    assert rec.loss < 1e-6 and rec.iterations < 40  # stopped by tol = 1e-6 (iDLG's convergence test)
    assert psnr_per_image(x, rec.images.clamp(0, 1)).item() > 40


def test_idlg_optimises_labels_when_the_classifier_is_hidden():
    _, _, obs = photo_case()
    hidden = Observation(obs.observed, dataclasses.replace(obs.public, classifier_key=None), obs.simulate)
    rec = IDLG(iterations=2).reconstruct(hidden, gen(), SILENT)
    assert rec.info["label_source"].startswith("optimised") and rec.labels.shape == (1,)


# ---- Inverting Gradients -----------------------------------------------------------------------------


def test_ig_reconstructs_one_image_within_the_box():
    x, y, obs = photo_case()
    rec = InvertingGradients(iterations=200, tv=1e-3).reconstruct(obs, gen(), SILENT)
    low, high = obs.public.pixel_bounds()
    assert (rec.images >= low - 1e-6).all() and (rec.images <= high + 1e-6).all()
    assert rec.labels.tolist() == y.tolist() and not rec.diverged
    assert psnr_per_image(x, rec.images).item() > 20  # random init scores ~5 dB; this reaches 31


def test_ig_restarts_pick_the_lowest_matching_loss():
    _, _, obs = photo_case(seed=1)
    rec = InvertingGradients(iterations=40, restarts=3).reconstruct(obs, gen(3), SILENT)
    losses = rec.info["restart_losses"]
    assert len(losses) == 3 and len(set(losses)) == 3
    assert rec.info["selected_restart"] == losses.index(min(losses)) and rec.loss == min(losses)
    # the returned images are that restart's: re-scoring them gives its loss
    from bench.inversion import GradientMatching

    rescored = GradientMatching(obs, "cosine").loss(rec.images, rec.labels, {}).item()
    assert rescored == pytest.approx(min(losses), rel=1e-4)


def test_ig_batch_uses_the_count_rule_and_multi_step_updates():
    x, y, obs = photo_case(batch=2, local_steps=2)
    assert obs.public.observed_kind == "update"
    rec = InvertingGradients(iterations=5, restarts=2).reconstruct(obs, gen(), SILENT)
    assert sorted(rec.labels.tolist()) == sorted(y.tolist())
    assert rec.info["label_source"].startswith("counts") and rec.images.shape == x.shape


def test_ig_records_divergence_and_returns_a_finite_best_iterate():
    _, _, obs = photo_case()
    rec = InvertingGradients(iterations=20).reconstruct(exploding(obs), gen(), SILENT)
    assert rec.diverged and rec.iterations < 20 and torch.isfinite(rec.images).all()


def private_head_observation(restarts_seen):
    """A toy HyperFL-like threat model: the server sees the body's gradient only; the classifier head
    (fc) stays on the client and is an optimisable unknown; the classifier is not observed."""
    _, _, obs = photo_case()
    model = obs.public.model
    params = {k: v.detach() for k, v in model.named_parameters()}
    body = [k for k in params if not k.startswith("fc.")]
    x = torch.rand(1, 3, 16, 16)
    y = torch.tensor([4])
    grads = loss_gradient(model, params, x, y, create_graph=False)
    observed = {k: grads[k].detach() for k in body}

    def simulate(x_, y_, unknowns):
        restarts_seen.append({k: v.detach().clone() for k, v in unknowns.items()})
        full = {**params, "fc.weight": unknowns["head.weight"], "fc.bias": unknowns["head.bias"]}
        g = loss_gradient(model, full, x_, y_)
        return {k: g[k] for k in body}

    guess = torch.nn.Linear(params["fc.weight"].shape[1], 10)
    unknowns = {
        "head.weight": Unknown(tuple(guess.weight.shape), "private head", guess.weight.detach(), optimisable=True),
        "head.bias": Unknown(tuple(guess.bias.shape), "private head", guess.bias.detach(), optimisable=True),
    }
    public = dataclasses.replace(obs.public, classifier_key=None)
    return Observation(observed, public, simulate, unknowns=unknowns, knowledge="adaptive")


@pytest.mark.parametrize("restarts", [1, 2])
def test_ig_optimises_unknowns_and_labels_when_the_head_is_private(restarts):
    seen = []
    obs = private_head_observation(seen)
    rec = InvertingGradients(iterations=8, restarts=restarts).reconstruct(obs, gen(), SILENT)
    assert rec.info["label_source"].startswith("optimised") and rec.labels.shape == (1,)
    changes = rec.info["unknowns_optimised"]
    assert set(changes) == {"head.weight", "head.bias"} and all(c > 0 for c in changes.values())
    assert not rec.diverged and torch.isfinite(rec.images).all()
    if restarts == 1:  # (under vmap the simulator sees batched tensors that cannot leave it)
        assert not torch.equal(seen[0]["head.weight"], seen[-1]["head.weight"])  # the simulator saw the head move


def test_ig_paper_presets():
    assert InvertingGradients(preset="paper").opt.iterations == 4800
    imagenet = InvertingGradients(preset="paper-imagenet")
    assert imagenet.opt.iterations == 24000 and imagenet.opt.restarts == 8
