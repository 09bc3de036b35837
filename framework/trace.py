"""Tracing: a ContextVar-scoped recorder of every LM call and predictor call.

``with lf.track() as t:`` records what happens in the block (in this thread or task and in
batch workers started from it); optimizers, reports and servers read the same records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .lm.types import LMRequest, LMResponse

if TYPE_CHECKING:
    from .example import Prediction

__all__ = ["LMCall", "PredictorCall", "Tracker", "track"]

_sequence = itertools.count()


@dataclasses.dataclass(slots=True)
class LMCall:
    """One call through an :class:`lmforge.LM` (answered by the backend or the cache).

    ``retries``: backend requests the call sent after its first one failed transiently.
    """

    model: str
    request: LMRequest
    response: LMResponse | None
    latency: float
    error: str | None = None
    retries: int = 0
    seq: int = dataclasses.field(default_factory=lambda: next(_sequence))

    @property
    def messages(self) -> list[dict[str, Any]] | None:
        return list(self.request.messages) if self.request.messages is not None else None

    @property
    def prompt(self) -> str | None:
        return self.request.prompt

    @property
    def output(self) -> str | None:
        return self.response.text if self.response is not None else None

    @property
    def prompt_tokens(self) -> int:
        return self.response.usage.prompt_tokens if self.response else 0

    @property
    def completion_tokens(self) -> int:
        return self.response.usage.completion_tokens if self.response else 0

    @property
    def cost(self) -> float | None:
        return self.response.cost if self.response else None

    @property
    def cache_hit(self) -> bool:
        return bool(self.response and self.response.cache_hit)


@dataclasses.dataclass(slots=True)
class PredictorCall:
    """One call of a ``Predict``: its inputs, parsed outputs (or error) and LM call."""

    predictor: Any
    inputs: dict[str, Any]
    outputs: Prediction | None
    lm_call: LMCall | None
    demos_used: int = 0
    error: BaseException | None = None
    seq: int = dataclasses.field(default_factory=lambda: next(_sequence))


class Tracker:
    """Records LM and predictor calls, and keeps running totals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[LMCall] = []
        self.predictions: list[PredictorCall] = []

    def add_call(self, call: LMCall) -> None:
        with self._lock:
            self.calls.append(call)

    def add_prediction(self, call: PredictorCall) -> None:
        with self._lock:
            self.predictions.append(call)

    @property
    def lm_calls(self) -> int:
        """Calls answered by a backend (cache hits excluded)."""
        return sum(1 for c in self.calls if not c.cache_hit and c.response is not None)

    @property
    def retries(self) -> int:
        """Backend requests that retried a failed one (not counted in :attr:`lm_calls`)."""
        return sum(c.retries for c in self.calls)

    @property
    def cache_hits(self) -> int:
        return sum(1 for c in self.calls if c.cache_hit)

    @property
    def errors(self) -> int:
        return sum(1 for c in self.calls if c.error is not None)

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls if not c.cache_hit)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.calls if not c.cache_hit)

    @property
    def cost(self) -> float | None:
        """USD spent on backend calls whose price is known; ``None`` when none is. Calls
        without a known price are counted in :attr:`unpriced_calls` (the cost is then a
        lower bound)."""
        known = [c.cost for c in self.calls if not c.cache_hit and c.cost is not None]
        return sum(known) if known else None

    @property
    def unpriced_calls(self) -> int:
        """Backend calls (cache hits excluded) whose price is not known."""
        return sum(1 for c in self.calls if not c.cache_hit and c.response and c.cost is None)

    def totals(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls),
            "lm_calls": self.lm_calls,
            "retries": self.retries,
            "cache_hits": self.cache_hits,
            "errors": self.errors,
            "unpriced_calls": self.unpriced_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost,
        }

    def __repr__(self) -> str:
        return f"Tracker({self.totals()})"


_active: ContextVar[tuple[Tracker, ...]] = ContextVar("lmforge_trackers", default=())


def active_trackers() -> tuple[Tracker, ...]:
    return _active.get()


@contextlib.contextmanager
def track() -> Iterator[Tracker]:
    """Record every LM call and predictor call made inside the block.

    Trackers nest: an outer tracker also sees what inner ones record.
    """
    tracker = Tracker()
    token = _active.set((*_active.get(), tracker))
    try:
        yield tracker
    finally:
        _active.reset(token)
