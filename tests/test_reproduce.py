"""Generated blocks regenerate from their sources, the committed ones are up to date, and publish keeps a
sweep's rows and report images together."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench.cli import main
from bench.reports.leaderboard import build
from bench.reports.loading import load_results
from bench.reproduce import regenerate
from tests.result_fixtures import write_fixture

ROOT = Path(__file__).resolve().parent.parent


def test_blocks_are_rewritten_from_their_source_and_check_finds_stale_ones(tmp_path, capsys):
    write_fixture(tmp_path / "rows")
    (tmp_path / "m.json").write_text(json.dumps({"a": {"b": 0.23456}}))
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Ratio <!-- bench:value m.json a.b .2f -->?<!-- /bench --> here.\n\n"
        "<!-- bench:ranking rows round=0 columns=rank,defense,PSNR median,recovered -->\nold\n<!-- /bench -->\n"
    )
    text, changed = regenerate(doc.read_text(), tmp_path)
    assert "Ratio <!-- bench:value m.json a.b .2f -->0.23<!-- /bench --> here." in text and len(changed) == 2
    assert (
        "| rank | defense | PSNR median ↓ | recovered ↓ |" in text  # column titles may hold spaces
        and "| 1 | dp(noise_multiplier=0.1) |" in text
    )
    assert main(["reproduce", "--root", str(tmp_path), "--check", str(doc.name)]) == 1
    assert main(["reproduce", "--root", str(tmp_path), str(doc.name)]) == 0
    assert doc.read_text() == text
    assert main(["reproduce", "--root", str(tmp_path), "--check", str(doc.name)]) == 0


def test_the_committed_docs_and_leaderboard_are_what_the_committed_results_produce(capsys):
    assert main(["reproduce", "--root", str(ROOT), "--check"]) == 0, capsys.readouterr().out


def test_publish_keeps_the_rows_and_the_images_a_report_shows(tmp_path, capsys):
    write_fixture(tmp_path / "sweep")
    assert main(["publish", str(tmp_path / "sweep"), "--to", str(tmp_path / "pub"), "--max-images", "2"]) == 0
    text = gzip.decompress((tmp_path / "pub" / "results.jsonl.gz").read_bytes()).decode()
    rows = [json.loads(line) for line in text.splitlines()]
    images = [r["image_file"] for r in rows if r.get("image_file")]
    assert len(images) == 8 * 2 and all((tmp_path / "pub" / i).is_file() for i in images)
    before, after = build(load_results([tmp_path / "sweep"]).rows), build(load_results([tmp_path / "pub"]).rows)
    assert [e.defense for e in before.tables[0].entries] == [e.defense for e in after.tables[0].entries]
    assert before.tables[0].entries[0].attacks["ig"].stats == after.tables[0].entries[0].attacks["ig"].stats


def test_reproduce_rebuilds_the_leaderboard_from_published_compressed_rows(tmp_path, capsys):
    """publish writes results.jsonl.gz; a check that looked only for results.jsonl left the board stale."""
    write_fixture(tmp_path / "sweep")
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("nothing generated\n")
    assert main(["publish", str(tmp_path / "sweep"), "--to", str(tmp_path / "results")]) == 0
    assert not (tmp_path / "results" / "results.jsonl").exists()
    assert main(["reproduce", "--root", str(tmp_path), "--check"]) == 1
    assert main(["reproduce", "--root", str(tmp_path)]) == 0
    board = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "dp(noise_multiplier=0.1)" in board
    assert main(["reproduce", "--root", str(tmp_path), "--check"]) == 0
