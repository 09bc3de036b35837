"""InstructionSearch (COPRO-style) with fake LMs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.artifact import to_artifact
from lmforge.errors import UsageError
from lmforge.optimizers import InstructionSearch, create
from lmforge.testing import FunctionLM

TEAMS = {"refund": "billing", "crash": "technical", "price": "sales"}


def _field(text: str, name: str) -> str:
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*)", text)
    return match.group(1).strip() if match else ""


def task_reply(request: lf.LMRequest) -> str:
    """Right only when the instructions say 'variant 4' (a refinement-round proposal)."""
    system = str(request.messages[0]["content"])
    if "proposed_instruction" in system:
        raise AssertionError("the task model received a proposal prompt")
    ticket = _field(str(request.messages[-1]["content"]), "ticket")
    good = "variant 4" in system
    team = next((t for k, t in TEAMS.items() if k in ticket), "sales") if good else "sales"
    return f"[[ ## team ## ]]\n{team}\n\n[[ ## completed ## ]]"


def prompt_reply(request: lf.LMRequest) -> str:
    system = str(request.messages[0]["content"])
    if "`records`" in system:
        return "[[ ## summary ## ]]\nTickets labelled with teams.\n\n[[ ## completed ## ]]"
    if "proposed_instruction" in system:
        return (
            "[[ ## proposed_instruction ## ]]\n"
            f"Route this support ticket, variant {request.rollout_id}.\n\n[[ ## completed ## ]]"
        )
    raise AssertionError("the prompt model received a task prompt")


def data(n: int, offset: int = 0) -> list[lf.Example]:
    words = list(TEAMS)
    return [
        lf.Example(
            ticket=f"{words[(i + offset) % 3]} #{i}", team=TEAMS[words[(i + offset) % 3]]
        ).with_inputs("ticket")
        for i in range(n)
    ]


def metric(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
    return bool(example.team == prediction.team)


def run(
    breadth: int = 3, depth: int = 2, run_dir: Path | None = None
) -> tuple[lf.Module, FunctionLM, FunctionLM]:
    task, prompt = FunctionLM(task_reply), FunctionLM(prompt_reply, model="test/prompt")
    program = lf.Predict("ticket -> team: Literal['billing', 'technical', 'sales']")
    compiled = InstructionSearch(breadth=breadth, depth=depth, prompt_lm=prompt).compile(
        program,
        data(6),
        metric=metric,
        valset=data(9, 1),
        lm=task,
        run_dir=run_dir,
        progress=False,
    )
    return compiled, task, prompt


def test_refinement_rounds_find_the_instruction_that_scores_best() -> None:
    compiled, task, prompt = run(breadth=3, depth=2)
    assert compiled.signature.instructions == "Route this support ticket, variant 4."
    meta = compiled.artifact_meta
    assert meta["scores"]["dev"] == 1.0
    rounds = [c["round"] for c in meta["candidates"]]
    assert rounds == [0, 0, 0, 1, 1, 1]  # the original + 2 fresh proposals, then 3 refinements
    assert (
        max(meta["candidates"], key=lambda c: c["score"])["instruction"]
        == compiled.signature.instructions
    )
    # prompt model: one summary, breadth-1 proposals, then breadth refinements per later round
    assert len(prompt.calls) == 1 + 2 + 3
    assert len(task.calls) == 6 * 9  # six instructions, each scored on the nine dev examples
    assert len(task.calls) + len(prompt.calls) <= meta["estimated_lm_calls"]


def test_refinements_see_the_scored_attempts() -> None:
    _, _, prompt = run(breadth=3, depth=2)
    refinement = prompt.calls[-1].as_text()
    scores = re.findall(r"Score: (\d\.\d{3})", refinement)
    assert len(scores) >= 3 and scores == sorted(scores)  # worst first, best last
    assert "Route this support ticket, variant 1." in refinement


def test_rerun_in_the_same_run_dir_makes_no_lm_calls(tmp_path: Path) -> None:
    first, _, _ = run(run_dir=tmp_path)
    again, task, prompt = run(run_dir=tmp_path)
    assert len(task.calls) == 0 and len(prompt.calls) == 0
    dump = lambda p: json.dumps(to_artifact(p, p.artifact_meta), sort_keys=True)  # noqa: E731
    assert dump(again) == dump(first)


def test_registry_and_validation() -> None:
    assert isinstance(create("instructions", breadth=2, depth=1), InstructionSearch)
    with pytest.raises(UsageError, match="breadth"):
        InstructionSearch(breadth=1)
    with pytest.raises(UsageError, match="depth"):
        InstructionSearch(depth=0)
    assert (
        InstructionSearch(prompt_lm="openai/gpt-4o-mini").config()["prompt_model"]
        == "openai/gpt-4o-mini"
    )


def test_budget_stop_returns_the_best_instruction_so_far() -> None:
    task, prompt = FunctionLM(task_reply), FunctionLM(prompt_reply, model="test/prompt")
    program = lf.Predict("ticket -> team: Literal['billing', 'technical', 'sales']")
    compiled = InstructionSearch(breadth=3, depth=2, prompt_lm=prompt).compile(
        program,
        data(6),
        metric=metric,
        valset=data(9, 1),
        lm=task,
        progress=False,
        budget=lf.Budget(max_lm_calls=25),
    )
    meta = compiled.artifact_meta
    assert "budget" in meta["stopped"]
    assert len(task.calls) + len(prompt.calls) <= 25
    scored = [c for c in meta["candidates"] if c["score"] is not None]
    assert scored and meta["scores"]["dev"] == max(c["score"] for c in scored)
