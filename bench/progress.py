"""Progress reporting for long attack loops, decoupled from tqdm so tests can stay silent."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives the iteration count of an attack loop."""

    def start(self, total: int, description: str = "") -> None: ...

    def advance(self, steps: int = 1, loss: float | None = None) -> None: ...

    def close(self) -> None: ...


class SilentProgress:
    """A Progress that reports nothing (tests, library use)."""

    def start(self, total: int, description: str = "") -> None:
        pass

    def advance(self, steps: int = 1, loss: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class TqdmProgress:
    """A tqdm bar over attack iterations, showing the current matching loss."""

    def __init__(self, position: int = 0, leave: bool = False) -> None:
        self._bar = None
        self._position = position
        self._leave = leave

    def start(self, total: int, description: str = "") -> None:
        from tqdm.auto import tqdm

        self.close()
        self._bar = tqdm(
            total=total,
            desc=description,
            position=self._position,
            leave=self._leave,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def advance(self, steps: int = 1, loss: float | None = None) -> None:
        if self._bar is None:
            return
        self._bar.update(steps)
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.3g}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
