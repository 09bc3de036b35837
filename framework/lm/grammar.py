"""Compile output constraints into llama.cpp GBNF grammars.

An :class:`~lmforge.lm.types.OutputConstraint` is a sequence of segments: fixed text, a
closed set of ``choices``, a value matching a JSON ``schema``, or free text on one line.
This module turns it into one GBNF grammar whose language is exactly the completions the
adapter can parse. Plain string values (``str``, ``str | None``) are raw text on one
line, as the completion adapter writes and reads them; other typed values are JSON.
JSON schemas are converted by llama.cpp's own converter
(``llama_cpp.llama_grammar.SchemaConverter``); this module only glues segments together
and keeps JSON on one line (the completion format is line-oriented).

Compiled grammars are cached by the constraint's JSON form.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import MissingExtraError, UsageError
from .types import OutputConstraint

__all__ = [
    "constraint_grammar",
    "escape_literal",
    "response_format_grammar",
    "schema_grammar",
]

# A JSON string character: anything but a quote, a backslash or a control character
# (so strings stay on one line), or an escape sequence.
_JSON_CHAR = (
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" '
    r"[0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])"
)
# Free text: one line with at least one visible character.
_LINE = r"[ \t]* [^\r\n \t] [^\r\n]*"
_RULE_NAME = re.compile(r"[^a-zA-Z0-9-]+")
_LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_literal(text: str) -> str:
    """``text`` as a GBNF string literal (quoted, with escapes)."""
    return '"' + "".join(_LITERAL_ESCAPES.get(ch, ch) for ch in text) + '"'


def _converter() -> Any:
    try:
        from llama_cpp.llama_grammar import SchemaConverter
    except ImportError:
        raise MissingExtraError(
            "llama-cpp-python", "local", "Constrained decoding for local models"
        ) from None
    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _rule_name(text: str) -> str:
    name = _RULE_NAME.sub("-", text).strip("-").lower() or "value"
    return name if name[0].isalpha() else f"v-{name}"


def _prefixed_defs(schema: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A copy of ``schema`` whose ``$defs`` names carry ``prefix``, so that two fields'
    definitions of the same name become different grammar rules."""
    data = copy.deepcopy(dict(schema))
    defs = data.get("$defs")
    if not isinstance(defs, dict) or not defs:
        return data
    renames = {name: f"{prefix}-{name}" for name in defs}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                    name = value[len("#/$defs/") :]
                    out[key] = f"#/$defs/{renames.get(name, name)}"
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    data = walk(data)
    data["$defs"] = {renames[name]: value for name, value in data["$defs"].items()}
    return data


def _rules_of(converter: Any) -> dict[str, str]:
    """The converter's rules, with JSON strings kept on one line."""
    rules: dict[str, str] = {}
    for line in converter.format_grammar().splitlines():
        name, sep, body = line.partition(" ::= ")
        if sep:
            rules[name] = body
    if "char" in rules:
        rules["char"] = _JSON_CHAR
    return rules


def _format(rules: Mapping[str, str]) -> str:
    ordered = sorted(rules.items(), key=lambda item: (item[0] != "root", item[0]))
    return "\n".join(f"{name} ::= {body}" for name, body in ordered) + "\n"


def _visit_schema(converter: Any, schema: Mapping[str, Any], name: str) -> str:
    """Add rules for ``schema`` under ``name`` (``""``: the root rule); return its rule name."""
    try:
        prefix = name or "def"
        resolved = converter.resolve_refs(_prefixed_defs(schema, prefix), prefix)
        return str(converter.visit(resolved, name))
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UsageError(
            f"cannot build a decoding grammar from the JSON schema of {name!r} ({exc}); "
            "simplify the field's type"
        ) from None


_STRING_KEYS = {"type", "title", "description", "default", "examples"}


def _is_plain_text(schema: Mapping[str, Any]) -> bool:
    """Whether a segment's schema is an unconstrained string, or such a string or null.

    In the line-oriented completion format these values are written as raw text, not as
    quoted JSON (the adapter renders and parses them that way), so they get the free
    one-line rule; the adapter reads ``null``/``None`` as a missing optional value.
    """
    if schema.get("type") == "string" and set(schema) <= _STRING_KEYS:
        return True
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list) and set(schema) - {"anyOf", "oneOf"} <= _STRING_KEYS:
        kinds = [o for o in options if isinstance(o, Mapping)]
        strings = [o for o in kinds if o.get("type") == "string" and set(o) <= _STRING_KEYS]
        nulls = [o for o in kinds if o.get("type") == "null"]
        return len(kinds) == len(options) == len(strings) + len(nulls) and len(strings) == 1
    return False


@functools.lru_cache(maxsize=256)
def _compile_constraint(key: str) -> str:
    segments: list[dict[str, Any]] = json.loads(key)
    converter = _converter()
    parts: list[str] = []
    extra: dict[str, str] = {}
    for index, segment in enumerate(segments):
        base = _rule_name(f"{segment.get('field') or 'value'}-{index}")
        if "text" in segment:
            if segment["text"]:
                parts.append(escape_literal(segment["text"]))
        elif "choices" in segment:
            choices = [str(c) for c in segment["choices"]]
            if not choices:
                raise UsageError(f"output field {segment.get('field')!r} allows no values")
            # Longest first: alternatives that are prefixes of others stay reachable.
            ordered = sorted(dict.fromkeys(choices), key=lambda c: (-len(c), c))
            extra[base] = " | ".join(escape_literal(c) for c in ordered)
            parts.append(base)
        elif "schema" in segment and not _is_plain_text(segment["schema"]):
            parts.append(_visit_schema(converter, segment["schema"], base))
        else:
            extra["line"] = _LINE
            parts.append("line")
    if not parts:
        raise UsageError("an output constraint needs at least one segment")
    rules = _rules_of(converter)
    rules.update(extra)
    # The completion may end with one newline (base models like to end a line); after
    # it, or after the last value, the grammar only allows end-of-generation.
    rules["root"] = " ".join(parts) + ' "\\n"?'
    return _format(rules)


def constraint_grammar(constraint: OutputConstraint) -> str:
    """The GBNF grammar (root rule ``root``) for ``constraint``; cached by its content."""
    key = json.dumps(constraint.to_json(), separators=(",", ":"))
    return _compile_constraint(key)


@functools.lru_cache(maxsize=256)
def _compile_schema(key: str) -> str:
    converter = _converter()
    name = _visit_schema(converter, json.loads(key), "")
    rules = _rules_of(converter)
    if name != "root":
        rules["root"] = name
    return _format(rules)


def schema_grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar for one-line JSON values matching ``schema``; cached."""
    return _compile_schema(json.dumps(schema, separators=(",", ":")))


def response_format_grammar(response_format: Mapping[str, Any] | None) -> str | None:
    """The grammar for an OpenAI-style ``response_format``, or ``None`` for plain text.

    Accepts ``{"type": "json_schema", "json_schema": {"schema": ...}}``,
    ``{"type": "json_object"}`` (any object) and ``{"type": "json_object", "schema": ...}``.
    """
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise UsageError('response_format json_schema needs {"json_schema": {"schema": {...}}}')
        return schema_grammar(schema)
    if kind == "json_object":
        schema = response_format.get("schema")
        return schema_grammar(schema if isinstance(schema, Mapping) else {"type": "object"})
    raise UsageError(
        f"unsupported response_format type {kind!r}; use 'text', 'json_object' or 'json_schema'"
    )
