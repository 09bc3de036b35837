"""Property-based tests: arbitrary input to the parsers raises only lmforge's own errors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

import lmforge as lf
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lmforge.errors import LMForgeError

pytestmark = pytest.mark.reliability

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Item(pydantic.BaseModel):
    name: str
    amount: float
    tags: list[str] = []


SIGNATURE = lf.Signature.parse(
    "text: str, n: int"
    " -> label: Literal['a', 'b', 'c'], count: int, item: Item, notes: str, ok: bool",
    types={"Item": Item},
)
ADAPTERS = [lf.ChatAdapter(), lf.JSONAdapter(), lf.CompletionAdapter()]

signature_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda a, arrow, b: f"{a}{arrow}{b}",
        st.text(alphabet="abc_:, []|'\"0123456789LiteralstrintNone", max_size=30),
        st.sampled_from(["->", "-> ", " -> ", "", "->->"]),
        st.text(alphabet="abc_:, []|'\"0123456789LiteralstrintNone", max_size=30),
    ),
)


@FAST
@given(signature_text)
def test_signature_parser_raises_only_lmforge_errors(text: str) -> None:
    try:
        signature = lf.Signature.parse(text)
    except LMForgeError as exc:
        assert str(exc), "errors must say what was wrong"
        return
    # Whatever parses must survive a JSON round trip unchanged.
    assert lf.Signature.from_json(json.loads(json.dumps(signature.to_json()))) == signature


answer_text = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda parts: "\n".join(parts),
        st.lists(
            st.sampled_from(
                [
                    "[[ ## label ## ]]",
                    "a",
                    "B",
                    "[[ ## count ## ]]",
                    "12",
                    "twelve",
                    "[[ ## item ## ]]",
                    '{"name": "x", "amount": 3}',
                    '{"name": 1}',
                    "[[ ## notes ## ]]",
                    "free text",
                    "[[ ## ok ## ]]",
                    "yes",
                    "maybe",
                    "[[ ## completed ## ]]",
                    "Count: 3",
                    "Item: {}",
                    "Notes: hi",
                    "Ok: true",
                    '{"label": "a", "count": 1}',
                    "```json",
                    "```",
                ]
            ),
            max_size=14,
        ),
    ),
)


@FAST
@given(answer_text, st.sampled_from(range(len(ADAPTERS))))
def test_adapter_parse_raises_only_parse_errors(text: str, which: int) -> None:
    adapter = ADAPTERS[which]
    try:
        values = adapter.parse(SIGNATURE, text)
    except lf.ParseError as exc:
        assert exc.raw == text
        return
    assert set(values) == {f.name for f in SIGNATURE.output_fields}
    assert values["label"] in ("a", "b", "c")
    assert isinstance(values["count"], int) and isinstance(values["ok"], bool)
    assert isinstance(values["item"], Item)


def _valid_artifact(tmp: Path) -> dict[str, Any]:
    program = lf.Predict(
        SIGNATURE,
        demos=[
            {
                "text": "t",
                "n": 1,
                "label": "a",
                "count": 2,
                "item": {"name": "x", "amount": 1.0},
                "notes": "n",
                "ok": True,
            },
        ],
    )
    path = tmp / "valid.json"
    program.save(path, meta={"score": 0.5})
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _mutate(value: Any, rng: random.Random) -> Any:
    """Change one random leaf or key of a JSON document."""
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        choice = rng.random()
        if choice < 0.15:
            return {k: v for k, v in value.items() if k != key}
        if choice < 0.25:
            return {**value, f"{key}_x": value[key]}
        return {**value, key: _mutate(value[key], rng)}
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        return [*value[:i], _mutate(value[i], rng), *value[i + 1 :]]
    return rng.choice(
        [None, 0, -1, 1.5, "", "x", "Literal[", [], {}, True, "__main__:Evil", "os:system"]
    )


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=0, max_value=2**32), st.booleans())
def test_artifact_loader_refuses_mutations_with_artifact_errors(
    tmp_path: Path, seed: int, rehash: bool
) -> None:
    from lmforge.artifact import _digest

    rng = random.Random(seed)
    data = _valid_artifact(tmp_path)
    mutated = _mutate(data, rng)
    if rehash and isinstance(mutated, dict):
        # Re-sign the mutation so validation past the checksum is exercised too.
        mutated["sha256"] = _digest({k: v for k, v in mutated.items() if k != "sha256"})
    path = tmp_path / "mutated.json"
    path.write_text(json.dumps(mutated))
    try:
        program = lf.load(path)
    except lf.ArtifactError as exc:
        assert str(exc)
        return
    # A mutation that still loads must give a usable program of the same shape.
    assert isinstance(program, lf.Module)
    assert program.named_predictors()


@FAST
@given(st.binary(max_size=300))
def test_artifact_loader_on_random_bytes(
    tmp_path_factory: pytest.TempPathFactory, blob: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "a.json"
    path.write_bytes(blob)
    with pytest.raises(lf.ArtifactError):
        lf.load(path)


def test_literal_type_in_signature_keeps_choices() -> None:
    sig = lf.Signature.parse("x -> y: Literal['p', 'q']")
    assert sig.output_fields[0].annotation == Literal["p", "q"]
