"""Signatures: string and class forms, every field type, immutability, JSON round-trip."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
from typing import Annotated, Any, Literal, Optional

import lmforge as lf
import pydantic
import pytest
from lmforge.fieldtypes import resolve_type, schema_of


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(pydantic.BaseModel):
    city: str = pydantic.Field(description="the city name")
    zip_code: int
    kind: Literal["home", "work"] = "home"


class Person(pydantic.BaseModel):
    """A person and where they live."""

    name: str
    address: Address
    tags: list[str] = []
    favourite: Optional[Color] = None  # noqa: UP045 - the typing spelling is what users write
    previous: list[Address] = []


TYPES: dict[str, Any] = {"Color": Color, "Level": Level, "Person": Person, "Address": Address}

ALL_TYPES = (
    "a: int, b: float, c: bool, d: Literal['x', 'y'], e: Color, f: list[int], "
    "g: dict[str, float], h: Optional[int], i: Person, j -> "
    "k: list[Person], l: Optional[Address], m: Level, n: int | None, o: str"
)


def roundtrip(sig: lf.Signature) -> lf.Signature:
    return lf.Signature.from_json(json.loads(json.dumps(sig.to_json())))


# -- string form ------------------------------------------------------------------------


def test_string_form_resolves_every_type() -> None:
    sig = lf.Signature.parse(ALL_TYPES, types=TYPES)
    got = {f.name: f.annotation for f in sig.fields}
    assert got["a"] is int and got["b"] is float and got["c"] is bool and got["o"] is str
    assert got["j"] is str  # no type means str
    assert got["d"] == Literal["x", "y"]
    assert got["e"] is Color and got["m"] is Level
    assert got["f"] == list[int]
    assert got["g"] == dict[str, float]
    assert got["h"] == Optional[int]  # noqa: UP045
    assert got["n"] == (int | None)
    assert got["i"] is Person
    assert got["k"] == list[Person]
    assert [f.name for f in sig.input_fields] == list("abcdefghij")
    assert [f.name for f in sig.output_fields] == list("klmno")


def test_string_form_type_names_are_readable_and_reparsable() -> None:
    sig = lf.Signature.parse(ALL_TYPES, types=TYPES)
    names = {f.name: f.type_name for f in sig.fields}
    assert names["d"] == "Literal['x', 'y']"
    assert names["f"] == "list[int]"
    assert names["g"] == "dict[str, float]"
    assert names["h"] == "int | None"
    assert names["i"] == "Person"
    for field in sig.fields:
        assert resolve_type(field.type_name, TYPES) == field.annotation, field.name


def test_typing_aliases_and_builtins_resolve_without_types() -> None:
    sig = lf.Signature.parse(
        "a: List[int], b: Dict[str, Any], c: Union[int, str] -> d: tuple[int, str]"
    )
    assert sig.field("a").annotation == list[int]
    assert sig.field("b").annotation == dict[str, Any]
    assert sig.field("d").annotation == tuple[int, str]


def test_field_labels_and_defaults() -> None:
    sig = lf.Signature.parse("user_question -> short_answer")
    assert sig.field("user_question").label == "User question"
    assert sig.field("short_answer").kind == "output"
    assert "`user_question`" in sig.instructions and "`short_answer`" in sig.instructions


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("question answer", "exactly one '->'"),
        ("a -> b -> c", "exactly one '->'"),
        ("a -> ", "no output fields"),
        ("a b -> c", "name: type"),
        ("a: int = 3 -> c", "'name' or 'name: type'"),
        ("a -> a", "more than once"),
        ("a: list[int -> b", "name: type"),
    ],
)
def test_bad_signature_strings(text: str, needle: str) -> None:
    with pytest.raises(lf.SignatureError) as info:
        lf.Signature.parse(text)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["a: Foo -> b", "a -> b: list[Foo]", "a -> b: Optional[Foo]"])
def test_unknown_type_name_says_how_to_pass_it(text: str) -> None:
    with pytest.raises(lf.SignatureError, match=r"unknown type name 'Foo'.*types=\{'Foo': Foo\}"):
        lf.Signature.parse(text)


def test_type_strings_are_never_evaluated() -> None:
    for text in ("a: __import__('os').system -> b", "a: os.system -> b", "a: (lambda: int)() -> b"):
        with pytest.raises(lf.SignatureError):
            lf.Signature.parse(text)


def test_custom_types_come_only_from_types_mapping() -> None:
    with pytest.raises(lf.SignatureError):
        lf.Signature.parse("q -> p: Person")  # Person is in this module, but never looked up
    sig = lf.Signature.parse("q -> p: Person", types={"Person": Person})
    assert sig.field("p").annotation is Person


def test_as_signature_rejects_non_signatures() -> None:
    with pytest.raises(lf.SignatureError, match="expected a signature"):
        lf.Predict(42)  # type: ignore[arg-type]


# -- class form -------------------------------------------------------------------------


class Profile(lf.Signature):
    """Extract a person's profile from a bio."""

    bio: str = lf.InputField(desc="free text about the person")
    hints: list[str] = lf.InputField()
    person: Person = lf.OutputField()
    color: Color = lf.OutputField(desc="their colour")
    mood: Literal["happy", "sad"] = lf.OutputField()
    age: Optional[int] = lf.OutputField()  # noqa: UP045
    scores: dict[str, float] = lf.OutputField()
    sure: bool = lf.OutputField(prefix="Certain")


