"""Field types: resolving type expressions from strings and rebuilding types from JSON.

String types are resolved by walking the expression's syntax tree against an explicit
namespace (builtins, ``typing`` names and a caller-supplied ``types`` mapping); no stack
frames are inspected and nothing is evaluated.
"""

from __future__ import annotations

import ast
import enum
import functools
import re
import types as _pytypes
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from .errors import SignatureError
from .inputtypes import KIND_KEY, type_for_kind

if TYPE_CHECKING:
    import pydantic

__all__ = [
    "choice_labels",
    "enum_with_names",
    "resolve_type",
    "schema_of",
    "type_from_schema",
    "type_name",
]

_BASE_NAMESPACE: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "bytes": bytes,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "set": set,
    "None": type(None),
    "Any": Any,
    "Literal": Literal,
    "Optional": Optional,
    "Union": Union,
    "List": list,
    "Dict": dict,
    "Tuple": tuple,
    "Set": set,
}


def resolve_type(expr: str, types: Mapping[str, Any] | None = None) -> Any:
    """Turn a type expression such as ``"list[Literal['a', 'b']]"`` into a type."""
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError as exc:
        raise SignatureError(f"cannot read the type {expr!r}: {exc.msg}") from None
    namespace = {**_BASE_NAMESPACE, **(types or {})}
    return _build(node, namespace, expr)


