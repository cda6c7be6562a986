"""Result rows as JSON Lines: appended atomically, read back tolerantly.

Every write replaces the file through write-to-temporary + fsync + rename, so a crash or ``kill -9``
leaves either the old file or the new one, never a truncated line. Readers still skip (and report,
with line numbers) lines that are not valid JSON objects, so a damaged file loses only its bad lines.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError

RESULTS_FILE = "results.jsonl"
PUBLISHED_FILE = "results.jsonl.gz"  # a published (committed) result set: the same lines, gzip-compressed


def to_jsonable(value: Any) -> Any:
    """Plain JSON types only: tensors/arrays become lists, NaN/inf become null."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); results and reports are meant to be shared and served
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to a JSON Lines file atomically (the whole file is rewritten via rename)."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    new = "".join(json.dumps(to_jsonable(r), allow_nan=False, sort_keys=False) + "\n" for r in rows)
    atomic_write_bytes(path, old + new.encode())


def read_numbered_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Every valid row with its line number, and one message per skipped line (with its line number)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}: skipped, not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{path}:{number}: skipped, not a JSON object")
                continue
            rows.append((number, row))
    return rows, problems


def gzipped_lines(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """Rows as JSON Lines, gzip-compressed reproducibly (no timestamp or name in the header)."""
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows).encode()
    return gzip.compress(text, compresslevel=9, mtime=0)


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All valid rows of a JSON Lines file, and one message per skipped line (with its line number)."""
    numbered, problems = read_numbered_rows(path)
    return [row for _, row in numbered], problems


def writable_dir(path: Path | str) -> Path:
    """Create ``path`` and prove it writable before any work is done (else a one-line BenchError)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"output dir {str(path)!r} is not writable: {exc.strerror or exc}") from None
    return path
