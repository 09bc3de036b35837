"""Counting examples whose LM calls failed across a run, so a compile whose calls all failed
(a server that is down, a wrong endpoint or key) is reported as a failure rather than a
success. Only LM-call errors (:class:`lmforge.errors.LMError` and its subclasses) count:
unparsable answers or a low score are the model's quality, which compiling is there for."""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FailureTally", "lm_failures"]


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
