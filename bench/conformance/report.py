"""Running named checks and printing them: PASS, FAIL (with the reason), WARN or SKIP.

A check is a function that returns a one-line detail when the contract holds and raises otherwise:
:class:`Failed`/:class:`~bench.errors.PluginError` (contract broken), :class:`Warned` (works, but not
as attacks expect), :class:`Skipped` (cannot be checked here). Any other exception escaping a check
is the plug-in crashing; it fails the check with the exception and the plug-in's line that raised it.
A check whose prerequisite did not pass is skipped, naming the prerequisite.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench.errors import BenchError, first_line

Status = Literal["pass", "fail", "warn", "skip"]


class Failed(Exception):
    """The contract is broken; the message says how."""


class Warned(Exception):
    """The component works but not as attacks or the harness expect (e.g. no vmap): reported, not fatal."""


class Skipped(Exception):
    """The check does not apply or cannot run here; the message says why."""


@dataclass(frozen=True)
class Result:
    name: str
    status: Status
    detail: str


_BENCH_ROOT = Path(__file__).resolve().parents[1]


def _crash_site(exc: BaseException) -> str:
    """``file.py:123`` of the innermost frame outside bench's own harness code (the plug-in's line)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = Path(frame.filename)
        if _BENCH_ROOT not in path.resolve().parents and "torch" not in path.parts:
            return f" (at {path.name}:{frame.lineno})"
    return ""


@dataclass
class Report:
    """The results of one conformance run, in order."""

    title: str
    results: list[Result] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str) -> None:
        self.results.append(Result(name, status, detail))

    def status(self, name: str) -> Status | None:
        return next((r.status for r in self.results if r.name == name), None)

    def check(self, name: str, fn: Callable[[], str], after: Iterable[str] = ()) -> bool:
        """Run one check; True when it passed (or only warned)."""
        blocked = [n for n in after if self.status(n) not in ("pass", "warn")]
        if blocked:
            self.add(name, "skip", f"needs {', '.join(map(repr, blocked))} to pass")
            return False
        try:
            self.add(name, "pass", fn())
        except Warned as exc:
            self.add(name, "warn", str(exc))
        except Skipped as exc:
            self.add(name, "skip", str(exc))
        except (Failed, BenchError) as exc:  # BenchError includes PluginError
            self.add(name, "fail", str(exc))
        except Exception as exc:  # the plug-in crashed inside this check
            self.add(name, "fail", f"raised {first_line(exc)}{_crash_site(exc)}")
        return self.status(name) in ("pass", "warn")

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.results)

    def counts(self) -> dict[Status, int]:
        out: dict[Status, int] = {"pass": 0, "fail": 0, "warn": 0, "skip": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def render(self) -> str:
        width = max((len(r.name) for r in self.results), default=0)
        lines = [self.title]
        lines += [f"  {r.status.upper():<4}  {r.name:<{width}}  {r.detail}" for r in self.results]
        c = self.counts()
        verdict = "FAILED" if self.failed else "conforms"
        lines.append(f"{verdict}: {c['pass']} passed, {c['fail']} failed, {c['warn']} warned, {c['skip']} skipped")
        return "\n".join(lines)
