"""Hostile JSON in data files and artifacts: deep nesting and schemas no type can come from
give one-line lmforge errors at load, never a traceback or a failure on every call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import lmforge as lf
import pydantic
import pytest
from lmforge.artifact import _digest
from lmforge.data import DataError, load_jsonl
from lmforge.testing import ScriptedLM

DEEP = 200_000


def _nested_array(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize(
    "line",
    [
        "[" * DEEP + "]" * DEEP,
        '{"question": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + ', "answer": "x"}',
        '{"question": ' + "[" * 200 + "]" * 200 + ', "answer": "x"}',  # parses, too deep
    ],
    ids=["array", "object", "under-recursion-limit"],
)
def test_deeply_nested_data_lines_are_data_errors(tmp_path: Path, line: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n' + line + "\n")
    with pytest.raises(DataError) as refused:
        load_jsonl(path, inputs=["question"])
    message = str(refused.value)
    assert "\n" not in message and "line 2" in message and "nested" in message, message


def test_nested_data_within_the_limit_loads(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    value = json.dumps({"question": [[["deep enough"]]] * 2, "answer": {"a": {"b": [1]}}})
    path.write_text(value + "\n")
    assert load_jsonl(path, inputs="question")[0].answer == {"a": {"b": [1]}}


def test_a_deeply_nested_artifact_is_an_artifact_error(tmp_path: Path) -> None:
    path = tmp_path / "program.json"
    path.write_text('{"format": "lmforge.artifact", "x": ' + "[" * DEEP + "]" * DEEP + "}")
    with pytest.raises(lf.ArtifactError, match="nested more than 128 levels") as refused:
        lf.load(path)
    assert "\n" not in str(refused.value)


HOSTILE_SCHEMAS = {
    "underscore property": (
        {"type": "object", "properties": {"_x": {"type": "string"}}, "required": ["_x"]},
        "leading underscores",
    ),
    "non-numeric minimum": ({"type": "integer", "minimum": "abc"}, "'ge'"),
    "bad regex pattern": ({"type": "string", "pattern": "(unclosed"}, "regex"),
    "self $ref": (
        {"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}},
        "only a reference to itself",
    ),
    "$ref to the root": ({"$ref": "#"}, "is not defined"),
    "600 levels": (_nested_array(600), "nested more than 128 levels"),
    "40 levels": (_nested_array(40), "nests more than 32 levels"),
    "not a list of properties": ({"type": "object", "properties": ["a"]}, "invalid JSON schema"),
}


def _with_schema(path: Path, schema: dict[str, Any]) -> None:
    """An artifact of ``q -> a`` whose output field has ``schema`` (re-hashed, as an
    attacker can), in the program spec and in the predictor's state."""
    lf.Predict("q -> a").save(path)
    document = json.loads(path.read_text())
    for signature in (
        document["program"]["config"]["signature"],
        document["predictors"]["self"]["signature"],
    ):
        signature["fields"][1]["schema"] = schema
    body = {k: v for k, v in document.items() if k != "sha256"}
    path.write_text(json.dumps({**body, "sha256": _digest(body)}))


@pytest.mark.parametrize("case", sorted(HOSTILE_SCHEMAS))
def test_hostile_field_schemas_are_refused_at_load(tmp_path: Path, case: str) -> None:
    schema, says = HOSTILE_SCHEMAS[case]
    path = tmp_path / "program.json"
    _with_schema(path, schema)
    with pytest.raises(lf.ArtifactError) as refused:
        lf.load(path)
    message = str(refused.value)
    assert "\n" not in message and says in message, message


def test_hostile_schemas_are_refused_in_predictor_state_too(tmp_path: Path) -> None:
    # lf.load(program=...) skips the program spec: the state's signature is checked alone.
    path = tmp_path / "program.json"
    _with_schema(path, {"type": "integer", "minimum": "abc"})
    with pytest.raises(lf.ArtifactError, match="'ge'"):
        lf.load(path, program=lf.Predict("q -> a"))


class Tree(pydantic.BaseModel):
    label: str
    children: list[Tree] = []


class Graded(lf.Signature):
    """Grade it."""

    q: str = lf.InputField()
    tree: Tree = lf.OutputField()
    score: Annotated[int, pydantic.Field(ge=0, le=5)] = lf.OutputField()
    code: Annotated[str, pydantic.Field(pattern="^[A-Z]+$")] = lf.OutputField()


def test_recursive_and_constrained_schemas_lmforge_wrote_still_load(tmp_path: Path) -> None:
    path = tmp_path / "program.json"
    lf.Predict(Graded).save(path)
    loaded = lf.load(path)
    reply = (
        '[[ ## tree ## ]]\n{"label": "a", "children": [{"label": "b"}]}\n\n'
        "[[ ## score ## ]]\n3\n\n[[ ## code ## ]]\nAB\n\n[[ ## completed ## ]]"
    )
    with lf.use(lm=ScriptedLM([reply])):
        prediction = loaded(q="x")
    assert prediction.tree.children[0].label == "b" and prediction.score == 3
    with lf.use(lm=ScriptedLM([reply.replace("\n3\n", "\n9\n")])), pytest.raises(lf.ParseError):
        loaded(q="x")  # the bound still holds


def test_deeply_nested_reference_data_is_a_usage_error(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from lmforge.targets.export import ExportOptions, export_bundle

    artifact = tmp_path / "program.json"
    lf.Predict("q -> a", lm=lf.LM("openai/gpt-4o-mini", cache=False)).save(artifact)
    data = tmp_path / "dev.jsonl"
    data.write_text('{"q": ' + "[" * DEEP + "]" * DEEP + ', "a": "x"}\n')
    options = ExportOptions(target="managed", reference_data=data)
    with pytest.raises(lf.UsageError, match=r"line 1: its JSON is nested more than 128"):
        export_bundle(artifact, tmp_path / "bundle", options)
    assert not (tmp_path / "bundle").exists()
