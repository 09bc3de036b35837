"""Example and Prediction value types, and copying/pickling of the core value objects."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import lmforge as lf
import pytest

COPIES: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
}


def test_example_inputs_and_labels() -> None:
    ex = lf.Example(ticket="refund please", team="billing", note="vip").with_inputs("ticket")
    assert ex.ticket == "refund please" and ex["team"] == "billing"
    assert ex.input_keys == ("ticket",)
    assert dict(ex.inputs()) == {"ticket": "refund please"}
    assert dict(ex.labels()) == {"team": "billing", "note": "vip"}
    assert ex.without("note") == lf.Example(ticket="refund please", team="billing").with_inputs(
        "ticket"
    )
    changed = ex.copy(team="sales")
    assert changed.team == "sales" and ex.team == "billing" and changed.input_keys == ("ticket",)
    assert lf.Example({"a": 1}, b=2).to_dict() == {"a": 1, "b": 2}


def test_example_mistakes() -> None:
    ex = lf.Example(q="x")
    with pytest.raises(lf.UsageError, match=r"with_inputs\('field'"):
        ex.inputs()
    with pytest.raises(lf.UsageError, match="its keys are"):
        ex.with_inputs("question")
    with pytest.raises(AttributeError, match=r"no field 'nope'; fields: \['q'\]"):
        ex.nope  # noqa: B018
    with pytest.raises(AttributeError, match="immutable"):
        ex.q = "y"  # type: ignore[misc]


def test_examples_hash_and_compare_by_content() -> None:
    a = lf.Example(q="x", a="y").with_inputs("q")
    b = lf.Example(q="x", a="y").with_inputs("q")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != lf.Example(q="x", a="y")  # different inputs
    assert lf.Prediction(a=1) != lf.Example(a=1)


def test_prediction_attributes_and_completions() -> None:
    single = lf.Prediction(answer="x")
    assert single.answer == "x" and single.completions == [{"answer": "x"}]
    many = lf.Prediction({"answer": "x"}, _completions=[{"answer": "x"}, {"answer": "y"}])
    assert [c["answer"] for c in many.completions] == ["x", "y"]
    assert many.copy(answer="z").completions == many.completions


@pytest.mark.parametrize("how", sorted(COPIES))
def test_examples_and_predictions_copy_and_pickle(how: str) -> None:
    ex = lf.Example(q="x", tags=["a"]).with_inputs("q")
    pred = lf.Prediction({"answer": 1}, _completions=[{"answer": 1}, {"answer": 2}])
    ex2, pred2 = COPIES[how](ex), COPIES[how](pred)
    assert ex2 == ex and ex2.input_keys == ("q",) and dict(ex2.inputs()) == {"q": "x"}
    assert pred2 == pred and pred2.completions == pred.completions
    if how != "copy":
        assert ex2.tags is not ex.tags


@pytest.mark.parametrize("how", sorted(COPIES))
def test_signatures_and_predictors_copy_and_pickle(how: str) -> None:
    sig = lf.Signature.parse("question, context: list[str] -> answer: int", "Count.")
    assert COPIES[how](sig) == sig
    predictor = lf.Predict(
        sig, demos=[lf.Example(question="q", context=[], answer=1)], temperature=0.5
    )
    clone = COPIES[how](predictor)
    assert (
        clone.signature == sig
        and clone.demos == predictor.demos
        and clone.config == {"temperature": 0.5}
    )
