"""DSPy everyday features: signatures from dicts and strings, ``append_instructions``,
``sig.signature``, ``Prediction.from_completions``, scored-prediction arithmetic, and
AttributeErrors that say where a DSPy name lives in lmforge."""

from __future__ import annotations

import importlib
import re
from typing import Literal

import lmforge as lf
import pytest
from lmforge._dspy_names import _HINTS


def test_signature_from_a_dict_of_fields() -> None:
    sig = lf.Signature(
        {
            "answer": (Literal["a", "b"], lf.OutputField(desc="the pick")),
            "question": lf.InputField(),
            "n": (int, lf.InputField()),
        },
        "Answer it.",
    )
    assert [f.name for f in sig.input_fields] == ["question", "n"]
    assert sig.field("n").annotation is int
    assert sig.field("answer").description == "the pick"
    assert sig.instructions == "Answer it."
    with pytest.raises(lf.SignatureError, match="field 'x'"):
        lf.Signature({"x": "input", "y": lf.OutputField()})


def test_signature_from_a_string_and_its_string_form() -> None:
    sig = lf.Signature("question, n: int -> answer: Literal['a', 'b']", "Pick.")
    assert sig.signature == "question, n: int -> answer: Literal['a', 'b']"
    assert lf.Signature.parse(sig.signature) == sig.with_instructions("")

    class Routed(lf.Signature):
        ticket: str = lf.InputField()
        teams: list[str] = lf.OutputField()

    assert Routed.signature == "ticket -> teams: list[str]"


def test_append_instructions_returns_a_new_signature() -> None:
    sig = lf.Signature.parse("q -> a", "Answer.")
    longer = sig.append_instructions("Be brief.")
    assert longer.instructions == "Answer.\nBe brief."
    assert sig.instructions == "Answer."
    default = lf.Signature.parse("q -> a").append_instructions("Be brief.")
    assert default.instructions.endswith("`a`.\nBe brief.")
    with pytest.raises(lf.UsageError):
        sig.append_instructions(3)  # type: ignore[arg-type]


def test_prediction_from_completions_in_both_shapes() -> None:
    rows = lf.Prediction.from_completions([{"answer": "a"}, {"answer": "b"}])
    cols = lf.Prediction.from_completions({"answer": ["a", "b"]})
    assert rows.answer == cols.answer == "a"
    assert rows.completions == cols.completions == [{"answer": "a"}, {"answer": "b"}]
    with pytest.raises(lf.UsageError, match="same number"):
        lf.Prediction.from_completions({"answer": ["a"], "why": []})
    with pytest.raises(lf.UsageError, match="at least one"):
        lf.Prediction.from_completions([])


def test_scored_predictions_order_and_add_up_by_score() -> None:
    low, high = lf.Prediction(answer="x", score=0.25), lf.Prediction(answer="y", score=0.75)
    assert max([low, high]).answer == "y"
    assert sorted([high, low])[0].answer == "x"
    assert sum([low, high]) / 2 == pytest.approx(0.5)
    assert low + high == 1.0 and low < high and high >= 0.75 and float(low) == 0.25
    assert 1 / high == pytest.approx(4 / 3)
    with pytest.raises(lf.UsageError, match="'score' field"):
        float(lf.Prediction(answer="x"))
    with pytest.raises(TypeError):
        _ = low < "text"  # type: ignore[operator]


@pytest.mark.parametrize("name", ["ChainOfThought", "ReAct", "BootstrapFewShot", "MIPROv2"])
def test_dspy_names_say_where_lmforge_has_them(name: str) -> None:
    with pytest.raises(AttributeError, match=rf"no attribute '{name}'; in lmforge: "):
        getattr(lf, name)


def test_every_import_a_hint_names_exists() -> None:
    for dspy_name, hint in _HINTS.items():
        assert not hasattr(lf, dspy_name), dspy_name
        for module, names in re.findall(r"from (\S+) import (\w+)", hint):
            assert hasattr(importlib.import_module(module), names), hint
    assert "no attribute 'nothing_like_dspy'" in _error_of("nothing_like_dspy")


def _error_of(name: str) -> str:
    try:
        getattr(lf, name)
    except AttributeError as exc:
        return str(exc)
    raise AssertionError(f"lf.{name} exists")
