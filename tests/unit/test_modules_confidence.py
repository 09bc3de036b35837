"""Confidence: self-consistency agreement and judge scores on open-ended outputs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import ChainOfThought, Confidence
from lmforge.optimizers.base import lm_calls_per_run
from lmforge.testing import FunctionLM


def reply(**fields: Any) -> str:
    body = "".join(
        f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
        for k, v in fields.items()
    )
    return body + "[[ ## completed ## ]]"


def test_self_consistency_samples_distinct_rollouts_and_reports_agreement() -> None:
    answers = ["Paris", "paris.", "Lyon", "PARIS", "Nice"]
    lm = FunctionLM(lambda r: reply(answer=answers[r.rollout_id or 0]))
    program = Confidence(lf.Predict("question -> answer"), samples=5)
    with lf.use(lm=lm):
        prediction = program(question="capital of France?")
    assert prediction.answer == "Paris"
    assert prediction.confidence == pytest.approx(3 / 5)
    assert sorted(r.rollout_id or 0 for r in lm.calls) == [0, 1, 2, 3, 4]
    # every sample after the first is drawn at the sampling temperature
    assert all(r.params.get("temperature") == 1.0 for r in lm.calls if r.rollout_id)
    assert lm_calls_per_run(program) == 5  # the cost is explicit in compile estimates


def test_self_consistency_async_and_unanimous() -> None:
    lm = FunctionLM(lambda r: reply(reasoning="r", answer="4"))
    program = Confidence(ChainOfThought("question -> answer"), samples=3)
    with lf.use(lm=lm):
        prediction = asyncio.run(program.acall(question="2+2?"))
    assert (prediction.answer, prediction.confidence) == ("4", 1.0)


def test_samples_that_give_no_answer_count_against_it() -> None:
    answers = ["...", "?", "x"]  # punctuation only: no answer
    lm = FunctionLM(lambda r: reply(answer=answers[r.rollout_id or 0]))
    with lf.use(lm=lm):
        prediction = Confidence(lf.Predict("q -> answer"), samples=3)(q="?")
    assert prediction.answer == "x"
    assert prediction.confidence == pytest.approx(1 / 3)


def judge_lm() -> FunctionLM:
    def answer(request: lf.LMRequest) -> str:
        text = json.dumps(request.messages)
        if "correct" in text and "[[ ## answer ## ]]\\nParis" in text:
            return reply(correct=0.8)
        return reply(answer="Paris")

    return FunctionLM(answer)


def test_a_judge_scores_the_answer_without_gold_labels() -> None:
    judge = lf.metrics.Judge("question, answer -> correct: float")
    program = Confidence(lf.Predict("question -> answer"), judge=judge)
    lm = judge_lm()
    with lf.use(lm=lm):
        prediction = program(question="capital of France?")
        again = asyncio.run(program.acall(question="capital of France?"))
    assert (prediction.answer, prediction.confidence) == ("Paris", 0.8)
    assert again.confidence == 0.8
    assert len(lm.calls) == 4  # one answer and one judge call each
    assert [n for n, _ in program.named_predictors()] == ["module"]  # the judge is not tuned
    assert lm_calls_per_run(program) == 2  # the answer and its judge call


def test_a_failing_judge_leaves_the_confidence_unknown() -> None:
    judge = lf.metrics.Judge("question, answer -> correct: float")
    lm = FunctionLM(
        lambda r: (
            reply(correct="very") if "correct" in json.dumps(r.messages) else reply(answer="x")
        )
    )
    with lf.use(lm=lm):
        prediction = Confidence(lf.Predict("question -> answer"), judge=judge)(question="?")
    assert prediction.answer == "x"
    assert prediction.confidence is None


def test_confidence_saves_and_loads_with_its_judge(tmp_path: Path) -> None:
    judge = lf.metrics.Judge("question, answer -> correct: float", scale=(0, 1))
    program = Confidence(lf.Predict("question -> answer"), judge=judge)
    program.save(tmp_path / "p.json")
    loaded = lf.load(tmp_path / "p.json")
    assert isinstance(loaded, Confidence)
    assert loaded.n == 1 and loaded.judge is not None and loaded.judge.scale == (0.0, 1.0)
    with lf.use(lm=judge_lm()):
        assert loaded(question="?").confidence == 0.8
    sampled = Confidence(lf.Predict("question -> answer"), samples=4, temperature=0.7)
    sampled.save(tmp_path / "s.json")
    again = lf.load(tmp_path / "s.json")
    assert isinstance(again, Confidence)
    assert (again.n, again.temperature, again.judge) == (4, 0.7, None)


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(lf.UsageError, match="samples >= 2"):
        Confidence(lf.Predict("q -> a"), samples=1)
    with pytest.raises(lf.UsageError, match="Judge"):
        Confidence(lf.Predict("q -> a"), judge="yes")  # type: ignore[arg-type]
    judge = lf.metrics.Judge("q, a -> ok: bool", inputs={"q": lambda e, p: "x"})
    with pytest.raises(lf.UsageError, match="cannot be saved"):
        Confidence(lf.Predict("q -> a"), judge=judge).spec_config()
