"""Parsing LM output: coercion to the declared types and every failure mode as ParseError."""

from __future__ import annotations

import enum
import json
import pickle
from typing import Any

import lmforge as lf
import pydantic
import pytest
from lmforge.testing import ScriptedLM


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    city: str
    zip_code: int


SIG = lf.Signature.parse(
    "q -> n: int, x: float, b: bool, lit: Literal['Yes', 'No'], c: Color, l: list[int], "
    "a: Address, o: Optional[int], d: dict[str, float], s: str",
    types={"Color": Color, "Address": Address},
)
GOOD = {
    "n": "42",
    "x": "3.5",
    "b": "true",
    "lit": "yes",
    "c": "RED",
    "l": "[1, 2, 3]",
    "a": '{"city": "Paris", "zip_code": "75001"}',
    "o": "None",
    "d": '{"k": 1}',
    "s": "  free text  ",
}
EXPECTED = {
    "n": 42,
    "x": 3.5,
    "b": True,
    "lit": "Yes",
    "c": Color.RED,
    "l": [1, 2, 3],
    "a": Address(city="Paris", zip_code=75001),
    "o": None,
    "d": {"k": 1.0},
    "s": "free text",
}


def chat_text(values: dict[str, str]) -> str:
    body = "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items())
    return body + "\n\n[[ ## completed ## ]]"


def test_chat_parse_coerces_every_type() -> None:
    result = lf.ChatAdapter().parse(SIG, chat_text(GOOD))
    assert result == EXPECTED
    assert isinstance(result["n"], int) and isinstance(result["x"], float)
    assert type(result["c"]) is Color and isinstance(result["a"], Address)


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("n", "1,000", 1000),
        ("n", "**42**", 42),
        ("n", "42.", 42),
        ("n", "-7", -7),
        ("x", "-1e3", -1000.0),
        ("x", "2", 2.0),
        ("x", "$3.25", 3.25),
        ("n", "42 items", 42),
        ("n", "1,200", 1200),
        ("b", "False", False),
        ("b", "yes", True),
        ("b", "no", False),
        ("lit", "NO.", "No"),
        ("lit", "`Yes`", "Yes"),
        ("c", "blue", Color.BLUE),
        ("c", "Red", Color.RED),
        ("l", "```json\n[4, 5]\n```", [4, 5]),
        ("l", "[]", []),
        ("o", "7", 7),
        ("o", "null", None),
        ("o", "N/A", None),
        ("s", "multi\nline", "multi\nline"),
    ],
)
def test_lenient_coercion(field: str, text: str, value: Any) -> None:
    result = lf.ChatAdapter().parse(SIG, chat_text({**GOOD, field: text}))
    assert result[field] == value
    assert type(result[field]) is type(value)


@pytest.mark.parametrize(
    ("field", "text", "needle"),
    [
        ("n", "forty", "should be int"),
        ("n", "4.5", "should be int"),
        ("n", "2024-01-05", "should be int"),  # a date is not the number 2024
        ("n", "1, 2", "should be int"),  # two numbers are not one
        ("x", "3.5 or 4", "should be float"),
        ("x", "abc", "should be float"),
        ("b", "maybe", "should be bool"),
        ("lit", "perhaps", "must be one of [Yes, No]"),
        ("c", "green", "must be one of [red, blue]"),
        ("l", '[1, "x"]', "does not match its type"),
        ("a", '{"city": "P"}', "zip_code"),
        ("d", "[1, 2]", "does not match its type"),
        ("o", "lots", "should be int"),
        ("n", "", "is empty"),
        ("s", "   ", "is empty"),
    ],
)
def test_wrong_type_raises_parse_error_with_raw_and_field(
    field: str, text: str, needle: str
) -> None:
    raw = chat_text({**GOOD, field: text})
    with pytest.raises(lf.ParseError) as info:
        lf.ChatAdapter().parse(SIG, raw)
    assert info.value.field == field
    assert info.value.raw == raw
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_field_raises_parse_error() -> None:
    raw = chat_text({k: v for k, v in GOOD.items() if k != "x"})
    with pytest.raises(lf.ParseError, match=r"no '\[\[ ## x ## \]\]' section") as info:
        lf.ChatAdapter().parse(SIG, raw)
    assert (info.value.field, info.value.raw) == ("x", raw)


@pytest.mark.parametrize("adapter", [lf.ChatAdapter(), lf.JSONAdapter(), lf.CompletionAdapter()])
@pytest.mark.parametrize("raw", ["", "   \n "])
def test_empty_output_raises_parse_error(adapter: lf.Adapter, raw: str) -> None:
    with pytest.raises(lf.ParseError, match="empty") as info:
        adapter.parse(SIG, raw)
    assert info.value.raw == raw
    assert info.value.field is None


