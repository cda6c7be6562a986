"""The one exception type for mistakes a user can fix.

The CLI turns a :class:`BenchError` into a single ``error: ...`` line and exit status 2, so bad input
never shows a traceback. Anything else that escapes is a bug in bench and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class BenchError(Exception):
    """A user-facing error: bad input, missing data, an invalid plug-in. One line, no traceback."""


class PluginError(BenchError):
    """A component that loads but breaks its contract (fails to import, misses a method, returns the
    wrong shapes, a simulator that is not differentiable). ``bench run`` refuses it like any bad
    input (exit status 2); ``bench check-defense``/``check-attack`` report it as a failed check."""


def first_line(exc: BaseException) -> str:
    """``TypeError: message`` with only the message's first line (errors stay one line); just
    ``TypeError`` when the message is empty (e.g. a bare ``raise NotImplementedError``)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def choices_text(choices: Iterable[object]) -> str:
    """Render the valid choices for an error message, e.g. ``'a', 'b' or 'c'``."""
    items = [repr(str(c)) for c in choices]
    if not items:
        return "(none)"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]