def test_class_form_fields_types_and_instructions() -> None:
    assert Profile.instructions == "Extract a person's profile from a bio."
    assert Profile.name == "Profile"
    assert [f.name for f in Profile.input_fields] == ["bio", "hints"]
    assert [f.name for f in Profile.output_fields] == [
        "person",
        "color",
        "mood",
        "age",
        "scores",
        "sure",
    ]
    assert Profile.field("bio").description == "free text about the person"
    assert Profile.field("person").annotation is Person
    assert Profile.field("age").annotation == Optional[int]  # noqa: UP045
    assert Profile.field("sure").label == "Certain"
    assert lf.Predict(Profile).signature == Profile


def test_class_form_cannot_be_instantiated_and_needs_field_markers() -> None:
    with pytest.raises(lf.UsageError, match=r"lf.Predict\(Profile\)"):
        Profile()
    with pytest.raises(lf.SignatureError, match="need a value of"):

        class Broken(lf.Signature):
            question: str
            answer: str = lf.OutputField()

    with pytest.raises(lf.SignatureError, match="at least one output"):

        class NoOutputs(lf.Signature):
            question: str = lf.InputField()


def test_class_form_inherits_fields_and_instructions() -> None:
    class Base(lf.Signature):
        """Answer the question."""

        question: str = lf.InputField()
        answer: str = lf.OutputField()

    class WithContext(Base):
        context: list[str] = lf.InputField()

    class Scored(Base):
        """Answer and say how sure you are."""

        answer: int = lf.OutputField(desc="a number")  # redeclared: replaces the base field
        confidence: float = lf.OutputField()

    assert WithContext.field_names() == ["question", "context", "answer"]
    assert WithContext.instructions == "Answer the question."
    assert Scored.field_names() == ["question", "answer", "confidence"]
    assert Scored.field("answer").annotation is int
    assert Scored.instructions == "Answer and say how sure you are."
    assert Base.field_names() == ["question", "answer"]


def test_field_names_that_would_hide_prediction_attributes_are_refused() -> None:
    for name in ("items", "keys", "copy", "completions", "inputs"):
        with pytest.raises(lf.SignatureError, match=f"'{name}' would hide"):
            lf.Signature.parse(f"q -> {name}")


# -- immutability -----------------------------------------------------------------------


def test_signatures_are_immutable() -> None:
    sig = lf.Signature.parse("q -> a")
    with pytest.raises(AttributeError, match="immutable"):
        sig.foo = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        sig._instructions = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.fields[0].name = "z"  # type: ignore[misc]


def test_edits_return_new_signatures() -> None:
    sig = lf.Signature.parse("q -> a", "Answer it.")
    edited = sig.with_instructions("Answer briefly.")
    assert edited.instructions == "Answer briefly." and sig.instructions == "Answer it."
    appended = sig.append("why", lf.OutputField(desc="reasoning"), str)
    assert appended.field_names() == ["q", "a", "why"] and sig.field_names() == ["q", "a"]
    prepended = sig.prepend("reasoning", lf.OutputField(), str)
    assert prepended.field_names() == ["q", "reasoning", "a"]
    ctx = sig.prepend("context", lf.InputField(), list[str])
    assert ctx.field_names() == ["context", "q", "a"]
    assert ctx.field("context").annotation == list[str]
    assert sig.append("n", lf.OutputField(), int).delete("n") == sig
    typed = sig.with_field("a", annotation=int, description="a number")
    assert typed.field("a").annotation is int and sig.field("a").annotation is str
    with pytest.raises(lf.UsageError, match="no field 'zz'"):
        sig.delete("zz")


