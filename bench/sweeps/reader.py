"""Reading a sweep file: TOML (or YAML with pyyaml) into a table, and typed access to each of its tables with
one-line errors that name the file, the table and the key."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn, overload

from bench.errors import BenchError, choices_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class _Reader:
    """Typed access to one table of the file, with errors that say where."""

    def __init__(self, source: Path, where: str, table: Any, allowed: tuple[str, ...]) -> None:
        self.source, self.where = source, where
        if not isinstance(table, Mapping):
            self.fail(f"must be a table, got {_show(table)}")
        unknown = sorted(set(map(str, table)) - set(allowed))
        if unknown:
            self.fail(f"unknown key {unknown[0]!r}; valid keys: {choices_text(allowed)}")
        self.table = table

    def fail(self, message: str) -> NoReturn:
        raise BenchError(f"{self.source}: {self.where}: {message}")

    @overload
    def text(self, key: str, default: str) -> str: ...
    @overload
    def text(self, key: str, default: None) -> str | None: ...

    def text(self, key: str, default: str | None) -> str | None:
        value = self.table.get(key, default)
        if value is not None and not isinstance(value, str):
            self.fail(f"{key} must be a string, got {_show(value)}")
        return value

    def integer(self, key: str, default: int, minimum: int) -> int:
        value = self.table.get(key, default)
        if not _is_int(value):
            self.fail(f"{key} must be an integer, got {_show(value)}")
        if value < minimum:
            self.fail(f"{key} must be >= {minimum}, got {value}")
        return int(value)

    def optional_integer(self, key: str, minimum: int) -> int | None:
        return None if self.table.get(key) is None else self.integer(key, 0, minimum)

    def integers(self, key: str, default: tuple[int, ...], minimum: int) -> tuple[int, ...]:
        """A scalar or a non-empty list of integers (an axis of the grid)."""
        value = self.table.get(key, list(default))
        values = value if isinstance(value, list) else [value]
        if not values:
            self.fail(f"the grid is empty: {key} is an empty list")
        for v in values:
            if not _is_int(v):
                self.fail(f"{key} must be an integer or a list of integers, got {_show(v)}")
            if v < minimum:
                self.fail(f"{key} values must be >= {minimum}, got {v}")
        return tuple(dict.fromkeys(int(v) for v in values))

    def texts(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A string or a non-empty list of strings (an axis of the grid)."""
        value = self.table.get(key, list(default))
        values = value if isinstance(value, list) else [value]
        if not values:
            self.fail(f"the grid is empty: {key} is an empty list")
        for v in values:
            if not isinstance(v, str) or not v:
                self.fail(f"{key} must be a name or a list of names, got {_show(v)}")
        return tuple(dict.fromkeys(values))

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false, got {_show(value)}")
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"sweep file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read sweep file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BenchError(f"{path}: not valid TOML: {exc}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise BenchError("YAML sweep files need pyyaml: pip install 'bench-fl[yaml]' (or write TOML)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BenchError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    else:
        raise BenchError(f"sweep file {str(path)!r} must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise BenchError(f"{path}: the file must hold a table of sections ([sweep], [grid], [[defenses]], ...)")
    return data
