"""Turning output text into typed values, and typed values into prompt text."""

from __future__ import annotations

import enum
import functools
import json
import re
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Union

from ..constraints import unwrap_annotated
from ..errors import ParseError
from ..fieldtypes import choice_labels, is_enum_like, shows_names, type_adapter
from ..signature import Field

__all__ = ["coerce", "render_value"]

_TRIM = " \t\r\n\"'`*.,;:"
_NONE_WORDS = {"none", "null", "n/a", ""}


def render_value(value: Any) -> str:
    """Render a value for a prompt: strings as-is, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        # The model is shown the names of enums whose values are not text (see choice_labels).
        return value.name if shows_names(type(value)) else str(value.value)
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if _is_model(value):
        # Same text as the equivalent dict (a model and its JSON reloaded from an artifact
        # must render identically, or a loaded program sends different prompts).
        return json.dumps(value.model_dump(mode="json"), ensure_ascii=False)
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError):
        return str(value)


def _is_model(value: Any) -> bool:
    # pydantic is imported lazily: while it is not loaded, no value can be one of its models.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def _json_default(value: Any) -> Any:
    if _is_model(value):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


def coerce(field: Field, text: str, raw: str) -> Any:
    """Convert ``text`` (the part of ``raw`` belonging to ``field``) to the field's type."""
    return _coercer(field.annotation)(field, text, raw)


@functools.lru_cache(maxsize=1024)
def _coercer(annotation: Any) -> Callable[[Field, str, str], Any]:
    if annotation is str or annotation is Any:
        return _coerce_str
    if typing.get_origin(annotation) is typing.Annotated:
        return _make_constrained(annotation)
    choices = is_enum_like(annotation)
    if choices is not None:
        return _make_choice(annotation, choices)
    if annotation in (int, float, bool):
        return _make_scalar(annotation)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args:
            inner = [a for a in args if a is not type(None)]
            inner_type = inner[0] if len(inner) == 1 else Union[tuple(inner)]  # noqa: UP007
            inner_coerce = _coercer(inner_type)

            def optional(field: Field, text: str, raw: str) -> Any:
                if text.strip().strip(_TRIM).lower() in _NONE_WORDS:
                    return None
                return inner_coerce(field, text, raw)

            return optional
    return _make_json(annotation)


def _coerce_str(field: Field, text: str, raw: str) -> str:
    value = text.strip()
    if not value:
        raise ParseError(f"output field '{field.name}' is empty", raw=raw, field=field.name)
    return value


def _make_constrained(annotation: Any) -> Callable[[Field, str, str], Any]:
    """Parse as the type inside ``Annotated``, then check the constraints on the value."""
    import pydantic

    parse = _coercer(unwrap_annotated(annotation))
    adapter = type_adapter(annotation)

    def check(field: Field, text: str, raw: str) -> Any:
        value = parse(field, text, raw)
        try:
            return adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise ParseError(
                f"output field '{field.name}' = {value!r:.80} breaks its constraint: "
                f"{exc.errors()[0].get('msg')}",
                raw=raw,
                field=field.name,
            ) from None

    return check


def _make_choice(annotation: Any, choices: tuple[Any, ...]) -> Callable[[Field, str, str], Any]:
    exact = {str(c): c for c in choices}
    folded = {str(c).strip().lower(): c for c in choices}
    is_enum = isinstance(annotation, type) and issubclass(annotation, enum.Enum)
    if is_enum:  # member names are answers too; a value spelled like a name wins
        for member in annotation:
            exact.setdefault(member.name, member.value)
            folded.setdefault(member.name.lower(), member.value)
    labels = choice_labels(annotation) or ()

    def choose(field: Field, text: str, raw: str) -> Any:
        candidate = text.strip()
        value = exact.get(candidate)
        if value is None:
            candidate = candidate.splitlines()[0].strip(_TRIM) if candidate else ""
            value = exact.get(candidate, folded.get(candidate.lower()))
        if value is None:
            if not text.strip():
                raise ParseError(f"output field '{field.name}' is empty", raw=raw, field=field.name)
            allowed = ", ".join(labels)
            raise ParseError(
                f"output field '{field.name}' must be one of [{allowed}], "
                f"got {text.strip()[:80]!r}",
                raw=raw,
                field=field.name,
            )
        return annotation(value) if is_enum else value

    return choose


_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_DIGIT = re.compile(r"\d")


def _make_scalar(kind: type) -> Callable[[Field, str, str], Any]:
    import pydantic

    adapter = type_adapter(kind)

    def scalar(field: Field, text: str, raw: str) -> Any:
        value = (
            text.strip().strip(_TRIM.replace(".", ""))
            if kind is not bool
            else text.strip().strip(_TRIM)
        )
        if not value:
            raise ParseError(f"output field '{field.name}' is empty", raw=raw, field=field.name)
        if kind is not bool:
            value = value.replace("$", "")
            match = _NUMBER.match(value)
            # "42 items" is 42, but "2024-01-05" or "1, 2" are not one number: a digit after
            # the leading number (on its line) makes the answer ambiguous.
            if match and not _DIGIT.search(value[match.end() :].split("\n", 1)[0]):
                value = match.group(0).replace(",", "").rstrip(".")
        try:
            return adapter.validate_python(value)
        except pydantic.ValidationError:
            raise ParseError(
                f"output field '{field.name}' should be {kind.__name__}, got {text.strip()[:80]!r}",
                raw=raw,
                field=field.name,
            ) from None

    return scalar


def _make_json(annotation: Any) -> Callable[[Field, str, str], Any]:
    import pydantic

    from .lenient_json import NOT_JSON, loads_lenient, strip_fences

    adapter = type_adapter(annotation)

    def from_json(field: Field, text: str, raw: str) -> Any:
        body = text.strip()
        if not body:
            raise ParseError(f"output field '{field.name}' is empty", raw=raw, field=field.name)
        data = loads_lenient(body)
        if data is NOT_JSON:
            data = strip_fences(body)  # let pydantic try the text itself (a bare string)
        try:
            return adapter.validate_python(data)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "value"
            raise ParseError(
                f"output field '{field.name}' does not match its type at {where}: "
                f"{first.get('msg')}",
                raw=raw,
                field=field.name,
            ) from None

    return from_json
