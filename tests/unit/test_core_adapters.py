"""Adapters: exact prompt text (golden files), demo order, byte-stable layout, the
structured-output request, template overrides."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import lmforge as lf
import pydantic
import pytest
from lmforge.adapters import Prompt
from lmforge.testing import FunctionLM, ScriptedLM

GOLDEN_DIR = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``golden/<name>``; ``LMFORGE_UPDATE_GOLDEN=1`` rewrites it."""
    path = GOLDEN_DIR / name
    if os.environ.get("LMFORGE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(
            f"golden file {path} is missing; "
            f"create it with LMFORGE_UPDATE_GOLDEN=1 pytest {__file__}"
        )
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (
        f"prompt differs from {path}; if the change is intended, rerun with LMFORGE_UPDATE_GOLDEN=1"
    )


class Triage(lf.Signature):
    """Route a support ticket to the team that should handle it."""

    ticket: str = lf.InputField(desc="the customer's message")
    priority: int = lf.InputField()
    team: Literal["billing", "technical", "sales"] = lf.OutputField(desc="the owning team")
    confidence: float = lf.OutputField()
    tags: list[str] = lf.OutputField()


DEMOS = [
    {
        "ticket": "I was charged twice",
        "priority": 2,
        "team": "billing",
        "confidence": 0.9,
        "tags": ["refund"],
    },
    {
        "ticket": "App crashes on start\nsince the update",
        "priority": 1,
        "team": "technical",
        "confidence": 0.75,
        "tags": ["crash", "ios"],
    },
]
INPUTS = {"ticket": "Do you offer volume discounts?", "priority": 3}
OTHER_INPUTS = {"ticket": "Cancel my plan", "priority": 1}
ADAPTERS = {"chat": lf.ChatAdapter, "json": lf.JSONAdapter, "completion": lf.CompletionAdapter}


def render(prompt: Prompt) -> str:
    """A complete, deterministic dump of everything a prompt sends."""
    parts = []
    if prompt.messages is not None:
        parts.extend(f"=== {m['role']} ===\n{m['content']}" for m in prompt.messages)
    if prompt.text is not None:
        parts.append(f"=== text ===\n{prompt.text}")
    if prompt.response_format is not None:
        parts.append(
            "=== response_format ===\n"
            + json.dumps(prompt.response_format, indent=2, sort_keys=True)
        )
    if prompt.stop is not None:
        parts.append("=== stop ===\n" + json.dumps(list(prompt.stop)))
    if prompt.constraint is not None:
        parts.append(
            "=== constraint ===\n"
            + json.dumps(prompt.constraint.to_json(), indent=2, sort_keys=True)
        )
    return "\n\n".join(parts) + "\n"


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_prompt_matches_golden_file(name: str) -> None:
    prompt = ADAPTERS[name]().format(Triage, DEMOS, INPUTS)
    check_golden(f"{name}_triage.txt", render(prompt))


def test_chat_layout_instructions_then_demos_in_order_then_input() -> None:
    messages = lf.ChatAdapter().format(Triage, DEMOS, INPUTS).messages
    assert messages is not None
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    system = messages[0]["content"]
    assert system.startswith(Triage.instructions)
    assert "`ticket` (str): the customer's message" in system
    assert "one of: billing; technical; sales" in system
    assert "I was charged twice" in messages[1]["content"]
    assert "[[ ## team ## ]]\nbilling" in messages[2]["content"]
    assert "App crashes on start\nsince the update" in messages[3]["content"]
    assert '[[ ## tags ## ]]\n["crash", "ios"]' in messages[4]["content"]
    assert "Do you offer volume discounts?" in messages[5]["content"]
    assert "[[ ## priority ## ]]\n3" in messages[5]["content"]


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_demos_rendered_in_given_order(name: str) -> None:
    adapter = ADAPTERS[name]()
    forward = adapter.format(Triage, DEMOS, INPUTS).render()
    backward = adapter.format(Triage, DEMOS[::-1], INPUTS).render()
    first, second = "I was charged twice", "App crashes on start"
    assert forward.index(first) < forward.index(second) < forward.index(INPUTS["ticket"])
    assert backward.index(second) < backward.index(first) < backward.index(INPUTS["ticket"])


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_prefix_is_byte_stable_across_inputs(name: str) -> None:
    adapter = ADAPTERS[name]()
    a = adapter.format(Triage, DEMOS, INPUTS)
    b = adapter.format(Triage, DEMOS, OTHER_INPUTS)
    again = ADAPTERS[name]().format(Triage, DEMOS, INPUTS)
    assert render(a) == render(again)  # deterministic
    prefix = adapter.format_prefix(Triage, DEMOS)
    if a.messages is not None:
        assert b.messages is not None
        assert a.messages[:-1] == b.messages[:-1] == prefix.messages
        assert a.messages[-1] != b.messages[-1]
        assert INPUTS["ticket"] in a.messages[-1]["content"]
    else:
        assert a.text is not None and b.text is not None
        assert a.text.startswith(prefix.text) and b.text.startswith(prefix.text)
        assert INPUTS["ticket"] not in prefix.text
        assert a.text[len(prefix.text) :].startswith("Ticket: Do you offer")


