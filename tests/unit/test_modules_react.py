"""ReAct: the tool loop, its failure paths, native tool calls, truncation, save/load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.lm.types import LMResponse
from lmforge.modules import ReAct, Tool
from lmforge.testing import FunctionLM, ScriptedLM


def reply(**fields: Any) -> str:
    body = "".join(
        f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
        for k, v in fields.items()
    )
    return body + "[[ ## completed ## ]]"


def step(tool: str, args: dict[str, Any], thought: str = "thinking") -> str:
    return reply(next_thought=thought, next_tool_name=tool, next_tool_args=args)


def stock(item: str, warehouse: str = "north") -> int:
    """How many units of an item are in stock.

    Args:
        item: the product code, e.g. "A-100"
        warehouse: which warehouse to check
    """
    if item == "broken":
        raise RuntimeError("inventory service unavailable")
    return {"A-100": 7, "B-200": 0}.get(item, 0)


async def price(item: str) -> float:
    """The unit price of an item in euros."""
    await asyncio.sleep(0)
    return {"A-100": 2.5}.get(item, 1.0)


def test_tool_loop_runs_tools_and_extracts_the_answer() -> None:
    lm = ScriptedLM(
        [
            step("stock", {"item": "A-100"}),
            step("finish", {}, thought="7 in stock"),
            reply(reasoning="the tool said 7", answer="7"),
        ]
    )
    agent = ReAct("question -> answer: int", tools=[stock], max_steps=5)
    with lf.use(lm=lm):
        prediction = agent(question="How many A-100?")
    assert prediction.answer == 7
    assert [s["tool"] for s in prediction.trajectory] == ["stock", "finish"]
    assert prediction.trajectory[0]["observation"] == "7"
    extract_prompt = lm.calls[-1].messages[-1]["content"]
    assert "Step 1 observation: 7" in extract_prompt


def test_a_tool_that_raises_becomes_an_observation() -> None:
    lm = ScriptedLM(
        [step("stock", {"item": "broken"}), step("finish", {}), reply(reasoning="r", answer="0")]
    )
    agent = ReAct("question -> answer", tools=[stock])
    with lf.use(lm=lm):
        prediction = agent(question="q")
    observation = prediction.trajectory[0]["observation"]
    assert "RuntimeError" in observation and "inventory service unavailable" in observation
    assert "inventory service unavailable" in lm.calls[1].messages[-1]["content"]


def test_an_unknown_tool_name_is_reported_back_to_the_model() -> None:
    lm = ScriptedLM(
        [step("weather", {"city": "Oslo"}), step("finish", {}), reply(reasoning="r", answer="a")]
    )
    agent = ReAct("question -> answer", tools=[stock])
    with lf.use(lm=lm):
        prediction = agent(question="q")
    observation = prediction.trajectory[0]["observation"]
    assert "weather" in observation and "stock" in observation and "finish" in observation
    assert "weather" in lm.calls[1].messages[-1]["content"]
    assert prediction.answer == "a"


def test_bad_arguments_are_validated_and_reported() -> None:
    lm = ScriptedLM(
        [
            step("stock", {"sku": "A-100"}),
            step("stock", {"item": ["not", "a", "string"]}),
            step("finish", {}),
            reply(reasoning="r", answer="a"),
        ]
    )
    agent = ReAct("question -> answer", tools=[stock])
    with lf.use(lm=lm):
        prediction = agent(question="q")
    first, second = prediction.trajectory[0]["observation"], prediction.trajectory[1]["observation"]
    assert "bad arguments for stock" in first and "item" in first and "sku" in first
    assert "bad arguments for stock" in second and "string" in second.lower()


def test_max_steps_reached_still_extracts_an_answer() -> None:
    lm = ScriptedLM(
        [step("stock", {"item": "A-100"})] * 3 + [reply(reasoning="ran out", answer="7")]
    )
    agent = ReAct("question -> answer", tools=[stock], max_steps=3)
    with lf.use(lm=lm):
        prediction = agent(question="q")
    assert len(prediction.trajectory) == 3
    assert all(s["tool"] == "stock" for s in prediction.trajectory)
    assert prediction.answer == "7"
    assert len(lm.calls) == 4


async def test_async_react_with_an_async_tool() -> None:
    lm = ScriptedLM(
        [step("price", {"item": "A-100"}), step("finish", {}), reply(reasoning="r", answer="2.5")]
    )
    agent = ReAct("question -> answer: float", tools=[price, stock])
    with lf.use(lm=lm):
        prediction = await agent.acall(question="price of A-100?")
    assert prediction.answer == 2.5
    assert prediction.trajectory[0]["observation"] == "2.5"


def test_sync_call_runs_an_async_tool() -> None:
    lm = ScriptedLM(
        [step("price", {"item": "A-100"}), step("finish", {}), reply(reasoning="r", answer="2.5")]
    )
    agent = ReAct("question -> answer", tools=[price])
    with lf.use(lm=lm):
        assert agent(question="q").trajectory[0]["observation"] == "2.5"


def test_native_tool_calls_when_the_profile_supports_them() -> None:
    turns = iter(
        [
            LMResponse(
                texts=("",),
                tool_calls=(
                    {"id": "1", "name": "stock", "arguments": '{"item": "A-100"}'},
                    {"id": "2", "name": "teleport", "arguments": "{}"},
                ),
            ),
            LMResponse(texts=("",), tool_calls=({"id": "3", "name": "finish", "arguments": "{}"},)),
            reply(reasoning="r", answer="7"),
        ]
    )
    requests: list[lf.LMRequest] = []

    def fake(request: lf.LMRequest) -> Any:
        requests.append(request)
        return next(turns)

    lm = FunctionLM(fake, profile=lf.ModelProfile(native_tools=True))
    agent = ReAct("question -> answer", tools=[stock])
    with lf.use(lm=lm):
        prediction = agent(question="q")
    assert [s["tool"] for s in prediction.trajectory] == ["stock", "teleport", "finish"]
    assert prediction.trajectory[0]["observation"] == "7"
    assert "no tool named 'teleport'" in prediction.trajectory[1]["observation"]
    schema = requests[0].tools[0]
    assert schema["function"]["name"] == "stock"
    assert schema["function"]["parameters"]["required"] == ["item"]
    assert schema["function"]["parameters"]["properties"]["item"]["description"].startswith(
        "the product"
    )
    assert requests[2].tools is None  # the extract step sends no tools


def test_text_protocol_when_the_profile_has_no_native_tools() -> None:
    lm = ScriptedLM([step("finish", {}), reply(reasoning="r", answer="a")])
    agent = ReAct("question -> answer", tools=[stock])
    with lf.use(lm=lm):
        agent(question="q")
    assert lm.calls[0].tools is None
    assert "stock: How many units" in lm.calls[0].messages[0]["content"]


def test_trajectory_is_truncated_oldest_first_to_fit_the_context() -> None:
    big = "x" * 6000
    lm = ScriptedLM(
        [step("stock", {"item": "A-100"}, thought=f"turn {i} {big}") for i in range(4)]
        + [reply(reasoning="r", answer="a")],
        profile=lf.ModelProfile(context_window=4000),
    )
    agent = ReAct("question -> answer", tools=[stock], max_steps=4)
    with lf.use(lm=lm.copy(max_tokens=256)):
        prediction = agent(question="q")
    assert len(prediction.trajectory) == 4  # the full trajectory is kept on the prediction
    last_step_prompt = lm.calls[3].messages[-1]["content"]
    assert "left out to fit the context window" in last_step_prompt
    assert "turn 2" in last_step_prompt and "turn 0" not in last_step_prompt
    for call in lm.calls:
        assert len(call.as_text()) / 3.5 <= 4000 - 256 + 50


def test_context_window_error_drops_steps_and_retries() -> None:
    attempts: list[str] = []

    def fake(request: lf.LMRequest) -> Any:
        text = request.messages[-1]["content"]
        attempts.append(text)
        if "Step 1 thought" in text:
            return lf.ContextWindowError("too long", model="test")
        if "[[ ## next_thought ## ]]" in request.messages[0]["content"] and len(attempts) == 1:
            return step("stock", {"item": "A-100"})
        if "[[ ## next_thought ## ]]" in request.messages[0]["content"]:
            return step("finish", {})
        return reply(reasoning="r", answer="a")

    agent = ReAct("question -> answer", tools=[stock], max_steps=3)
    with lf.use(lm=FunctionLM(fake)):
        prediction = agent(question="q")
    assert prediction.answer == "a"
    assert any("1 earlier step(s) left out" in a for a in attempts)


def test_named_predictors_and_trace() -> None:
    agent = ReAct("question -> answer", tools=[stock])
    assert [n for n, _ in agent.named_predictors()] == ["react", "extract.predict"]
    lm = ScriptedLM([step("finish", {}), reply(reasoning="r", answer="a")])
    with lf.use(lm=lm), lf.track() as tracker:
        agent(question="q")
    assert [r.predictor for r in tracker.predictions] == agent.predictors()


def test_batch() -> None:
    lm = ScriptedLM(
        {
            "trajectory ## \\]\\]\n\\(no steps": step("finish", {}),
            "Step 1": reply(reasoning="r", answer="a"),
        }
    )
    agent = ReAct("question -> answer", tools=[stock])
    with lf.use(lm=lm):
        results = agent.batch([{"question": "a"}, {"question": "b"}], concurrency=2)
    assert [r.answer for r in results] == ["a", "a"]


def test_construction_errors() -> None:
    with pytest.raises(lf.UsageError, match="reserved or used twice"):
        ReAct("q -> a", tools=[stock, stock])
    with pytest.raises(lf.UsageError, match="reserved"):
        ReAct("q -> a", tools=[Tool(stock, name="finish")])
    with pytest.raises(lf.UsageError, match="max_steps"):
        ReAct("q -> a", tools=[stock], max_steps=0)

    def varargs(*items: str) -> str:
        return ""

    with pytest.raises(lf.UsageError, match=r"\*args"):
        ReAct("q -> a", tools=[varargs])
    with pytest.raises(lf.UsageError, match="call it with question="):
        ReAct("question -> answer", tools=[stock])(query="wrong name")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"tools": None}, r"ReAct\(tools=\.\.\.\) must be a list of functions"),
        ({"tools": stock}, r"ReAct\(tools=\.\.\.\) must be a list of functions"),
        ({"tools": "stock"}, r"ReAct\(tools=\.\.\.\) must be a list of functions"),
        ({"tools": [stock], "max_steps": "3"}, r"ReAct\(max_steps=\.\.\.\) must be a whole"),
        ({"tools": [stock], "max_steps": 2.5}, r"ReAct\(max_steps=\.\.\.\) must be a whole"),
    ],
)
def test_wrong_argument_types_are_usage_errors(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(lf.UsageError, match=expected):
        ReAct("q -> a", **kwargs)


TOOLS_MODULE = '''
def lookup(code: str) -> str:
    """Find a product by its code."""
    return {"A-100": "blue widget"}.get(code, "unknown")
'''

CHECK_SCRIPT = """
import json, sys
import lmforge as lf
from lmforge.testing import ScriptedLM

