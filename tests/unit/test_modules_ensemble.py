"""majority, Majority and Ensemble."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import ChainOfThought, Ensemble, Majority, majority
from lmforge.testing import FunctionLM, ScriptedLM


def reply(**fields: Any) -> str:
    body = "".join(
        f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
        for k, v in fields.items()
    )
    return body + "[[ ## completed ## ]]"


def first_answer(predictions: list[lf.Prediction]) -> lf.Prediction:
    return predictions[0]


def test_majority_normalises_text_and_breaks_ties_by_order() -> None:
    votes = [lf.Prediction(answer=a) for a in ["Paris", "Lyon", " paris. ", "Lyon", "PARIS"]]
    winner = majority(votes, field="answer")
    assert winner.answer == "Paris"
    assert len(winner.completions) == 5
    tie = majority(
        [
            lf.Prediction(answer="b"),
            lf.Prediction(answer="a"),
            lf.Prediction(answer="a"),
            lf.Prediction(answer="b"),
        ]
    )
    assert tie.answer == "b"


def test_majority_over_completions_and_structured_values() -> None:
    sampled = lf.Prediction({"n": 1}, _completions=[{"n": 1}, {"n": 2}, {"n": 2}])
    assert majority(sampled).n == 2
    with pytest.raises(lf.UsageError, match="no field"):
        majority([lf.Prediction(a=1)], field="b")
    with pytest.raises(lf.UsageError, match="at least one"):
        majority([])


def test_majority_module_samples_distinct_rollouts_and_votes() -> None:
    answers = ["4", "5", "4", "4", "5"]
    lm = FunctionLM(lambda r: reply(reasoning="r", answer=answers[r.rollout_id or 0]))
    program = Majority(ChainOfThought("question -> answer"), n=5)
    with lf.use(lm=lm):
        prediction = program(question="2+2?")
    assert prediction.answer == "4"
    assert sorted(r.rollout_id or 0 for r in lm.calls) == [0, 1, 2, 3, 4]
    assert [n for n, _ in program.named_predictors()] == ["module.predict"]


async def test_majority_module_async() -> None:
    answers = ["x", "y", "y"]
    lm = FunctionLM(lambda r: reply(answer=answers[r.rollout_id or 0]))
    program = Majority(lf.Predict("question -> answer"), n=3)
    with lf.use(lm=lm):
        assert (await program.acall(question="q")).answer == "y"


def test_ensemble_runs_every_program_and_reduces() -> None:
    lm = FunctionLM(
        lambda r: reply(answer="billing" if "Route" in r.messages[0]["content"] else "tech")
    )
    programs = [
        lf.Predict(lf.Signature.parse("ticket -> answer", "Route the ticket.")),
        lf.Predict(lf.Signature.parse("ticket -> answer", "Send the ticket somewhere.")),
        lf.Predict(lf.Signature.parse("ticket -> answer", "Route it.")),
    ]
    ensemble = Ensemble(programs)
    with lf.use(lm=lm), lf.track() as tracker:
        prediction = ensemble(ticket="charged twice")
    assert prediction.answer == "billing"
    assert len(tracker.predictions) == 3
    assert [n for n, _ in ensemble.named_predictors()] == [
        "programs[0]",
        "programs[1]",
        "programs[2]",
    ]
    custom = Ensemble(programs, reduce=first_answer)
    with lf.use(lm=lm):
        assert custom(ticket="x").answer == "billing"
        results = custom.batch([{"ticket": "a"}, {"ticket": "b"}])
    assert [r.answer for r in results] == ["billing", "billing"]


async def test_ensemble_async() -> None:
    lm = ScriptedLM({"ticket": reply(answer="tech")})
    ensemble = Ensemble([lf.Predict("ticket -> answer"), lf.Predict("ticket -> answer")])
    with lf.use(lm=lm):
        assert (await ensemble.acall(ticket="t")).answer == "tech"


def test_save_and_load(tmp_path: Path) -> None:
    ensemble = Ensemble(
        [lf.Predict("ticket -> answer"), ChainOfThought("ticket -> answer")], reduce=first_answer
    )
    ensemble.save(tmp_path / "ensemble.json")
    loaded = lf.load(tmp_path / "ensemble.json", trusted_modules=[__name__])
    assert isinstance(loaded, Ensemble) and loaded.reduce is first_answer
    assert isinstance(loaded.programs[1], ChainOfThought)
    voting = Majority(lf.Predict("q -> a"), n=3, field="a")
    voting.save(tmp_path / "majority.json")
    again = lf.load(tmp_path / "majority.json")
    assert isinstance(again, Majority) and (again.n, again.field) == (3, "a")


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: Majority(lf.Predict("q -> a"), n="3"), r"Majority\(n=\.\.\.\) must be a whole"),
        (lambda: Majority(lf.Predict("q -> a"), n=2.5), r"Majority\(n=\.\.\.\) must be a whole"),
        (lambda: Majority(lf.Predict("q -> a"), n=0), "Majority needs n >= 1"),
        (lambda: Majority(lf.Predict("q -> a"), temperature="hot"), "temperature"),
        (lambda: Ensemble(lf.Predict("q -> a")), r"Ensemble\(programs\) must be a list"),
        (lambda: Ensemble(None), r"Ensemble\(programs\) must be a list"),
    ],
)
def test_wrong_argument_types_are_usage_errors(build: Any, expected: str) -> None:
    with pytest.raises(lf.UsageError, match=expected):
        build()
