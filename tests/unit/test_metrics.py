"""Built-in metrics (normalised exact match, F1, contains) and the LLM-as-judge metric."""

from __future__ import annotations

import enum
from typing import Any

import lmforge as lf
import pytest
from lmforge.evaluation import run_sync
from lmforge.metrics import F1, Contains, ExactMatch, Judge, call_metric, normalize
from lmforge.testing import FunctionLM, ScriptedLM


def ex(**fields: Any) -> lf.Example:
    return lf.Example(question="q", **fields).with_inputs("question")


def test_normalize_drops_case_punctuation_articles_and_spaces() -> None:
    assert normalize("  The  Billing-Team! ") == "billingteam"
    assert normalize("an apple, a pear") == "apple pear"


class Team(enum.Enum):
    BILLING = "billing"


def test_exact_match_compares_every_label_field() -> None:
    metric = lf.metrics.exact_match
    assert metric(ex(answer="Paris"), lf.Prediction(answer="paris."))
    assert not metric(ex(answer="Paris"), lf.Prediction(answer="Lyon"))
    assert metric(ex(team="billing"), lf.Prediction(team=Team.BILLING))
    two = ex(a="x", b="y")
    assert not metric(two, lf.Prediction(a="x", b="z"))
    assert metric(two, lf.Prediction(a="x", b="y", extra="ignored"))
    assert not ExactMatch(normalized=False)(ex(answer="Paris"), lf.Prediction(answer="paris"))


def test_fields_choose_what_is_compared_and_missing_ones_are_errors() -> None:
    example = ex(answer="Paris", note="ignored")
    assert ExactMatch("answer")(example, lf.Prediction(answer="Paris", note="other"))
    with pytest.raises(lf.UsageError, match="none of the example's label fields"):
        lf.metrics.exact_match(example, lf.Prediction(other="x"))
    with pytest.raises(lf.UsageError, match="no field 'answer'"):
        ExactMatch("answer")(example, lf.Prediction(other="x"))


def test_f1_is_token_overlap() -> None:
    score = lf.metrics.f1(ex(answer="the quick brown fox"), lf.Prediction(answer="quick red fox"))
    # gold tokens: quick brown fox; predicted: quick red fox -> P = R = 2/3
    assert score == pytest.approx(2 / 3)
    assert (
        lf.metrics.f1(ex(answer="a"), lf.Prediction(answer="")) == 1.0
    )  # both empty after normalising
    assert F1()(ex(answer="x"), lf.Prediction(answer="y")) == 0.0


def test_contains() -> None:
    assert lf.metrics.contains(ex(answer="Paris"), lf.Prediction(answer="It is paris, France"))
    assert not Contains()(ex(answer="Paris"), lf.Prediction(answer="Lyon"))


