"""check-defense / check-attack and the harness's refusal of broken plug-ins (tests/plugins/broken.py)."""

from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.conformance import check_attack, check_defense
from bench.contract import validate_observation, validate_reconstruction
from bench.errors import BenchError, PluginError
from bench.attack import Reconstruction
from bench.components import Choice
from bench.defenses.fedavg import FedAvg
from tests.test_observation import batch, setup

BROKEN = Path(__file__).parent / "plugins" / "broken.py"
DEFENSE_CHECKS = [
    "interface",
    "options",
    "setup",
    "observe",
    "knowledge",
    "simulate-shapes",
    "simulate-grad",
    "simulate-consistent",
    "simulate-vmap",
    "local-round",
    "client-update",
    "matches-client",
    "private-state",
    "aggregate",
    "predict",
    "deterministic",
]
FAST_DLG = {"iterations": "2", "max_iter": "2"}


def plugin(name: str) -> str:
    return f"{BROKEN}:{name}"


def failures(report) -> dict[str, str]:
    return {r.name: r.detail for r in report.results if r.status == "fail"}


class SkipsValidation(FedAvg):
    """Overrides __init__ without calling super(): options are never validated."""

    def __init__(self, **values):
        self.config = {"lr": 0.02}


class CrashesInPredict(FedAvg):
    def predict(self, server, client, x):
        raise ValueError("no head yet")


def test_fedavg_passes_every_check():
    report = check_defense("fedavg")
    assert [r.name for r in report.results] == DEFENSE_CHECKS
    assert all(r.status == "pass" for r in report.results), report.render()


def test_fedavg_with_momentum_passes_every_check_and_its_local_round_is_replayed():
    report = check_defense("fedavg", {"momentum": "0.5"})
    assert all(r.status == "pass" for r in report.results), report.render()
    assert "replayed exactly" in {r.name: r.detail for r in report.results}["local-round"]


def test_a_defense_with_unknowns_passes_and_is_checked_against_its_true_unknowns():
    report = check_defense(plugin("PrivateHead"))
    assert all(r.status == "pass" for r in report.results), report.render()
    details = {r.name: r.detail for r in report.results}
    assert "every unknown" in details["simulate-grad"] and "unknowns head.weight, head.bias" in details["observe"]
    assert "2 private tensors" in details["private-state"] or "private tensors" in details["private-state"]


@pytest.mark.parametrize(
    "name, check, fragment",
    [
        (
            "WrongShape",
            "simulate-shapes",
            "simulate()['fc.weight'] is [768, 10] float32, but observed['fc.weight'] is [10, 768]",
        ),
        ("WrongObserveShape", "simulate-shapes", "observed['fc.weight'] is [7680] float32"),
        ("MissingMethod", "interface", "does not implement observe"),
        ("NotDifferentiable", "simulate-grad", "simulate() is not differentiable"),
        ("UndeclaredNoise", "simulate-consistent", "declare Observation(exact=False)"),
        ("Nondeterministic", "deterministic", "two runs with seed 0 differ in observed["),
        (
            "LeaksState",
            "private-state",
            "client 0 state['secret'] is sent to the server as client 0's Upload.buffers['debug']",
        ),
        ("BadDefault", "options", "default of option 'clip' is invalid"),
        (
            "IgnoresKnowledge",
            "knowledge",
            "asked for knowledge level 'unaware', observe() returned an Observation with knowledge 'adaptive'",
        ),
        ("GuessIsTruth", "private-state", "guess of unknown 'head.weight' is the client's true value"),
        ("GuessIsTruthTrainedInPlace", "private-state", "guess of unknown 'head.weight' is the client's true value"),
    ],
)
def test_a_broken_defense_fails_the_check_it_breaks(name, check, fragment):
    report = check_defense(plugin(name))
    failed = failures(report)
    assert report.failed and check in failed, report.render()
    assert fragment in failed[check]


