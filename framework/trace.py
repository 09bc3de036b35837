"""Tracing: a ContextVar-scoped recorder of every LM call and predictor call.

``with lf.track() as t:`` records what happens in the block (in this thread or task and in
batch workers started from it); optimizers, reports and servers read the same records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import itertools
import os
import threading
from collections.abc import Coroutine, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .lm.types import LMRequest, LMResponse

if TYPE_CHECKING:
    from .example import Prediction

__all__ = [
    "Instrumentation",
    "LMCall",
    "PredictorCall",
    "Tracker",
    "instrumentation",
    "set_instrumentation",
    "track",
]

T = TypeVar("T")

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


# -- instrumentation hook ----------------------------------------------------------------


class Instrumentation(Protocol):
    """An observability bridge (``lmforge.integrations.otel``): a context open around every
    module call (programs and their predictors) and every LM call, nested as the calls are.
    """

    def span(self, subject: Any, detail: Any) -> contextlib.AbstractContextManager[object]:
        """The context around one call of ``subject`` (a ``Module`` or an ``LM``) with
        ``detail`` (the module's inputs or the LM's ``LMRequest``)."""
        ...

    def asgi_middleware(self) -> type | None:
        """A pure ASGI middleware class the program server installs (incoming trace
        context), or ``None``."""
        ...


class _FromEnvironment:
    """The hook until the first call: reads ``LMFORGE_OTEL`` once, then replaces itself
    with the OpenTelemetry instrumentation (``LMFORGE_OTEL=1``) or with nothing."""

    def span(self, subject: Any, detail: Any) -> contextlib.AbstractContextManager[object]:
        hook = instrumentation()
        return hook.span(subject, detail) if hook is not None else contextlib.nullcontext()

    def asgi_middleware(self) -> type | None:
        return None


_FROM_ENVIRONMENT = _FromEnvironment()
_resolving = threading.Lock()

# The process's one instrumentation, read by Module.__call__ and LM.complete_core with a
# single ``is None`` check. It is process-wide on purpose (as OpenTelemetry's own tracer
# provider is): server threads and batch workers must all report. Set it only through
# set_instrumentation().
current: Instrumentation | None = _FROM_ENVIRONMENT


def set_instrumentation(hook: Instrumentation | None) -> Instrumentation | None:
    """Install ``hook`` for every later call in the process (``None``: none); returns the
    previous one. ``lmforge.integrations.otel.instrument()`` calls it."""
    global current
    previous, current = current, hook
    return None if previous is _FROM_ENVIRONMENT else previous


def instrumentation() -> Instrumentation | None:
    """The installed instrumentation; the first use in a process reads ``LMFORGE_OTEL``
    (``1``/``true``: instrument with OpenTelemetry, which needs the ``otel`` extra)."""
    if current is _FROM_ENVIRONMENT:
        with _resolving:
            if current is _FROM_ENVIRONMENT:
                wanted = os.environ.get("LMFORGE_OTEL", "").strip().lower()
                if wanted in ("1", "true", "yes", "on"):
                    importlib.import_module("lmforge.integrations.otel").instrument()
                else:
                    set_instrumentation(None)
    return current


async def spanned(
    hook: Instrumentation, subject: Any, detail: Any, core: Coroutine[Any, Any, T]
) -> T:
    """Await ``core`` (a :mod:`lmforge.steps` core) inside ``hook``'s span."""
    with hook.span(subject, detail):
        return await core
