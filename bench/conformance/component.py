"""Checks of a component as such, shared by every kind: it loads, and its declared options are sound.

:func:`open_report` starts a conformance report: the ``interface`` check (the class imports, is a
subclass of its kind's base class and implements every abstract method), the ``options`` check, and
the instance built with the user's option values. The options declaration drives ``--defense-arg``
parsing, ``bench list`` and the config recorded in rows, so
it must be sound: Option instances with unique names and help, defaults that pass their own
validation, presets that name declared options with valid values, bad values refused with a
BenchError (a plug-in overriding ``__init__`` must still call ``super().__init__(**values)``), and a
resolved config that holds every option and can be recorded as JSON.
"""

from __future__ import annotations

import math
from typing import Any

from collections.abc import Mapping

from bench import registry
from bench.component import Component
from bench.contract import require_jsonable
from bench.conformance.report import Failed, Report
from bench.errors import BenchError, PluginError, first_line
from bench.options import Option


def _declaration(cls: type[Component]) -> list[Option]:
    options = list(cls.options)
    names = [getattr(o, "name", None) for o in options]
    for o in options:
        if not isinstance(o, Option):
            raise Failed(f"options holds a {type(o).__name__}; declare each option as bench.Option")
        if not o.name.isidentifier():
            raise Failed(f"option name {o.name!r} is not an identifier")
        if not o.help.strip():
            raise Failed(f"option {o.name!r} has no help text (shown by `bench list`)")
        if o.type not in (bool, int, float, str):
            raise Failed(f"option {o.name!r} has type {o.type!r}; use bool, int, float or str")
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        raise Failed(f"option(s) declared twice: {', '.join(map(repr, duplicates))}")
    if "preset" in names:
        raise Failed("'preset' is reserved for named bundles of values (declare `presets` instead)")
    owner = f"{cls.kind} {cls.name or cls.__name__!r}"
    for o in options:
        try:
            o.validate(o.default, owner)
        except BenchError as exc:
            raise Failed(f"default of option {o.name!r} is invalid: {exc}") from None
    for preset, values in cls.presets.items():
        for name, value in values.items():
            if name not in names:
                raise Failed(f"preset {preset!r} sets {name!r}, which is not a declared option")
            try:
                next(o for o in options if o.name == name).validate(value, owner)
            except BenchError as exc:
                raise Failed(f"preset {preset!r}: {exc}") from None
    return options


def _bad_values(o: Option) -> list[Any]:
    """Values the declaration forbids: ill-typed text, outside the range, not among the choices."""
    bad: list[Any] = [] if o.type is str else ["not-a-" + o.type.__name__]
    if o.choices is not None and o.type is not bool:
        bad.append("__not_a_choice__" if o.type is str else max(o.choices) + 1)
    if o.min is not None:
        bad.append(o.min if o.min_exclusive else (o.min - 1 if o.type is int else o.min - max(1.0, abs(o.min))))
    if o.max is not None:
        bad.append(o.max + 1 if o.type is int else o.max + max(1.0, abs(o.max)))
    if o.type is float:
        bad.append(math.nan)
    return [b for b in bad if b is not None]


def check_options(cls: type[Component]) -> str:
    """Run every options check; returns a one-line summary or raises Failed."""
    options = _declaration(cls)
    try:
        instance = cls()
    except Exception as exc:
        raise Failed(f"cannot be created with its default options: {first_line(exc)}") from None
    missing = [o.name for o in options if o.name not in instance.config]
    if missing:
        raise Failed(
            f"self.config lacks {', '.join(map(repr, missing))}: call super().__init__(**values) "
            f"so options are resolved and recorded"
        )
    require_jsonable(dict(instance.config), "self.config")
    refused = 0
    for o in options:
        for value in _bad_values(o):
            try:
                cls(**{o.name: value})
            except BenchError:
                refused += 1
                continue
            except Exception as exc:
                raise Failed(
                    f"option {o.name!r}={value!r} raised {first_line(exc)} instead of a one-line BenchError"
                ) from None
            raise Failed(
                f"option {o.name!r} accepted the invalid value {value!r} (declared: "
                f"{o.type.__name__}{', ' + o.describe_range() if o.describe_range() else ''})"
            )
    try:
        cls(__no_such_option__="1")
    except BenchError:
        refused += 1
    except Exception as exc:
        raise Failed(f"an undeclared option raised {first_line(exc)} instead of a BenchError") from None
    else:
        raise Failed("an undeclared option was accepted silently")
    names = ", ".join(o.name for o in options) or "none"
    presets = f"; presets {', '.join(cls.presets)}" if cls.presets else ""
    return f"{len(options)} declared ({names}){presets}; defaults valid; {refused} invalid values refused"


def open_report(kind: str, spec: str, args: Mapping[str, Any], created: str) -> tuple[Report, Component | None]:
    """A report holding the ``interface`` and ``options`` checks, and the component built with ``args``.

    The component is None when it cannot be built (a failed check named ``created`` says why). Bad
    ``args`` or an unknown ``spec`` are bad input: the BenchError propagates (exit status 2).
    """
    report = Report(f"check-{kind} {spec!r}")
    try:
        cls = registry.load(kind, spec)
    except PluginError as exc:
        report.add("interface", "fail", str(exc))
        return report, None
    base = registry.KINDS[kind].base.__name__
    report.add("interface", "pass", f"{cls.__module__}.{cls.__qualname__} implements every {base} method")
    report.check("options", lambda: check_options(cls))
    try:
        return report, registry.create(kind, spec, args)
    except PluginError as exc:
        report.add(created, "fail", str(exc))
        return report, None