def reply(**fields):
    return "".join(f"[[ ## {k} ## ]]\\n{v if isinstance(v, str) else json.dumps(v)}\\n\\n"
                   for k, v in fields.items()) + "[[ ## completed ## ]]"

program = lf.load(sys.argv[1], trusted_modules=["shop_tools"])
lm = ScriptedLM([
    reply(next_thought="look", next_tool_name="lookup", next_tool_args={"code": "A-100"}),
    reply(next_thought="done", next_tool_name="finish", next_tool_args={}),
    reply(reasoning="r", answer="blue widget"),
])
with lf.use(lm=lm):
    prediction = program(question="what is A-100?")
print(json.dumps({"type": type(program).__name__, "answer": prediction.answer,
                  "observation": prediction.trajectory[0]["observation"],
                  "max_steps": program.max_steps, "demos": len(program.react.demos)}))
"""


def test_save_and_load_in_a_fresh_process_reimports_tools(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    (tmp_path / "shop_tools.py").write_text(TOOLS_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import shop_tools

        agent = ReAct("question -> answer", tools=[shop_tools.lookup], max_steps=4)
        agent.react.demos = [
            {
                "question": "q",
                "trajectory": "",
                "next_thought": "t",
                "next_tool_name": "finish",
                "next_tool_args": {},
            }
        ]
        path = tmp_path / "agent.json"
        agent.save(path)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shop_tools", None)
    saved = json.loads(path.read_text())
    assert saved["program"]["config"]["tools"][0]["ref"] == "shop_tools:lookup"
    script = tmp_path / "check.py"
    script.write_text(CHECK_SCRIPT)
    env = {**subprocess_env, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "type": "ReAct",
        "answer": "blue widget",
        "observation": "blue widget",
        "max_steps": 4,
        "demos": 1,
    }


def test_loading_tools_defined_in_a_script_says_to_pass_them(tmp_path: Path) -> None:
    def helper(code: str) -> str:
        return code

    helper.__module__ = "__main__"
    helper.__qualname__ = "helper"
    agent = ReAct("question -> answer", tools=[helper])
    path = tmp_path / "agent.json"
    agent.save(path)
    with pytest.raises(lf.ArtifactError, match=r"__main__.*program="):
        lf.load(path)
    rebuilt = lf.load(path, program=ReAct("question -> answer", tools=[helper]))
    assert list(rebuilt.tools) == ["helper"]