def test_class_form_edits_work_on_the_class() -> None:
    edited = Profile.with_instructions("New.")
    assert edited.instructions == "New." and Profile.instructions.startswith("Extract")
    assert Profile.append("note", lf.OutputField()).output_fields[-1].name == "note"
    assert len(Profile.output_fields) == 6


def test_equality_and_hash_follow_content() -> None:
    a = lf.Signature.parse("q: int -> a")
    b = lf.Signature.parse("q: int -> a")
    assert a == b and hash(a) == hash(b)
    assert a != lf.Signature.parse("q: str -> a")
    assert a != a.with_instructions("Something else.")


def test_types_that_share_a_name_but_not_their_values_differ() -> None:
    # A notebook that redefines a class, or two modules with an enum of the same name.
    first = enum.Enum("Color", {"RED": "red", "BLUE": "blue"})  # type: ignore[misc]
    second = enum.Enum("Color", {"CAT": "cat", "DOG": "dog"})  # type: ignore[misc]
    a = lf.Signature.parse("x -> c: Color", types={"Color": first})
    b = lf.Signature.parse("x -> c: Color", types={"Color": second})
    assert a != b
    assert a == lf.Signature.parse("x -> c: Color", types={"Color": first})
    # adapters cache constraints per signature: each gets its own choices
    adapter = lf.CompletionAdapter()
    first_text, second_text = (
        json.dumps(adapter.format(s, [], {"x": "?"}).constraint.to_json())  # type: ignore[union-attr]
        for s in (a, b)
    )
    assert "red" in first_text and "cat" not in first_text
    assert "cat" in second_text and "red" not in second_text


# -- JSON round-trip --------------------------------------------------------------------


def test_json_carries_names_descriptions_and_schemas() -> None:
    data = Profile.to_json()
    assert data["instructions"] == "Extract a person's profile from a bio."
    by_name = {f["name"]: f for f in data["fields"]}
    assert by_name["bio"]["description"] == "free text about the person"
    assert by_name["color"]["type"] == "Color"
    assert by_name["person"]["schema"] == Person.model_json_schema()
    assert by_name["mood"]["schema"]["enum"] == ["happy", "sad"]
    json.dumps(data)  # plain JSON


def test_json_roundtrip_of_string_signature_with_every_type() -> None:
    sig = lf.Signature.parse(ALL_TYPES, "Do it.", types=TYPES)
    back = roundtrip(sig)
    assert back == sig
    assert back.instructions == "Do it."
    for old, new in zip(sig.fields, back.fields, strict=True):
        assert (new.name, new.kind, new.type_name) == (old.name, old.kind, old.type_name)
        assert schema_of(new.annotation) == schema_of(old.annotation), old.name


def test_json_roundtrip_of_class_signature() -> None:
    back = roundtrip(Profile)
    assert back == Profile
    assert back.field("sure").label == "Certain"
    assert back.field("color").description == "their colour"


class Order(pydantic.BaseModel):
    due: datetime.date
    quantity: Annotated[int, pydantic.Field(ge=1, le=10)]
    code: Annotated[str, pydantic.Field(pattern=r"^[A-Z]{3}$")]
    tags: set[str] = set()


class Constrained(lf.Signature):
    """Fill in the order."""

    text: str = lf.InputField()
    order: Order = lf.OutputField()
    when: datetime.datetime = lf.OutputField()
    share: Annotated[float, pydantic.Field(gt=0, lt=1)] = lf.OutputField()
    ids: Annotated[list[uuid.UUID], pydantic.Field(min_length=1)] = lf.OutputField()


def test_json_roundtrip_keeps_formats_and_constraints() -> None:
    back = roundtrip(Constrained)
    assert back == Constrained
    for old, new in zip(Constrained.fields, back.fields, strict=True):
        assert schema_of(new.annotation) == schema_of(old.annotation), old.name
    good = {"due": "2024-02-28", "quantity": 3, "code": "ABC", "tags": ["a", "a"]}
    for bad in ({"due": "2024-02-30"}, {"quantity": 11}, {"code": "abc"}):
        for sig in (Constrained, back):
            order = pydantic.TypeAdapter(sig.field("order").annotation)
            assert order.validate_python(good).tags == {"a"}
            with pytest.raises(pydantic.ValidationError):
                order.validate_python({**good, **bad})
    for name, bad_value in (("when", "yesterday"), ("share", 1.5), ("ids", [])):
        with pytest.raises(pydantic.ValidationError):
            pydantic.TypeAdapter(back.field(name).annotation).validate_python(bad_value)


