"""Signatures: the typed inputs and outputs of one LM step.

Two ways to declare one::

    triage = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")

    class Triage(lf.Signature):
        \"\"\"Route a support ticket to the team that should handle it.\"\"\"
        ticket: str = lf.InputField(desc="the customer's message")
        team: Literal["billing", "tech"] = lf.OutputField()

Signatures are immutable: ``with_instructions``, ``append``, ``prepend``, ``delete`` and
``with_field`` return new signatures. Both forms serialise to JSON with a JSON schema per
field and are rebuilt from it without the user's code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MethodType
from typing import Any, TypeVar, get_type_hints

from .constraints import is_constrained
from .errors import SignatureError, UsageError
from .fields import (
    Field,
    FieldKind,
    InputField,
    OutputField,
    _FieldMarker,
    _jsonable_default,
)
from .fieldtypes import resolve_type, schema_of, shows_names, type_adapter, type_name

__all__ = ["Field", "InputField", "OutputField", "Signature", "as_signature"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
T = TypeVar("T")


class _hybrid:  # noqa: N801
    """Lets a method or property be used on a class-form signature's class directly."""

    def __init__(self, func: Callable[..., Any], *, is_property: bool = False) -> None:
        self.func = func
        self.is_property = is_property
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:  # read on a class
            obj = getattr(owner, "__lf_signature__", None)
            if obj is None:  # the base class itself: behave like a plain attribute
                return self
        return self.func(obj) if self.is_property else MethodType(self.func, obj)


def _hybrid_property(func: Callable[..., T]) -> T:
    return _hybrid(func, is_property=True)  # type: ignore[return-value]


class _SignatureClass(type):
    """Class-form signatures compare (and hash) by their fields, types and instructions,
    like signature instances: two identical declarations are equal."""

    def __eq__(cls, other: object) -> bool:
        mine = cls.__dict__.get("__lf_signature__")
        if not isinstance(mine, Signature):
            return cls is other
        return mine == other

    def __hash__(cls) -> int:
        mine = cls.__dict__.get("__lf_signature__")
        return hash(mine) if isinstance(mine, Signature) else id(cls)


