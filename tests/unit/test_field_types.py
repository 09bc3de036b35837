"""Everyday field types: optional and defaulted fields, constraint keywords, lenient JSON,
enums with auto values, and the structured-output mode a model's profile allows."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import lmforge as lf
import pydantic
import pytest
from lmforge.lm.profiles import ModelProfile
from lmforge.lm.types import LMRequest
from lmforge.testing import FunctionLM, ScriptedLM

ADAPTERS = [lf.ChatAdapter(), lf.JSONAdapter(), lf.CompletionAdapter()]


class Lookup(lf.Signature):
    """Answer the question."""

    question: str = lf.InputField()
    hint: str | None = lf.InputField(default=None)
    answer: str = lf.OutputField()
    note: str = lf.OutputField(default="no note")
    score: float | None = lf.OutputField()


class Rate(lf.Signature):
    """Rate the review."""

    review: str = lf.InputField(max_length=40)
    score: float = lf.OutputField(desc="how positive", ge=0, le=1)
    tags: list[str] = lf.OutputField(max_length=2)


class Color(enum.Enum):
    RED = enum.auto()
    GREEN = enum.auto()
    BLUE = enum.auto()


class Paint(lf.Signature):
    """Pick a color."""

    thing: str = lf.InputField()
    color: Color = lf.OutputField()


def _only_answer(adapter: lf.Adapter) -> str:
    if isinstance(adapter, lf.JSONAdapter):
        return '{"answer": "Paris"}'
    if isinstance(adapter, lf.CompletionAdapter):
        return " Paris"
    return "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"


def _text(request: LMRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    return "\n".join(str(m["content"]) for m in request.messages or ())


# -- 1. optional and defaulted fields ----------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_defaulted_input_may_be_omitted_and_missing_outputs_take_defaults(
    adapter: lf.Adapter,
) -> None:
    lm = ScriptedLM(
        [_only_answer(adapter)], model_type="text" if adapter.name == "completion" else "chat"
    )
    result = lf.Predict(Lookup, adapter=adapter, lm=lm)(question="Capital of France?")
    assert (result.answer, result.note, result.score) == ("Paris", "no note", None)
    # The omitted input is rendered as its default, like an explicit None.
    lm2 = ScriptedLM([_only_answer(adapter)], model_type=lm.model_type)
    lf.Predict(Lookup, adapter=adapter, lm=lm2)(question="Capital of France?", hint=None)
    assert _text(lm.calls[0]) == _text(lm2.calls[0])


def test_required_output_still_fails_when_missing() -> None:
    with pytest.raises(lf.ParseError, match="no key 'answer'"):
        lf.JSONAdapter().parse(Lookup.__lf_signature__, '{"note": "x"}')  # type: ignore[union-attr]


def test_required_input_without_default_is_still_required() -> None:
    with pytest.raises(lf.UsageError, match="missing input"):
        lf.Predict(Lookup, lm=ScriptedLM(["x"]))(hint="h")


def test_defaulted_output_is_not_required_in_the_json_schema() -> None:
    schema = lf.JSONAdapter().response_format(Lookup.__lf_signature__)["json_schema"]["schema"]  # type: ignore[arg-type]
    assert schema["required"] == ["answer", "score"]


def test_defaults_survive_signature_json_and_artifacts(tmp_path: Path) -> None:
    sig = lf.Signature.from_json(json.loads(json.dumps(Lookup.to_json())))
    assert sig == Lookup
    assert sig.field("hint").default is None
    assert sig.field("note").default == "no note"
    assert not sig.field("question").has_default
    assert sig != Lookup.with_field("note", default="other")  # defaults are part of equality

    path = tmp_path / "lookup.json"
    lf.Predict(Lookup, adapter=lf.JSONAdapter()).save(path)
    loaded = lf.load(path)
    loaded.lm = ScriptedLM(['{"answer": "Paris"}'])
    result = loaded(question="Capital of France?")
    assert (result.answer, result.note, result.score) == ("Paris", "no note", None)


def test_a_default_that_is_not_json_is_refused_when_saved() -> None:
    class Odd(lf.Signature):
        question: str = lf.InputField(default=object())
        answer: str = lf.OutputField()

    with pytest.raises(lf.SignatureError, match="cannot be saved as JSON"):
        Odd.to_json()


# -- 2. constraint keywords -------------------------------------------------------------


def test_constraints_become_annotated_pydantic_types_and_survive_json() -> None:
    score = Rate.field("score")
    assert score.type_name == "float"
    assert lf.Signature.from_json(json.loads(json.dumps(Rate.to_json()))) == Rate
    with pytest.raises(lf.SignatureError, match="ge= does not apply to str"):

        class Bad(lf.Signature):
            question: str = lf.InputField()
            answer: str = lf.OutputField(ge=0)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_constraints_are_shown_to_the_model(adapter: lf.Adapter) -> None:
    prompt = adapter.format(Rate.__lf_signature__, [], {"review": "great"})  # type: ignore[arg-type]
    text = prompt.render()
    if adapter.name != "completion":  # the completion prefix lists no field descriptions
        assert "how positive (a number >= 0 and <= 1)" in text
        assert "a list with at most 2 items" in text


def test_json_adapter_schema_carries_constraints() -> None:
    fmt = lf.JSONAdapter().response_format(Rate.__lf_signature__)  # type: ignore[arg-type]
    props = fmt["json_schema"]["schema"]["properties"]
    assert (props["score"]["minimum"], props["score"]["maximum"]) == (0, 1)
    assert props["tags"]["maxItems"] == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ('{"score": 1.5, "tags": []}', "less than or equal to 1"),
        ('{"score": -1, "tags": []}', "greater than or equal to 0"),
        ('{"score": 0.5, "tags": ["a", "b", "c"]}', "at most 2 items"),
    ],
)
def test_an_answer_breaking_a_constraint_is_a_parse_error(answer: str, message: str) -> None:
    with pytest.raises(lf.ParseError, match=message) as info:
        lf.JSONAdapter().parse(Rate.__lf_signature__, answer)  # type: ignore[arg-type]
    assert "breaks its constraint" in str(info.value)


def test_constraints_are_checked_by_the_chat_adapter_too() -> None:
    sig = Rate.__lf_signature__
    ok = lf.ChatAdapter().parse(sig, '[[ ## score ## ]]\n0.9\n\n[[ ## tags ## ]]\n["a"]')  # type: ignore[arg-type]
    assert ok == {"score": 0.9, "tags": ["a"]}
    with pytest.raises(lf.ParseError, match="less than or equal to 1"):
        lf.ChatAdapter().parse(sig, "[[ ## score ## ]]\n7\n\n[[ ## tags ## ]]\n[]")  # type: ignore[arg-type]


def test_an_input_breaking_a_constraint_is_a_usage_error() -> None:
    lm = ScriptedLM(['{"score": 0.5, "tags": []}'])
    with pytest.raises(lf.UsageError, match=r"input .review.* at most 40 characters"):
        lf.Predict(Rate, adapter=lf.JSONAdapter(), lm=lm)(review="x" * 41)
    assert lm.calls == []


# -- 3. lenient JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "{'answer': 'Paris', 'score': 0.5}",  # a Python dict
        '{"answer": "Paris", "score": 0.5,}',  # a trailing comma
        '```json\n{"answer": "Paris", "score": 0.5}\n```',  # a code fence
        'Sure! Here it is:\n{"answer": "Paris", "score": 0.5}',  # leading prose
        "Here you go: {'answer': 'Paris', 'score': 0.5,}",  # prose and a Python dict
    ],
)
def test_json_adapter_reads_almost_json(answer: str) -> None:
    parsed = lf.JSONAdapter().parse(Lookup.__lf_signature__, answer)  # type: ignore[arg-type]
    assert parsed == {"answer": "Paris", "note": "no note", "score": 0.5}


def test_chat_adapter_reads_almost_json_structured_values() -> None:
    sig = lf.Signature.parse("q -> nums: list[int], info: dict[str, int]")
    text = "[[ ## nums ## ]]\n[1, 2, 3,]\n\n[[ ## info ## ]]\n{'a': 1}"
    assert lf.ChatAdapter().parse(sig, text) == {"nums": [1, 2, 3], "info": {"a": 1}}


def test_prose_without_json_is_still_a_parse_error() -> None:
    with pytest.raises(lf.ParseError, match="not a JSON object"):
        lf.JSONAdapter().parse(Lookup.__lf_signature__, "I do not know.")  # type: ignore[arg-type]


# -- 4. enums with auto values ----------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_auto_enums_show_member_names(adapter: lf.Adapter) -> None:
    text = adapter.format(Paint.__lf_signature__, [], {"thing": "grass"}).render()  # type: ignore[arg-type]
    assert "RED" in text and "GREEN" in text
    assert "1; 2; 3" not in text and "1, 2, 3" not in text


@pytest.mark.parametrize("answer", ["GREEN", "green", "2", "Green."])
def test_auto_enums_parse_names_and_values(answer: str) -> None:
    parsed = lf.ChatAdapter().parse(Paint.__lf_signature__, f"[[ ## color ## ]]\n{answer}")  # type: ignore[arg-type]
    assert parsed == {"color": Color.GREEN}


def test_auto_enum_names_survive_json_and_render_in_demos() -> None:
    sig = lf.Signature.from_json(json.loads(json.dumps(Paint.to_json())))
    assert sig == Paint
    assert [m.name for m in sig.field("color").annotation] == ["RED", "GREEN", "BLUE"]
    demos = [{"thing": "sky", "color": Color.BLUE}]
    text = lf.ChatAdapter().format(sig, demos, {"thing": "grass"}).render()
    assert "[[ ## color ## ]]\nBLUE" in text
    parsed = lf.ChatAdapter().parse(sig, "[[ ## color ## ]]\nBLUE")
    assert parsed["color"].value == Color.BLUE.value


def test_string_valued_enums_still_show_values() -> None:
    class Team(enum.Enum):
        BILLING = "billing"
        TECH = "tech"

    sig = lf.Signature.parse("ticket -> team: Team", types={"Team": Team})
    text = lf.ChatAdapter().format(sig, [], {"ticket": "x"}).render()
    assert "one of: billing; tech" in text


# -- 5. structured-output modes ---------------------------------------------------------


def _json_lm(profile: ModelProfile | None = None, *, refuse_schema: bool = False) -> FunctionLM:
    def reply(request: LMRequest) -> Any:
        fmt = request.response_format or {}
        if refuse_schema and fmt.get("type") == "json_schema":
            return lf.ProviderError(
                "Invalid parameter: 'response_format' of type 'json_schema' is not supported "
                "with this model",
                status_code=400,
            )
        return '{"answer": "Paris", "score": 1}'

    return FunctionLM(reply, profile=profile)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("json_schema", "json_schema"), ("json_object", "json_object"), ("none", None)],
)
def test_json_adapter_honours_the_profile_structured_output(
    mode: str, expected: str | None
) -> None:
    lm = _json_lm(ModelProfile(structured_output=mode))  # type: ignore[arg-type]
    result = lf.Predict(Lookup, adapter=lf.JSONAdapter(), lm=lm)(question="q")
    assert result.answer == "Paris"
    fmt = lm.function.calls[0].response_format
    assert (fmt or {}).get("type") == expected


def test_an_unsupported_response_format_falls_back_once_per_lm() -> None:
    lm = _json_lm(refuse_schema=True)
    predict = lf.Predict(Lookup, adapter=lf.JSONAdapter(), lm=lm)
    assert predict(question="q").answer == "Paris"  # the first call falls back and succeeds
    kinds = [(c.response_format or {}).get("type") for c in lm.function.calls]
    assert kinds == ["json_schema", "json_object"]
    assert predict(question="q2").answer == "Paris"
    kinds = [(c.response_format or {}).get("type") for c in lm.function.calls]
    assert kinds == ["json_schema", "json_object", "json_object"]  # no second failing request
    assert lm.profile.structured_output == "json_object"


async def test_the_fallback_works_for_async_calls() -> None:
    lm = _json_lm(refuse_schema=True)
    predict = lf.Predict(Lookup, adapter=lf.JSONAdapter(), lm=lm)
    assert (await predict.acall(question="q")).answer == "Paris"
    assert (await predict.acall(question="q")).answer == "Paris"
    kinds = [(c.response_format or {}).get("type") for c in lm.function.calls]
    assert kinds == ["json_schema", "json_object", "json_object"]


def test_other_provider_errors_do_not_change_the_mode() -> None:
    lm = FunctionLM(lambda r: lf.ProviderError("bad request: prompt too odd", status_code=400))
    with pytest.raises(lf.ProviderError):
        lf.Predict(Lookup, adapter=lf.JSONAdapter(), lm=lm)(question="q")
    assert len(lm.function.calls) == 1
    assert lm.profile.structured_output == "json_schema"


def test_constraints_on_an_optional_field_apply_to_its_value() -> None:
    class Maybe(lf.Signature):
        count: int | None = lf.InputField(default=None, ge=1)
        score: float | None = lf.OutputField(ge=0, le=1)

    sig = Maybe.__lf_signature__
    assert sig is not None
    assert lf.Signature.from_json(json.loads(json.dumps(sig.to_json()))) == sig
    assert "a number >= 0 and <= 1" in lf.ChatAdapter().format(sig, [], {"count": 2}).render()
    assert lf.ChatAdapter().parse(sig, "[[ ## score ## ]]\nNone") == {"score": None}
    with pytest.raises(lf.ParseError, match="less than or equal to 1"):
        lf.ChatAdapter().parse(sig, "[[ ## score ## ]]\n3")
    lm = ScriptedLM(["[[ ## score ## ]]\n0.5"] * 2)
    assert lf.Predict(Maybe, lm=lm)().score == 0.5
    with pytest.raises(lf.UsageError, match="greater than or equal to 1"):
        lf.Predict(Maybe, lm=lm)(count=0)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_formatting_a_prompt_fills_in_omitted_defaulted_inputs(adapter: lf.Adapter) -> None:
    lm = ScriptedLM([], model_type="text" if adapter.name == "completion" else "chat")
    predict = lf.Predict(Lookup, adapter=adapter)
    omitted = predict.format({"question": "q"}, lm=lm)
    assert omitted == predict.format({"question": "q", "hint": None}, lm=lm)


def test_dspy_style_annotated_types_work_like_constraint_keywords() -> None:
    class Graded(lf.Signature):
        review: str = lf.InputField()
        score: Annotated[float, pydantic.Field(ge=0, le=1)] = lf.OutputField()

    sig = Graded.__lf_signature__
    assert sig is not None
    assert sig == sig.with_field("score", annotation=Rate.field("score").annotation)
    assert (
        "`score` (float): a number >= 0 and <= 1"
        in lf.ChatAdapter().format(sig, [], {"review": "x"}).render()
    )
    with pytest.raises(lf.ParseError, match="breaks its constraint"):
        lf.ChatAdapter().parse(sig, "[[ ## score ## ]]\n2")


def test_constraint_descriptions_read_as_sentences() -> None:
    class Count(lf.Signature):
        n: int = lf.OutputField(multiple_of=5)
        m: int = lf.OutputField(gt=0, lt=100, multiple_of=5)
        code: str = lf.OutputField(min_length=3, pattern="^[A-Z]+$")

    text = lf.ChatAdapter().format(Count.__lf_signature__, [], {}).render()  # type: ignore[arg-type]
    assert "`n` (int): an integer divisible by 5" in text
    assert "`m` (int): an integer > 0 and < 100 and divisible by 5" in text
    assert "a string with at least 3 characters and matching the pattern ^[A-Z]+$" in text
