"""Budget limits that could never stop a run (NaN, infinity, negative) are refused."""

from __future__ import annotations

import math

import lmforge as lf
import pytest
from lmforge.budget import Budget, BudgetMeter


@pytest.mark.parametrize("cost", [math.nan, math.inf, -math.inf, -0.5])
def test_a_cost_limit_that_can_never_trip_is_refused(cost: float) -> None:
    with pytest.raises(lf.UsageError, match=r"max_cost_usd=\.\.\.\) must be a finite number"):
        Budget(max_cost_usd=cost)


def test_finite_cost_limits_are_kept_and_zero_spends_nothing() -> None:
    assert Budget(max_cost_usd=2).max_cost_usd == 2
    meter = BudgetMeter(Budget(max_cost_usd=0.0))
    with pytest.raises(lf.BudgetExceededError):
        meter.reserve()
