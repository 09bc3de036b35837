"""The per-call prompt fast path renders exactly what the templates render."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import lmforge as lf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lmforge.adapters import Adapter, ChatAdapter, CompletionAdapter, JSONAdapter


class SlowChat(ChatAdapter):
    def render(self, role: str, **context: Any) -> str:  # overriding render disables the fast path
        return super().render(role, **context)


class SlowJSON(JSONAdapter):
    def render(self, role: str, **context: Any) -> str:
        return super().render(role, **context)


class SlowCompletion(CompletionAdapter):
    def render(self, role: str, **context: Any) -> str:
        return super().render(role, **context)


SIGNATURE = lf.Signature.parse(
    "ticket: str, history: list[str], priority: int, note -> "
    "team: Literal['billing', 'tech'], score: float"
)
PAIRS: list[tuple[Adapter, Adapter]] = [
    (ChatAdapter(), SlowChat()),
    (JSONAdapter(), SlowJSON()),
    (CompletionAdapter(), SlowCompletion()),
]
TRICKY = st.sampled_from(
    [
        "",
        "\n",
        "trailing\n\n",
        "\n\nleading",
        "{{ value }}",
        "{% if x %}",
        "\x00lmforge-slot-0\x00",
        "[[ ## note ## ]]",
    ]
)
TEXT = st.one_of(TRICKY, st.text(max_size=40), st.builds("".join, st.lists(TRICKY, max_size=4)))


@settings(max_examples=150, deadline=None)
@given(ticket=TEXT, history=st.lists(TEXT, max_size=3), priority=st.integers(), note=TEXT)
def test_fast_path_matches_the_template(
    ticket: str, history: list[str], priority: int, note: str
) -> None:
    inputs = {"ticket": ticket, "history": history, "priority": priority, "note": note}
    demos = [
        {"ticket": "t", "history": [], "priority": 1, "note": "n", "team": "tech", "score": 0.5}
    ]
    for fast, slow in PAIRS:
        expected = slow.format(SIGNATURE, demos, inputs)
        assert fast.format(SIGNATURE, demos, inputs) == expected
        assert fast.format(SIGNATURE, demos, inputs) == expected  # second call: from the skeleton


def test_user_templates_always_render() -> None:
    adapter = ChatAdapter(
        templates={
            "user": "{% for name, value in fields %}{{ name }}={{ value | upper }}\n{% endfor %}"
        }
    )
    sig = lf.Signature.parse("question -> answer")
    for text in ("abc", "xyz"):
        prompt = adapter.format(sig, [], {"question": text})
        assert prompt.messages is not None
        assert prompt.messages[-1]["content"] == f"question={text.upper()}"


def test_template_syntax_errors_show_at_construction() -> None:
    with pytest.raises(lf.UsageError, match="'user' has a syntax error on line 1"):
        ChatAdapter(templates={"user": "{% for x in %}"})


def test_user_templates_cannot_reach_python_internals(tmp_path: Path) -> None:
    # Template overrides travel in artifacts, so a template is untrusted input.
    marker = tmp_path / "ran"
    escape = f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}"
    adapter = ChatAdapter(templates={"system": escape + " {{ instructions }}"})
    sig = lf.Signature.parse("question -> answer")
    with pytest.raises(lf.UsageError, match="template 'system' failed to render"):
        adapter.format(sig, [], {"question": "q"})
    assert not marker.exists()


def test_an_unknown_template_variable_is_a_usage_error() -> None:
    adapter = ChatAdapter(templates={"system": "{{ no_such_variable }}"})
    sig = lf.Signature.parse("question -> answer")
    with pytest.raises(lf.UsageError, match="'no_such_variable' is undefined"):
        adapter.format(sig, [], {"question": "q"})


def test_cached_response_format_follows_the_mode() -> None:
    sig = lf.Signature.parse("question -> answer: int")
    adapter = JSONAdapter()
    assert adapter.format(sig, [], {"question": "q"}).response_format["type"] == "json_schema"  # type: ignore[index]
    adapter.mode = "json_object"
    assert adapter.format(sig, [], {"question": "q"}).response_format == {"type": "json_object"}


def test_adapters_and_predictors_deep_copy_after_use() -> None:
    from lmforge.testing import ScriptedLM

    lm = ScriptedLM(["[[ ## answer ## ]]\nyes"], cycle=True)
    for adapter in (ChatAdapter(), ChatAdapter(templates={"user": "{{ fields }}"})):
        program = lf.Predict("question -> answer", lm=lm, adapter=adapter)
        program(question="q")
        clone = program.deepcopy()
        assert clone.adapter == adapter and clone.adapter is not adapter
        assert clone(question="q").answer == "yes"
        assert copy.deepcopy(adapter).format(
            program.signature, [], {"question": "q"}
        ) == adapter.format(program.signature, [], {"question": "q"})


def test_typed_literal_signature_prompt_is_stable() -> None:
    class Triage(lf.Signature):
        """Route the ticket."""

        ticket: str = lf.InputField()
        team: Literal["billing", "tech"] = lf.OutputField()

    adapter = ChatAdapter()
    first = adapter.format(Triage, [], {"ticket": "a"})
    second = adapter.format(Triage, [], {"ticket": "a"})
    assert first == second == SlowChat().format(Triage, [], {"ticket": "a"})