def test_two_argument_and_async_metrics_are_called() -> None:
    def two(example: lf.Example, prediction: lf.Prediction) -> bool:
        return True

    async def three(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> float:
        return 0.5 if trace == "t" else 0.0

    assert run_sync(call_metric(two, ex(a=1), lf.Prediction(a=1), "t")) is True
    assert run_sync(call_metric(three, ex(a=1), lf.Prediction(a=1), "t")) == 0.5


def test_judge_fills_inputs_by_name_and_scores_a_bool() -> None:
    seen: list[str] = []

    def reply(request: lf.LMRequest) -> str:
        text = request.as_text()
        seen.append(text)
        verdict = (
            "true" if "Paris" in text.split("[[ ## answer ## ]]")[-1].split("[[")[0] else "false"
        )
        return f"[[ ## correct ## ]]\n{verdict}"

    judge = Judge("question, answer, expected_answer -> correct: bool", lm=FunctionLM(reply))
    example = ex(answer="Paris")
    assert judge(example, lf.Prediction(answer="Paris")) == 1.0
    assert judge(example, lf.Prediction(answer="Lyon")) == 0.0
    # expected_answer comes from the example, answer from the prediction
    assert "[[ ## expected_answer ## ]]\nParis" in seen[-1]
    assert "[[ ## answer ## ]]\nLyon" in seen[-1]


def test_judge_scale_async_and_custom_inputs() -> None:
    lm = ScriptedLM(["[[ ## rating ## ]]\n4", "[[ ## rating ## ]]\n9"])
    judge = Judge(
        "response, reference -> rating: int",
        lm=lm,
        inputs={"response": lambda e, p: p.answer, "reference": lambda e, p: e.answer},
        scale=(1, 5),
    )
    assert judge(ex(answer="a"), lf.Prediction(answer="b")) == pytest.approx(0.75)
    # 9 on a 1..5 scale is not a verdict: a parse failure, never silently clamped to 1.0
    with pytest.raises(lf.ParseError, match=r"gave 9, outside the scale \[1, 5\]"):
        run_sync(judge.acall(ex(answer="a"), lf.Prediction(answer="b")))


def test_judge_errors() -> None:
    with pytest.raises(lf.UsageError, match="scale"):
        Judge("a -> ok: bool", scale=(5, 1))
    with pytest.raises(lf.UsageError, match="does not have"):
        Judge("a -> ok: bool", inputs={"zzz": lambda e, p: 1})
    judge = Judge("missing_field -> ok: bool", lm=ScriptedLM(["[[ ## ok ## ]]\ntrue"]))
    with pytest.raises(lf.UsageError, match="no value for its input 'missing_field'"):
        judge(ex(answer="a"), lf.Prediction(answer="b"))


def test_judge_inside_evaluate_counts_its_calls() -> None:
    task = ScriptedLM(["[[ ## answer ## ]]\nParis"] * 2)
    judge = Judge(
        "answer, expected_answer -> correct: bool", lm=ScriptedLM(["[[ ## correct ## ]]\ntrue"] * 2)
    )
    data = [ex(answer="Paris"), ex(answer="Paris")]
    with lf.use(lm=task):
        result = lf.evaluate(lf.Predict("question -> answer"), data, judge, progress=False)
    assert result.score == 1.0
    assert result.usage["lm_calls"] == 4  # 2 task + 2 judge
    assert result.metric == "judge"


def test_judge_normalizes_by_its_scale_and_refuses_scores_outside_it() -> None:
    verdicts = ["0", "5", "10", "10.5", "-1"]
    judge = Judge(
        "answer -> score: float",
        lm=ScriptedLM([f"[[ ## score ## ]]\n{v}" for v in verdicts]),
        scale=(0, 10),
    )
    prediction = lf.Prediction(answer="b")
    assert [judge(ex(answer="a"), prediction) for _ in range(3)] == [0.0, 0.5, 1.0]
    for _ in range(2):
        with pytest.raises(lf.ParseError, match=r"outside the scale \[0, 10\]") as info:
            judge(ex(answer="a"), prediction)
        assert info.value.field == "score"


def test_judge_without_a_scale_takes_scores_in_0_1_only() -> None:
    """A 1-5 rating with no scale= used to be clamped to 1.0: now it fails the example and
    the error says to pass scale=."""
    judge = Judge("answer -> rating: int", lm=ScriptedLM(["[[ ## rating ## ]]\n4"] * 2))
    with pytest.raises(lf.ParseError, match=r"gave 4, outside the scale \[0, 1\].*scale="):
        judge(ex(answer="a"), lf.Prediction(answer="b"))
    with lf.use(lm=ScriptedLM(["[[ ## answer ## ]]\nx"])):
        result = lf.evaluate(
            lf.Predict("question -> answer"), [ex(answer="a")], judge, progress=False
        )
    assert result.score == 0.0
    assert result.failures[0].error_type == "metric:ParseError"


@pytest.mark.parametrize(
    "scale", [(1,), (1, 2, 3), "15", (1, "5"), (True, 5), (3, 3), (0, float("inf")), 5]
)
def test_judge_scale_must_be_two_numbers_low_below_high(scale: Any) -> None:
    with pytest.raises(lf.UsageError, match=r"scale=\.\.\.\) must be two numbers \(low, high\)"):
        Judge("a -> score: float", scale=scale)