def test_a_simulator_without_vmap_is_a_warning_not_a_failure():
    report = check_defense(plugin("NoVmap"))
    assert not report.failed
    warned = {r.name: r.detail for r in report.results if r.status == "warn"}
    assert list(warned) == ["simulate-vmap"] and "torch.func.vmap" in warned["simulate-vmap"]


def test_a_bare_exception_under_vmap_is_a_warning_not_a_failure():
    report = check_defense(plugin("NoVmapBareError"))
    assert not report.failed, report.render()
    warned = {r.name: r.detail for r in report.results if r.status == "warn"}
    assert list(warned) == ["simulate-vmap"] and "(NotImplementedError)" in warned["simulate-vmap"]


def test_an_init_that_skips_option_validation_fails_the_options_check():
    failed = failures(check_defense("tests.test_conformance:SkipsValidation"))
    assert "options" in failed and "super().__init__" in failed["options"]


def test_a_crash_names_the_plugin_line():
    failed = failures(check_defense("tests.test_conformance:CrashesInPredict"))
    assert failed["predict"].startswith("raised ValueError: no head yet (at test_conformance.py:")


def test_check_defense_exit_status_and_output(capsys):
    assert main(["check-defense", "fedavg"]) == 0
    out = capsys.readouterr().out
    assert "  PASS  simulate-consistent" in out and out.rstrip().splitlines()[-1].startswith("conforms: 16 passed")
    assert main(["check-defense", plugin("WrongShape")]) == 1
    out = capsys.readouterr().out
    assert "  FAIL  simulate-shapes      simulate()['fc.weight'] is [768, 10]" in out and "FAILED: " in out
    for bad in (
        ["nope"],
        ["fedavg", "--defense-arg", "lr=0"],
        ["fedavg", "--model", "nope"],
        [f"{BROKEN}:NoSuchClass"],
        ["fedavg", "--knowledge", "oracle"],
    ):
        assert main(["check-defense", *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_dlg_passes_every_attack_check():
    report = check_attack("dlg", FAST_DLG)
    assert [r.name for r in report.results] == [
        "interface",
        "options",
        "fixture",
        "reconstruct",
        "progress",
        "deterministic",
        "unknowns",
    ]
    assert all(r.status == "pass" for r in report.results), report.render()


@pytest.mark.parametrize(
    "name, check, fragment",
    [
        (
            "WrongShapeAttack",
            "reconstruct",
            "Reconstruction.images is [1, 3, 32, 32] float32, expected [>= 2, 3, 32, 32]",
        ),
        ("NondeterministicAttack", "deterministic", "same generator seed returned different images"),
        ("MutatesObservation", "reconstruct", "reconstruct() modified observed["),
        ("MissingReconstruct", "interface", "does not implement reconstruct"),
    ],
)
def test_a_broken_attack_fails_the_check_it_breaks(name, check, fragment):
    failed = failures(check_attack(plugin(name)))
    assert check in failed and fragment in failed[check]


def test_check_attack_on_another_defenses_observation_and_exit_status(capsys):
    report = check_attack(plugin("RandomAttack"), defense=Choice(plugin("PrivateHead")))
    assert all(r.status == "pass" for r in report.results), report.render()
    assert main(["check-attack", plugin("RandomAttack")]) == 0
    assert main(["check-attack", plugin("WrongShapeAttack")]) == 1
    assert main(["check-attack", "dlg", "--attack-arg", "iterations=0"]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["check-defense", "fedavg", "--model", "lenet", "--model-arg", "nosuch=1"],
        ["check-attack", "dlg", "--defense-arg", "lr=0"],
        ["check-attack", "dlg", "--model", "lenet", "--model-arg", "nosuch=1"],
    ],
)
def test_bad_options_of_the_model_or_defense_are_bad_input_before_any_check(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert ("'nosuch'" in err) if "nosuch=1" in argv else ("'lr'" in err)


RUN = ["--attack-arg", "iterations=1", "--attack-arg", "max_iter=1", "--clients", "2", "--quiet"]


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("WrongShape", "simulate()['fc.weight'] is [768, 10] float32, but observed['fc.weight'] is [10, 768] float32"),
        ("WrongObserveShape", "observed['fc.weight'] is [7680] float32"),
        ("NotDifferentiable", "simulate() is not differentiable"),
        ("MissingMethod", "does not implement observe"),
    ],
)
def test_run_refuses_a_broken_defense_in_one_line(tmp_path, capsys, name, fragment):
    assert main(["run", "--defense", plugin(name), "--attack", "dlg", *RUN, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results.jsonl").exists()


def test_run_refuses_a_broken_attack_and_accepts_sound_file_plugins(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "--defense",
                "fedavg",
                "--attack",
                plugin("WrongShapeAttack"),
                "--batch-size",
                "2",
                "--clients",
                "2",
                "--quiet",
                "--output-dir",
                str(tmp_path / "a"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "breaks the Reconstruction contract: Reconstruction.images is [1, 3, 32, 32]" in err and err.count("\n") == 1
    assert (
        main(
            [
                "run",
                "--defense",
                plugin("PrivateHead"),
                "--attack",
                plugin("RandomAttack"),
                "--clients",
                "2",
                "--quiet",
                "--output-dir",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    assert (tmp_path / "b" / "results.jsonl").is_file()


def test_validate_observation_catches_wrong_public_facts():
    d, server = setup()
    obs = d.observe(server, {}, batch(2), [], None)
    g = torch.Generator().manual_seed(0)
    assert validate_observation(obs, 2, (3, 32, 32), 10, g) is obs
    with pytest.raises(PluginError, match="the target batch has 3 images"):
        validate_observation(obs, 3, (3, 32, 32), 10, g)
    with pytest.raises(PluginError, match=r"public.image_shape is \(3, 32, 32\), the images are \(1, 32, 32\)"):
        validate_observation(obs, 2, (1, 32, 32), 10, g)
    with pytest.raises(PluginError, match="not a bench.Observation"):
        validate_observation(obs.observed, 2, (3, 32, 32), 10, g)


@pytest.mark.parametrize(
    "images, labels, fragment",
    [
        (torch.full((2, 3, 32, 32), float("nan")), None, "non-finite"),
        (torch.zeros(2, 3, 32, 32), torch.zeros(2), "expected integer labels"),
        (torch.zeros(2, 3, 32, 32), torch.zeros(3, dtype=torch.long), "expected [2]"),
        (torch.zeros(2, 3, 32, 32), torch.full((2,), 10), "outside 0..9"),
        (torch.zeros(2, 32, 32, 3), None, "expected [>= 2, 3, 32, 32]"),
    ],
)
def test_validate_reconstruction(images, labels, fragment):
    d, server = setup()
    obs = d.observe(server, {}, batch(2), [], None)
    assert isinstance(
        validate_reconstruction(Reconstruction(torch.zeros(2, 3, 32, 32), None, 1.0, 3), obs), Reconstruction
    )
    with pytest.raises(BenchError) as exc:
        validate_reconstruction(Reconstruction(images, labels, 1.0, 3), obs)
    assert fragment in str(exc.value)


def test_validate_reconstruction_refuses_info_that_is_not_a_dict():
    d, server = setup()
    obs = d.observe(server, {}, batch(2), [], None)
    rec = Reconstruction(torch.zeros(2, 3, 32, 32), None, 1.0, 3, info=[("improved", True)])
    with pytest.raises(PluginError, match="Reconstruction.info is a list, not a dict"):
        validate_reconstruction(rec, obs)


@pytest.mark.parametrize("command", ["check-defense", "check-attack"])
def test_check_commands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and f"usage: bench {command}" in out and "Exit status 0" in out
