"""Declared options of a component (defense, attack, data set, model).

A component declares its knobs once, as a tuple of :class:`Option`; that single declaration drives
``--defense-arg k=v`` parsing and validation, ``bench list``, the resolved config recorded in every
result row, and the conformance checks. This mirrors how torchmetrics/Opacus keep their extension
points explicit: no hidden kwargs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError, choices_text

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One declared option: name, type, default, allowed range or choices, and a help line."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False

    def describe_range(self) -> str:
        if self.choices is not None:
            return "one of " + choices_text(self.choices)
        lo = "" if self.min is None else (f"> {self.min}" if self.min_exclusive else f">= {self.min}")
        hi = "" if self.max is None else f"<= {self.max}"
        return " and ".join(p for p in (lo, hi) if p)

    def parse(self, text: str, owner: str) -> Any:
        """Convert the command-line text ``text`` to this option's type and validate it."""
        where = f"{owner} option {self.name!r}"
        raw = text.strip()
        try:
            if self.type is bool:
                low = raw.lower()
                if low in _TRUE:
                    value: Any = True
                elif low in _FALSE:
                    value = False
                else:
                    raise ValueError
            elif self.type is int:
                value = int(raw)
            elif self.type is float:
                value = float(raw)
            else:
                value = raw
        except ValueError:
            raise BenchError(f"{where} expects {self.type.__name__}, got {text!r}") from None
        return self.validate(value, owner)

    def validate(self, value: Any, owner: str) -> Any:
        """Check the type and range of an already-typed value (used for presets and the Python API)."""
        where = f"{owner} option {self.name!r}"
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is float and isinstance(value, float) and math.isnan(value):
            raise BenchError(f"{where} must be a number, got nan")
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise BenchError(f"{where} expects {self.type.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise BenchError(f"{where} must be {choices_text(self.choices)}, got {value!r}")
        number: Any = value  # an int or float here (min/max are declared for numeric options only)
        too_low = self.min is not None and (number <= self.min if self.min_exclusive else number < self.min)
        too_high = self.max is not None and number > self.max
        if too_low or too_high:
            raise BenchError(f"{where} must be {self.describe_range()}, got {value!r}")
        return value


def parse_assignments(pairs: Sequence[str], flag: str) -> dict[str, str]:
    """Split repeated ``name=value`` arguments; later ones override earlier ones."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BenchError(f"{flag} expects name=value, got {pair!r}")
        out[name.strip()] = value
    return out


def resolve_options(
    declared: Sequence[Option],
    given: Mapping[str, Any],
    owner: str,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Merge defaults, an optional ``preset``, and given values into a validated dict.

    ``given`` values may be strings (from the CLI, parsed with the declared type) or typed values
    (from Python or a sweep file). ``preset=NAME`` applies a named bundle of defaults first; explicit
    values override it. The resolved dict contains every declared option, so results record them all.
    """
    by_name = {o.name: o for o in declared}
    given = dict(given)
    values: dict[str, Any] = {o.name: o.default for o in declared}
    preset_name = given.pop("preset", None)
    if preset_name is not None:
        presets = presets or {}
        if preset_name not in presets:
            valid = choices_text(presets) if presets else "(this component has no presets)"
            raise BenchError(f"{owner} has no preset {preset_name!r}; valid presets: {valid}")
        for name, value in presets[preset_name].items():
            values[name] = by_name[name].validate(value, owner)
    for name, value in given.items():
        if name not in by_name:
            valid = choices_text(sorted(by_name)) if by_name else "(it takes no options)"
            raise BenchError(f"{owner} has no option {name!r}; valid options: {valid}")
        opt = by_name[name]
        values[name] = (
            opt.parse(value, owner) if isinstance(value, str) and opt.type is not str else opt.validate(value, owner)
        )
    if preset_name is not None:
        values["preset"] = preset_name
    return values
