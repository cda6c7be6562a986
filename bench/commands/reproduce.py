"""``bench reproduce``: regenerate every figure README.md and docs/ quote from its committed source."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.results import atomic_write_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="regenerate the figures quoted in README.md and docs/ from committed results",
        description="Rewrite every generated block (<!-- bench:KIND SOURCE ... -->...<!-- /bench -->) "
        "of README.md, docs/*.md and results/README.md from its committed source (result "
        "rows or a benchmark's JSON), and results/leaderboard.md from results/. With "
        "--check, change nothing and exit 1 when anything differs.",
    )
    p.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="Markdown files (default: README.md, docs/*.md, results/README.md)",
    )
    p.add_argument("--root", type=Path, default=Path("."), help="the repository root (sources are relative to it)")
    p.add_argument("--check", action="store_true", help="only check that everything is up to date (exit 1 if not)")
    p.set_defaults(handler=handle)


def _leaderboard(root: Path) -> str | None:
    from bench.reports.leaderboard import build
    from bench.reports.loading import load_results
    from bench.reports.render import to_markdown

    if not any((root / "results" / name).is_file() for name in ("results.jsonl", "results.jsonl.gz")):
        return None  # publish writes results.jsonl.gz: checking only the plain name left the board stale
    return to_markdown(build(load_results([root / "results"]).rows), title="Leaderboard: configs/default.toml")


def handle(args: argparse.Namespace) -> int:
    from bench.reproduce import markdown_files, regenerate

    root = args.root
    files = [root / f for f in args.files] if args.files else markdown_files(root)
    if not files:
        raise BenchError(f"no Markdown files to regenerate under {str(root)!r}")
    stale = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BenchError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        new, changed = regenerate(text, root)
        stale += [f"{path}: {name}" for name in changed]
        if changed and not args.check:
            atomic_write_bytes(path, new.encode())
    board = _leaderboard(root) if not args.files else None
    target = root / "results" / "leaderboard.md"
    if board is not None and (not target.is_file() or target.read_text(encoding="utf-8") != board):
        stale.append(f"{target}: the leaderboard of results/")
        if not args.check:
            atomic_write_bytes(target, board.encode())
    for line in stale:
        print(("stale: " if args.check else "regenerated: ") + line)
    if args.check and stale:
        print(
            f"{len(stale)} generated block(s) differ from their sources: run `python -m bench reproduce`",
            file=sys.stderr,
        )
        return 1
    print(f"{len(files)} file(s) checked; {'all up to date' if not stale else f'{len(stale)} regenerated'}")
    return 0
