"""``lmforge.testing.DummyLM``: answers given as output field values, written in whichever
adapter's format the call uses (chat markers, JSON, completion lines), so tests need not
know the wire format."""

from __future__ import annotations

import asyncio
from typing import Literal

import lmforge as lf
import pytest
from lmforge.modules import ChainOfThought
from lmforge.testing import DEFAULT_TEXT, DummyLM


class Sum(lf.Signature):
    """Add the numbers."""

    question: str = lf.InputField()
    answer: str = lf.OutputField()
    total: int = lf.OutputField()
    sign: Literal["positive", "negative"] = lf.OutputField()


ADAPTERS = [lf.ChatAdapter(), lf.JSONAdapter(), lf.CompletionAdapter()]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_answers_in_order_in_every_adapters_format(adapter: lf.Adapter) -> None:
    lm = DummyLM(
        [
            {"answer": "four", "total": 4, "sign": "positive"},
            {"answer": "minus one", "total": -1, "sign": "negative"},
        ]
    )
    program = lf.Predict(Sum, lm=lm, adapter=adapter)
    first = program(question="2+2?")
    second = asyncio.run(program.acall(question="1-2?"))
    assert (first.answer, first.total, first.sign) == ("four", 4, "positive")
    assert (second.answer, second.total, second.sign) == ("minus one", -1, "negative")
    assert len(lm.calls) == 2


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_answers_keyed_by_an_input_value(adapter: lf.Adapter) -> None:
    lm = DummyLM({"What is 2+2?": {"answer": "4"}, "What is 3+3?": {"answer": "6"}})
    program = lf.Predict("question -> answer", lm=lm, adapter=adapter)
    assert program(question="What is 3+3?").answer == "6"
    assert program(question="What is 2+2?").answer == "4"
    with pytest.raises(lf.UsageError, match="DummyLM has no reply matching this prompt"):
        program(question="What is 5+5?")


def test_a_base_model_answers_through_the_completion_adapter() -> None:
    lm = DummyLM([{"answer": "Paris"}], model_type="text")
    assert lf.Predict("question -> answer", lm=lm)(question="Capital of France?").answer == (
        "Paris"
    )
    assert lm.calls[0].prompt is not None  # a completion prompt, not chat messages


def test_chain_of_thought_gets_a_default_reasoning() -> None:
    lm = DummyLM([{"answer": "4"}, {"reasoning": "two and two", "answer": "4"}])
    cot = ChainOfThought("question -> answer", lm=lm)
    first = cot(question="2+2?")
    assert first.answer == "4" and first.reasoning == DEFAULT_TEXT
    assert cot(question="2+2?").reasoning == "two and two"


def test_an_exhausted_script_is_a_clear_error() -> None:
    lm = DummyLM([{"answer": "4"}])
    program = lf.Predict("question -> answer", lm=lm)
    program(question="2+2?")
    with pytest.raises(lf.UsageError, match=r"DummyLM ran out of replies after 1 call\(s\)"):
        program(question="2+2?")


def test_answers_must_name_the_signatures_outputs() -> None:
    misspelt = lf.Predict("question -> answer", lm=DummyLM([{"answr": "4"}]))
    with pytest.raises(lf.UsageError, match=r"field\(s\) \['answr'\] that .* does not output"):
        misspelt(question="?")
    typed = lf.Predict("question -> answer, total: int", lm=DummyLM([{"answer": "4"}]))
    with pytest.raises(lf.UsageError, match=r"lacks the output field 'total' \(int\)"):
        typed(question="?")
    with pytest.raises(lf.UsageError, match=r"DummyLM answers lf\.Predict calls"):
        DummyLM([{"answer": "4"}])("a raw prompt")


def test_an_adapter_without_format_reply_says_so() -> None:
    class Custom(lf.ChatAdapter):
        name = "custom"

        def format_reply(self, signature: lf.Signature, outputs: object) -> str:  # type: ignore[override]
            return lf.Adapter.format_reply(self, signature, outputs)  # type: ignore[arg-type]

    program = lf.Predict("question -> answer", lm=DummyLM([{"answer": "4"}]), adapter=Custom())
    with pytest.raises(lf.UsageError, match="Custom cannot write replies for fake LMs"):
        program(question="?")
