"""Budgets: a cap on the LM calls and the money a block of code may spend.

``with lf.budget.enforce(lf.Budget(max_lm_calls=200)):`` makes every backend call inside
the block (in this thread or task, and in batch workers started from it) count against
the budget; the call that would go past it raises :class:`BudgetExceededError` instead of
reaching the backend. Every request sent counts, retries of a failed one included (the
meter says how many were retries). Cache hits are free and never count. Optimizers
enforce their ``budget=`` this way and stop cleanly when it is spent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from .errors import BudgetExceededError, UsageError

__all__ = ["Budget", "BudgetMeter", "active_meters", "charge", "enforce", "exhausted", "reserve"]


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    """Limits for a run: backend LM calls and/or USD spent (``None`` = no limit).

    ``lf.Budget(max_lm_calls=500, max_cost_usd=2.0)``. Every backend request counts as a
    call, retries included; calls answered from the cache are free. Cost counts only calls
    whose price is known (local models cost 0).
    """

    max_lm_calls: int | None = None
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        calls, cost = self.max_lm_calls, self.max_cost_usd
        if calls is not None and calls < 0:
            raise UsageError("Budget(max_lm_calls=...) must be 0 or more")
        # NaN compares false with everything and inf is never reached: neither would ever
        # stop a run, so both are refused rather than silently meaning "no limit".
        if cost is not None and (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not math.isfinite(cost)
            or cost < 0
        ):
            raise UsageError(
                f"Budget(max_cost_usd=...) must be a finite number of 0 or more, got {cost!r}; "
                "use None for no limit"
            )

    @property
    def unlimited(self) -> bool:
        return self.max_lm_calls is None and self.max_cost_usd is None

    def to_json(self) -> dict[str, Any]:
        return {"max_lm_calls": self.max_lm_calls, "max_cost_usd": self.max_cost_usd}


class BudgetMeter:
    """What has been spent against one :class:`Budget` (thread-safe).

    ``spent_calls`` counts every backend request, of which ``retries`` were retries of a
    failed one. ``spent_calls`` / ``spent_cost`` may start above zero when a resumed run
    carries over what its earlier attempts spent.
    """

    def __init__(self, budget: Budget, *, spent_calls: int = 0, spent_cost: float = 0.0) -> None:
        self.budget = budget
        self.spent_calls = spent_calls
        self.spent_cost = spent_cost
        self.retries = 0
        self.exceeded: str | None = None
        self._lock = threading.Lock()

    def reserve(self, *, retry: bool = False) -> None:
        """Count one backend request about to be sent (``retry``: it retries a failed one),
        or raise if the budget is spent."""
        with self._lock:
            limit = self.budget.max_lm_calls
            if limit is not None and self.spent_calls >= limit:
                self.exceeded = f"the budget of {limit} LM call(s) is spent"
            elif (
                self.budget.max_cost_usd is not None and self.spent_cost >= self.budget.max_cost_usd
            ):
                self.exceeded = (
                    f"the budget of ${self.budget.max_cost_usd:.4f} is spent "
                    f"(${self.spent_cost:.4f})"
                )
            if self.exceeded is not None:
                raise BudgetExceededError(self.exceeded)
            self.spent_calls += 1
            self.retries += retry

    def release(self, *, retry: bool = False) -> None:
        """Undo one :meth:`reserve` (the request was not sent)."""
        with self._lock:
            self.spent_calls -= 1
            self.retries -= retry

    def charge(self, cost: float | None) -> None:
        """Add the cost of a finished backend call (``None``: price unknown, nothing added)."""
        if cost:
            with self._lock:
                self.spent_cost += cost

    @property
    def remaining_calls(self) -> int | None:
        limit = self.budget.max_lm_calls
        return None if limit is None else max(0, limit - self.spent_calls)

    def __repr__(self) -> str:
        return (
            f"BudgetMeter(calls={self.spent_calls}, retries={self.retries}, "
            f"cost={self.spent_cost:.6f}, budget={self.budget})"
        )


_active: ContextVar[tuple[BudgetMeter, ...]] = ContextVar("lmforge_budgets", default=())


def active_meters() -> tuple[BudgetMeter, ...]:
    return _active.get()


@contextlib.contextmanager
def enforce(budget: Budget | BudgetMeter | None) -> Iterator[BudgetMeter | None]:
    """Apply ``budget`` to every backend call in the block; nested budgets all apply.

    Yields the meter (``None`` when ``budget`` is ``None``, which enforces nothing).
    """
    if budget is None:
        yield None
        return
    meter = budget if isinstance(budget, BudgetMeter) else BudgetMeter(budget)
    token = _active.set((*_active.get(), meter))
    try:
        yield meter
    finally:
        _active.reset(token)


def reserve(*, retry: bool = False) -> None:
    """Called by ``LM`` right before each backend request (``retry``: it retries a failed
    one): counts it against every active budget (all or none: when one budget is spent,
    the others are not charged for the request)."""
    meters = _active.get()
    if not meters:  # the common case: no budget applies
        return
    reserved: list[BudgetMeter] = []
    try:
        for meter in meters:
            meter.reserve(retry=retry)
            reserved.append(meter)
    except BudgetExceededError:
        for meter in reserved:
            meter.release(retry=retry)
        raise


def charge(cost: float | None) -> None:
    """Called by ``LM`` after a backend call with its cost."""
    for meter in _active.get():
        meter.charge(cost)


def exhausted() -> str | None:
    """Why an active budget is spent, or ``None`` (lets callers notice a swallowed stop)."""
    for meter in _active.get():
        if meter.exceeded is not None:
            return meter.exceeded
    return None