GOOD_VALUES: list[tuple[str, Any]] = [
    ("a", "7"),
    ("b", 2.5),
    ("c", True),
    ("d", "x"),
    ("e", "red"),
    ("f", [1, "2"]),
    ("g", {"k": 1}),
    ("h", None),
    ("i", {"name": "Ada", "address": {"city": "Paris", "zip_code": "75001"}, "favourite": "blue"}),
    ("k", [{"name": "Bo", "address": {"city": "Oslo", "zip_code": 1, "kind": "work"}}]),
    ("l", None),
    ("m", 2),
]
BAD_VALUES: list[tuple[str, Any]] = [
    ("a", "seven"),
    ("d", "z"),
    ("e", "green"),
    ("f", ["x"]),
    ("h", "many"),
    ("i", {"name": "Ada"}),
    ("i", {"name": "Ada", "address": {"city": "Paris", "zip_code": 1, "kind": "moon"}}),
    ("i", {"name": "Ada", "address": {"city": "Paris", "zip_code": 1}, "favourite": "green"}),
    ("k", [{"name": "Bo"}]),
    ("m", 3),
]


@pytest.mark.parametrize(("name", "value"), GOOD_VALUES)
def test_rebuilt_types_accept_the_same_values(name: str, value: Any) -> None:
    sig = lf.Signature.parse(ALL_TYPES, types=TYPES)
    original = pydantic.TypeAdapter(sig.field(name).annotation)
    rebuilt = pydantic.TypeAdapter(roundtrip(sig).field(name).annotation)
    assert original.dump_python(
        original.validate_python(value), mode="json"
    ) == rebuilt.dump_python(rebuilt.validate_python(value), mode="json")


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_rebuilt_types_reject_the_same_values(name: str, value: Any) -> None:
    sig = lf.Signature.parse(ALL_TYPES, types=TYPES)
    for annotation in (sig.field(name).annotation, roundtrip(sig).field(name).annotation):
        with pytest.raises(pydantic.ValidationError):
            pydantic.TypeAdapter(annotation).validate_python(value)


def test_rebuilt_enum_is_an_enum_with_the_same_values() -> None:
    rebuilt = roundtrip(Profile).field("color").annotation
    assert issubclass(rebuilt, enum.Enum)
    assert rebuilt.__name__ == "Color"
    assert [m.value for m in rebuilt] == ["red", "blue"]


def test_from_json_rejects_malformed_documents() -> None:
    with pytest.raises(lf.SignatureError, match="'fields' list"):
        lf.Signature.from_json({"name": "x"})
    with pytest.raises(lf.SignatureError, match="kind"):
        lf.Signature.from_json({"fields": [{"name": "a", "kind": "sideways"}]})
    with pytest.raises(lf.SignatureError, match="missing 'kind'"):
        lf.Signature.from_json({"fields": [{"name": "a"}]})
    with pytest.raises(lf.SignatureError, match="not defined"):
        lf.Signature.from_json(
            {"fields": [{"name": "a", "kind": "output", "schema": {"$ref": "#/$defs/Nope"}}]}
        )


class TreeNode(pydantic.BaseModel):
    label: str
    children: list[TreeNode] = []
    parent: Optional[TreeNode] = None  # noqa: UP045


class Employee(pydantic.BaseModel):
    name: str
    team: Optional[Team] = None  # noqa: UP045


class Team(pydantic.BaseModel):
    members: list[Employee]


Employee.model_rebuild()


@pytest.mark.parametrize("model", [TreeNode, Team])
def test_json_roundtrip_of_recursive_models(model: type[pydantic.BaseModel]) -> None:
    sig = lf.Signature.parse("q -> out: Model", types={"Model": model})
    rebuilt = roundtrip(sig).field("out").annotation
    assert schema_of(rebuilt) == schema_of(model)
    value = (
        {"label": "root", "children": [{"label": "leaf", "children": [{"label": "deep"}]}]}
        if model is TreeNode
        else {"members": [{"name": "Ann", "team": {"members": [{"name": "Bo"}]}}]}
    )
    assert rebuilt.model_validate(value).model_dump() == model.model_validate(value).model_dump()
    broken = (
        {"label": "root", "children": [{"children": []}]}
        if model is TreeNode
        else {"members": [{"team": {}}]}
    )
    with pytest.raises(pydantic.ValidationError):
        rebuilt.model_validate(broken)
