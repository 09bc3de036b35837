"""One core for a blocking function and its async twin.

Logic that must exist as ``f`` and ``async af`` (``LM.complete``/``acomplete``,
``Predict.forward``/``aforward``, ...) is written once, as an ``async def`` core taking
``blocking: bool``, that writes each step that blocks or awaits both ways::

    response = backend.complete(request) if blocking else await backend.acomplete(request)

``af`` awaits the core with ``blocking=False``. ``f`` runs it with ``blocking=True``
through :func:`run_blocking`: such a core never suspends, so one ``send`` runs it to the
end, in the caller's thread and context, with no event loop. A fix to the core lands in
both twins, and neither pays for a driver loop.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_blocking"]

T = TypeVar("T")


def run_blocking(core: Coroutine[Any, Any, T]) -> T:
    """Run ``core`` (started with ``blocking=True``) to its end and return its result."""
    try:
        core.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    core.close()
    raise RuntimeError(
        "a core run with blocking=True awaited something that suspends; "
        "each of its steps must take its blocking form when blocking is true"
    )
