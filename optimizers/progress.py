"""Progress of a compile run: one live row with the phase, best score so far and the LM
calls/cost spent, plus transient rows for the evaluations inside it.

Drawn with rich on stderr only when it is a terminal and ``progress=True``. Messages (the
call estimate before the run, an early stop and why) always go to stderr as plain lines.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lmforge import progress as _progress

__all__ = ["CompileProgress"]


class CompileProgress:
    """The progress display of one compile run (a no-op when not shown)."""

    def __init__(
        self,
        name: str,
        *,
        enabled: bool = True,
        on_trial: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.name = name
        self._enabled = enabled
        self._on_trial = on_trial
        self._stack: contextlib.ExitStack | None = None
        self._row: _progress.ProgressTask = _progress.ProgressTask()
        self._best: float | None = None
        self._calls: int | None = None
        self._cost: float | None = None
        self._phase = ""

    @property
    def shown(self) -> bool:
        return self._row.shown

    def __enter__(self) -> CompileProgress:
        self._stack = contextlib.ExitStack()
        self._row = self._stack.enter_context(
            _progress.task(self.name, None, enabled=self._enabled)
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self._row = _progress.ProgressTask()

    def _refresh(self) -> None:
        parts = []
        if self._phase:
            parts.append(self._phase)
        if self._best is not None:
            parts.append(f"best {100 * self._best:.1f}%")
        if self._calls is not None:
            parts.append(f"{self._calls} LM calls")
        if self._cost:
            parts.append(f"${self._cost:.4f}")
        self._row.update(status=" · ".join(parts))

    def phase(self, text: str, *, total: float | None = None) -> None:
        """Name what the run is doing now (``total``: steps in this phase, if known)."""
        self._phase = text
        if total is not None:
            self._row.update(total=total, description=self.name)
        self._refresh()

    def advance(self, steps: float = 1) -> None:
        self._row.advance(steps)

    def best(self, score: float | None) -> None:
        self._best = score
        self._refresh()

    def trial(self, record: Mapping[str, Any]) -> None:
        """A search trial finished (``record``: its number, kind and score); passed on to the
        run's listener (MLflow logging), if any."""
        if self._on_trial is not None:
            self._on_trial(record)

    def calls(self, live: dict[str, Any]) -> None:
        self._calls = live.get("backend_calls")
        self._cost = live.get("cost_usd")
        self._refresh()

    @contextlib.contextmanager
    def rows(self, description: str, total: int) -> Iterator[_progress.ProgressTask]:
        """A transient sub-row (e.g. bootstrapping over the training set)."""
        with _progress.task(description, total, enabled=self._enabled, transient=True) as row:
            yield row

    def print(self, message: str) -> None:
        """A plain line on stderr (rich keeps it above the live rows)."""
        sys.stderr.write(f"lmforge: {message}\n")
