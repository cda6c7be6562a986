"""Seeds derived from the run's seed and a purpose, so each random choice is reproducible on its own.

A target's batch, its freshly initialised network and the attack's initialisation each get their own
stream (``derive_seed(seed, "target", t, "attack")``), so target t's result does not depend on how
many targets ran before it or on which device they ran.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:15], 16)


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (draw on CPU, then move, for device-independent streams)."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def seed_everything(*parts: object) -> None:
    """Seed Python, NumPy and torch's global RNGs (model initialisation draws from torch's)."""
    seed = derive_seed(*parts)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; otherwise the named device, checked to exist."""
    from bench.errors import BenchError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"unknown device {name!r}; valid: 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type != "cpu":
        raise BenchError(f"unsupported device {name!r}; valid: 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device
