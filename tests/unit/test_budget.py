"""Budgets: backend calls and cost counted in ``LM.complete``/``acomplete``; cache hits free."""

from __future__ import annotations

import asyncio
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.budget import Budget, BudgetMeter, enforce, exhausted
from lmforge.lm.types import LMResponse, Usage
from lmforge.testing import FunctionLM


def answer_lm(cache: object = False, cost: float | None = None) -> FunctionLM:
    def reply(request: lf.LMRequest) -> LMResponse:
        return LMResponse(texts=("[[ ## answer ## ]]\nok",), usage=Usage(3, 1), cost=cost)

    return FunctionLM(reply, cache=cache)


def test_call_budget_stops_the_call_past_it() -> None:
    lm = answer_lm()
    qa = lf.Predict("question -> answer", lm=lm)
    with enforce(Budget(max_lm_calls=2)) as meter:
        qa(question="1")
        qa(question="2")
        with pytest.raises(lf.BudgetExceededError, match="2 LM call"):
            qa(question="3")
        assert exhausted() is not None
    assert meter is not None and meter.spent_calls == 2
    assert len(lm.calls) == 2  # the third never reached the backend
    assert exhausted() is None  # outside the block nothing is enforced
    qa(question="4")


def test_cache_hits_are_free(tmp_path: Path) -> None:
    lm = answer_lm(cache=tmp_path / "cache")
    qa = lf.Predict("question -> answer", lm=lm)
    qa(question="same")
    with enforce(Budget(max_lm_calls=0)):
        assert qa(question="same").answer == "ok"  # cached
        with pytest.raises(lf.BudgetExceededError):
            qa(question="new")


def test_cost_budget_counts_known_prices() -> None:
    qa = lf.Predict("question -> answer", lm=answer_lm(cost=0.4))
    with enforce(Budget(max_cost_usd=1.0)) as meter:
        qa(question="1")
        qa(question="2")
        qa(question="3")  # spent 0.8 < 1.0 before this call
        with pytest.raises(lf.BudgetExceededError, match=r"\$1.0000"):
            qa(question="4")
    assert meter is not None and meter.spent_cost == pytest.approx(1.2)


def test_budgets_nest_and_reach_batch_workers_and_tasks() -> None:
    qa = lf.Predict("question -> answer", lm=answer_lm())
    with enforce(Budget(max_lm_calls=10)) as outer, enforce(Budget(max_lm_calls=3)) as inner:
        results = qa.batch([{"question": str(i)} for i in range(5)], concurrency=3)
        failed = [r for r in results if isinstance(r, lf.BatchError)]
        assert len(failed) == 2
        assert all(isinstance(r.error, lf.BudgetExceededError) for r in failed)
    assert inner is not None and outer is not None
    assert inner.spent_calls == 3 and outer.spent_calls == 3

    async def main() -> int:
        with enforce(Budget(max_lm_calls=2)):
            outcomes = await qa.abatch([{"question": str(i)} for i in range(4)], concurrency=4)
        return sum(isinstance(o, lf.BatchError) for o in outcomes)

    assert asyncio.run(main()) == 2


def test_meter_carries_earlier_spending_and_validates() -> None:
    meter = BudgetMeter(Budget(max_lm_calls=5), spent_calls=5)
    with pytest.raises(lf.BudgetExceededError):
        meter.reserve()
    assert BudgetMeter(Budget()).remaining_calls is None
    assert BudgetMeter(Budget(max_lm_calls=5), spent_calls=2).remaining_calls == 3
    with pytest.raises(lf.UsageError):
        Budget(max_lm_calls=-1)
    with enforce(None) as nothing:
        assert nothing is None
    assert lf.Budget is Budget
