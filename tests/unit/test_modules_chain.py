"""Chain: wiring by name and mapping, construction-time validation, inspect, save/load."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import Chain, ChainOfThought
from lmforge.testing import FunctionLM, ScriptedLM


def reply(**fields: Any) -> str:
    body = "".join(
        f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
        for k, v in fields.items()
    )
    return body + "[[ ## completed ## ]]"


def section(request: lf.LMRequest, name: str) -> str:
    text = request.messages[-1]["content"]
    return text.split(f"[[ ## {name} ## ]]\n", 1)[1].split("\n\n", 1)[0]


def test_outputs_feed_later_steps_by_name() -> None:
    def fake(request: lf.LMRequest) -> str:
        system = request.messages[0]["content"]
        if "`draft`" in system and "`title`" in system:
            return reply(title=section(request, "draft").upper())
        return reply(draft=f"notes on {section(request, 'topic')}")

    chain = Chain("topic -> draft", "draft -> title")
    with lf.use(lm=FunctionLM(fake)):
        prediction = chain(topic="tides")
    assert prediction.title == "NOTES ON TIDES"
    assert dict(prediction) == {"title": "NOTES ON TIDES"}
    assert [f.name for f in chain.signature.input_fields] == ["topic"]
    assert [f.name for f in chain.signature.output_fields] == ["title"]


def test_mapping_renames_and_external_inputs() -> None:
    lm = ScriptedLM([reply(draft="a draft"), reply(title="A Title")])
    chain = Chain(
        "topic -> draft",
        "text, audience -> title",
        mapping={1: {"text": "draft"}},
        inputs=["audience"],
        outputs=["draft", "title"],
    )
    assert [f.name for f in chain.signature.input_fields] == ["topic", "audience"]
    with lf.use(lm=lm):
        prediction = chain(topic="tides", audience="kids")
    assert dict(prediction) == {"draft": "a draft", "title": "A Title"}
    second = lm.calls[1].messages[-1]["content"]
    assert "[[ ## text ## ]]\na draft" in second
    assert "[[ ## audience ## ]]\nkids" in second


def test_a_step_input_nothing_provides_is_an_error_at_construction() -> None:
    with pytest.raises(lf.UsageError) as info:
        Chain("topic -> draft", "draft, audience -> title")
    message = str(info.value)
    assert "step 1" in message and "'audience'" in message
    assert "inputs=['audience']" in message


def test_mapping_errors_name_the_problem() -> None:
    with pytest.raises(lf.UsageError, match="not one of its inputs"):
        Chain("topic -> draft", "text -> title", mapping={1: {"body": "draft"}})
    with pytest.raises(lf.UsageError, match="mapped from 'missing'"):
        Chain("topic -> draft", "text -> title", mapping={1: {"text": "missing"}})
    with pytest.raises(lf.UsageError, match="step number"):
        Chain("topic -> draft", mapping={3: {"x": "y"}})
    with pytest.raises(lf.UsageError, match="not produced by any step"):
        Chain("topic -> draft", outputs=["title"])


def test_first_step_mapping_renames_the_chain_input() -> None:
    chain = Chain("query -> passages", mapping={0: {"query": "question"}})
    assert [f.name for f in chain.signature.input_fields] == ["question"]
    with pytest.raises(lf.UsageError, match="call it with question="):
        chain(query="x")


def test_typed_fields_keep_their_types_in_the_chain_signature() -> None:
    chain = Chain("text -> count: int", "count: int -> verdict: bool")
    assert chain.signature.field("verdict").annotation is bool
    assert chain.signature.field("text").annotation is str


def test_inspect_shows_every_prompt_in_order() -> None:
    lm = ScriptedLM([reply(draft="d1"), reply(reasoning="r", summary="s1"), reply(title="t1")])
    chain = Chain("topic -> draft", ChainOfThought("draft -> summary"), "summary -> title")
    with lf.use(lm=lm):
        chain(topic="volcanoes")
    out = io.StringIO()
    texts = lf.inspect(chain, file=out)
    assert len(texts) == 3
    assert texts[0].startswith("=== steps[0]")
    assert texts[1].startswith("=== steps[1].predict")
    assert texts[2].startswith("=== steps[2]")
    assert "volcanoes" in texts[0] and "d1" in texts[1] and "s1" in texts[2]
    assert out.getvalue().index("volcanoes") < out.getvalue().index("[[ ## summary ## ]]\ns1")


def test_named_predictors_cover_every_step_and_trace_records_each_call() -> None:
    lm = ScriptedLM([reply(draft="d"), reply(reasoning="r", title="t")])
    chain = Chain("topic -> draft", ChainOfThought("draft -> title"))
    assert [n for n, _ in chain.named_predictors()] == ["steps[0]", "steps[1].predict"]
    with lf.use(lm=lm), lf.track() as tracker:
        chain(topic="x")
    assert [r.predictor for r in tracker.predictions] == chain.predictors()


async def test_async_and_batch() -> None:
    def fake(request: lf.LMRequest) -> str:
        if "[[ ## topic ## ]]" in request.messages[-1]["content"]:
            return reply(draft=section(request, "topic") + "!")
        return reply(title=section(request, "draft") + "?")

    chain = Chain("topic -> draft", "draft -> title")
    with lf.use(lm=FunctionLM(fake)):
        single = await chain.acall(topic="a")
        many = chain.batch([{"topic": "b"}, {"topic": "c"}], concurrency=2)
        amany = await chain.abatch([{"topic": "d"}])
    assert single.title == "a!?"
    assert [p.title for p in many] == ["b!?", "c!?"]
    assert amany[0].title == "d!?"


def test_a_step_without_a_signature_is_rejected() -> None:
    class Plain(lf.Module):
        def forward(self, **inputs: Any) -> lf.Prediction:
            return lf.Prediction(inputs)

    with pytest.raises(lf.UsageError, match="has no signature"):
        Chain(Plain())


def test_save_and_load_rebuilds_a_working_chain(tmp_path: Any) -> None:
    chain = Chain(
        "topic -> draft",
        ChainOfThought("text, audience -> title"),
        mapping={1: {"text": "draft"}},
        inputs=["audience"],
    )
    chain.steps[0].demos = [{"topic": "t", "draft": "d"}]
    path = tmp_path / "chain.json"
    chain.save(path)
    loaded = lf.load(path)
    assert isinstance(loaded, Chain)
    assert loaded.signature == chain.signature
    assert loaded.mapping == {1: {"text": "draft"}}
    assert loaded.steps[0].demos == chain.steps[0].demos
    lm = ScriptedLM([reply(draft="a draft"), reply(reasoning="r", title="T")])
    with lf.use(lm=lm):
        assert loaded(topic="x", audience="y").title == "T"
    assert "[[ ## text ## ]]\na draft" in lm.calls[1].messages[-1]["content"]


LOAD_SCRIPT = """
import json, sys
import lmforge as lf
from lmforge.testing import FunctionLM

