"""What a result row records so it can be reproduced: package versions, machine, git commit."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = (
    "bench-fl",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-image",
    "scikit-learn",
    "lpips",
    "opacus",
    "tenseal",
    "pandas",
)


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit of the source tree bench runs from (``None`` outside a git checkout) and dirtiness."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def machine(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": device,
        "python_executable": sys.executable,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def stamp(device: str) -> dict[str, Any]:
    """The provenance every result row ends with: package versions, git state, machine and time."""
    import datetime as dt

    return {
        "versions": package_versions(),
        "git": git_state(),
        "machine": machine(device),
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_record(path: Path, record: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Write a benchmark's JSON record to ``path`` with its provenance last (``recorded``); returns it."""
    import json

    record = {**record, "recorded": stamp(device)}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record
