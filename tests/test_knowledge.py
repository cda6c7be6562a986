"""The attacker-knowledge axis: declared per defense, chosen per run, recorded in every row and cell."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.defense import KNOWLEDGE_LEVELS
from bench.errors import BenchError
from bench.runs.attack import RunSpec, resolved_config, run
from bench.federation import FLSettings
from bench.registry import create
from bench.components import Choice
from bench.sweeps.config import load_config
from bench.sweeps.plan import plan

FAST_IG = Choice("ig", {"iterations": 2})


@pytest.mark.parametrize("name", ["fedavg", "dp", "he", "soteria", "hyperfl"])
def test_every_builtin_declares_standard_levels_with_a_default(name):
    cls = type(create("defense", name, {}))
    assert cls.default_knowledge in cls.knowledge_levels
    assert set(cls.knowledge_levels) <= set(KNOWLEDGE_LEVELS)


def test_an_undeclared_level_is_a_one_line_error_naming_the_valid_ones(tmp_path, capsys):
    with pytest.raises(BenchError, match="has no knowledge level 'oracle'; valid: 'adaptive' or 'unaware'"):
        create("defense", "dp", {}).use_knowledge("oracle")
    assert (
        main(["run", "--defense", "fedavg", "--attack", "ig", "--knowledge", "unaware", "--output-dir", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid: 'adaptive'" in err


def test_rows_and_configs_record_the_level_and_the_default_is_resolved(tmp_path):
    base = RunSpec(
        defense=Choice("dp"),
        attack=FAST_IG,
        output_dir=tmp_path,
        model=Choice("lenet"),
        federation=FLSettings(clients=2),
    )
    explicit = RunSpec(**{**base.__dict__, "knowledge": "adaptive"})
    assert resolved_config(base) == resolved_config(explicit)  # spelling out the default: the same run
    unaware = RunSpec(**{**base.__dict__, "knowledge": "unaware", "output_dir": tmp_path / "u"})
    assert resolved_config(unaware)["run"]["knowledge"] == "unaware"
    rows = run(unaware)
    assert rows[0]["knowledge"] == "unaware" and rows[0]["config"]["run"]["knowledge"] == "unaware"
    assert any("ignores dp's mechanism" in n for n in rows[0]["notes"])


def test_sweeps_expand_the_knowledge_axis_per_defense(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(
        '[grid]\nknowledge = "all"\nmodels = ["lenet"]\n[train]\nenabled = false\n'
        '[[defenses]]\nname = "fedavg"\n[[defenses]]\nname = "hyperfl"\nknowledge = ["oracle", "default"]\n'
        '[[defenses]]\nname = "soteria"\nknowledge = ["oracle"]\n'
        '[[attacks]]\nname = "ig"\n'
    )
    cells, notes = plan(load_config(path))
    levels = sorted((c.spec.defense.name, c.spec.knowledge) for c in cells)
    assert levels == [("fedavg", "adaptive"), ("hyperfl", "adaptive"), ("hyperfl", "oracle")]
    assert any("soteria has no knowledge level 'oracle'" in n for n in notes)
