"""The command line: end-to-end rows, reproducibility, and one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest

from bench.cli import main
from bench.results import read_rows

FAST = [
    "--defense",
    "fedavg",
    "--attack",
    "dlg",
    "--attack-arg",
    "iterations=2",
    "--attack-arg",
    "max_iter=2",
    "--clients",
    "4",
    "--quiet",
]


def run_cli(*args):
    return main(list(args))


def test_run_writes_rows_with_provenance_and_images(tmp_path):
    out = tmp_path / "out"
    assert run_cli("run", *FAST, "--num-targets", "2", "--batch-size", "2", "--output-dir", str(out)) == 0
    rows, problems = read_rows(out / "results.jsonl")
    assert not problems and len(rows) == 2
    row = rows[0]
    for key in (
        "defense",
        "attack",
        "dataset",
        "model",
        "seed",
        "batch_size",
        "psnr",
        "ssim",
        "lpips",
        "lpips_note",
        "mse",
        "label_acc",
        "attack_seconds",
        "config",
        "versions",
        "git",
        "diverged",
        "status",
    ):
        assert key in row, key
    assert row["lpips"] is None and "alexnet-owt-7be5be79.pth" in row["lpips_note"]
    assert row["config"]["attack"]["iterations"] == 2 and row["config"]["defense"]["lr"] == 0.02
    assert row["config"]["model"]["name"] == "lenet" and row["versions"]["torch"]
    assert len(row["per_image"]["psnr"]) == 2 and len(row["image_ids"]) == 2
    assert (out / "reconstructions.png").stat().st_size > 0 and (out / row["image_file"]).is_file()


def test_same_seed_same_numbers(tmp_path):
    for name in ("a", "b"):
        assert run_cli("run", *FAST, "--seed", "3", "--output-dir", str(tmp_path / name)) == 0
    a, b = (read_rows(tmp_path / n / "results.jsonl")[0][0] for n in ("a", "b"))
    for key in ("psnr", "ssim", "mse", "attack_loss", "image_ids", "predicted_labels"):
        assert a[key] == b[key], key


def test_resume_skips_recorded_targets(tmp_path):
    assert run_cli("run", *FAST, "--num-targets", "1", "--output-dir", str(tmp_path)) == 0
    assert run_cli("run", *FAST, "--num-targets", "1", "--output-dir", str(tmp_path), "--resume") == 0
    assert len(read_rows(tmp_path / "results.jsonl")[0]) == 1


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--defense", "nope", "--attack", "dlg"], "unknown defense 'nope'; valid: "),
        (["--defense", "fedavg", "--attack", "nope"], "unknown attack 'nope'; valid: "),
        (["--defense", "fedavg", "--attack", "dlg", "--dataset", "nope"], "unknown dataset 'nope'; valid: "),
        (["--defense", "fedavg", "--attack", "dlg", "--model", "nope"], "unknown model 'nope'; valid: "),
        (["--defense", "fedavg", "--attack", "dlg", "--attack-arg", "iters=3"], "valid options: "),
        (["--defense", "fedavg", "--attack", "dlg", "--attack-arg", "iterations=many"], "expects int"),
        (["--defense", "fedavg", "--attack", "dlg", "--defense-arg", "lr=-1"], "must be > 0.0"),
        (["--defense", "fedavg", "--attack", "dlg", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--defense", "fedavg", "--attack", "dlg", "--dataset", "cifar10"], "pass --data-root DIR"),
        (["--defense", "fedavg", "--attack", "dlg", "--device", "tpu"], "valid: 'auto', 'cpu'"),
        (["--defense", "fedavg", "--attack", "dlg", "--model-arg", "width=3"], "--model-arg needs --model NAME"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, fragment):
    assert run_cli("run", *args, "--output-dir", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli("run", "--defense", "fedavg", "--attack", "dlg", "--output-dir", str(blocker / "sub")) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and err.count("\n") == 1


def test_process_level_errors_have_no_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--defense",
            "fedavg",
            "--attack",
            "nope",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    done = subprocess.run([sys.executable, "-m", "bench", "run", "--defense", "fedavg"], capture_output=True, text=True)
    assert done.returncode == 2 and "--attack" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["run", "list", "train"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "usage: bench " + command in capsys.readouterr().out


def test_list_shows_components_and_options(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    for name in ("fedavg", "dlg", "photos", "faces", "digits", "mnist", "cifar10", "lenet", "convnet", "resnet18"):
        assert f"  {name} — " in out
    assert "iterations=300 (int, >= 1)" in out


def test_train_appends_a_utility_row(tmp_path):
    assert (
        run_cli(
            "train",
            "--defense",
            "fedavg",
            "--dataset",
            "digits",
            "--clients",
            "3",
            "--rounds",
            "2",
            "--model",
            "lenet",
            "--model-arg",
            "init=default",
            "--defense-arg",
            "lr=0.1",
            "--train-per-client",
            "60",
            "--test-per-client",
            "20",
            "--output-dir",
            str(tmp_path),
        )
        == 0
    )
    row = read_rows(tmp_path / "results.jsonl")[0][0]
    assert row["kind"] == "train" and row["rounds"] == 2 and 0 <= row["final_accuracy"] <= 1
    assert list(row["accuracy_per_round"]) == ["1", "2"] and row["bytes_uploaded_per_client_per_round"] > 0
    assert json.dumps(row)
