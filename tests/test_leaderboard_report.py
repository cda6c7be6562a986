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


def _md_tables(text):
    """Every Markdown table as (header, rows); a row is a dict keyed by the header."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(header, (c.strip() for c in lines[i].strip("|").split("|")))))
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def _md_rows(text):
    """The ranking table (the first) keyed by defense, and the every-attack table keyed by (defense, attack)."""
    tables = _md_tables(text)
    header, ranking = tables[0]
    attacks = {(r["defense"], r["attack (settings)"].rstrip(" ★")): r for r in tables[1][1]}
    return header, {r["defense"]: r for r in ranking}, attacks


def test_leaderboard_numbers_and_ranking(fixture_dir, capsys):
    assert main(["leaderboard", str(fixture_dir)]) == 0
    out = capsys.readouterr().out
    assert "lower label accuracy and fewer recovered targets mean MORE privacy" in out
    assert "Ranking (privacy at equal utility)" in out and "EXCLUDED from the statistics" in out
    assert "at least 6 dB above the best no-information guess" in out
    header, rows, attacks = _md_rows(out)
    assert [r["defense"] for r in sorted(rows.values(), key=lambda r: int(r["rank"]))] == RANKED
    assert header[:7] == ["rank", "defense", "knowledge", "model", "tier", "strongest attack", "PSNR median ↓"]
    fedavg = rows["fedavg"]
    assert (
        fedavg["strongest attack"] == "dlg" and fedavg["PSNR median ↓"] == "33.00" and fedavg["knowledge"] == "adaptive"
    )
    assert fedavg["PSNR mean [95 % CI]"].startswith("33.00 ± 2.58 [") and fedavg["recovered ↓"] == "4/4 (100 %)"
    assert fedavg["gain over baseline, dB ↓"] == "+21.0" and fedavg["N"] == "4"
    assert fedavg["accuracy % ↑"] == "71.0 ± 1.4 (n=2)" and fedavg["tier"] == "0"
    strong = rows["dp(noise_multiplier=1)"]
    # the diverged run (PSNR 99) is counted but not in the statistics
    assert strong["PSNR median ↓"] == "6.50" and strong["N"] == "4 (+1 div.)" and strong["recovered ↓"] == "0/4 (0 %)"
    assert strong["tier"] == "20" and strong["ε training ↓"] == "3.5 (δ=1e-05)" and strong["s/round ↓"] == "3.00"
    assert rows["dp(noise_multiplier=0.1)"]["strongest attack"] == "ig"
    assert rows["he"]["accuracy % ↑"] == "n/a" and rows["he"]["tier"] == "—"
    assert rows["fedavg"]["MB/round ↓"] == "0.400" and rows["fedavg"]["ε training ↓"] == "—"
    ig = attacks[("fedavg", "ig")]
    assert ig["PSNR mean ± std"] == "23.00 ± 2.58" and ig["PSNR median"] == "23.00" and ig["baseline PSNR"] == "12.00"
    assert ig["SSIM median"] == "0.230" and ig["LPIPS median"] == "0.770" and ig["recovered"] == "4/4 (100 %)"
    assert attacks[("fedavg", "dlg")]["attack (settings)"].endswith("★")  # the strongest


def test_diverged_included_on_request(fixture_dir, capsys):
    assert main(["leaderboard", str(fixture_dir), "--diverged", "include"]) == 0
    out = capsys.readouterr().out
    _, rows, attacks = _md_rows(out)
    assert attacks[("dp(noise_multiplier=1)", "dlg")]["PSNR mean ± std"].startswith("25.00 ± ")
    assert attacks[("dp(noise_multiplier=1)", "dlg")]["N"] == "5 (1 div.)" and "INCLUDED in the statistics" in out


def test_the_success_rule_is_an_option(fixture_dir, capsys):
    assert main(["leaderboard", str(fixture_dir), "--success", "psnr>=30"]) == 0
    _, _, attacks = _md_rows(capsys.readouterr().out)
    assert (
        attacks[("fedavg", "dlg")]["recovered"] == "4/4 (100 %)"
        and attacks[("fedavg", "ig")]["recovered"] == "0/4 (0 %)"
    )
    for bad in ("psnr>30", "nope>=1", "label_acc_gain>=1"):
        assert main(["leaderboard", str(fixture_dir), "--success", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "success rule" in err


def test_an_attack_under_several_settings_shows_its_strongest(fixture_dir):
    rows = load_results([fixture_dir]).rows
    tuned = [
        dict(
            r,
            config={**r["config"], "attack": {**r["config"]["attack"], "tv": 0.1}},
            psnr=r["psnr"] + 10,
            run_id=r["run_id"] + "-tuned",
            tuning={"id": "t1"},
        )
        for r in rows
        if r["kind"] == "attack" and r["attack"] == "ig" and r["defense"] == "fedavg"
    ]
    entry = next(e for e in build(rows + tuned).tables[0].entries if e.defense == "fedavg")
    cell = entry.attacks["ig"]
    assert cell.stats["psnr"].median == 33.0 and cell.settings_tried == 2 and cell.tunings == ("t1",)
    assert cell.label == "ig(tv=0.1)"


def test_utility_tolerance_changes_tiers(fixture_dir):
    rows = load_results([fixture_dir]).rows
    wide = build(rows, tolerance=50.0).tables[0].entries
    # one 50-point tier holds all three trained defenses: the most private one (dp σ=1) now ranks first
    assert [e.defense for e in wide] == ["dp(noise_multiplier=1)", "dp(noise_multiplier=0.1)", "fedavg", "he"]


def test_csv_and_html(fixture_dir, tmp_path, capsys):
    assert main(["leaderboard", str(fixture_dir), "--format", "csv", "--output", str(tmp_path / "lb.csv")]) == 0
    records = list(csv.DictReader(io.StringIO((tmp_path / "lb.csv").read_text())))
    cells = {(r["defense"], r["attack"]): r for r in records}
    assert [r["defense"] for r in records[::2]] == RANKED and len(records) == 8
    fedavg = cells[("fedavg", "dlg")]
    assert float(fedavg["psnr_mean"]) == pytest.approx(33.0) and float(fedavg["psnr_median"]) == pytest.approx(33.0)
    assert float(fedavg["psnr_std"]) == pytest.approx((20 / 3) ** 0.5) and fedavg["psnr_n"] == "4"
    assert 30.0 <= float(fedavg["psnr_ci_low"]) < 33.0 < float(fedavg["psnr_ci_high"]) <= 36.0
    assert float(fedavg["success_rate"]) == 1.0 and fedavg["success_rule"] == "psnr_gain>=6"
    assert fedavg["strongest"] == "True" and cells[("fedavg", "ig")]["strongest"] == "False"
    assert fedavg["attack_round"] == "0" and fedavg["knowledge"] == "adaptive"
    assert cells[("dp(noise_multiplier=1)", "dlg")]["diverged"] == "1"
    assert float(cells[("dp(noise_multiplier=0.1)", "dlg")]["epsilon"]) == pytest.approx(812.0)
    assert json.loads(fedavg["defense_config"]) == {"name": "fedavg", "lr": 0.02}
    capsys.readouterr()
    assert main(["leaderboard", str(fixture_dir), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and "33.00 ± 2.58" in page and "MORE privacy" in page


def test_labels_show_only_differing_options():
    labels = config_labels(
        {
            "a": {"name": "dp", "clip": 1.0, "noise_multiplier": 0.5},
            "b": {"name": "dp", "clip": 1.0, "noise_multiplier": 2.0},
            "c": {"name": "fedavg", "lr": 0.1},
        }
    )
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
    for fragment in (
        "MORE privacy",
        "33.00 ± 2.58",
        "6.50",
        "Privacy against utility",
        "PSNR per target",
        "Reconstructions",
        "ground truth (top)",
        "git commit 0123456789",
    ):
        assert fragment in page, fragment
    assert "missing on disk" not in page
    ranks = [page.index(f"<td>{name}</td>") for name in RANKED]
    assert ranks == sorted(ranks)
    md = (out / "report.md").read_text()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(figures) == 3 and all((out / f).stat().st_size > 1000 for f in figures)
    assert "| 1 | dp(noise_multiplier=0.1) |" in md
    assert (out / "leaderboard.csv").read_text().count("\n") == 9


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
    _, rows, attacks = _md_rows(captured.out)
    # the truncated row was fedavg × dlg's third target (PSNR 34): the other three are kept
    assert attacks[("fedavg", "dlg")]["N"] == "3" and attacks[("fedavg", "dlg")]["PSNR mean ± std"] == "32.67 ± 3.06"
    assert attacks[("fedavg", "ig")]["N"] == "4"


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: d / "missing.jsonl", "no such results file or directory"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no result rows found"),
        (lambda d: ((d / "bin.jsonl").write_bytes(bytes(range(256)) * 4), d / "bin.jsonl")[1], "not valid JSON"),
    ],
)
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
    assert _md_rows(captured.out)[2][("fedavg", "dlg")]["N"] == "4"


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


def test_rounds_of_one_scenario_make_a_privacy_across_training_figure(tmp_path):
    from bench.reports.report import write_report
    from tests.result_fixtures import attack_row

    rows = []
    for round_, psnr in ((0, 30.0), (5, 20.0), (10, 15.0)):
        for t in range(2):
            row = attack_row("fedavg", "ig", seed=0, target=t, psnr=psnr + t)
            row["run_id"] = f"r{round_}"
            row["config"]["run"] = {**row["config"]["run"], "attack_round": round_}
            rows.append(row)
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    board = build(load_results([path]).rows)
    assert [t.fields["attack_round"] for t in board.tables] == [0, 5, 10]
    written = write_report(load_results([path]), tmp_path / "r")
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Privacy across training" in page and "rounds 0, 5, 10" in page
    assert (tmp_path / "r" / "figures" / "psnr_by_round_1.png").stat().st_size > 1000
    assert written["figures"] == 1 + 3 * 3