class Signature(metaclass=_SignatureClass):
    """Typed input and output fields plus the instructions for one LM step."""

    __slots__ = (
        "_fields",
        "_hash",
        "_input_rules",
        "_inputs",
        "_instructions",
        "_key_value",
        "_name",
        "_outputs",
    )
    __lf_signature__: Signature | None = None
    _fields: tuple[Field, ...]
    _inputs: tuple[Field, ...]
    _outputs: tuple[Field, ...]
    _instructions: str
    _name: str
    _hash: int | None
    _key_value: tuple[Any, ...] | None
    _input_rules: tuple[tuple[Field, ...], tuple[Field, ...]]

    def __init__(
        self,
        fields: Iterable[Field] | Mapping[str, Any] | str,
        instructions: str = "",
        name: str = "",
    ) -> None:
        fields = _fields_from(fields)
        _validate(fields)
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_inputs", tuple(f for f in fields if f.kind == "input"))
        object.__setattr__(self, "_outputs", tuple(f for f in fields if f.kind == "output"))
        object.__setattr__(self, "_instructions", instructions.strip())
        object.__setattr__(self, "_name", name or "Signature")
        object.__setattr__(self, "_hash", None)
        object.__setattr__(self, "_key_value", None)
        defaulted = tuple(f for f in self._inputs if f.has_default)
        checked = tuple(f for f in self._inputs if is_constrained(f.annotation))
        object.__setattr__(self, "_input_rules", (defaulted, checked))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        try:
            hints = get_type_hints(cls, include_extras=True)
        except NameError as exc:  # a string annotation naming a type not visible at module level
            raise SignatureError(
                f"{cls.__name__}: cannot resolve the field type {exc.name!r}; define it at module "
                "level (annotations are read from the module, not from the function around it)"
            ) from None
        # Fields of base signatures come first, in their order; a redeclared field replaces
        # the inherited one in place.
        by_name: dict[str, Field] = {}
        for base in reversed(cls.__mro__[1:]):
            inherited = base.__dict__.get("__lf_signature__")
            if isinstance(inherited, Signature):
                by_name.update((f.name, f) for f in inherited.fields)
        for attr, value in cls.__dict__.items():
            if isinstance(value, _FieldMarker):
                annotation = hints.get(attr, str)
                by_name[attr] = value.field(attr, annotation)
        fields = sorted(by_name.values(), key=lambda f: f.kind != "input")  # stable: inputs first
        missing = [
            n for n in cls.__annotations__ if n not in cls.__dict__ and not n.startswith("_")
        ]
        if missing:
            raise SignatureError(
                f"{cls.__name__}: field(s) {', '.join(missing)} need a value of "
                "lf.InputField() or lf.OutputField()"
            )
        if not fields:
            # An empty body: either a declaration still to be checked on first use, or a
            # class being rebuilt by cloudpickle, which fills the body in after creating it.
            cls.__lf_signature__ = None
            return
        cls.__lf_signature__ = Signature(fields, instructions=_own_doc(cls), name=cls.__name__)

    def __new__(cls, *args: Any, **kwargs: Any) -> Signature:
        if cls is not Signature:
            raise UsageError(
                f"{cls.__name__} is a signature declaration; pass the class itself, "
                f"e.g. lf.Predict({cls.__name__})"
            )
        return super().__new__(cls)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def parse(
        cls, text: str, instructions: str = "", *, types: Mapping[str, Any] | None = None
    ) -> Signature:
        """Parse ``"question: str, context: list[str] -> answer: str"``.

        Types are optional (default ``str``). Custom type names must be given in ``types``.
        """
        if not isinstance(text, str):
            raise SignatureError(f"a signature string was expected, got {type(text).__name__}")
        if text.count("->") != 1:
            raise SignatureError(
                f"signature {text!r} must have exactly one '->' between inputs and outputs, "
                "e.g. 'question -> answer'"
            )
        left, right = text.split("->")
        fields = [
            *_parse_side(left, "input", types, text),
            *_parse_side(right, "output", types, text),
        ]
        return cls(fields, instructions=instructions)

    # -- accessors ----------------------------------------------------------------------

    @_hybrid_property
    def fields(self) -> tuple[Field, ...]:
        """All fields, inputs first, in declaration order."""
        return self._fields

    @_hybrid_property
    def input_fields(self) -> tuple[Field, ...]:
        return self._inputs

    @_hybrid_property
    def output_fields(self) -> tuple[Field, ...]:
        return self._outputs

    @_hybrid_property
    def instructions(self) -> str:
        """The task instructions; a default sentence when none were given."""
        if self._instructions:
            return self._instructions
        ins = ", ".join(f"`{f.name}`" for f in self.input_fields)
        outs = ", ".join(f"`{f.name}`" for f in self.output_fields)
        return f"Given the fields {ins}, produce the fields {outs}."

    @_hybrid_property
    def name(self) -> str:
        return self._name

    @_hybrid_property
    def signature(self) -> str:
        """The string form, ``"question, context: list[str] -> answer"`` (``str`` types are
        left out); :meth:`parse` reads it back for builtin and typing types."""

        def side(fields: tuple[Field, ...]) -> str:
            return ", ".join(
                f.name if f.annotation is str else f"{f.name}: {f.type_name}" for f in fields
            )

        return f"{side(self._inputs)} -> {side(self._outputs)}"

    @_hybrid
    def field(self, name: str) -> Field:
        for f in self._fields:
            if f.name == name:
                return f
        raise UsageError(f"signature has no field {name!r}; fields: {self.field_names()}")

    @_hybrid
    def field_names(self) -> list[str]:
        return [f.name for f in self._fields]

    @_hybrid
    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``inputs`` with the defaults of the inputs it leaves out filled in, after checking
        the values of constrained inputs (a ``UsageError`` names the broken constraint)."""
        defaulted, checked = self._input_rules
        if not defaulted and not checked:
            return inputs if isinstance(inputs, dict) else dict(inputs)
        for f in checked:
            if f.name in inputs:
                _check_input(f, inputs[f.name])
        missing = [f for f in defaulted if f.name not in inputs]
        if missing:
            return {**inputs, **{f.name: f.default for f in missing}}
        return inputs if isinstance(inputs, dict) else dict(inputs)

    # -- edits (each returns a new signature) -------------------------------------------

    @_hybrid
    def with_instructions(self, instructions: str) -> Signature:
        return Signature(self._fields, instructions, self._name)

    @_hybrid
    def append_instructions(self, text: str) -> Signature:
        """A new signature whose instructions end with ``text`` (on a new line)."""
        if not isinstance(text, str):
            raise UsageError(f"append_instructions takes a string, got {type(text).__name__}")
        joined = f"{self.instructions}\n{text.strip()}" if text.strip() else self._instructions
        return Signature(self._fields, joined, self._name)

    @_hybrid
    def append(
        self, name: str, field: Any, annotation: Any = str, *, kind: FieldKind | None = None
    ) -> Signature:
        """Add a field after the others of its kind."""
        new = _as_field(name, field, annotation, kind)
        last = max((i for i, f in enumerate(self._fields) if f.kind == new.kind), default=-1)
        pos = last + 1 if last >= 0 else (len(self._fields) if new.kind == "output" else 0)
        return Signature(
            (*self._fields[:pos], new, *self._fields[pos:]), self._instructions, self._name
        )

    @_hybrid
    def prepend(
        self, name: str, field: Any, annotation: Any = str, *, kind: FieldKind | None = None
    ) -> Signature:
        """Add a field before the others of its kind."""
        new = _as_field(name, field, annotation, kind)
        first = next((i for i, f in enumerate(self._fields) if f.kind == new.kind), None)
        pos = first if first is not None else (len(self._fields) if new.kind == "output" else 0)
        return Signature(
            (*self._fields[:pos], new, *self._fields[pos:]), self._instructions, self._name
        )

    @_hybrid
    def delete(self, name: str) -> Signature:
        self.field(name)
        return Signature(
            [f for f in self._fields if f.name != name], self._instructions, self._name
        )

    @_hybrid
    def with_field(self, name: str, **changes: Any) -> Signature:
        """Change a field's ``annotation``, ``description`` or ``prefix``."""
        old = self.field(name)
        new = dataclasses.replace(old, **changes)
        return Signature(
            [new if f.name == name else f for f in self._fields], self._instructions, self._name
        )

    # -- serialisation ------------------------------------------------------------------

    @_hybrid
    def to_json(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "instructions": self._instructions,
            "fields": [f.to_json() for f in self._fields],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signature:
        if not isinstance(data, Mapping) or not isinstance(data.get("fields"), list):
            raise SignatureError("signature JSON must be an object with a 'fields' list")
        fields = [Field.from_json(f) for f in data["fields"]]
        return cls(fields, str(data.get("instructions", "")), str(data.get("name", "")))

    # -- value semantics ----------------------------------------------------------------

    def _key(self) -> tuple[Any, ...]:
        # Types enter by their JSON schema, not their name: two enums (or models) that share
        # a name but not their values are different signatures, and adapters cache prompts,
        # grammars and response formats per signature.
        if self._key_value is None:
            fields = tuple(
                (f.name, f.kind, _type_key(f), f.description, f.prefix, _default_key(f))
                for f in self._fields
            )
            object.__setattr__(self, "_key_value", (self._instructions, fields))
        return self._key_value  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        # Adapters' caches compare equal signatures on every lookup: the common cases first.
        if other is self:
            return True
        other_sig = other if isinstance(other, Signature) else _maybe_signature(other)
        return other_sig is not None and self._key() == other_sig._key()

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(self._key()))
        return self._hash  # type: ignore[return-value]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("signatures are immutable; use with_instructions/append/... instead")

    def __copy__(self) -> Signature:
        return self  # immutable: copies may share it

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle by value through the constructor (the default path would call __setattr__).
        return (Signature, (self._fields, self._instructions, self._name))

    def __repr__(self) -> str:
        ins = ", ".join(f"{f.name}: {f.type_name}" for f in self.input_fields)
        outs = ", ".join(f"{f.name}: {f.type_name}" for f in self.output_fields)
        return f"{self._name}({ins} -> {outs})"


