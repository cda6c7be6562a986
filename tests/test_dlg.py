"""DLG reproduces its paper's qualitative result, and the shared loop's guarantees hold."""

import dataclasses

import torch
import torch.nn.functional as F

from bench.attacks.dlg import DLG
from bench.data.embedded import build_photos
from bench.inversion.optimise import lbfgs
from bench.metrics import psnr_per_image
from bench.progress import SilentProgress
from bench.threat import LocalData
from bench.defenses.fedavg import FedAvg
from tests.helpers import exploding, lenet_task


def small_case(seed=0, size=16):
    """One photo at 16×16 in raw [0, 1] pixels (as in the DLG paper), a fresh U(-0.5, 0.5) LeNet."""
    data = build_photos(500, 100)
    torch.manual_seed(seed)
    task = dataclasses.replace(lenet_task(image_shape=(3, size, size)), mean=(0.0,) * 3, std=(1.0,) * 3)
    d = FedAvg()
    d.setup(task)
    x = F.interpolate(data.train_x[seed * 37 : seed * 37 + 1], size=(size, size), mode="bilinear", antialias=True)
    y = data.train_y[seed * 37 : seed * 37 + 1]
    return x, y, d.observe(d.init_server(), {}, LocalData(x, y, 1), [], None)


def test_dlg_recovers_one_image_from_a_sigmoid_lenet_almost_exactly():
    x, y, obs = small_case()
    rec = DLG(iterations=30).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert not rec.diverged
    assert psnr_per_image(x, rec.images.clamp(0, 1)).item() > 40
    assert rec.labels.tolist() == y.tolist()


def test_dlg_is_deterministic_under_a_seed():
    _, _, obs = small_case(seed=1)
    a = DLG(iterations=3).reconstruct(obs, torch.Generator().manual_seed(5), SilentProgress())
    b = DLG(iterations=3).reconstruct(obs, torch.Generator().manual_seed(5), SilentProgress())
    assert torch.equal(a.images, b.images) and a.loss == b.loss


def test_lbfgs_returns_the_best_iterate_not_the_last():
    # Every evaluation after the first is penalised more, so the best point is the starting one.
    v = torch.tensor([3.0], requires_grad=True)
    calls = []

    def objective():
        calls.append(1)
        return (v - 1).pow(2).sum() + 10.0 * (len(calls) - 1)

    result = lbfgs([v], objective, iterations=3, progress=SilentProgress())
    assert len(calls) > 1 and v.item() != 3.0
    assert result.values[0].item() == 3.0 and result.loss == 4.0
    assert result.initial_loss == 4.0 and not result.improved  # the run never beat its start, and says so


def test_lbfgs_reports_an_improving_run_as_improved():
    v = torch.tensor([3.0], requires_grad=True)
    result = lbfgs([v], lambda: (v - 1).pow(2).sum(), iterations=2, progress=SilentProgress())
    assert result.initial_loss == 4.0 and result.loss < 1e-6 and result.improved


def test_dlg_records_whether_it_moved_from_its_initial_guess():
    _, _, obs = small_case()
    rec = DLG(iterations=3).reconstruct(obs, torch.Generator().manual_seed(0), SilentProgress())
    assert rec.info["improved"] is True and rec.info["initial_loss"] > rec.loss
    # An observation scaled down by 1e-6 puts the squared-L2 objective below L-BFGS' tolerances at the
    # start: the run stops without moving, and the row must not pass that off as the defense's merit.
    tiny = dataclasses.replace(
        obs,
        observed={k: v * 1e-6 for k, v in obs.observed.items()},
        simulate=lambda x, y, u: {k: v * 1e-6 for k, v in obs.simulate(x, y, u).items()},
    )
    stalled = DLG(iterations=3).reconstruct(tiny, torch.Generator().manual_seed(0), SilentProgress())
    assert stalled.info["improved"] is False and stalled.loss == stalled.info["initial_loss"]


def test_divergence_is_detected_and_reported():
    x, y, obs = small_case()
    rec = DLG(iterations=5).reconstruct(exploding(obs), torch.Generator().manual_seed(0), SilentProgress())
    assert rec.diverged and torch.isfinite(rec.images).all() and rec.iterations < 5


def test_a_row_says_when_its_attack_never_moved():
    from bench.attack import Reconstruction
    from bench.runs.annotate import optimisation_notes as _optimisation_notes

    def rec(improved, diverged=False):
        return Reconstruction(
            images=torch.zeros(1, 3, 4, 4),
            labels=None,
            loss=1.0,
            iterations=1,
            diverged=diverged,
            info={"improved": improved},
        )

    assert "never improved on its initial guess" in _optimisation_notes("dlg", rec(False))[0]
    assert _optimisation_notes("dlg", rec(True)) == []
    assert _optimisation_notes("dlg", rec(False, diverged=True)) == []  # diverged rows say so already
