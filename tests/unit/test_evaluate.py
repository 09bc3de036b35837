"""``lf.evaluate``: mean score, per-example rows, failures counted (never dropped), usage,
bounded concurrency, budgets, and calls from inside a running event loop."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.budget import Budget, enforce
from lmforge.evaluation import EvaluationResult, aevaluate
from lmforge.testing import FunctionLM

TEAMS = {"refund": "billing", "crash": "technical", "price": "sales"}


def ticket_of(request: lf.LMRequest) -> str:
    return re.findall(r"Ticket: (.*)", request.as_text())[-1]


def router_lm(cache: object = False) -> FunctionLM:
    """Right for refund/crash tickets, says 'sales' otherwise; fails on 'boom' tickets."""

    def reply(request: lf.LMRequest) -> str:
        ticket = ticket_of(request)
        if "boom" in ticket:
            raise lf.ProviderError("backend exploded")
        return " " + next((team for word, team in TEAMS.items() if word in ticket), "sales")

    return FunctionLM(reply, model_type="text", cache=cache)


def data(*tickets: tuple[str, str]) -> list[lf.Example]:
    return [lf.Example(ticket=t, team=team).with_inputs("ticket") for t, team in tickets]


PROGRAM = "ticket -> team"


def test_score_rows_and_usage() -> None:
    dataset = data(
        ("refund now", "billing"),
        ("crash again", "technical"),
        ("hello", "billing"),
        ("x", "sales"),
    )
    with lf.use(lm=router_lm()):
        result = lf.evaluate(lf.Predict(PROGRAM), dataset, lf.metrics.exact_match, progress=False)
    assert isinstance(result, lf.EvaluationResult)
    assert result.score == pytest.approx(0.75)
    assert result.scores == [1.0, 1.0, 0.0, 1.0]
    assert [row.index for row in result.rows] == [0, 1, 2, 3]
    assert result.rows[2].prediction is not None and result.rows[2].prediction.team == "sales"
    assert result.num_failures == 0
    assert result.usage["lm_calls"] == 4 and result.usage["cache_hits"] == 0
    assert result.usage["prompt_tokens"] > 0
    assert "75.0%" in result.summary()
    assert float(result) == result.score
    as_dict = result.to_dict()
    assert as_dict["rows"][0]["example"] == {"ticket": "refund now", "team": "billing"}


def test_failures_are_counted_and_listed_not_dropped() -> None:
    def metric(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
        if example.ticket == "metric-bug":
            raise KeyError("oops")
        return bool(prediction.team == example.team)

    dataset = data(
        ("refund", "billing"), ("boom", "billing"), ("metric-bug", "sales"), ("crash", "sales")
    )
    with lf.use(lm=router_lm()):
        result = lf.evaluate(
            lf.Predict(PROGRAM), dataset, metric, failure_score=0.0, progress=False
        )
    assert result.n == 4
    assert result.num_failures == 2
    assert [row.index for row in result.failures] == [1, 2]
    assert result.failures[0].error_type == "ProviderError"
    assert "backend exploded" in (result.failures[0].error or "")
    assert result.failures[1].error_type == "metric:KeyError"
    assert result.score == pytest.approx(0.25)  # 1 right out of 4; failures count as 0
    assert result.usage["errors"] == 1


def test_failure_score_is_used_for_failed_rows() -> None:
    with lf.use(lm=router_lm()):
        result = lf.evaluate(
            lf.Predict(PROGRAM),
            data(("boom", "x")),
            lf.metrics.exact_match,
            failure_score=0.5,
            progress=False,
        )
    assert result.score == 0.5 and result.num_failures == 1


def test_cache_hits_are_reported(tmp_path: Path) -> None:
    lm = router_lm(cache=tmp_path / "cache")
    dataset = data(("refund", "billing"), ("crash", "technical"))
    with lf.use(lm=lm):
        lf.evaluate(lf.Predict(PROGRAM), dataset, lf.metrics.exact_match, progress=False)
        again = lf.evaluate(lf.Predict(PROGRAM), dataset, lf.metrics.exact_match, progress=False)
    assert again.usage["cache_hits"] == 2 and again.usage["lm_calls"] == 0
    assert again.score == 1.0


def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def reply(request: lf.LMRequest) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return " sales"

    dataset = data(*[(f"t{i}", "sales") for i in range(12)])
    with lf.use(lm=FunctionLM(reply, model_type="text")):
        result = lf.evaluate(
            lf.Predict(PROGRAM), dataset, lf.metrics.exact_match, concurrency=3, progress=False
        )
    assert result.score == 1.0
    assert peak == 3


def test_budget_stop_raises_instead_of_scoring_zero() -> None:
    dataset = data(*[(f"refund {i}", "billing") for i in range(6)])
    with (
        lf.use(lm=router_lm()),
        enforce(Budget(max_lm_calls=2)),
        pytest.raises(lf.BudgetExceededError),
    ):
        lf.evaluate(
            lf.Predict(PROGRAM), dataset, lf.metrics.exact_match, concurrency=1, progress=False
        )


def test_evaluate_works_inside_a_running_loop_and_async() -> None:
    dataset = data(("refund", "billing"))

    async def main() -> tuple[EvaluationResult, EvaluationResult]:
        program = lf.Predict(PROGRAM)
        sync_result = lf.evaluate(program, dataset, lf.metrics.exact_match, progress=False)
        async_result = await aevaluate(program, dataset, lf.metrics.exact_match, progress=False)
        return sync_result, async_result

    with lf.use(lm=router_lm()):
        first, second = asyncio.run(main())
    assert first.score == second.score == 1.0


def test_bad_datasets_and_metric_values() -> None:
    with lf.use(lm=router_lm()):
        with pytest.raises(lf.UsageError, match=r"lf\.Example"):
            lf.evaluate(lf.Predict(PROGRAM), [{"ticket": "x"}], lf.metrics.exact_match)  # type: ignore[list-item]
        with pytest.raises(lf.UsageError, match="with_inputs"):
            lf.evaluate(
                lf.Predict(PROGRAM), [lf.Example(ticket="x", team="y")], lf.metrics.exact_match
            )
        result = lf.evaluate(
            lf.Predict(PROGRAM),
            data(("refund", "billing"), ("crash", "technical")),
            lambda e, p: "yes" if e.ticket == "refund" else True,
            progress=False,
        )
    assert result.num_failures == 1 and "bool or a number" in (result.failures[0].error or "")
    assert result.score == 0.5


def test_a_mistake_on_every_example_is_raised_not_scored() -> None:
    dataset = data(("refund", "billing"), ("crash", "technical"))
    with pytest.raises(lf.UsageError, match="no LM configured"):
        lf.evaluate(lf.Predict(PROGRAM), dataset, lf.metrics.exact_match, progress=False)
    with (
        lf.use(lm=router_lm()),
        pytest.raises(lf.UsageError, match="none of the example's label"),
    ):
        lf.evaluate(lf.Predict("ticket -> queue"), dataset, lf.metrics.exact_match, progress=False)


def test_numpy_scores_are_accepted_by_what_they_are() -> None:
    np = pytest.importorskip("numpy")
    dataset = data(("refund", "billing"), ("crash", "technical"), ("hello", "billing"))
    values = {"refund": np.bool_(True), "crash": np.float64(0.5), "hello": np.int64(0)}
    with lf.use(lm=router_lm()):
        result = lf.evaluate(
            lf.Predict(PROGRAM), dataset, lambda e, p: values[e.ticket], progress=False
        )
    assert result.num_failures == 0
    assert result.scores == [1.0, 0.5, 0.0]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(5, "returned 5, outside"), (-0.5, "returned -0.5"), (float("nan"), "returned NaN")],
)
def test_scores_outside_0_1_or_nan_are_usage_errors_naming_the_metric(
    value: float, shown: str
) -> None:
    def counts_words(example: lf.Example, prediction: lf.Prediction) -> float:
        return value

    dataset = data(("refund", "billing"), ("crash", "technical"))
    with lf.use(lm=router_lm()), pytest.raises(lf.UsageError) as info:
        lf.evaluate(lf.Predict(PROGRAM), dataset, counts_words, progress=False)
    assert "'counts_words'" in str(info.value) and shown in str(info.value)
    # one bad score among good ones fails that example only, with the same message
    with lf.use(lm=router_lm()):
        result = lf.evaluate(
            lf.Predict(PROGRAM),
            dataset,
            lambda e, p: value if e.ticket == "crash" else 1.0,
            progress=False,
        )
    assert result.score == 0.5
    assert result.failures[0].error_type == "metric:UsageError"
    assert shown in (result.failures[0].error or "")


def test_an_empty_dataset_is_a_usage_error_not_a_zero_score() -> None:
    with lf.use(lm=router_lm()), pytest.raises(lf.UsageError, match="nothing to evaluate"):
        lf.evaluate(lf.Predict(PROGRAM), [], lf.metrics.exact_match, progress=False)


@pytest.mark.parametrize("failure_score", ["x", None, True, 2.0, -1])
def test_failure_score_must_be_a_number_in_0_1(failure_score: Any) -> None:
    dataset = data(("refund", "billing"))
    with lf.use(lm=router_lm()), pytest.raises(lf.UsageError, match="failure_score must be"):
        lf.evaluate(
            lf.Predict(PROGRAM),
            dataset,
            lf.metrics.exact_match,
            failure_score=failure_score,
            progress=False,
        )


def test_a_metric_that_raises_on_every_prediction_is_a_usage_error_not_a_zero_score() -> None:
    """A metric bug (wrong label name, wrong arity) used to score 0% on every example and
    let ``lmforge compile`` write an artifact for a program it never really scored."""

    def wrong_label(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
        return bool(prediction.team == example.label)

    def one_argument(example: lf.Example) -> float:
        return 1.0

    dataset = data(("refund", "billing"), ("boom", "billing"), ("crash", "technical"))
    with lf.use(lm=router_lm()), pytest.raises(lf.UsageError) as info:
        lf.evaluate(lf.Predict(PROGRAM), dataset, wrong_label, progress=False)
    message = str(info.value)
    assert "'wrong_label' raised on every prediction it scored (2 of 3)" in message
    assert "AttributeError" in message and "'label'" in message
    assert isinstance(info.value.__cause__, AttributeError)
    with lf.use(lm=router_lm()), pytest.raises(lf.UsageError, match="TypeError"):
        lf.evaluate(lf.Predict(PROGRAM), dataset, one_argument, progress=False)  # type: ignore[arg-type]


def test_a_metric_that_raises_on_some_predictions_only_fails_those() -> None:
    def picky(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
        if example.ticket == "crash":
            raise KeyError("oops")
        return bool(prediction.team == example.team)

    dataset = data(("refund", "billing"), ("crash", "technical"))
    with lf.use(lm=router_lm()):
        result = lf.evaluate(lf.Predict(PROGRAM), dataset, picky, progress=False)
    assert result.score == 0.5
    assert [row.error_type for row in result.failures] == ["metric:KeyError"]