def _build(node: ast.expr, ns: Mapping[str, Any], expr: str) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in ns:
            raise SignatureError(
                f"unknown type name {node.id!r} in {expr!r}; use a builtin or typing name, "
                f"or pass it explicitly: types={{{node.id!r}: {node.id}}}"
            )
        return ns[node.id]
    if isinstance(node, ast.Attribute):
        dotted = _dotted(node)
        if dotted in ns:
            return ns[dotted]
        raise SignatureError(
            f"unknown type name {dotted!r} in {expr!r}; pass it explicitly: "
            f"types={{{dotted!r}: ...}}"
        )
    if isinstance(node, ast.Constant):
        if node.value is None:
            return type(None)
        raise SignatureError(
            f"{node.value!r} in {expr!r} is a value, not a type; write Literal[{node.value!r}] "
            "for a fixed value"
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return Union[_build(node.left, ns, expr), _build(node.right, ns, expr)]  # noqa: UP007
    if isinstance(node, ast.Subscript):
        origin = _build(node.value, ns, expr)
        inner = node.slice
        items = inner.elts if isinstance(inner, ast.Tuple) else [inner]
        if origin is Literal:
            values = []
            for item in items:
                if not isinstance(item, ast.Constant):
                    raise SignatureError(f"Literal[...] takes only constants, in {expr!r}")
                values.append(item.value)
            return Literal[tuple(values)]
        args = tuple(_build(item, ns, expr) for item in items)
        try:
            return origin[args if len(args) > 1 else args[0]]
        except TypeError as exc:
            raise SignatureError(f"invalid type {expr!r}: {exc}") from None
    raise SignatureError(f"cannot read the type {expr!r}: only names, [..] and | are allowed")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    raise SignatureError("unsupported type expression")


def type_name(annotation: Any) -> str:
    """A readable, re-parsable name for simple types; a best-effort name otherwise."""
    if annotation is type(None):
        return "None"
    if typing.get_origin(annotation) is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])  # constraints are described apart
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin in (Union, _pytypes.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    if annotation is Any:
        return "Any"
    return str(annotation)


@functools.lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    import pydantic  # imported on first use: keeps `import lmforge` cheap

    return pydantic.TypeAdapter(annotation)


def type_adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    """A cached pydantic TypeAdapter for ``annotation``."""
    try:
        return _adapter(annotation)
    except TypeError:  # unhashable annotation
        import pydantic

        return pydantic.TypeAdapter(annotation)


def schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON schema pydantic produces for ``annotation``."""
    import pydantic

    try:
        return type_adapter(annotation).json_schema()
    except pydantic.PydanticUserError as exc:
        reason = str(exc).splitlines()[0]  # pydantic adds paragraphs of advice after the first line
        raise SignatureError(f"type {type_name(annotation)} has no JSON schema: {reason}") from None


_SCALARS: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "null": type(None),
}


# How deeply a field's JSON schema may nest. pydantic keeps nested models in $defs, so
# real schemas are shallow; a deep one would exhaust the stack building its validator.
MAX_SCHEMA_DEPTH = 32


def type_from_schema(schema: Mapping[str, Any], title: str = "Model") -> Any:
    """Rebuild a Python type from a JSON schema made by :func:`schema_of`.

    Objects become pydantic models, named enums (an ``Enum`` class) become ``Enum``
    classes of the same name and values, other enums ``Literal`` types; the result
    validates the same values as the original type did and has the same JSON schema.
    A schema no type can come from (a file may hold anything) is a :class:`SignatureError`.
    """
    import pydantic
    import pydantic_core

    from .jsonlimits import json_depth

    if json_depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise SignatureError(f"its JSON schema nests more than {MAX_SCHEMA_DEPTH} levels deep")
    try:
        built: dict[str, Any] = {}
        result = _from_schema(schema, schema.get("$defs", {}), title, built, named=True)
        # Recursive models were created with forward references (by definition name);
        # resolve them now that every definition exists.
        pending = [t for t in built.values() if getattr(t, "__pydantic_complete__", True) is False]
        for model in pending:
            model.model_rebuild(_types_namespace=built)
        # Build the validator and schema now: a bad bound or pattern fails here, once,
        # instead of on every call of the program.
        type_adapter(result).json_schema()
    except SignatureError:
        raise
    except (
        pydantic.PydanticUserError,
        pydantic_core.SchemaError,
        TypeError,
        ValueError,
        AttributeError,
        KeyError,
        RecursionError,
    ) as exc:
        lines = (line.strip() for line in str(exc).splitlines())
        reason = " ".join(x for x in lines if x and not x.startswith("For further information"))
        raise SignatureError(f"invalid JSON schema ({type(exc).__name__}: {reason})") from None
    return result


def _from_schema(
    schema: Mapping[str, Any],
    defs: Mapping[str, Any],
    title: str,
    built: dict[str, Any],
    named: bool = False,
) -> Any:
    if KIND_KEY in schema:  # lf.History, lf.Image: the type itself, which adapters know
        return type_for_kind(schema[KIND_KEY])
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        if name not in built:  # one class per definition, however often it is referenced
            if name not in defs:
                raise SignatureError(f"schema reference {schema['$ref']!r} is not defined")
            built[name] = None  # being built: a reference to it from inside is recursive
            built[name] = _from_schema(defs[name], defs, name, built, named=True)
            if isinstance(built[name], str):
                raise SignatureError(f"schema definition {name!r} is only a reference to itself")
        # A recursive reference becomes a forward reference, resolved by type_from_schema.
        return name if built[name] is None else built[name]
    if "enum" in schema:
        values = tuple(schema["enum"])
        if named and isinstance(schema.get("title"), str):
            return _make_enum(schema["title"], values, schema.get("description"))
        return Literal[values]
    if "const" in schema:
        return Literal[schema["const"]]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            members = tuple(_from_schema(s, defs, title, built) for s in schema[key])
            return Union[members]  # noqa: UP007
    kind = schema.get("type")
    if isinstance(kind, list):
        return Union[tuple(_from_schema({**schema, "type": k}, defs, title, built) for k in kind)]  # noqa: UP007
    if kind == "array":
        if schema.get("prefixItems"):
            items = tuple(_from_schema(s, defs, title, built) for s in schema["prefixItems"])
            return tuple[items]  # type: ignore[valid-type]
        item = _from_schema(schema.get("items", {}), defs, title, built)
        collection: Any = set[item] if schema.get("uniqueItems") else list[item]  # type: ignore[valid-type]
        return _constrained(collection, schema)
    if kind == "object":
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            value = _from_schema(extra, defs, title, built) if isinstance(extra, dict) else Any
            return dict[str, value]  # type: ignore[valid-type]
        import pydantic

        required = set(schema.get("required", []))
        fields: dict[str, Any] = {}
        for name, prop in props.items():
            ftype = _from_schema(prop, defs, f"{title}_{name}", built)
            default = ... if name in required else prop.get("default")
            fields[name] = (ftype, pydantic.Field(default, description=prop.get("description")))
        model_name = str(schema.get("title", title)).replace(" ", "")
        return pydantic.create_model(model_name, __doc__=schema.get("description"), **fields)
    if kind == "string" and schema.get("format") in _STRING_FORMATS:
        return _constrained(_string_format(str(schema["format"])), schema)
    if isinstance(kind, str) and kind in _SCALARS:
        return _constrained(_SCALARS[kind], schema)
    return Any


# JSON schema keywords pydantic writes for constrained types -> pydantic.Field arguments.
_CONSTRAINTS = {
    "minimum": "ge",
    "maximum": "le",
    "exclusiveMinimum": "gt",
    "exclusiveMaximum": "lt",
    "multipleOf": "multiple_of",
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "minItems": "min_length",
    "maxItems": "max_length",
}
_STRING_FORMATS = ("date", "date-time", "time", "duration", "uuid")


def _string_format(name: str) -> Any:
    import datetime
    import uuid

    return {
        "date": datetime.date,
        "date-time": datetime.datetime,
        "time": datetime.time,
        "duration": datetime.timedelta,
        "uuid": uuid.UUID,
    }[name]


def _constrained(base: Any, schema: Mapping[str, Any]) -> Any:
    """``base`` with the schema's value constraints (bounds, lengths, pattern) attached."""
    constraints = {arg: schema[key] for key, arg in _CONSTRAINTS.items() if key in schema}
    if not constraints:
        return base
    import pydantic

    return typing.Annotated[base, pydantic.Field(**constraints)]


def _make_enum(title: str, values: tuple[Any, ...], description: str | None) -> type[enum.Enum]:
    """An ``Enum`` class named ``title`` with ``values`` (member names derived from them)."""
    members: dict[str, Any] = {}
    for i, value in enumerate(values):
        base = re.sub(r"\W", "_", str(value)).strip("_").upper()
        name = base if base and not base[0].isdigit() else f"V{i}_{base}".rstrip("_")
        while name in members:
            name = f"{name}_"
        members[name] = value
    cls: type[enum.Enum] = enum.Enum(re.sub(r"\W", "", title) or "Choice", members)  # type: ignore[assignment,misc]
    cls.__doc__ = description
    return cls


def enum_with_names(annotation: Any, names: Any) -> Any:
    """An enum rebuilt from JSON (whose member names were derived from its values) with
    its original member ``names`` back, so a loaded program shows the model the same names."""
    if not (isinstance(annotation, type) and issubclass(annotation, enum.Enum)):
        return annotation
    values = [member.value for member in annotation]
    if (
        not isinstance(names, list)
        or len(names) != len(values)
        or not all(isinstance(n, str) and n.isidentifier() for n in names)
        or len(set(names)) != len(names)
    ):
        raise SignatureError("'enum_names' must list one distinct identifier per enum value")
    cls: type[enum.Enum] = enum.Enum(annotation.__name__, dict(zip(names, values, strict=True)))  # type: ignore[assignment,misc]
    cls.__doc__ = annotation.__doc__
    return cls


def shows_names(annotation: Any) -> bool:
    """Whether the model sees an enum's member names rather than its values: values that
    are not all strings (``auto()`` integers, tuples) mean nothing to a model."""
    return (
        isinstance(annotation, type)
        and issubclass(annotation, enum.Enum)
        and not all(isinstance(member.value, str) for member in annotation)
    )


def choice_labels(annotation: Any) -> tuple[str, ...] | None:
    """The allowed answers as shown to the model (enum names or values), or None."""
    if shows_names(annotation):
        return tuple(member.name for member in annotation)
    choices = is_enum_like(annotation)
    return tuple(str(c) for c in choices) if choices is not None else None


def is_enum_like(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values when ``annotation`` is a ``Literal`` or an ``Enum``, else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(member.value for member in annotation)
    return None