def test_completion_prompt_is_label_value_text_ending_with_first_output_label() -> None:
    prompt = lf.CompletionAdapter().format(Triage, DEMOS, INPUTS)
    assert prompt.messages is None and prompt.text is not None
    assert prompt.text.endswith("Ticket: Do you offer volume discounts?\nPriority: 3\nTeam:")
    assert "Ticket: App crashes on start since the update\n" in prompt.text  # one line per value
    assert prompt.stop is not None and "\nTicket:" in prompt.stop
    assert prompt.constraint is not None
    choices = [s.choices for s in prompt.constraint.segments if s.field == "team"]
    assert choices == [("billing", "technical", "sales")]


def test_demos_without_outputs_are_skipped() -> None:
    partial = [{"ticket": "only an input", "priority": 1}, DEMOS[0]]
    for adapter in (lf.ChatAdapter(), lf.JSONAdapter(), lf.CompletionAdapter()):
        text = adapter.format(Triage, partial, INPUTS).render()
        assert "only an input" not in text
        assert "I was charged twice" in text


def test_template_override_and_unknown_template() -> None:
    adapter = lf.ChatAdapter(templates={"system": "TASK: {{ instructions }}"})
    messages = adapter.format(Triage, [], INPUTS).messages
    assert messages is not None and messages[0]["content"] == f"TASK: {Triage.instructions}"
    assert adapter.config()["templates"] == {"system": "TASK: {{ instructions }}"}
    with pytest.raises(lf.UsageError, match="no template"):
        lf.ChatAdapter(templates={"footer": "x"})


# -- what Predict actually sends --------------------------------------------------------


class Place(pydantic.BaseModel):
    city: str
    country: str


def test_json_adapter_sends_response_format_with_output_schema() -> None:
    reply = {"answer": "Paris", "place": {"city": "Paris", "country": "FR"}, "n": 2, "near": []}
    lm = FunctionLM(lambda r: json.dumps(reply))
    sig = lf.Signature.parse(
        "question -> answer, place: Place, n: int, near: list[Place]", types={"Place": Place}
    )
    result = lf.Predict(sig, lm=lm, adapter=lf.JSONAdapter())(question="capital of France?")
    assert result.place == Place(city="Paris", country="FR") and result.n == 2 and result.near == []
    fmt = lm.calls[0].response_format
    assert fmt is not None and fmt["type"] == "json_schema"
    schema = fmt["json_schema"]["schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["answer", "place", "n", "near"]
    assert schema["properties"]["answer"] == {"type": "string"}
    assert schema["properties"]["n"] == {"type": "integer"}
    assert schema["properties"]["place"]["required"] == ["city", "country"]
    assert schema["properties"]["near"] == {"items": {"$ref": "#/$defs/Place"}, "type": "array"}
    assert schema["$defs"]["Place"]["required"] == ["city", "country"]
    assert schema["additionalProperties"] is False


def test_json_object_mode_and_chat_adapter_send_no_schema() -> None:
    lm = ScriptedLM(['{"answer": "x"}', "[[ ## answer ## ]]\nx"])
    lf.Predict("q -> answer", lm=lm, adapter=lf.JSONAdapter(mode="json_object"))(q="1")
    lf.Predict("q -> answer", lm=lm, adapter=lf.ChatAdapter())(q="1")
    assert lm.calls[0].response_format == {"type": "json_object"}
    assert lm.calls[1].response_format is None


def test_predict_sends_exactly_the_adapter_prompt() -> None:
    lm = ScriptedLM(["[[ ## team ## ]]\nsales\n[[ ## confidence ## ]]\n0.5\n[[ ## tags ## ]]\n[]"])
    predictor = lf.Predict(Triage, lm=lm, demos=DEMOS)
    predictor(**INPUTS)
    assert lm.calls[0].messages == lf.ChatAdapter().format(Triage, DEMOS, INPUTS).messages


def test_text_model_uses_completion_adapter_with_stops_and_constraint() -> None:
    lm = ScriptedLM([' sales\nConfidence: 0.4\nTags: ["pricing"]'], model_type="text")
    result = lf.Predict(Triage, lm=lm, demos=DEMOS)(**INPUTS)
    assert (result.team, result.confidence, result.tags) == ("sales", 0.4, ["pricing"])
    request = lm.calls[0]
    assert request.messages is None
    assert request.prompt == lf.CompletionAdapter().format(Triage, DEMOS, INPUTS).text
    assert request.params["stop"] == ["\n\n", "\nTicket:", "\nPriority:"]
    assert request.constraint is not None


def test_assigning_demos_rerenders_the_prompt() -> None:
    lm = ScriptedLM(["[[ ## a ## ]]\nx"], cycle=True)
    predictor = lf.Predict("q -> a", lm=lm, demos=[{"q": "first demo", "a": "1"}])
    predictor(q="hi")
    predictor.demos = [{"q": "second demo", "a": "2"}]
    predictor(q="hi")
    predictor.signature = predictor.signature.with_instructions("Brand new instructions.")
    predictor(q="hi")
    texts = [json.dumps(r.messages) for r in lm.calls]
    assert "first demo" in texts[0] and "second demo" not in texts[0]
    assert "second demo" in texts[1] and "first demo" not in texts[1]
    assert "Brand new instructions." in texts[2]
