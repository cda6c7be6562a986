"""Leaderboard and report from fixture rows: numbers, ranking, diverged runs, images, bad input."""
import csv
import io
import json
import re

import pytest

from bench.cli import main
from bench.reports.leaderboard import build, config_labels
from bench.reports.loading import load_results
from tests.result_fixtures import write_fixture

RANKED = ["dp(noise_multiplier=0.1)", "fedavg", "dp(noise_multiplier=1)", "he"]


@pytest.fixture
def fixture_dir(tmp_path):
    write_fixture(tmp_path / "run")
    return tmp_path / "run"


def _md_rows(text):
    """The data rows of the first Markdown table as lists of cells, keyed by defense."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[1]] = dict(zip(header, cells))
    return header, rows


def test_leaderboard_numbers_and_ranking(fixture_dir, capsys):
    assert main(["leaderboard", str(fixture_dir)]) == 0
    out = capsys.readouterr().out
    assert "lower PSNR and SSIM, higher LPIPS and lower label accuracy mean MORE privacy" in out
    assert "Ranking (privacy at equal utility)" in out and "EXCLUDED from the means" in out
    header, rows = _md_rows(out)
    assert [r["defense"] for r in sorted(rows.values(), key=lambda r: int(r["rank"]))] == RANKED
    assert header[:5] == ["rank", "defense", "model", "tier", "worst-case PSNR ↓"] and "ig label acc ↓" in header
    fedavg = rows["fedavg"]
    assert fedavg["dlg PSNR ↓"] == "33.00 ± 2.58" and fedavg["ig PSNR ↓"] == "23.00 ± 2.58"
    assert fedavg["dlg SSIM ↓"] == "0.330 ± 0.026" and fedavg["dlg LPIPS ↑"] == "0.670 ± 0.026"
    assert fedavg["dlg N"] == "4" and fedavg["accuracy % ↑"] == "71.0 ± 1.4 (n=2)"
    assert fedavg["worst-case PSNR ↓"] == "33.00 (dlg)" and fedavg["tier"] == "0"
    strong = rows["dp(noise_multiplier=1)"]
    # the diverged run (PSNR 99) is counted but not averaged
    assert strong["dlg PSNR ↓"] == "6.50 ± 1.29" and strong["dlg N"] == "4 (+1 div.)"
    assert strong["tier"] == "20" and strong["ε ↓"] == "3.5 (δ=1e-05)" and strong["s/round ↓"] == "3.00"
    assert rows["dp(noise_multiplier=0.1)"]["worst-case PSNR ↓"] == "15.00 (ig)"
    assert rows["he"]["accuracy % ↑"] == "n/a" and rows["he"]["tier"] == "—"
    assert rows["fedavg"]["MB/round ↓"] == "0.400" and rows["fedavg"]["ε ↓"] == "—"


def test_diverged_included_on_request(fixture_dir, capsys):
    assert main(["leaderboard", str(fixture_dir), "--diverged", "include"]) == 0
    out = capsys.readouterr().out
    _, rows = _md_rows(out)
    assert rows["dp(noise_multiplier=1)"]["dlg PSNR ↓"].startswith("25.00 ± ")
    assert rows["dp(noise_multiplier=1)"]["dlg N"] == "5 (1 div.)" and "INCLUDED in the means" in out


def test_utility_tolerance_changes_tiers(fixture_dir):
    rows = load_results([fixture_dir]).rows
    wide = build(rows, tolerance=50.0).tables[0].entries
    # one 50-point tier holds all three trained defenses: the most private one (dp σ=1) now ranks first
    assert [e.defense for e in wide] == ["dp(noise_multiplier=1)", "dp(noise_multiplier=0.1)", "fedavg", "he"]


def test_csv_and_html(fixture_dir, tmp_path, capsys):
    assert main(["leaderboard", str(fixture_dir), "--format", "csv", "--output", str(tmp_path / "lb.csv")]) == 0
    records = list(csv.DictReader(io.StringIO((tmp_path / "lb.csv").read_text())))
    by_defense = {r["defense"]: r for r in records}
    assert [r["defense"] for r in records] == RANKED
    assert float(by_defense["fedavg"]["dlg.psnr_mean"]) == pytest.approx(33.0)
    assert float(by_defense["fedavg"]["dlg.psnr_std"]) == pytest.approx((20 / 3) ** 0.5)
    assert by_defense["dp(noise_multiplier=1)"]["dlg.diverged"] == "1"
    assert float(by_defense["dp(noise_multiplier=0.1)"]["epsilon"]) == pytest.approx(812.0)
    assert json.loads(by_defense["fedavg"]["defense_config"]) == {"name": "fedavg", "lr": 0.02}
    capsys.readouterr()
    assert main(["leaderboard", str(fixture_dir), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and "33.00 ± 2.58" in page and "MORE privacy" in page


def test_labels_show_only_differing_options():
    labels = config_labels({"a": {"name": "dp", "clip": 1.0, "noise_multiplier": 0.5},
                            "b": {"name": "dp", "clip": 1.0, "noise_multiplier": 2.0},
                            "c": {"name": "fedavg", "lr": 0.1}})
    assert labels == {"a": "dp(noise_multiplier=0.5)", "b": "dp(noise_multiplier=2)", "c": "fedavg"}


def test_report_is_self_contained_with_figures_and_images(fixture_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(fixture_dir), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    # self-contained: every image is inline, nothing is fetched
    sources = re.findall(r"src=['\"]([^'\"]+)", page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=['\"]?(https?:|//|file:)", page) and "<link" not in page
    assert "<script" not in page
    for fragment in ("MORE privacy", "33.00 ± 2.58", "6.50 ± 1.29", "Privacy against utility", "PSNR per target",
                     "Reconstructions", "ground truth (top)", "git commit 0123456789"):
        assert fragment in page, fragment
    assert "missing on disk" not in page
    ranks = [page.index(f"<td>{name}</td>") for name in RANKED]
    assert ranks == sorted(ranks)
    md = (out / "report.md").read_text()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(figures) == 3 and all((out / f).stat().st_size > 1000 for f in figures)
    assert "| 1 | dp(noise_multiplier=0.1) |" in md
    assert (out / "leaderboard.csv").read_text().count("\n") == 5


def test_report_grid_uses_the_run_images(fixture_dir, tmp_path):
    from bench.reports.report import write_report

    written = write_report(load_results([fixture_dir]), tmp_path / "r", max_images=2)
    assert written["images_shown"] == 4 * 2 * 2 and written["images_missing"] == 0
    # without the PNGs the report still renders, and says what is missing
    bare = write_fixture(tmp_path / "bare", with_images=False)
    written = write_report(load_results([bare]), tmp_path / "r2", max_images=2)
    assert written["images_shown"] == 0 and written["images_missing"] == 16
    assert "16 image file(s) missing on disk" in (tmp_path / "r2" / "report.html").read_text()


def test_corrupt_lines_are_reported_with_line_numbers_and_skipped(fixture_dir, capsys):
    path = fixture_dir / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + "\n"  # a truncated row
    lines.insert(5, "[1, 2, 3]\n")  # valid JSON, not a row
    lines.insert(7, json.dumps({"kind": "attack", "run_id": "x"}) + "\n")  # a row without scores
    path.write_text("".join(lines))
    assert main(["leaderboard", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"{path}:3: skipped, not valid JSON" in captured.err
    assert f"{path}:6: skipped, not a JSON object" in captured.err
    assert f"{path}:8: skipped, attack row without config, psnr, ssim, status" in captured.err
    _, rows = _md_rows(captured.out)
    # the truncated row was fedavg × dlg's third target (PSNR 34): the other three are kept
    assert rows["fedavg"]["dlg N"] == "3" and rows["fedavg"]["dlg PSNR ↓"] == "32.67 ± 3.06"
    assert rows["fedavg"]["ig N"] == "4"


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d / "missing.jsonl", "no such results file or directory"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no result rows found"),
    (lambda d: ((d / "bin.jsonl").write_bytes(bytes(range(256)) * 4), d / "bin.jsonl")[1], "not valid JSON"),
])
def test_unusable_input_is_one_line_error(tmp_path, capsys, make, fragment):
    assert main(["leaderboard", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_unreadable_file_is_reported_and_the_rest_kept(fixture_dir, tmp_path, capsys, monkeypatch):
    import bench.reports.loading as loading

    other = tmp_path / "other" / "results.jsonl"
    other.parent.mkdir()
    other.write_text("{}\n")
    real = loading.read_numbered_rows

    def deny(path):
        if path == other:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(loading, "read_numbered_rows", deny)
    assert main(["leaderboard", str(fixture_dir), str(other.parent)]) == 0
    captured = capsys.readouterr()
    assert f"{other}: cannot read (Permission denied); skipped" in captured.err
    assert "| 1 | dp(noise_multiplier=0.1) |" in captured.out


def test_duplicate_rows_count_once(fixture_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.jsonl").write_text((fixture_dir / "results.jsonl").read_text())
    assert main(["leaderboard", str(fixture_dir), str(copy)]) == 0
    captured = capsys.readouterr()
    assert "counted once" in captured.err
    assert _md_rows(captured.out)[1]["fedavg"]["dlg N"] == "4"


def test_scenarios_differing_only_in_local_epochs_get_their_own_titles_and_figures(tmp_path):
    from bench.reports.report import build_figures
    from tests.result_fixtures import FEDERATION, attack_row

    rows = [attack_row("fedavg", "dlg", seed=0, target=t, psnr=30.0 + t) for t in range(2)]
    for t in range(2):
        row = attack_row("fedavg", "dlg", seed=0, target=t, psnr=100.0)
        row["run_id"] = "fedavg-dlg-e2"
        row["config"]["run"]["federation"] = {**FEDERATION, "local_epochs": 2}
        rows.append(row)
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = load_results([path])
    board = build(results.rows)
    titles = [t.scenario for t in board.tables]
    assert len(titles) == 2 and len(set(titles)) == 2 and all("local_epochs" in t for t in titles)
    by_title = {t.scenario: t for t in board.tables}
    assert by_title[[t for t in titles if "local_epochs 2" in t][0]].entries[0].attacks["dlg"].stats["psnr"].mean == 100
    # each table's figures draw only its own rows (the grid shows the images of its 2 targets)
    _, images = build_figures(board, results, max_images=4)
    assert images["shown"] + images["missing"] == 4