def _maybe_signature(value: object) -> Signature | None:
    if isinstance(value, Signature):
        return value
    if isinstance(value, type) and issubclass(value, Signature) and value is not Signature:
        sig = value.__lf_signature__
        if sig is None:
            raise SignatureError(
                f"{value.__name__} declares no fields; give it lf.InputField() and "
                "lf.OutputField() attributes"
            )
        return sig
    return None


def _own_doc(cls: type) -> str:
    """The docstring written on ``cls`` or on a user base of it; never lf.Signature's own,
    which would silently become every undocumented signature's instructions."""
    for klass in cls.__mro__:
        if klass is Signature:
            return ""
        doc = klass.__dict__.get("__doc__")
        if isinstance(doc, str) and doc.strip():
            return inspect.cleandoc(doc)
    return ""


def as_signature(value: str | Signature | type[Signature]) -> Signature:
    """Accept a signature string, instance or class-form declaration."""
    if isinstance(value, str):
        return Signature.parse(value)
    sig = _maybe_signature(value)
    if sig is None:
        raise SignatureError(
            f"expected a signature (a string like 'question -> answer' or an lf.Signature "
            f"subclass), got {type(value).__name__}"
        )
    return sig


def _fields_from(value: Iterable[Field] | Mapping[str, Any] | str) -> tuple[Field, ...]:
    """Fields from a list of ``Field``s, a signature string, or a dict of
    ``name -> lf.InputField()/lf.OutputField()`` (or ``name -> (type, marker)``)."""
    if isinstance(value, str):
        return Signature.parse(value).fields
    if isinstance(value, Mapping):
        fields = []
        for name, spec in value.items():
            annotation, marker = spec if isinstance(spec, tuple) and len(spec) == 2 else (str, spec)
            if not isinstance(marker, _FieldMarker | Field):
                raise SignatureError(
                    f"field {name!r}: give lf.InputField()/lf.OutputField() or "
                    f"(type, lf.InputField()), got {marker!r}"
                )
            fields.append(_as_field(str(name), marker, annotation, None))
        return tuple(sorted(fields, key=lambda f: f.kind != "input"))
    return tuple(value)


