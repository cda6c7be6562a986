"""The docs cite files that exist and commands that parse: a stale path in a doc is a bug."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md"]
ROOTS = "bench|attacks|defenses|benchmarks|configs|docs|examples|tests|results"
PATH = re.compile(rf"(?<![\w/.-])((?:{ROOTS})/[\w./-]+\.(?:py|md|toml|jsonl\.gz|jsonl|json|png))")


@pytest.mark.parametrize("doc", [d for d in DOCS if d.exists()], ids=lambda d: d.name)
def test_every_cited_file_exists(doc):
    missing = sorted(
        {p for p in PATH.findall(doc.read_text()) if not (ROOT / p).exists() and "*" not in p and "<" not in p}
    )
    assert not missing, f"{doc.name} cites missing files: {missing}"
