"""Counting examples that raised during a compile.

Two counts share :class:`FailureTally`. LM-call failures (:class:`lmforge.errors.LMError`
and its subclasses, see :func:`lm_failures`) decide whether a compile whose calls all failed
(a server that is down, a wrong endpoint or key) is reported as a failure rather than a
success: unparsable answers or a low score are the model's quality, which compiling is
there for. Every error (any exception of the program or metric) counts against an
optimizer's ``max_errors`` (see :func:`check_max_errors`), as in DSPy: a teacher that raises
on every example stops the run instead of "succeeding" with no demos.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from lmforge.errors import LMForgeError

__all__ = ["FailureTally", "TooManyErrorsError", "check_max_errors", "error_type", "lm_failures"]


class TooManyErrorsError(LMForgeError):
    """More examples raised during one step of a compile (bootstrapping demos, one
    evaluation) than the optimizer's ``max_errors`` allows."""


@functools.cache
def _lm_error_names() -> frozenset[str]:
    from lmforge.errors import LMError

    names: set[str] = set()
    todo: list[type] = [LMError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def lm_failures(errors: Iterable[str | None]) -> dict[str, Any]:
    """Of ``"ErrorType: message"`` texts, the LM-call failures: ``{"failed": count,
    "errors": {message: count}}`` (the ten most frequent messages)."""
    names = _lm_error_names()
    counts = collections.Counter(e for e in errors if e and e.split(":", 1)[0] in names)
    return {"failed": sum(counts.values()), "errors": dict(counts.most_common(10))}


def error_type(error: str) -> str:
    """The type part of an ``"ErrorType: message"`` text (``"metric:TypeError"`` kept whole)."""
    return error.partition(": ")[0] or "Error"


def check_max_errors(
    kinds: Mapping[str, int],
    attempted: int,
    max_errors: int | None,
    where: str,
    samples: Iterable[str] = (),
) -> None:
    """Raise :class:`TooManyErrorsError` when more examples raised (``kinds``: error type
    -> count) than ``max_errors`` (``None``: no limit). ``samples`` (``"ErrorType:
    message"`` texts) give the commonest type's message."""
    count = sum(kinds.values())
    if max_errors is None or count <= max_errors:
        return
    kind, times = collections.Counter(kinds).most_common(1)[0]
    message = " ".join(next((s for s in samples if error_type(s) == kind), kind).split())
    message = message if len(message) <= 200 else message[:197] + "..."
    raise TooManyErrorsError(
        f"{count} of {attempted} examples raised while {where}, more than "
        f"max_errors={max_errors}; commonest error ({times}x): {message}; fix the program "
        "or its LM, or pass a larger max_errors to the optimizer"
    )


class FailureTally:
    """Examples attempted and failed on LM calls, with the error messages seen; thread-safe.
    Restored checkpoints count too: optimizers replay them."""

    def __init__(self) -> None:
        self.attempted = 0
        self.failed = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(
        self, attempted: int, failed: int, errors: Iterable[str] | Mapping[str, int] = ()
    ) -> None:
        """Count ``attempted`` examples of which ``failed`` raised, and their messages (a
        list, or ``{message: count}``)."""
        with self._lock:
            self.attempted += attempted
            self.failed += failed
            self.errors.update(errors)

    def merge(self, summary: Mapping[str, Any]) -> None:
        """Add a :meth:`summary` of another tally."""
        self.add(
            int(summary.get("attempted") or 0),
            int(summary.get("failed") or 0),
            summary.get("errors") or {},
        )

    @property
    def share(self) -> float:
        """Failed / attempted (0.0 when nothing was attempted)."""
        return self.failed / self.attempted if self.attempted else 0.0

    def commonest(self) -> tuple[str, int] | None:
        """The most frequent error message and how often it was seen."""
        top = self.errors.most_common(1)
        return top[0] if top else None

    def summary(self) -> dict[str, Any]:
        """JSON: attempted, failed and the ten most frequent error messages with counts."""
        return {
            "attempted": self.attempted,
            "failed": self.failed,
            "errors": dict(self.errors.most_common(10)),
        }

    def describe(self) -> str:
        """``"9 of 10 examples failed on LM calls (90%); commonest error (9x): ..."``."""
        line = (
            f"{self.failed} of {self.attempted} examples failed on LM calls "
            f"({100 * self.share:.0f}%)"
        )
        top = self.commonest()
        if top is not None:
            message = top[0] if len(top[0]) <= 200 else top[0][:197] + "..."
            line += f"; commonest error ({top[1]}x): {message}"
        return line
