"""Fetching LPIPS's AlexNet weights: from a local HTTP server, never when offline, never twice after a failure."""

import hashlib
import http.server
import json
import socket
import threading
import time

import pytest
import torch

from bench import perceptual
from bench.perceptual import ALEXNET_FILE, LpipsScorer, fetch_weights, remembered_failure


@pytest.fixture(autouse=True)
def _fresh_memory(monkeypatch):
    monkeypatch.setattr(perceptual, "_FAILED", {})


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; yields (base URL, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            log.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, log
    finally:
        httpd.shutdown()
        httpd.server_close()


def weights_file(root, stem="tiny"):
    """A small state dict saved under a name carrying its SHA-256 prefix, as torchvision names weights."""
    tmp = root / "tmp.pth"
    torch.save({"w": torch.arange(6.0).view(2, 3)}, tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    name = f"{stem}-{prefix}.pth"
    tmp.rename(root / name)
    return name


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/x-12345678.pth"


def test_the_url_is_torchvisions():
    from torchvision.models import AlexNet_Weights

    assert perceptual.ALEXNET_URL == AlexNet_Weights.IMAGENET1K_V1.url
    assert perceptual.ALEXNET_URL.endswith(ALEXNET_FILE)


def test_fetches_into_the_cache_with_the_hash_checked(server, tmp_path):
    base, root, log = server
    name = weights_file(root)
    cache = tmp_path / "cache"
    path, why = fetch_weights(f"{base}/{name}", model_dir=cache, offline=False, progress=False)
    assert why is None and path == cache / name and path.is_file()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(6.0).view(2, 3))
    assert log == [f"/{name}"]


def test_a_hash_mismatch_keeps_no_file_and_is_remembered(server, tmp_path):
    base, root, log = server
    name = weights_file(root)
    wrong = name.replace(name.split("-")[1][:8], "00000000")
    (root / name).rename(root / wrong)
    cache = tmp_path / "cache"
    path, why = fetch_weights(f"{base}/{wrong}", model_dir=cache, offline=False, progress=False)
    assert path is None and "failed" in why and not (cache / wrong).exists()
    again, why_again = fetch_weights(f"{base}/{wrong}", model_dir=cache, offline=False, progress=False)
    assert again is None and "earlier download failed" in why_again and len(log) == 1


def test_offline_never_tries(server, tmp_path, monkeypatch):
    base, root, log = server
    name = weights_file(root)
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    path, why = fetch_weights(f"{base}/{name}", model_dir=tmp_path / "cache", progress=False)
    assert path is None and "BENCH_OFFLINE=1" in why
    assert fetch_weights(f"{base}/{name}", model_dir=tmp_path / "cache", offline=True)[0] is None
    assert log == []


def test_no_network_fails_fast_once_and_is_remembered_across_processes(tmp_path, monkeypatch):
    url, cache = closed_port_url(), tmp_path / "cache"
    began = time.perf_counter()
    path, why = fetch_weights(url, model_dir=cache, offline=False)
    assert path is None and "cannot reach 127.0.0.1" in why and time.perf_counter() - began < 5
    calls = []
    monkeypatch.setattr(perceptual, "probe", lambda *a, **k: calls.append(a) or "unreachable")
    assert "earlier download failed" in fetch_weights(url, model_dir=cache, offline=False)[1]
    monkeypatch.setattr(perceptual, "_FAILED", {})  # a new process: only the marker file remembers
    assert "earlier download failed" in fetch_weights(url, model_dir=cache, offline=False)[1]
    assert calls == []
    marker = next(cache.glob(".bench-download-failed-*.json"))
    record = json.loads(marker.read_text())
    assert remembered_failure(url, cache, now=record["time"] + perceptual.RETRY_AFTER_S + 1) is None  # a day later
    marker.write_text(json.dumps({**record, "time": record["time"] - perceptual.RETRY_AFTER_S - 1}))
    fetch_weights(url, model_dir=cache, offline=False)
    assert len(calls) == 1  # retried after a day


def test_a_probe_that_hangs_costs_its_timeout_only(monkeypatch):
    release = threading.Event()

    def hang(*args, **kwargs):  # a resolver or connect that never answers (until the test ends)
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(perceptual.socket, "create_connection", hang)
    began = time.perf_counter()
    try:
        assert "did not answer within 0.2 s" in perceptual.probe("https://example.invalid/x.pth", timeout=0.2)
        assert time.perf_counter() - began < 2
    finally:
        release.set()


def test_scorer_without_weights_reports_why(tmp_path, monkeypatch):
    scorer = LpipsScorer()  # the suite runs with BENCH_OFFLINE=1
    assert not scorer.available and "BENCH_OFFLINE=1" in scorer.note and ALEXNET_FILE in scorer.note
    monkeypatch.delenv("BENCH_OFFLINE")
    monkeypatch.setattr(perceptual, "ALEXNET_URL", closed_port_url())
    scorer = LpipsScorer()
    assert not scorer.available and "cannot reach" in scorer.note
    assert "--offline" in LpipsScorer(offline=True).note


def test_run_and_sweep_take_offline(tmp_path, monkeypatch):
    from bench.cli import build_parser, main
    from bench.results import read_rows

    monkeypatch.delenv("BENCH_OFFLINE")
    monkeypatch.setattr(perceptual, "probe", lambda *a, **k: pytest.fail("--offline must not touch the network"))
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--defense",
                "fedavg",
                "--attack",
                "dlg",
                "--attack-arg",
                "iterations=2",
                "--clients",
                "4",
                "--quiet",
                "--offline",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    row = read_rows(out / "results.jsonl")[0][0]
    assert row["lpips"] is None and "downloads are off" in row["lpips_note"]
    assert build_parser().parse_args(["sweep", "configs/default.toml", "--offline"]).offline
