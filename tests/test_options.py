import pytest

from bench.errors import BenchError
from bench.options import Option, parse_assignments, resolve_options

OPTS = (
    Option("iterations", int, 10, "steps", min=1),
    Option("lr", float, 0.1, "rate", min=0.0, min_exclusive=True),
    Option("mode", str, "a", "mode", choices=("a", "b")),
    Option("flag", bool, False, "flag"),
)


def test_defaults_and_parsing():
    v = resolve_options(OPTS, {"iterations": "5", "lr": "1e-3", "mode": "b", "flag": "yes"}, "attack 'x'")
    assert v == {"iterations": 5, "lr": 1e-3, "mode": "b", "flag": True}
    assert resolve_options(OPTS, {}, "attack 'x'") == {"iterations": 10, "lr": 0.1, "mode": "a", "flag": False}


@pytest.mark.parametrize(
    "given, fragment",
    [
        ({"iterations": "many"}, "expects int"),
        ({"iterations": "0"}, "must be >= 1"),
        ({"lr": "0"}, "must be > 0.0"),
        ({"mode": "c"}, "'a' or 'b'"),
        ({"flag": "maybe"}, "expects bool"),
        ({"nope": "1"}, "valid options: 'flag', 'iterations', 'lr' or 'mode'"),
        ({"preset": "fast"}, "no preset 'fast'"),
    ],
)
def test_bad_values_are_one_line_errors(given, fragment):
    with pytest.raises(BenchError) as exc:
        resolve_options(OPTS, given, "attack 'x'")
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_presets_apply_then_explicit_values_win():
    presets = {"paper": {"iterations": 4800, "lr": 0.1}}
    v = resolve_options(OPTS, {"preset": "paper", "lr": "0.5"}, "attack 'x'", presets)
    assert v["iterations"] == 4800 and v["lr"] == 0.5 and v["preset"] == "paper"


def test_assignments():
    assert parse_assignments(["a=1", "b=x=y", "a=2"], "--attack-arg") == {"a": "2", "b": "x=y"}
    with pytest.raises(BenchError, match="expects name=value"):
        parse_assignments(["novalue"], "--attack-arg")
