"""Budgets count every backend request, retries included, and reports say how many were
retries (``lf.track`` totals, the budget meter, ``lf.evaluate``'s summary)."""

from __future__ import annotations

import lmforge as lf
import pytest
from lmforge.budget import Budget, enforce
from lmforge.lm.types import LMRequest
from lmforge.testing import FunctionLM

ANSWER = "[[ ## answer ## ]]\nfine"


async def _no_wait(seconds: float) -> None:
    return None


def flaky(failures: int = 3) -> FunctionLM:
    """Fails transiently ``failures`` times (a 503), then answers; waits are skipped."""
    left = [failures]

    def answer(request: LMRequest) -> str:
        if left[0]:
            left[0] -= 1
            raise lf.ProviderError("503 from the provider", status_code=503, retryable=True)
        return ANSWER

    lm = FunctionLM(answer)
    lm.retry = lf.RetryPolicy(max_attempts=5, sleep=lambda s: None, async_sleep=_no_wait)
    return lm


def test_one_call_budget_sends_one_request_then_stops() -> None:
    lm = flaky()
    qa = lf.Predict("question -> answer", lm=lm)
    with (
        lf.track() as t,
        enforce(Budget(max_lm_calls=1)) as meter,
        pytest.raises(lf.BudgetExceededError, match="1 LM call"),
    ):
        qa(question="q")
    assert len(lm.calls) == 1  # the retry the budget refused was never sent
    assert meter is not None and meter.spent_calls == 1 and meter.retries == 0
    assert t.totals()["retries"] == 0 and t.errors == 1


async def test_one_call_budget_stops_async_retries_too() -> None:
    lm = flaky()
    qa = lf.Predict("question -> answer", lm=lm)
    with enforce(Budget(max_lm_calls=1)) as meter, pytest.raises(lf.BudgetExceededError):
        await qa.acall(question="q")
    assert len(lm.calls) == 1
    assert meter is not None and meter.spent_calls == 1


def test_four_call_budget_covers_three_retries_and_reports_them() -> None:
    lm = flaky()
    qa = lf.Predict("question -> answer", lm=lm)
    with lf.track() as t, enforce(Budget(max_lm_calls=4)) as meter:
        assert qa(question="q").answer == "fine"
    assert len(lm.calls) == 4
    assert meter is not None and meter.spent_calls == 4 and meter.retries == 3
    assert "retries=3" in repr(meter)
    totals = t.totals()
    assert totals["lm_calls"] == 1 and totals["retries"] == 3 and totals["errors"] == 0
    assert t.calls[0].retries == 3


async def test_async_retries_are_counted_like_sync_ones() -> None:
    lm = flaky()
    qa = lf.Predict("question -> answer", lm=lm)
    with lf.track() as t, enforce(Budget(max_lm_calls=4)) as meter:
        assert (await qa.acall(question="q")).answer == "fine"
    assert len(lm.calls) == 4
    assert meter is not None and meter.spent_calls == 4 and meter.retries == 3
    assert t.totals()["retries"] == 3


def test_evaluation_report_counts_retries() -> None:
    qa = lf.Predict("question -> answer", lm=flaky())
    data = [lf.Example(question="q", answer="fine").with_inputs("question")]
    result = lf.evaluate(qa, data, lambda ex, pred, trace=None: pred.answer == ex.answer)
    assert result.usage["lm_calls"] == 1 and result.usage["retries"] == 3
    assert "1 LM call(s) (+3 retries)" in result.summary()


def test_refused_request_is_released_from_every_budget() -> None:
    lm = flaky(failures=1)
    qa = lf.Predict("question -> answer", lm=lm)
    with (
        enforce(Budget(max_lm_calls=10)) as outer,
        enforce(Budget(max_lm_calls=1)) as inner,
        pytest.raises(lf.BudgetExceededError),
    ):
        qa(question="q")
    assert outer is not None and inner is not None
    assert (outer.spent_calls, outer.retries) == (1, 0)  # the refused retry was not charged
    assert (inner.spent_calls, inner.retries) == (1, 0)


def test_compile_info_counts_retries() -> None:
    from lmforge.optimizers import RandomSearch
    from optimizer_fakes import TRAIN, VAL, Router

    router = Router(needs_demos=True)
    failed = [False]

    def first_request_fails(request: LMRequest) -> str:
        if not failed[0]:
            failed[0] = True
            raise lf.RateLimitError("429 slow down", retry_after=0.0)
        return router(request)

    lm = FunctionLM(first_request_fails, model_type="text", model="test/router")
    lm.retry = lf.RetryPolicy(sleep=lambda s: None)
    compiled = RandomSearch(num_candidates=2, max_bootstrapped_demos=1).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        valset=VAL,
        lm=lm,
        seed=7,
        progress=False,
    )
    info = compiled.compile_info  # type: ignore[attr-defined]
    assert info["retries"] == 1 and info["backend_calls"] == len(router.requests)
