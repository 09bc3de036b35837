"""Progress bars for long runs (evaluation, optimization), shown only on a terminal.

One live display per run: nested work (an optimizer's evaluations) adds rows to the
display that is already open instead of opening another. Nothing is printed when stderr
is not a TTY, when ``$LMFORGE_PROGRESS=0``, or inside :func:`silenced`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["ProgressTask", "silenced", "task", "terminal_progress"]


class ProgressTask:
    """One row of the display; a no-op when progress is not shown."""

    def __init__(self, progress: Any = None, task_id: Any = None) -> None:
        self._progress = progress
        self._task_id = task_id

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def advance(self, steps: float = 1, *, status: str | None = None) -> None:
        if self._progress is None:
            return
        if status is None:
            self._progress.advance(self._task_id, steps)
        else:
            self._progress.update(self._task_id, advance=steps, status=status)

    def update(
        self,
        *,
        status: str | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        if self._progress is None:
            return
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status
        if total is not None:
            changes["total"] = total
        if description is not None:
            changes["description"] = description
        self._progress.update(self._task_id, **changes)


_SILENT = object()
_display: ContextVar[Any] = ContextVar("lmforge_progress", default=None)


def terminal_progress() -> bool:
    """Whether progress may be drawn: stderr is a terminal and not disabled by env."""
    if os.environ.get("LMFORGE_PROGRESS", "").lower() in ("0", "false", "no", "off"):
        return False
    return sys.stderr.isatty()


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """No progress is drawn for anything started inside the block."""
    token = _display.set(_SILENT)
    try:
        yield
    finally:
        _display.reset(token)


def _new_progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


@contextlib.contextmanager
def task(
    description: str, total: float | None, *, enabled: bool = True, transient: bool = False
) -> Iterator[ProgressTask]:
    """Show a progress row for the block.

    Opens a live display on stderr when none is open (and progress is enabled and stderr
    is a terminal); otherwise joins the open one. ``transient`` rows vanish when done.
    With ``enabled=False`` the block and everything nested in it draw nothing.
    """
    current = _display.get()
    if current is _SILENT or (current is None and not (enabled and terminal_progress())):
        token = _display.set(_SILENT)
        try:
            yield ProgressTask()
        finally:
            _display.reset(token)
        return
    owner = current is None
    progress = _new_progress() if owner else current
    token = _display.set(progress)
    if owner:
        progress.start()
    task_id = progress.add_task(description, total=total, status="")
    try:
        yield ProgressTask(progress, task_id)
    finally:
        if transient and not owner:
            progress.remove_task(task_id)
        _display.reset(token)
        if owner:
            progress.stop()