def test_single_output_bare_answer_is_accepted() -> None:
    sig = lf.Signature.parse("q -> answer: int")
    assert lf.ChatAdapter().parse(sig, "  12 ") == {"answer": 12}


def test_first_section_wins_and_extra_sections_are_ignored() -> None:
    sig = lf.Signature.parse("q -> a")
    raw = "[[ ## a ## ]]\nfirst\n\n[[ ## a ## ]]\nsecond\n\n[[ ## other ## ]]\nx"
    assert lf.ChatAdapter().parse(sig, raw) == {"a": "first"}


# -- JSONAdapter ------------------------------------------------------------------------


def test_json_parse_coerces_values() -> None:
    data = {
        "n": "42",
        "x": 1,
        "b": "true",
        "lit": "no",
        "c": "blue",
        "l": [1, "2"],
        "a": {"city": "Rome", "zip_code": 100},
        "o": None,
        "d": {},
        "s": "text",
    }
    result = lf.JSONAdapter().parse(SIG, "```json\n" + json.dumps(data) + "\n```")
    assert result == {
        "n": 42,
        "x": 1.0,
        "b": True,
        "lit": "No",
        "c": Color.BLUE,
        "l": [1, 2],
        "a": Address(city="Rome", zip_code=100),
        "o": None,
        "d": {},
        "s": "text",
    }


def test_json_parse_finds_object_inside_chatter() -> None:
    sig = lf.Signature.parse("q -> answer: int")
    assert lf.JSONAdapter().parse(sig, 'Sure! {"answer": 3} Hope that helps.') == {"answer": 3}


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        ("not json at all", None, "not a JSON object"),
        ("[1, 2]", None, "not a JSON object"),
        ('{"answer": 3}', "label", "no key 'label'"),
        ('{"answer": "three", "label": "x"}', "answer", "should be int"),
    ],
)
def test_json_parse_failures(raw: str, field: str | None, needle: str) -> None:
    sig = lf.Signature.parse("q -> answer: int, label")
    with pytest.raises(lf.ParseError) as info:
        lf.JSONAdapter().parse(sig, raw)
    assert (info.value.field, info.value.raw) == (field, raw)
    assert needle in str(info.value)


# -- CompletionAdapter ------------------------------------------------------------------

COMPLETION_SIG = lf.Signature.parse("q -> n: int, lit: Literal['Yes', 'No'], l: list[int]")


def test_completion_parse_reads_label_lines() -> None:
    assert lf.CompletionAdapter().parse(COMPLETION_SIG, " 42\nLit: no\nL: [1, 2]") == {
        "n": 42,
        "lit": "No",
        "l": [1, 2],
    }


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        (" 42\nL: [1]", "lit", "no 'Lit:' line"),
        (" 42\nLit: maybe\nL: [1]", "lit", "must be one of"),
        (" abc\nLit: Yes\nL: [1]", "n", "should be int"),
        (" 1\nLit: Yes\nL: [x]", "l", "does not match"),
    ],
)
def test_completion_parse_failures(raw: str, field: str, needle: str) -> None:
    with pytest.raises(lf.ParseError) as info:
        lf.CompletionAdapter().parse(COMPLETION_SIG, raw)
    assert (info.value.field, info.value.raw) == (field, raw)
    assert needle in str(info.value)


# -- through Predict --------------------------------------------------------------------


def test_predict_returns_typed_prediction_and_raises_parse_error() -> None:
    lm = ScriptedLM([chat_text(GOOD), chat_text({**GOOD, "n": "many"})])
    predictor = lf.Predict(SIG, lm=lm)
    prediction = predictor(q="go")
    assert dict(prediction) == EXPECTED and prediction.c is Color.RED
    with lf.track() as t, pytest.raises(lf.ParseError) as info:
        predictor(q="again")
    assert info.value.field == "n" and "many" in info.value.raw
    assert t.predictions[0].error is info.value and t.predictions[0].outputs is None


def test_parse_error_survives_pickling() -> None:
    error = lf.ParseError("bad", raw="RAW", field="f")
    clone = pickle.loads(pickle.dumps(error))
    assert (str(clone), clone.raw, clone.field) == ("bad", "RAW", "f")


def test_n_completions_are_all_parsed() -> None:
    lm = ScriptedLM(["[[ ## a ## ]]\n5"])
    prediction = lf.Predict("q -> a: int", lm=lm, n=3)(q="x")
    assert prediction.a == 5
    assert prediction.completions == [{"a": 5}] * 3
    assert lm.calls[0].params["n"] == 3