def fake(request):
    user = request.messages[-1]["content"]
    if "[[ ## topic ## ]]" in user:
        topic = user.split("[[ ## topic ## ]]\\n")[1].split("\\n")[0]
        return "[[ ## draft ## ]]\\ndraft about " + topic
    return "[[ ## reasoning ## ]]\\nr\\n\\n[[ ## title ## ]]\\nTitle\\n\\n[[ ## completed ## ]]"

program = lf.load(sys.argv[1])
with lf.use(lm=FunctionLM(fake)):
    prediction = program(topic="moths", audience="kids")
texts = lf.inspect(program, show=False)
print(json.dumps({"type": type(program).__name__, "title": prediction.title,
                  "steps": [type(s).__name__ for s in program.steps],
                  "demos": len(program.steps[0].demos), "prompts": len(texts),
                  "second_sees_draft": "draft about moths" in texts[1]}))
"""


def test_a_saved_chain_loads_in_a_fresh_process_without_user_code(
    tmp_path: Any, subprocess_env: dict[str, str]
) -> None:
    chain = Chain(
        "topic -> draft",
        ChainOfThought("text, audience -> title"),
        mapping={1: {"text": "draft"}},
        inputs=["audience"],
    )
    chain.steps[0].demos = [{"topic": "t", "draft": "d"}]
    path = tmp_path / "chain.json"
    chain.save(path)
    script = tmp_path / "load_chain.py"
    script.write_text(LOAD_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(path)],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "type": "Chain",
        "title": "Title",
        "steps": ["Predict", "ChainOfThought"],
        "demos": 1,
        "prompts": 2,
        "second_sees_draft": True,
    }


def test_inputs_and_outputs_given_as_a_string_name_fields_not_characters() -> None:
    """``inputs="tone"`` used to become the fields t, o, n, e."""
    chain = Chain("topic -> draft", "draft, tone -> title", inputs="tone", outputs="draft, title")
    assert [f.name for f in chain.signature.input_fields] == ["topic", "tone"]
    assert [f.name for f in chain.signature.output_fields] == ["draft", "title"]
    listed = Chain("topic -> draft", "draft, tone -> title", inputs=["tone"], outputs=["title"])
    single = Chain("topic -> draft", "draft, tone -> title", inputs="tone", outputs="title")
    assert single.signature == listed.signature


@pytest.mark.parametrize("inputs", [3, [None], {"tone": 1}])
def test_inputs_that_are_not_field_names_are_usage_errors(inputs: Any) -> None:
    with pytest.raises(lf.UsageError, match=r"Chain\(inputs=\.\.\.\) must be field names"):
        Chain("topic -> draft", "draft, tone -> title", inputs=inputs)
