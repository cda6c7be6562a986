"""LPIPS with AlexNet on torchvision's ImageNet weights: found on disk, or fetched once when allowed.

The ``lpips`` wheel ships its linear heads but not the AlexNet backbone. bench looks for it at
``--lpips-weights PATH``, ``$BENCH_LPIPS_WEIGHTS``, or torch hub's cache
(``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``). When it is in none of them and downloads
are allowed, it is fetched the way torchvision fetches it (``AlexNet_Weights.IMAGENET1K_V1.url``
through ``torch.hub.load_state_dict_from_url`` with ``check_hash=True``, into the same cache), so a
user with network gets LPIPS with no manual step. Its SHA-256 is always checked against torchvision's
published prefix. When the weights cannot be had, LPIPS is reported as unavailable with the reason:
a score from a random backbone would look like a number and mean nothing.

The download is guarded, which is what makes calling ``load_state_dict_from_url`` outside tests
acceptable here:

* it never happens when ``--offline`` (``bench run``/``bench sweep``) or ``BENCH_OFFLINE=1`` is set
  (the test suite and CI set it);
* the server is probed first, in a background thread the caller waits on for at most
  :data:`PROBE_TIMEOUT_S` seconds (name resolution included), and the transfer runs under a socket
  timeout, so a machine without network loses a few seconds at most and never hangs;
* a failure is remembered for the process and in a marker file beside the cached weights
  (``.bench-download-failed-<file>.json``, retried after :data:`RETRY_AFTER_S`), so a sweep's many
  runs and worker processes do not retry it;
* any failure (no network, a hash mismatch, a broken file) leaves ``lpips: null`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import torch

from bench.errors import BenchError, first_line

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_SHA256_PREFIX = "7be5be79"
#: Where torchvision downloads the ImageNet AlexNet from (``AlexNet_Weights.IMAGENET1K_V1.url``).
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
HOW_TO_PROVIDE = (
    f"put torchvision's ImageNet AlexNet weights ({ALEXNET_FILE}) in "
    "$TORCH_HOME/hub/checkpoints/ or pass --lpips-weights PATH"
)
#: Seconds the probe of the download server (name resolution and TCP connect) may take.
PROBE_TIMEOUT_S = 3.0
#: Socket timeout of the transfer itself (per blocking read, not for the whole file).
DOWNLOAD_TIMEOUT_S = 30.0
#: A remembered failed download is retried after this many seconds.
RETRY_AFTER_S = 24 * 3600.0
OFFLINE_ENV = "BENCH_OFFLINE"

#: Failed downloads of this process: url -> reason (the marker file carries them across processes).
_FAILED: dict[str, str] = {}


def offline_requested() -> bool:
    """Whether ``BENCH_OFFLINE`` forbids downloads (1, true, yes or on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def default_weight_locations() -> list[Path]:
    places = []
    if os.environ.get("BENCH_LPIPS_WEIGHTS"):
        places.append(Path(os.environ["BENCH_LPIPS_WEIGHTS"]))
    places.append(hub_checkpoints() / ALEXNET_FILE)
    return places


def hub_checkpoints() -> Path:
    """torch hub's weight cache (``$TORCH_HOME/hub/checkpoints``), where torchvision keeps what it downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(model_dir: Path, url: str) -> Path:
    return model_dir / f".bench-download-failed-{Path(urlsplit(url).path).name}.json"


def remembered_failure(url: str, model_dir: Path, now: float | None = None) -> str | None:
    """Why an earlier download of ``url`` failed, if it did in this process or within :data:`RETRY_AFTER_S`."""
    if url in _FAILED:
        return _FAILED[url]
    try:
        record = json.loads(_marker(model_dir, url).read_text())
        when = float(record["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (time.time() if now is None else now) - when >= RETRY_AFTER_S:
        return None
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
    return f"{record.get('reason', 'failed')} (at {stamp}; tried again after a day)"


def _remember(url: str, model_dir: Path, reason: str) -> None:
    _FAILED[url] = reason
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        _marker(model_dir, url).write_text(json.dumps({"time": time.time(), "url": url, "reason": reason}))
    except OSError:
        pass  # a read-only cache: the failure is still remembered for this process


def _forget(url: str, model_dir: Path) -> None:
    _FAILED.pop(url, None)
    try:
        _marker(model_dir, url).unlink()
    except OSError:
        pass


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when a TCP connection to the server of ``url`` (or to the proxy urllib would use) opens
    within ``timeout`` seconds, name resolution included; otherwise why not. The attempt runs in a
    daemon thread, so a resolver that hangs cannot hold the caller longer than ``timeout``."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(first_line(exc))

    worker = threading.Thread(target=attempt, daemon=True, name="bench-lpips-probe")
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"{host}:{port} did not answer within {timeout:g} s"
    return outcome[0]


def fetch_weights(
    url: str = ALEXNET_URL, model_dir: Path | None = None, offline: bool | None = None, progress: bool = True
) -> tuple[Path | None, str | None]:
    """Download ``url`` into torch hub's cache the way torchvision does, unless forbidden or known to fail.

    Returns ``(path, None)`` on success, ``(None, reason)`` otherwise. The file name must carry the
    SHA-256 prefix (``name-<hex>.pth``): ``load_state_dict_from_url(check_hash=True)`` verifies it and
    keeps no file that fails. ``offline=None`` reads ``BENCH_OFFLINE``. See the module docstring for
    the guards.
    """
    model_dir = hub_checkpoints() if model_dir is None else Path(model_dir)
    if offline or (offline is None and offline_requested()):
        return None, f"downloads are off (--offline or {OFFLINE_ENV}=1)"
    earlier = remembered_failure(url, model_dir)
    if earlier is not None:
        return None, f"an earlier download failed: {earlier}"
    unreachable = probe(url)
    if unreachable is not None:
        reason = f"cannot reach {urlsplit(url).hostname}: {unreachable}"
        _remember(url, model_dir, reason)
        return None, reason
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.load_state_dict_from_url(
            url, model_dir=str(model_dir), map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except Exception as exc:  # noqa: BLE001  # any failure (network, hash, broken file): "no LPIPS", not a crash
        reason = f"download of {url} failed: {first_line(exc)}"
        _remember(url, model_dir, reason)
        return None, reason
    finally:
        socket.setdefaulttimeout(previous)
    _forget(url, model_dir)
    return model_dir / Path(urlsplit(url).path).name, None


class LpipsScorer:
    """LPIPS distance (AlexNet, v0.1) between images in [0, 1]; ``available`` says whether it can score.

    Without weights on disk it tries :func:`fetch_weights` (``offline=True`` forbids that; ``None``
    leaves it to ``BENCH_OFFLINE``).

    ``random_backbone=True`` builds the network with random AlexNet weights: for tests of the code
    path only, and the scorer then says so in ``note``.
    """

    def __init__(
        self,
        weights: Path | None = None,
        device: torch.device | str = "cpu",
        random_backbone: bool = False,
        offline: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.net = None
        self.note: str | None = None
        if weights is not None and not Path(weights).is_file():
            raise BenchError(f"--lpips-weights {str(weights)!r} is not a file; {HOW_TO_PROVIDE}")
        if random_backbone:
            self.net = self._build(None)
            self.note = "random AlexNet backbone (test only: not a valid LPIPS score)"
            return
        candidates = [Path(weights)] if weights is not None else default_weight_locations()
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            path, why = fetch_weights(ALEXNET_URL, offline=offline)
            if path is None:
                self.note = (
                    f"LPIPS unavailable: AlexNet ImageNet weights not found and not downloaded ({why}); "
                    f"{HOW_TO_PROVIDE}"
                )
                return
        if not _sha256(path).startswith(ALEXNET_SHA256_PREFIX):
            message = f"{path} is not torchvision's ImageNet AlexNet ({ALEXNET_FILE}): SHA-256 mismatch"
            if weights is not None:
                raise BenchError(message)
            self.note = f"LPIPS unavailable: {message}; {HOW_TO_PROVIDE}"
            return
        self.net = self._build(path)

    @property
    def available(self) -> bool:
        return self.net is not None

    def _build(self, path: Path | None) -> torch.nn.Module:
        import lpips
        from torchvision.models import alexnet

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        if path is not None:
            backbone = alexnet(weights=None)
            backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            for slice_ in (net.net.slice1, net.net.slice2, net.net.slice3, net.net.slice4, net.net.slice5):
                for index, module in slice_.named_children():
                    module.load_state_dict(backbone.features[int(index)].state_dict())
        return net.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS between two batches in [0, 1] ([N, C, H, W]; grey is repeated to RGB)."""
        if self.net is None:
            raise RuntimeError(self.note or "LPIPS unavailable")
        if a.shape[1] == 1:
            a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
        out = self.net(a.to(self.device), b.to(self.device), normalize=True)
        return out.flatten().cpu()
