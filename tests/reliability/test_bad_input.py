"""Bad input: random JSONL files give only lmforge errors that name the file and line, and a
served program fuzzed from its own OpenAPI document (schemathesis) never answers 5xx and
answers every 4xx with a JSON error body."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lmforge.errors import LMForgeError

from ._support import chat_reply, record, scaled, serve_in_thread

pytestmark = pytest.mark.reliability

KEY = "schema-fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
good_record = st.fixed_dictionaries(
    {"question": st.text(max_size=10), "answer": st.text(max_size=10)}
)
line = st.one_of(
    good_record.map(json.dumps),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["question", "answer", "other"]), json_values, max_size=3).map(
        json.dumps
    ),
    st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=30),
    st.just(""),
    st.just("{"),
)


@settings(
    max_examples=scaled(150, 1500),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    lines=st.lists(line, min_size=0, max_size=8),
    raw_tail=st.binary(max_size=6),
    inputs=st.sampled_from([None, ["question"], ["question", "missing"]]),
)
def test_jsonl_loader_raises_only_lmforge_errors_naming_the_line(
    tmp_path: Path, lines: list[str], raw_tail: bytes, inputs: list[str] | None
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes("\n".join(lines).encode() + (b"\n" + raw_tail if raw_tail else b""))
    try:
        examples = lf.data.load_jsonl(path, inputs=inputs)
    except LMForgeError as exc:
        message = str(exc)
        assert str(path) in message and "\n" not in message, message
        named = re.search(r" line (\d+): ", message)
        if named:
            number = int(named.group(1))
            # The named line is a real line of the file.
            assert 1 <= number <= path.read_bytes().count(b"\n") + 1, message
        return
    assert examples and all(isinstance(e, lf.Example) for e in examples)
    if inputs:
        assert all(set(e.inputs().keys()) == set(inputs) for e in examples)


def test_jsonl_loader_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "a", "answer": "b"}\n\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(LMForgeError, match=r"line 3: expected a JSON object"):
        lf.data.load_jsonl(path, inputs=["question"])


# -- schemathesis against a served program ---------------------------------------------


def _program() -> lf.Module:
    from lmforge.testing import FunctionLM

    sig = lf.Signature.parse(
        "ticket: str, priority: int, tags: list[str]"
        " -> team: Literal['billing', 'technical', 'shipping']"
    )
    lm = FunctionLM(lambda request: chat_reply(request.as_text()))
    return lf.Predict(sig, lm=lm, adapter=lf.ChatAdapter())


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from lmforge.targets import ServerConfig, create_app

    app = create_app(
        _program(),
        ServerConfig(
            name="route", api_keys=(KEY,), rate_limit_burst=100_000, rate_limit_per_minute=1e7
        ),
    )
    with serve_in_thread(app) as url:
        yield url


def _check(response: Any, case: Any) -> None:
    label = f"{case.method} {case.formatted_path} body={getattr(case, 'body', None)!r}"
    assert response.status_code < 500, f"{label} -> {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()  # a JSON document, not text
        assert set(body) == {"error"}, f"{label} -> {response.text[:300]}"
        assert {"type", "message", "request_id"} <= set(body["error"]), response.text[:300]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_served_program_fuzzed_from_its_openapi_document(served: str, mode: str) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json", headers=AUTH)
    generation = schemathesis.GenerationMode(mode)
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode == "negative" and operation.method.upper() == "GET":
            continue  # GET routes take no input: nothing to make invalid
        strategies.append(operation.as_strategy(generation_mode=generation))
    assert strategies
    seen: list[int] = []

    @settings(
        max_examples=scaled(25, 600),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), authorised=st.booleans())
    def fuzz(case: Any, authorised: bool) -> None:
        headers = dict(case.headers or {})
        if authorised:
            headers.update(AUTH)
        response = case.call(base_url=served, headers=headers, timeout=30)
        seen.append(response.status_code)
        _check(response, case)
        if not authorised and not case.formatted_path.startswith("/health"):
            assert response.status_code in (401, 404, 405, 413), response.text[:300]

    fuzz()
    record(
        f"test_served_program_fuzzed_from_its_openapi_document[{mode}]",
        mode=mode,
        cases=len(seen),
        statuses={str(code): seen.count(code) for code in sorted(set(seen))},
    )
    assert seen
