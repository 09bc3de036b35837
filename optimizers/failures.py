"""Counting failed examples across a run, so a compile whose LM calls all failed (a server
that is down, a wrong endpoint or key) is reported as a failure rather than a success."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FailureTally"]


class FailureTally:
    """Examples attempted and failed (program errors, not low scores), with the error
    messages seen; thread-safe. Restored checkpoints count too: optimizers replay them."""

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
        """``"9 of 10 examples failed (90%); commonest error (9x): ConnectionError: ..."``."""
        line = f"{self.failed} of {self.attempted} examples failed ({100 * self.share:.0f}%)"
        top = self.commonest()
        if top is not None:
            message = top[0] if len(top[0]) <= 200 else top[0][:197] + "..."
            line += f"; commonest error ({top[1]}x): {message}"
        return line