def _as_field(name: str, field: Any, annotation: Any, kind: FieldKind | None) -> Field:
    if isinstance(field, Field):
        return dataclasses.replace(field, name=name)
    if isinstance(field, _FieldMarker):
        return field.field(name, annotation)
    if field in ("input", "output"):
        return Field(name, field, annotation)
    if kind is not None:
        return Field(name, kind, annotation)
    raise UsageError("pass lf.InputField()/lf.OutputField() (or 'input'/'output') as the field")


def _parse_side(
    text: str, kind: FieldKind, types: Mapping[str, Any] | None, whole: str
) -> list[Field]:
    text = text.strip()
    if not text:
        if kind == "output":
            raise SignatureError(f"signature {whole!r} has no output fields after '->'")
        return []
    try:
        tree = ast.parse(f"def _({text}): pass")
    except SyntaxError:
        raise SignatureError(
            f"cannot read the {kind} fields {text!r} of signature {whole!r}; write them as "
            "'name: type, other_name: type' (types optional)"
        ) from None
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef)
    args = func.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.defaults or args.posonlyargs:
        raise SignatureError(f"signature {whole!r}: fields are 'name' or 'name: type' only")
    fields = []
    for arg in args.args:
        annotation: Any = str
        if arg.annotation is not None:
            annotation = resolve_type(ast.unparse(arg.annotation), types)
            schema_of(annotation)  # a type pydantic cannot validate is an error now, not later
        fields.append(Field(arg.arg, kind, annotation))
    return fields


def _validate(fields: Sequence[Field]) -> None:
    seen: set[str] = set()
    for f in fields:
        if not isinstance(f, Field):
            raise SignatureError(f"signature fields must be lf Field objects, got {f!r}")
        if not _IDENT.match(f.name):
            raise SignatureError(f"field name {f.name!r} is not a valid identifier")
        if f.name in _RESERVED_NAMES:
            raise SignatureError(
                f"field name {f.name!r} would hide the {_RESERVED_NAMES[f.name]} `.{f.name}` of "
                "lf.Example and lf.Prediction; choose another name"
            )
        if f.name in seen:
            raise SignatureError(f"field {f.name!r} appears more than once in the signature")
        seen.add(f.name)
    if not any(f.kind == "output" for f in fields):
        raise SignatureError("a signature needs at least one output field")


# Public attributes of lf.Example and lf.Prediction, which a field of that name would hide.
_RESERVED_NAMES = {
    **dict.fromkeys(
        [
            "copy",
            "get",
            "items",
            "keys",
            "values",
            "to_dict",
            "inputs",
            "labels",
            "with_inputs",
            "without",
        ],
        "method",
    ),
    **dict.fromkeys(("completions", "input_keys"), "property"),
}


def _type_key(field: Field) -> str:
    annotation = field.annotation
    if annotation in (str, int, float, bool):
        return annotation.__name__
    try:
        key = json.dumps(schema_of(annotation), sort_keys=True)
    except SignatureError:
        return type_name(annotation)
    # Enum member names are shown to the model when the values are not text.
    return f"{key}{[m.name for m in annotation]}" if shows_names(annotation) else key


def _default_key(field: Field) -> str | None:
    if not field.has_default:
        return None
    try:
        return json.dumps(_jsonable_default(field), sort_keys=True)
    except SignatureError:
        return repr(field.default)


def _check_input(field: Field, value: Any) -> None:
    import pydantic

    try:
        type_adapter(field.annotation).validate_python(value)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(
            f"input {field.name!r} = {value!r:.80} breaks its constraint: {first.get('msg')}"
        ) from None
