from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
# No test downloads anything (LPIPS weights): also for subprocesses and workers started outside a fixture.
os.environ["BENCH_OFFLINE"] = "1"


@pytest.fixture
def cpu() -> torch.device:
    return torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_hub_weights(tmp_path_factory, monkeypatch):
    """Tests never see LPIPS weights a developer may have cached, and never download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("BENCH_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setenv("BENCH_OFFLINE", "1")
