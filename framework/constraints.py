"""Pydantic constraint keywords on fields (``lf.OutputField(ge=0, le=1)``): attaching them
to a type, and describing them to the model in words."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from .errors import SignatureError
from .fieldtypes import _CONSTRAINTS, schema_of, type_name

__all__ = [
    "CONSTRAINT_KEYWORDS",
    "constrained",
    "describe_constraints",
    "is_constrained",
    "unwrap_annotated",
]

#: The pydantic constraint keywords ``lf.InputField``/``lf.OutputField`` accept.
CONSTRAINT_KEYWORDS = frozenset(_CONSTRAINTS.values())
_SCHEMA_KEYS: dict[str, tuple[str, ...]] = {}
for _key, _arg in _CONSTRAINTS.items():
    _SCHEMA_KEYS.setdefault(_arg, ())
    _SCHEMA_KEYS[_arg] += (_key,)


def constrained(base: Any, constraints: Mapping[str, Any]) -> Any:
    """``Annotated[base, pydantic.Field(**constraints)]``, checked: a keyword that does not
    apply to ``base`` (``ge`` on a string) is a :class:`SignatureError`, not silently lost."""
    if not constraints:
        return base
    unknown = sorted(set(constraints) - CONSTRAINT_KEYWORDS)
    if unknown:
        raise SignatureError(
            f"unknown constraint(s) {unknown}; use {', '.join(sorted(CONSTRAINT_KEYWORDS))}"
        )
    inner = _optional_inner(base)
    if inner is not None:  # constrain the value, not the None an Optional also allows
        return typing.Optional[constrained(inner, constraints)]  # noqa: UP045
    import pydantic

    try:
        annotation = typing.Annotated[base, pydantic.Field(**constraints)]
        schema = schema_of(annotation)
    except (TypeError, ValueError) as exc:
        raise SignatureError(f"invalid constraint on {type_name(base)}: {exc}") from None
    for arg in constraints:
        if not any(key in schema for key in _SCHEMA_KEYS[arg]):
            raise SignatureError(f"the constraint {arg}= does not apply to {type_name(base)}")
    return annotation


def _optional_inner(annotation: Any) -> Any:
    """``T`` for ``T | None``; None for other annotations."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(annotation)
    others = [a for a in args if a is not type(None)]
    return others[0] if len(args) == 2 and len(others) == 1 else None


def is_constrained(annotation: Any) -> bool:
    """Whether ``annotation`` is ``Annotated[...]`` (or ``Annotated[...] | None``)."""
    inner = _optional_inner(annotation)
    return typing.get_origin(annotation if inner is None else inner) is typing.Annotated


def unwrap_annotated(annotation: Any) -> Any:
    """The type inside ``Annotated[T, ...]``; other annotations unchanged."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


_BOUND_WORDS = (
    ("minimum", ">="),
    ("exclusiveMinimum", ">"),
    ("maximum", "<="),
    ("exclusiveMaximum", "<"),
)


def describe_constraints(annotation: Any) -> str:
    """The constraints of an ``Annotated`` type in words (``"a number >= 0 and <= 1"``);
    ``""`` for unconstrained types."""
    if not is_constrained(annotation):
        return ""
    annotation = _optional_inner(annotation) or annotation
    try:
        schema = schema_of(annotation)
    except SignatureError:
        return ""
    parts: list[str] = []
    kind = schema.get("type")
    if kind in ("number", "integer"):
        parts += [f"{op} {schema[key]}" for key, op in _BOUND_WORDS if key in schema]
        if "multipleOf" in schema:
            parts.append(f"divisible by {schema['multipleOf']}")
        noun = "an integer" if kind == "integer" else "a number"
    elif kind == "string":
        if "minLength" in schema:
            parts.append(f"at least {schema['minLength']} characters")
        if "maxLength" in schema:
            parts.append(f"at most {schema['maxLength']} characters")
        if "pattern" in schema:
            parts.append(f"matching the pattern {schema['pattern']}")
        noun = "a string with"
    elif kind == "array":
        if "minItems" in schema:
            parts.append(f"at least {schema['minItems']} items")
        if "maxItems" in schema:
            parts.append(f"at most {schema['maxItems']} items")
        noun = "a list with"
    else:
        return ""
    return f"{noun} {' and '.join(parts)}" if parts else ""
