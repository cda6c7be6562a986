"""Finding components by name: entry points, ``package.module:Name`` and ``path/file.py:Name``.

Built-ins register exactly like plug-ins, through the entry-point groups ``bench.defenses``,
``bench.attacks``, ``bench.datasets`` and ``bench.models`` in their package metadata, so adding a
component never means editing a list in the harness.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from bench.component import Component
from bench.errors import BenchError, choices_text


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


@lru_cache(maxsize=None)
def registered(kind: str) -> dict[str, EntryPoint]:
    """Entry points of one kind, by name (first distribution wins on a clash)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=KINDS[kind].group):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def _import_file(path: Path) -> Any:
    module_name = f"bench_plugin_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot import plug-in file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _load_target(kind: str, spec: str) -> Any:
    if spec in registered(kind):
        return registered(kind)[spec].load()
    if ":" not in spec:
        valid = choices_text(registered(kind))
        raise BenchError(f"unknown {kind} {spec!r}; valid: {valid} (or package.module:Class, or path/file.py:Class)")
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise BenchError(f"{kind} plug-in file {where!r} does not exist")
        module = _import_file(path)
    else:
        module = importlib.import_module(where)
    if not hasattr(module, attr):
        raise BenchError(f"{kind} plug-in {spec!r}: {where} has no attribute {attr!r}")
    return getattr(module, attr)


def load(kind: str, spec: str) -> type[Component]:
    """The component class named by ``spec`` (entry-point name, module:Class or file.py:Class)."""
    if kind not in KINDS:
        raise BenchError(f"unknown component kind {kind!r}; valid: {choices_text(KINDS)}")
    try:
        target = _load_target(kind, spec)
    except BenchError:
        raise
    except Exception as exc:  # a plug-in that fails to import is the user's error, reported in one line
        raise BenchError(f"{kind} {spec!r} failed to import: {type(exc).__name__}: {exc}") from None
    base = KINDS[kind].base
    if not (inspect.isclass(target) and issubclass(target, base)):
        raise BenchError(f"{kind} {spec!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    missing = sorted(getattr(target, "__abstractmethods__", ()))
    if missing:
        raise BenchError(f"{kind} {spec!r} does not implement {', '.join(missing)}")
    return target


def create(kind: str, spec: str, values: Mapping[str, Any] | None = None) -> Component:
    """Load and instantiate a component with validated options."""
    cls = load(kind, spec)
    try:
        return cls(**dict(values or {}))
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"{kind} {spec!r} failed to initialise: {type(exc).__name__}: {exc}") from None


def describe(kind: str) -> list[tuple[str, type[Component] | None, str]]:
    """(name, class or None, summary or load error) of every registered component of ``kind``."""
    out = []
    for name in registered(kind):
        try:
            cls = load(kind, name)
            out.append((name, cls, cls.summary()))
        except BenchError as exc:
            out.append((name, None, f"(unavailable: {exc})"))
    return out
