"""Discovery of plug-ins: entry points of another distribution, package.module:Class and path/file.py:Class.

The worked example (examples/gradient-pruning) is "installed" into a temporary site directory with a
throwaway dist-info, the way pip would register it, so the test needs no pip and leaves nothing behind.
"""

import json
from pathlib import Path

import pytest

from bench import registry
from bench.cli import main
from bench.errors import BenchError, PluginError
from bench.defenses.fedavg import FedAvg

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gradient-pruning"
EXAMPLE_FILE = EXAMPLE / "bench_gradient_pruning.py"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The example registered by a distribution 'bench-pruning-tmp' as 'tmp-pruning' (and, clashing, 'fedavg')."""
    dist = tmp_path / "site" / "bench_pruning_tmp-0.3.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-pruning-tmp\nVersion: 0.3.0\n")
    (dist / "entry_points.txt").write_text(
        "[bench.defenses]\ntmp-pruning = bench_gradient_pruning:GradientPruning\n"
        "fedavg = bench_gradient_pruning:GradientPruning\n"
    )
    monkeypatch.syspath_prepend(str(dist.parent))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    registry.refresh()
    yield
    monkeypatch.undo()
    registry.refresh()


def test_list_shows_plugins_beside_builtins_with_their_options(installed, capsys):
    assert main(["list", "defense"]) == 0
    out = capsys.readouterr().out
    assert "  fedavg — FedAvg/FedSGD" in out  # the built-in, unmarked
    assert "  tmp-pruning [plug-in: bench-pruning-tmp 0.3.0] — Gradient pruning (DLG, Zhu et al. 2019)" in out
    assert "      ratio=0.2 (float, >= 0.0 and <= 1.0): fraction of entries zeroed" in out
    assert "      scope='layer' (str, one of 'layer' or 'global')" in out
    assert "      knowledge: adaptive (default), unaware  (use --knowledge NAME)" in out
    assert (
        "note: defense 'fedavg' is registered by bench-fl (bench.defenses.fedavg:FedAvg) and bench-pruning-tmp" in out
    )


def test_a_plugin_never_shadows_a_builtin(installed):
    assert registry.load("defense", "fedavg") is FedAvg
    assert registry.origin("defense", "fedavg") is None
    assert registry.origin("defense", "tmp-pruning") == "bench-pruning-tmp 0.3.0"


def test_declared_options_validate_plugin_arguments(installed, tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "--defense",
                "tmp-pruning",
                "--attack",
                "dlg",
                "--defense-arg",
                "ratio=2",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "defense 'pruning' option 'ratio' must be >= 0.0 and <= 1.0, got 2.0" in err and err.count("\n") == 1
    assert (
        main(
            [
                "run",
                "--defense",
                "tmp-pruning",
                "--attack",
                "dlg",
                "--defense-arg",
                "scope=row",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "must be 'layer' or 'global', got 'row'" in capsys.readouterr().err


def test_an_installed_plugin_passes_check_defense_and_runs(installed, tmp_path, capsys):
    assert main(["check-defense", "tmp-pruning", "--defense-arg", "ratio=0.5"]) == 0
    assert "conforms: 16 passed" in capsys.readouterr().out
    assert (
        main(
            [
                "run",
                "--defense",
                "tmp-pruning",
                "--defense-arg",
                "ratio=0.5",
                "--attack",
                "dlg",
                "--attack-arg",
                "iterations=2",
                "--attack-arg",
                "max_iter=2",
                "--clients",
                "2",
                "--quiet",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    row = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert row["defense"] == "tmp-pruning" and row["config"]["defense"]["ratio"] == 0.5
    assert 0.45 < row["defense_metrics"]["kept_fraction"] < 0.55


def test_file_and_module_specs_load_the_same_kind_of_class(monkeypatch):
    by_file = registry.load("defense", f"{EXAMPLE_FILE}:GradientPruning")
    assert by_file.name == "pruning" and registry.load("defense", f"{EXAMPLE_FILE}:GradientPruning") is by_file
    monkeypatch.syspath_prepend(str(EXAMPLE))
    by_module = registry.load("defense", "bench_gradient_pruning:GradientPruning")
    assert by_module.name == "pruning" and by_module.options == by_file.options


def test_check_defense_accepts_a_file_path(capsys):
    assert main(["check-defense", f"{EXAMPLE_FILE}:GradientPruning", "--defense-arg", "scope=global"]) == 0
    assert "FAIL" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "source, spec, error, fragment",
    [
        (None, "nosuchpackage.defense:X", BenchError, "no module named 'nosuchpackage' (is the plug-in installed?)"),
        (None, "missing/file.py:X", BenchError, "does not exist"),
        ("X = 1\n", "{file}:Y", BenchError, "has no attribute 'Y'"),
        ("def broken(:\n", "{file}:X", PluginError, "failed to import the file: SyntaxError"),
        (
            "import nosuchdependency\n",
            "{file}:X",
            PluginError,
            "ModuleNotFoundError: No module named 'nosuchdependency'",
        ),
        ("raise ValueError\n", "{file}:X", PluginError, "failed to import the file: ValueError"),
        ("class X:\n    pass\n", "{file}:X", PluginError, "is not a subclass of bench.defense.Defense"),
        (
            "from bench import Defense\nclass X(Defense):\n    pass\n",
            "{file}:X",
            PluginError,
            "does not implement aggregate, client_update, init_server, observe, predict",
        ),
    ],
)
def test_spec_errors_are_one_line_and_say_whose_fault(tmp_path, source, spec, error, fragment):
    file = tmp_path / "plug.py"
    if source is not None:
        file.write_text(source)
    with pytest.raises(error) as exc:
        registry.load("defense", spec.format(file=file))
    message = str(exc.value)
    assert fragment in message and "\n" not in message
    assert (error is PluginError) == isinstance(exc.value, PluginError)


@pytest.mark.parametrize(
    "message, shown", [("first line\nsecond line", "RuntimeError: first line"), ("", "RuntimeError")]
)
def test_a_plugin_crashing_in_init_is_refused_in_one_line(tmp_path, message, shown):
    file = tmp_path / "plug.py"
    file.write_text(
        f"from bench.defenses.fedavg import FedAvg\nclass X(FedAvg):\n    def __init__(self, **values):\n"
        f"        raise RuntimeError({message!r})\n"
    )
    with pytest.raises(PluginError) as exc:
        registry.create("defense", f"{file}:X")
    assert str(exc.value) == f"defense '{file}:X' failed to initialise: {shown}"


def test_the_packaged_list_covers_every_package_and_no_generic_top_level_names():
    import sys
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {name: root / folder for name, folder in config["package-dir"].items()}
    found = {".".join(p.relative_to(root).parent.parts) for p in (root / "bench").rglob("__init__.py")}
    for name, folder in mapped.items():
        found |= {
            ".".join((name, *p.relative_to(folder).parent.parts)).rstrip(".") for p in folder.rglob("__init__.py")
        }
    assert set(config["packages"]) == found
    assert all(p == "bench" or p.startswith("bench.") for p in config["packages"])
