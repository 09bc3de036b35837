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
    assert run_sync(judge.acall(ex(answer="a"), lf.Prediction(answer="b"))) == 1.0  # clamped


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
