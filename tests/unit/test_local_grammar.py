"""OutputConstraint -> GBNF: each segment type, caching, schema handling, response_format."""

from __future__ import annotations

import re
from typing import Literal

import lmforge as lf
import pydantic
import pytest
from lmforge.fieldtypes import schema_of
from lmforge.lm.grammar import (
    constraint_grammar,
    escape_literal,
    response_format_grammar,
    schema_grammar,
)
from lmforge.lm.types import ConstraintSegment, OutputConstraint
from lmforge.signature import as_signature

pytest.importorskip("llama_cpp", reason="the JSON-schema converter ships with llama-cpp-python")

RULE = re.compile(r"^([a-zA-Z0-9-]+) ::= (.*)$")


def rules(grammar: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for line in grammar.strip().splitlines():
        match = RULE.match(line)
        assert match, f"not a GBNF rule line: {line!r}"
        assert match.group(1) not in parsed, f"rule {match.group(1)} defined twice"
        parsed[match.group(1)] = match.group(2)
    return parsed


def referenced(body: str) -> set[str]:
    """Rule names a rule body refers to (outside string literals and character classes)."""
    body = re.sub(r'"(\\.|[^"\\])*"', " ", body)
    body = re.sub(r"\[(\\.|[^\]\\])*\]", " ", body)
    return set(re.findall(r"[a-zA-Z][a-zA-Z0-9-]*", body))


def assert_closed(grammar: str) -> dict[str, str]:
    """Every referenced rule is defined and ``root`` comes first."""
    parsed = rules(grammar)
    assert grammar.startswith("root ::= ")
    for name, body in parsed.items():
        missing = referenced(body) - set(parsed)
        assert not missing, f"rule {name} refers to undefined {missing}"
    return parsed


def seg(**kwargs: object) -> ConstraintSegment:
    return ConstraintSegment(**kwargs)  # type: ignore[arg-type]


def test_fixed_text_and_choices() -> None:
    grammar = constraint_grammar(
        OutputConstraint((seg(text=" "), seg(choices=("billing", "tech support"), field="team")))
    )
    parsed = assert_closed(grammar)
    assert parsed["root"] == '" " team-1 "\\n"?'
    assert set(parsed["team-1"].split(" | ")) == {'"billing"', '"tech support"'}


def test_free_text_is_one_visible_line() -> None:
    grammar = constraint_grammar(OutputConstraint((seg(text=" "), seg(field="answer"))))
    parsed = assert_closed(grammar)
    assert parsed["root"] == '" " line "\\n"?'
    assert "\\n" in parsed["line"] and "[^\\r\\n" in parsed["line"]


@pytest.mark.parametrize(
    ("annotation", "rule_fragment"),
    [(int, "integral-part"), (float, "decimal-part"), (bool, '"true" | "false"')],
)
def test_numbers_and_booleans_by_pattern(annotation: type, rule_fragment: str) -> None:
    grammar = constraint_grammar(
        OutputConstraint((seg(text=" "), seg(schema=schema_of(annotation), field="x")))
    )
    assert rule_fragment in grammar
    assert_closed(grammar)


class Item(pydantic.BaseModel):
    name: str
    qty: int


class Order(pydantic.BaseModel):
    items: list[Item]
    note: str | None = None


def test_json_schema_fields_keep_property_order_and_stay_on_one_line() -> None:
    constraint = OutputConstraint(
        (
            seg(text=" "),
            seg(schema=schema_of(Order), field="order"),
            seg(text="\nCount: "),
            seg(schema=schema_of(int), field="count"),
        )
    )
    grammar = constraint_grammar(constraint)
    parsed = assert_closed(grammar)
    assert parsed["root"].startswith('" " order-1 "\\nCount: " ')
    order_rule = parsed["order-1"]
    assert order_rule.index("items-kv") < order_rule.index("note-kv")
    assert parsed["space"] == '" "?'  # no newlines between JSON tokens
    assert "\\x00-\\x1F" in parsed["char"]  # no raw control characters inside strings


def test_same_named_definitions_of_two_fields_do_not_collide() -> None:
    class A(pydantic.BaseModel):
        x: int

    class B(pydantic.BaseModel):
        y: str

    schema_a = {"type": "object", "properties": {"v": {"$ref": "#/$defs/M"}}, "required": ["v"],
                "$defs": {"M": schema_of(A)}}  # fmt: skip
    schema_b = {"type": "object", "properties": {"v": {"$ref": "#/$defs/M"}}, "required": ["v"],
                "$defs": {"M": schema_of(B)}}  # fmt: skip
    grammar = constraint_grammar(
        OutputConstraint(
            (seg(schema=schema_a, field="a"), seg(text="\nB: "), seg(schema=schema_b, field="b"))
        )
    )
    parsed = assert_closed(grammar)
    assert any('"\\"x\\""' in body for body in parsed.values())
    assert any('"\\"y\\""' in body for body in parsed.values())


def test_compiled_grammars_are_cached_by_content() -> None:
    make = lambda: OutputConstraint((seg(text=" "), seg(choices=("a", "b"), field="f")))  # noqa: E731
    assert constraint_grammar(make()) is constraint_grammar(make())
    other = OutputConstraint((seg(text=" "), seg(choices=("a", "c"), field="f")))
    assert constraint_grammar(other) != constraint_grammar(make())


def test_literals_are_escaped() -> None:
    assert escape_literal('say "hi"\n\\') == '"say \\"hi\\"\\n\\\\"'
    grammar = constraint_grammar(OutputConstraint((seg(choices=('a"b', "c\\d"), field="f"),)))
    assert '"a\\"b"' in grammar and '"c\\\\d"' in grammar


def test_completion_adapter_constraint_compiles() -> None:
    class Route(lf.Signature):
        """Route it."""

        ticket: str = lf.InputField()
        team: Literal["billing", "technical"] = lf.OutputField()
        urgent: bool = lf.OutputField()
        summary: str = lf.OutputField()

    constraint = lf.CompletionAdapter().constraint(as_signature(Route))
    parsed = assert_closed(constraint_grammar(constraint))
    assert parsed["root"].startswith('" " team-1 "\\nUrgent: " ')


def test_response_formats() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert_closed(
        response_format_grammar({"type": "json_schema", "json_schema": {"schema": schema}}) or ""
    )
    assert schema_grammar(schema) == response_format_grammar(
        {"type": "json_object", "schema": schema}
    )
    assert "object ::=" in (response_format_grammar({"type": "json_object"}) or "")
    assert response_format_grammar({"type": "text"}) is None
    assert response_format_grammar(None) is None
    with pytest.raises(lf.UsageError, match="unsupported response_format"):
        response_format_grammar({"type": "xml"})
    with pytest.raises(lf.UsageError, match="json_schema"):
        response_format_grammar({"type": "json_schema", "json_schema": {}})


def test_empty_constraints_and_choices_are_usage_errors() -> None:
    with pytest.raises(lf.UsageError):
        constraint_grammar(OutputConstraint(()))
    with pytest.raises(lf.UsageError, match="allows no values"):
        constraint_grammar(OutputConstraint((seg(choices=(), field="f"),)))


def test_schema_property_order_is_kept_and_input_untouched() -> None:
    schema = {"type": "object", "properties": {"z": {"type": "integer"}, "a": {"type": "integer"}},
              "required": ["z", "a"]}  # fmt: skip
    root = rules(schema_grammar(schema))["root"]
    assert root.index("z-kv") < root.index("a-kv")
    assert list(schema["properties"]) == ["z", "a"]


@pytest.mark.parametrize("annotation", [str, str | None])
def test_plain_string_values_are_raw_text_lines(annotation: object) -> None:
    grammar = constraint_grammar(
        OutputConstraint((seg(text=" "), seg(schema=schema_of(annotation), field="note")))
    )
    assert rules(grammar)["root"] == '" " line "\\n"?'


def test_optional_numbers_stay_json() -> None:
    grammar = constraint_grammar(
        OutputConstraint((seg(text=" "), seg(schema=schema_of(int | None), field="n")))
    )
    assert "null" in grammar and "integral-part" in grammar
