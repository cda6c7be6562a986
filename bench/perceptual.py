"""LPIPS with AlexNet, loaded only from ImageNet weights already on disk.

The ``lpips`` wheel ships its linear heads but not the AlexNet backbone, which torchvision would
download. Here the backbone is read from ``--lpips-weights PATH``, ``$BENCH_LPIPS_WEIGHTS``, or
torch hub's cache (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``), and its SHA-256 is
checked against torchvision's published prefix. When none is available, LPIPS is reported as
unavailable with the reason: a score from a random backbone would look like a number and mean nothing.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from bench.errors import BenchError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_SHA256_PREFIX = "7be5be79"
HOW_TO_PROVIDE = (f"put torchvision's ImageNet AlexNet weights ({ALEXNET_FILE}) in "
                  "$TORCH_HOME/hub/checkpoints/ or pass --lpips-weights PATH")


def default_weight_locations() -> list[Path]:
    places = []
    if os.environ.get("BENCH_LPIPS_WEIGHTS"):
        places.append(Path(os.environ["BENCH_LPIPS_WEIGHTS"]))
    places.append(Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE)
    return places


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LpipsScorer:
    """LPIPS distance (AlexNet, v0.1) between images in [0, 1]; ``available`` says whether it can score.

    ``random_backbone=True`` builds the network with random AlexNet weights: for tests of the code
    path only, and the scorer then says so in ``note``.
    """

    def __init__(self, weights: Path | None = None, device: torch.device | str = "cpu",
                 random_backbone: bool = False) -> None:
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
            self.note = f"LPIPS unavailable: AlexNet ImageNet weights not found offline; {HOW_TO_PROVIDE}"
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
