"""Finding components by name: entry points, ``package.module:Name`` and ``path/file.py:Name``.

Built-ins register exactly like plug-ins, through the entry-point groups ``bench.defenses``,
``bench.attacks``, ``bench.datasets`` and ``bench.models`` in their package metadata, so adding a
component never means editing a list in the harness.

Two kinds of failure are kept apart: a name that resolves to nothing is bad input (``BenchError``);
something that resolves but is broken (does not import, is not a subclass of the base class, misses
an abstract method, crashes in ``__init__``) is a ``PluginError``, which ``bench check-defense``
reports as a failed check and ``bench run`` refuses in one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from bench.component import Component
from bench.compose import compose, is_composed, parts
from bench.errors import BenchError, PluginError, choices_text, first_line


@dataclass(frozen=True)
class Kind:
    name: str
    group: str
    base_path: str  # "module:Class" of the base class, imported lazily

    @property
    def base(self) -> type[Component]:
        module, _, cls = self.base_path.partition(":")
        return getattr(importlib.import_module(module), cls)


KINDS: Mapping[str, Kind] = {
    "defense": Kind("defense", "bench.defenses", "bench.defense:Defense"),
    "attack": Kind("attack", "bench.attacks", "bench.attack:Attack"),
    "dataset": Kind("dataset", "bench.datasets", "bench.data.base:Dataset"),
    "model": Kind("model", "bench.models", "bench.models.base:Model"),
}


#: The distribution that ships the built-ins; everything else registering a component is a plug-in.
BUILTIN_DISTRIBUTION = "bench-fl"


def _distribution(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "?"


@lru_cache(maxsize=None)
def _scan(kind: str) -> tuple[dict[str, EntryPoint], tuple[str, ...]]:
    found: dict[str, EntryPoint] = {}
    clashes: list[str] = []
    for ep in entry_points(group=KINDS[kind].group):
        if ep.name in found:
            kept, other = found[ep.name], ep
            if _distribution(other) == BUILTIN_DISTRIBUTION and _distribution(kept) != BUILTIN_DISTRIBUTION:
                kept, other = other, kept  # a plug-in never shadows a built-in
            found[ep.name] = kept
            if kept.value != other.value:
                clashes.append(
                    f"{kind} {ep.name!r} is registered by {_distribution(kept)} ({kept.value}) and "
                    f"{_distribution(other)} ({other.value}); using {_distribution(kept)}'s"
                )
        else:
            found[ep.name] = ep
    return dict(sorted(found.items())), tuple(clashes)


def registered(kind: str) -> dict[str, EntryPoint]:
    """Entry points of one kind, by name (on a clash a built-in wins, else the first distribution)."""
    return _scan(kind)[0]


def clashes(kind: str) -> tuple[str, ...]:
    """One message per name that two distributions register differently (``bench list`` shows them)."""
    return _scan(kind)[1]


def refresh() -> None:
    """Forget the cached entry points (after installing a plug-in into a running interpreter)."""
    _scan.cache_clear()


def origin(kind: str, name: str) -> str | None:
    """``"distribution version"`` of a registered plug-in; ``None`` for a built-in or an unknown name."""
    ep = registered(kind).get(name)
    if ep is None or _distribution(ep) == BUILTIN_DISTRIBUTION:
        return None
    return f"{_distribution(ep)} {ep.dist.version}" if ep.dist is not None else "?"


def _import_file(path: Path) -> Any:
    """Import ``path`` once per process under a name derived from its absolute path."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"bench_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot import plug-in file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # a later attempt re-runs the file instead of getting a half module
        raise
    return module


class _NoSuchModule(Exception):
    """The module named on the command line does not exist (bad input, not a broken plug-in)."""


def _import_module(where: str) -> Any:
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and (where == exc.name or where.startswith(exc.name + ".")):
            raise _NoSuchModule(exc.name) from None
        raise


def _import(what: str, kind: str, spec: str, load: Any) -> Any:
    """Run an import; a plug-in that fails to import is reported in one line."""
    try:
        return load()
    except _NoSuchModule as exc:
        raise BenchError(f"{kind} {spec!r}: no module named {str(exc)!r} (is the plug-in installed?)") from None
    except Exception as exc:
        raise PluginError(f"{kind} {spec!r} failed to import {what}: {first_line(exc)}") from None


def _load_target(kind: str, spec: str) -> Any:
    if spec in registered(kind):
        ep = registered(kind)[spec]
        return _import(ep.value, kind, spec, ep.load)
    if ":" not in spec:
        valid = choices_text(registered(kind))
        raise BenchError(f"unknown {kind} {spec!r}; valid: {valid} (or package.module:Class, or path/file.py:Class)")
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise BenchError(f"{kind} plug-in file {where!r} does not exist")
        module = _import("the file", kind, spec, lambda: _import_file(path))
    else:
        module = _import(where, kind, spec, lambda: _import_module(where))
    if not hasattr(module, attr):
        raise BenchError(f"{kind} plug-in {spec!r}: {where} has no attribute {attr!r}")
    return getattr(module, attr)


def load(kind: str, spec: str) -> type[Component]:
    """The component class named by ``spec`` (entry-point name, module:Class or file.py:Class)."""
    if kind not in KINDS:
        raise BenchError(f"unknown component kind {kind!r}; valid: {choices_text(KINDS)}")
    if kind == "defense" and is_composed(spec):  # INNER+OUTER: the outer defense's class (bench.compose)
        load(kind, parts(spec)[0])
        return load(kind, parts(spec)[1])
    target = _load_target(kind, spec)
    base = KINDS[kind].base
    if not (inspect.isclass(target) and issubclass(target, base)):
        raise PluginError(f"{kind} {spec!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    missing = sorted(getattr(target, "__abstractmethods__", ()))
    if missing:
        raise PluginError(
            f"{kind} {spec!r} does not implement {', '.join(missing)} "
            f"(required by {base.__module__}.{base.__qualname__})"
        )
    return target


def create(kind: str, spec: str, values: Mapping[str, Any] | None = None) -> Component:
    """Load and instantiate a component with validated options (``A+B``: defense A's client step inside B)."""
    if kind == "defense" and is_composed(spec):
        return compose(spec, dict(values or {}), load)
    cls = load(kind, spec)
    try:
        return cls(**dict(values or {}))
    except BenchError:
        raise
    except Exception as exc:
        raise PluginError(f"{kind} {spec!r} failed to initialise: {first_line(exc)}") from None


def describe(kind: str) -> list[tuple[str, type[Component] | None, str]]:
    """(name, class or None, summary or load error) of every registered component of ``kind``."""
    out: list[tuple[str, type[Component] | None, str]] = []
    for name in registered(kind):
        try:
            cls = load(kind, name)
            out.append((name, cls, cls.summary()))
        except BenchError as exc:
            out.append((name, None, f"(unavailable: {exc})"))
    return out
