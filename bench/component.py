"""Base of every pluggable piece: a name, a one-line description, declared options and presets."""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from types import MappingProxyType, SimpleNamespace
from typing import Any, ClassVar

from bench.options import Option, resolve_options


class Component(ABC):  # noqa: B024 (an ABC so that subclasses' abstract methods are enforced)
    """Something a user selects by name and configures with declared options.

    Subclasses set the class attributes; instances get ``self.config`` (every option resolved and
    validated, recorded verbatim in result rows) and ``self.opt`` (the same values as attributes).
    An abstract base (``ABC``), so a subclass that misses one of its kind's ``@abstractmethod`` s
    cannot be instantiated and the registry refuses it by name.
    """

    kind: ClassVar[str] = "component"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})

    def __init__(self, **values: Any) -> None:
        owner = f"{self.kind} {self.name or type(self).__name__!r}"
        resolved = resolve_options(self.options, values, owner, self.presets)
        self.config: Mapping[str, Any] = MappingProxyType(resolved)
        self.opt = SimpleNamespace(**resolved)

    @classmethod
    def summary(cls) -> str:
        """The first line of the description, for ``bench list``."""
        text = (cls.description or cls.__doc__ or "").strip()
        return text.splitlines()[0] if text else ""
