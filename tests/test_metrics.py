import math

import pytest
import torch
from skimage.metrics import structural_similarity

from bench.errors import BenchError
from bench.metrics import label_accuracy, match_reconstructions, psnr_per_image, score, ssim_per_image
from bench.perceptual import ALEXNET_FILE, LpipsScorer


def test_psnr_known_values():
    a = torch.full((2, 3, 8, 8), 0.5)
    assert psnr_per_image(a, a).tolist() == [100.0, 100.0]  # MSE floored at 1e-10
    b = a + 0.1  # MSE 0.01 -> 20 dB
    assert psnr_per_image(a, b)[0].item() == pytest.approx(20.0, abs=1e-4)
    c = a.clone()
    c[0] += 0.01  # MSE 1e-4 -> 40 dB
    assert psnr_per_image(a, c)[0].item() == pytest.approx(40.0, abs=1e-4)


def test_ssim_is_scikit_image_windowed_ssim():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    b = (a + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    ours = ssim_per_image(a, b)
    ref = structural_similarity(
        a[0].permute(1, 2, 0).double().numpy(), b[0].permute(1, 2, 0).double().numpy(), data_range=1.0, channel_axis=-1
    )
    assert ours[0].item() == pytest.approx(ref, abs=1e-12)
    assert ssim_per_image(a, a).tolist() == pytest.approx([1.0, 1.0])
    grey = torch.rand(1, 1, 16, 16, generator=g)
    assert ssim_per_image(grey, grey).item() == pytest.approx(1.0)


def test_matching_undoes_a_permutation_and_picks_from_a_larger_set():
    g = torch.Generator().manual_seed(1)
    truth = torch.rand(4, 3, 8, 8, generator=g)
    perm = torch.tensor([2, 0, 3, 1])
    assert match_reconstructions(truth, truth[perm]).tolist() == [1, 3, 0, 2]
    extra = torch.cat([torch.rand(5, 3, 8, 8, generator=g), truth[perm]])
    s = score(truth, extra, torch.tensor([0, 1, 2, 3]), None, None)
    assert s.per_image["psnr"] == [100.0] * 4 and s.assignment == [6, 8, 5, 7]


def test_label_accuracy_is_order_insensitive_multiset_overlap():
    assert label_accuracy(torch.tensor([1, 1, 2]), torch.tensor([2, 1, 1])) == 1.0
    assert label_accuracy(torch.tensor([1, 1, 2]), torch.tensor([1, 2, 2])) == pytest.approx(2 / 3)
    assert label_accuracy(torch.tensor([3]), torch.tensor([4])) == 0.0


def test_score_uses_matched_labels_and_reports_missing_lpips():
    truth = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    s = score(truth, truth.flip(0), torch.tensor([5, 7]), torch.tensor([7, 5]), LpipsScorer())
    assert s.label_acc == 1.0 and s.per_image["lpips"] is None
    assert "LPIPS unavailable" in s.lpips_note and ALEXNET_FILE in s.lpips_note


def test_lpips_code_path_with_random_backbone():
    scorer = LpipsScorer(random_backbone=True)
    a = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    d = scorer(a, a)
    assert d.shape == (2,) and torch.allclose(d, torch.zeros(2), atol=1e-6)
    assert (scorer(a, 1 - a) > 0).all()
    grey = torch.rand(1, 1, 32, 32)
    assert scorer(grey, grey).shape == (1,)
    assert "test only" in scorer.note


def test_lpips_refuses_wrong_weights(tmp_path, monkeypatch):
    fake = tmp_path / ALEXNET_FILE
    fake.write_bytes(b"not alexnet")
    with pytest.raises(BenchError, match="SHA-256 mismatch"):
        LpipsScorer(weights=fake)
    monkeypatch.setenv("BENCH_LPIPS_WEIGHTS", str(fake))
    scorer = LpipsScorer()
    assert not scorer.available and "SHA-256 mismatch" in scorer.note
    with pytest.raises(BenchError, match="is not a file"):
        LpipsScorer(weights=tmp_path / "missing.pth")


def test_psnr_is_finite_for_every_score():
    a = torch.rand(1, 3, 8, 8)
    assert all(math.isfinite(v) for v in score(a, a, torch.tensor([0]), None, None).per_image["psnr"])
