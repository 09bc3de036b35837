"""``max_errors`` on every optimizer (issue 16 #4): a teacher that raises on every example
stops the compile with a clear error instead of "succeeding" without demos; fewer errors
are counted in ``artifact_meta["errors"]`` and ``compile_info``."""

from __future__ import annotations

import dataclasses

import lmforge as lf
import pytest
from lmforge.optimizers import (
    MIPRO,
    BootstrapFewShot,
    InstructionSearch,
    LabeledFewShot,
    RandomSearch,
    TooManyErrorsError,
    create,
)
from lmforge.testing import FunctionLM

ANSWER = "[[ ## answer ## ]]\n4"


class Flaky(lf.Module):
    """Raises on questions in ``bad`` (a bug in the program's own code)."""

    def __init__(self, bad: frozenset[str] = frozenset()) -> None:
        self.answer = lf.Predict("question -> answer")
        self.bad = bad

    def forward(self, question: str) -> lf.Prediction:
        if question in self.bad:
            raise ValueError(f"lookup failed for {question!r}")
        return self.answer(question=question)


def data(n: int) -> list[lf.Example]:
    return [lf.Example(question=f"q{i}", answer="4").with_inputs("question") for i in range(n)]


def test_every_optimizer_takes_max_errors_defaulting_to_ten() -> None:
    for cls in (BootstrapFewShot, LabeledFewShot, RandomSearch, MIPRO, InstructionSearch):
        assert cls().max_errors == 10
        assert "max_errors" in {f.name for f in dataclasses.fields(cls)}
    assert create("bootstrap", max_errors=3).max_errors == 3  # -o max_errors=3
    assert BootstrapFewShot(max_errors=None).max_errors is None
    with pytest.raises(lf.UsageError, match=r"max_errors=\.\.\.\) must be at least 0"):
        BootstrapFewShot(max_errors=-1)
    assert "max_errors" not in BootstrapFewShot().config()  # not part of the run identity


def test_a_teacher_raising_on_every_example_stops_bootstrap() -> None:
    train = data(12)
    program = Flaky(frozenset(ex.question for ex in train))
    with pytest.raises(TooManyErrorsError) as caught:
        BootstrapFewShot(max_bootstrapped_demos=4, max_labeled_demos=0).compile(
            program,
            train,
            metric=lf.metrics.exact_match,
            lm=FunctionLM(lambda r: ANSWER),
            progress=False,
        )
    message = str(caught.value)
    assert isinstance(caught.value, lf.LMForgeError) and "\n" not in message
    assert message.startswith(
        "12 of 12 examples raised while bootstrapping demos, more than max_errors=10"
    )
    assert "commonest error" in message and "ValueError: lookup failed" in message


def test_past_max_errors_names_the_count_and_the_commonest_error() -> None:
    train = data(5)
    program = Flaky(frozenset(ex.question for ex in train[:3]))
    with pytest.raises(
        TooManyErrorsError,
        match=r"^3 of 5 examples raised while bootstrapping "
        r"demos, more than max_errors=2; commonest error \(3x\): ValueError",
    ):
        BootstrapFewShot(max_bootstrapped_demos=8, max_labeled_demos=0, max_errors=2).compile(
            program,
            train,
            metric=lf.metrics.exact_match,
            lm=FunctionLM(lambda r: ANSWER),
            progress=False,
        )


def test_errors_below_max_errors_are_counted_in_the_artifact_meta() -> None:
    train = data(5)
    program = Flaky(frozenset(ex.question for ex in train[:2]))
    compiled = BootstrapFewShot(max_bootstrapped_demos=8, max_labeled_demos=0).compile(
        program,
        train,
        metric=lf.metrics.exact_match,
        lm=FunctionLM(lambda r: ANSWER),
        progress=False,
    )
    assert compiled.artifact_meta["errors"] == {"count": 2, "types": {"ValueError": 2}}
    assert compiled.compile_info["errors"]["count"] == 2
    assert len(compiled.answer.demos) == 3


def test_an_evaluation_past_max_errors_stops_the_compile() -> None:
    train, dev = data(3), data(4)
    program = Flaky(frozenset(ex.question for ex in dev))  # train and dev share questions
    with pytest.raises(TooManyErrorsError, match=r"^4 of 4 examples raised while evaluating"):
        LabeledFewShot(k=2, max_errors=3).compile(
            program,
            train,
            metric=lf.metrics.exact_match,
            valset=dev,
            lm=FunctionLM(lambda r: ANSWER),
            progress=False,
        )
    compiled = LabeledFewShot(k=2).compile(
        program,
        train,
        metric=lf.metrics.exact_match,
        valset=dev,
        lm=FunctionLM(lambda r: ANSWER),
        progress=False,
    )
    assert compiled.artifact_meta["errors"] == {"count": 4, "types": {"ValueError": 4}}


def test_the_compile_report_shows_the_errors() -> None:
    from lmforge.optimizers.report import render_html

    run = {"model": "m", "errors": {"count": 2, "types": {"ValueError": 2}}}
    assert "2 example run(s) raised: ValueError 2x" in render_html({"runs": [run]})
    assert "example run(s) raised" not in render_html({"runs": [{"model": "m"}]})
