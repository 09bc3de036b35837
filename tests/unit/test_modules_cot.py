"""ChainOfThought: reasoning field, trace, demos, async, batch, save/load."""

from __future__ import annotations

import json
from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import ChainOfThought
from lmforge.testing import FunctionLM, ScriptedLM


def reply(**fields: Any) -> str:
    body = "".join(
        f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
        for k, v in fields.items()
    )
    return body + "[[ ## completed ## ]]"


def test_reasoning_comes_before_the_declared_outputs() -> None:
    cot = ChainOfThought("question -> answer: int", rationale_desc="Show the arithmetic.")
    names = [f.name for f in cot.signature.output_fields]
    assert names == ["reasoning", "answer"]
    assert cot.signature.field("reasoning").description == "Show the arithmetic."


def test_prediction_and_trace_carry_the_reasoning() -> None:
    lm = ScriptedLM([reply(reasoning="2 plus 2 is 4", answer="4")])
    cot = ChainOfThought("question -> answer: int")
    with lf.use(lm=lm), lf.track() as tracker:
        prediction = cot(question="What is 2 + 2?")
    assert prediction.answer == 4
    assert prediction.reasoning == "2 plus 2 is 4"
    [record] = tracker.predictions
    assert record.predictor is cot.predict
    assert record.outputs is not None and record.outputs["reasoning"] == "2 plus 2 is 4"
    system = lm.calls[0].messages[0]["content"]
    assert system.index("`reasoning`") < system.index("`answer`")


def test_demos_built_from_the_trace_include_the_reasoning() -> None:
    lm = ScriptedLM(
        [reply(reasoning="capital of France", answer="Paris"), reply(reasoning="r", answer="x")]
    )
    cot = ChainOfThought("question -> answer")
    with lf.use(lm=lm), lf.track() as tracker:
        cot(question="Capital of France?")
    record = tracker.predictions[0]
    demo = {**record.inputs, **record.outputs}
    cot.predict.demos = [demo]
    with lf.use(lm=lm):
        cot(question="Capital of Peru?")
    demo_turn = lm.calls[1].messages[2]["content"]
    assert "[[ ## reasoning ## ]]\ncapital of France" in demo_turn


def test_rejects_a_signature_that_already_has_the_reasoning_field() -> None:
    with pytest.raises(lf.UsageError, match="rationale_field"):
        ChainOfThought("question -> reasoning, answer")
    cot = ChainOfThought("question -> reasoning, answer", rationale_field="thinking")
    assert [f.name for f in cot.signature.output_fields] == ["thinking", "reasoning", "answer"]


async def test_async_and_batch() -> None:
    def answer(request: lf.LMRequest) -> str:
        question = request.messages[-1]["content"]
        return reply(reasoning="echo", answer="yes" if "sky" in question else "no")

    lm = FunctionLM(answer)
    cot = ChainOfThought("question -> answer")
    with lf.use(lm=lm):
        single = await cot.acall(question="is the sky blue?")
        results = cot.batch([{"question": "sky?"}, {"question": "grass?"}], concurrency=2)
    assert single.answer == "yes"
    assert [r.answer for r in results] == ["yes", "no"]


def test_named_predictors_expose_the_inner_predict() -> None:
    cot = ChainOfThought("question -> answer")
    assert [name for name, _ in cot.named_predictors()] == ["predict"]


def test_save_and_load_round_trip(tmp_path: Any) -> None:
    cot = ChainOfThought("question -> answer: int", rationale_desc="Count carefully.")
    cot.predict.demos = [{"question": "1+1?", "reasoning": "one and one", "answer": 2}]
    path = tmp_path / "cot.json"
    cot.save(path)
    loaded = lf.load(path)
    assert isinstance(loaded, ChainOfThought)
    assert loaded.signature == cot.signature
    assert loaded.predict.demos == cot.predict.demos
    lm = ScriptedLM([reply(reasoning="three", answer="3")])
    with lf.use(lm=lm):
        assert loaded(question="1+2?").answer == 3
    assert "Count carefully." in lm.calls[0].messages[0]["content"]


def test_bootstrap_few_shot_keeps_the_reasoning_in_demos() -> None:
    from lmforge.optimizers import BootstrapFewShot

    def fake(request: lf.LMRequest) -> str:
        question = request.messages[-1]["content"].split("[[ ## question ## ]]\n")[1].split("\n")[0]
        return reply(reasoning=f"worked out {question}", answer=question.upper())

    trainset = [lf.Example(question=q, answer=q.upper()).with_inputs("question") for q in "abc"]
    student = ChainOfThought("question -> answer")
    compiled = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0).compile(
        student,
        trainset,
        metric=lambda ex, pred, trace=None: pred.answer == ex.answer,
        lm=FunctionLM(fake),
        progress=False,
    )
    demos = compiled.predict.demos
    assert len(demos) == 2
    assert all(d["reasoning"] == f"worked out {d['question']}" for d in demos)
