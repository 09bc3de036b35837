"""Fields of signatures: the ``Field`` value type and the ``lf.InputField`` /
``lf.OutputField`` declarations (description, prefix, default, constraint keywords)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from .constraints import constrained
from .errors import SignatureError
from .fieldtypes import (
    enum_with_names,
    resolve_type,
    schema_of,
    shows_names,
    type_adapter,
    type_from_schema,
    type_name,
)

__all__ = ["NO_DEFAULT", "Field", "FieldKind", "InputField", "OutputField"]

FieldKind = Literal["input", "output"]


class _NoDefault:
    """The type of :data:`NO_DEFAULT` (a plain class: an enum costs import time)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_DEFAULT"

    def __reduce__(self) -> str:
        # Pickled and copied as the module-level name: it stays the one NO_DEFAULT.
        return "NO_DEFAULT"


#: The ``default`` of a field that has none.
NO_DEFAULT = _NoDefault()


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One named, typed field of a signature.

    ``default`` (when not ``NO_DEFAULT``) is used for an input the call leaves out and for
    an output the model's answer leaves out.
    """

    name: str
    kind: FieldKind
    annotation: Any = str
    description: str = ""
    prefix: str = ""
    default: Any = dataclasses.field(default=NO_DEFAULT, hash=False)

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT

    def missing_value(self) -> Any:
        """The value of this output when the answer leaves it out: its default, else None
        for an Optional type; ``NO_DEFAULT`` when it is required."""
        if self.has_default:
            return self.default
        args = typing.get_args(self.annotation)
        if typing.get_origin(self.annotation) in (typing.Union, types.UnionType) and (
            type(None) in args
        ):
            return None
        return NO_DEFAULT

    @property
    def label(self) -> str:
        """The label shown for this field in prompts (``prefix`` or the name in words)."""
        return self.prefix or self.name.replace("_", " ").strip().capitalize()

    @property
    def type_name(self) -> str:
        return type_name(self.annotation)

    def to_json(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "kind": self.kind,
            "type": self.type_name,
            "description": self.description,
            "prefix": self.prefix,
            "schema": schema_of(self.annotation),
        }
        if shows_names(self.annotation):  # the schema holds only the values
            data["enum_names"] = [member.name for member in self.annotation]
        if self.has_default:
            data["default"] = _jsonable_default(self)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Field:
        if not isinstance(data, Mapping):
            raise SignatureError(f"a field must be a JSON object, got {type(data).__name__}")
        try:
            name, kind = data["name"], data["kind"]
        except KeyError as exc:
            raise SignatureError(f"field JSON is missing {exc.args[0]!r}") from None
        if not isinstance(name, str):
            raise SignatureError(f"field name must be a string, got {name!r}")
        for key in ("description", "prefix", "type"):
            if key in data and not isinstance(data[key], str):
                raise SignatureError(f"field {name!r}: '{key}' must be a string")
        if "schema" in data and not isinstance(data["schema"], Mapping):
            raise SignatureError(f"field {name!r}: 'schema' must be a JSON object")
        if kind not in ("input", "output"):
            raise SignatureError(f"field {name!r} has kind {kind!r}; expected input or output")
        annotation: Any = str
        if "schema" in data:
            try:
                annotation = type_from_schema(data["schema"], title=_camel(name))
            except SignatureError as exc:
                raise SignatureError(
                    f"field {name!r}: {exc}; a field's schema must be one lmforge wrote "
                    "(re-save the program)"
                ) from None
        elif "type" in data:
            annotation = resolve_type(str(data["type"]))
        if "enum_names" in data:
            try:
                annotation = enum_with_names(annotation, data["enum_names"])
            except SignatureError as exc:
                raise SignatureError(f"field {name!r}: {exc}") from None
        default = (
            _default_from_json(annotation, data["default"]) if "default" in data else NO_DEFAULT
        )
        return cls(
            name=str(name),
            kind=kind,
            annotation=annotation,
            description=str(data.get("description", "")),
            prefix=str(data.get("prefix", "")),
            default=default,
        )


def _jsonable_default(field: Field) -> Any:
    import pydantic_core

    try:
        return pydantic_core.to_jsonable_python(field.default)
    except pydantic_core.PydanticSerializationError:
        raise SignatureError(
            f"field {field.name!r}: its default {field.default!r} cannot be saved as JSON; "
            "use a JSON value (string, number, list, dict, None) or a pydantic model"
        ) from None


def _default_from_json(annotation: Any, value: Any) -> Any:
    """A saved default as the field's type (an enum member, a model), when it is one."""
    import pydantic

    try:
        return type_adapter(annotation).validate_python(value)
    except pydantic.ValidationError:
        return value  # e.g. None as the default of a plain ``str`` field


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldMarker:
    kind: FieldKind
    description: str
    prefix: str
    default: Any = NO_DEFAULT
    constraints: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def field(self, name: str, annotation: Any) -> Field:
        """The field ``name`` of type ``annotation``, with this marker's constraints on it."""
        try:
            annotation = constrained(annotation, self.constraints)
        except SignatureError as exc:
            raise SignatureError(f"field {name!r}: {exc}") from None
        return Field(name, self.kind, annotation, self.description, self.prefix, self.default)


def _marker(kind: FieldKind, desc: str, prefix: str, default: Any, **bounds: Any) -> Any:
    constraints = {k: v for k, v in bounds.items() if v is not None}
    return _FieldMarker(kind, desc, prefix, default, constraints)


def InputField(  # noqa: N802
    *,
    desc: str = "",
    description: str = "",
    prefix: str = "",
    default: Any = NO_DEFAULT,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    multiple_of: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
) -> Any:
    """Declare an input field in a class-form signature.

    ``default``: the value used when a call leaves this input out. ``gt``/``ge``/``lt``/
    ``le``/``multiple_of`` (numbers), ``min_length``/``max_length`` (strings, lists) and
    ``pattern`` (strings) constrain the type as pydantic's ``Field`` does; a call whose
    value breaks one is a ``UsageError``.
    """
    return _marker(
        "input", desc or description, prefix, default, gt=gt, ge=ge, lt=lt, le=le,
        multiple_of=multiple_of, min_length=min_length, max_length=max_length, pattern=pattern,
    )  # fmt: skip


def OutputField(  # noqa: N802
    *,
    desc: str = "",
    description: str = "",
    prefix: str = "",
    default: Any = NO_DEFAULT,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    multiple_of: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
) -> Any:
    """Declare an output field in a class-form signature.

    ``default``: the value used when the model's answer leaves this output out (an
    Optional output without one defaults to None). Constraint keywords as for
    :func:`InputField`: the model is told them, and an answer that breaks one is a
    ``ParseError``.
    """
    return _marker(
        "output", desc or description, prefix, default, gt=gt, ge=ge, lt=lt, le=le,
        multiple_of=multiple_of, min_length=min_length, max_length=max_length, pattern=pattern,
    )  # fmt: skip


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) or "Model"
