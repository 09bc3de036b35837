"""Retries with exponential backoff and jitter, for transient LM errors only."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Awaitable, Callable

from ..errors import LMError

__all__ = ["RetryPolicy"]


async def _async_sleep(seconds: float) -> None:
    import asyncio  # imported on first use: keeps `import lmforge` cheap

    await asyncio.sleep(seconds)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How transient failures (rate limits, 5xx, timeouts, dropped connections) are retried.

    Attempts are bounded by ``max_attempts`` and by ``max_total_seconds`` of elapsed time
    (the failed calls plus the waits between them): no retry starts whose wait would end
    past that bound. A provider's ``Retry-After`` is honoured (capped by ``max_delay``).
    Errors that cannot succeed on retry (auth, bad request, context window) are raised at
    once. ``lf.LM`` sends the attempts (counting each against the budget) and asks
    :meth:`next_wait` after each failure.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_seconds: float = 120.0
    jitter: float = 0.25
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = _async_sleep
    clock: Callable[[], float] = time.monotonic

    def delay(self, attempt: int, error: LMError) -> float:
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_delay)
        raw = min(self.base_delay * (2 ** (attempt - 1)), self.max_delay)
        return raw * (1 + random.uniform(-self.jitter, self.jitter))

    def next_wait(self, attempt: int, error: LMError, spent: float) -> float | None:
        """Seconds to wait before retrying after attempt number ``attempt`` failed with
        ``error``, ``spent`` seconds into the call (the failed requests plus the waits so
        far, waits counted as asked for); ``None``: give up and raise ``error``."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        wait = self.delay(attempt, error)
        if spent + wait > self.max_total_seconds:
            return None
        return wait


NO_RETRY = RetryPolicy(max_attempts=1)
