"""What every composed module owes optimizers: copies, state, names, artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import (
    BestOfN,
    BM25Retriever,
    Chain,
    ChainOfThought,
    Ensemble,
    Majority,
    ReAct,
    Refine,
    Retrieve,
)
from lmforge.testing import FunctionLM


def stock(item: str) -> int:
    """Units in stock."""
    return 3


def always(inputs: dict[str, Any], prediction: lf.Prediction) -> float:
    return 1.0


def reply(**fields: Any) -> str:
    body = "".join(
        f"[[ ## {k} ## ]]\n{json.dumps(v) if not isinstance(v, str) else v}\n\n"
        for k, v in fields.items()
    )
    return body + "[[ ## completed ## ]]"


PROGRAMS = {
    "cot": lambda: ChainOfThought("q -> a"),
    "chain": lambda: Chain("q -> d", ChainOfThought("d -> a")),
    "react": lambda: ReAct("q -> a", tools=[stock]),
    "best_of_n": lambda: BestOfN(ChainOfThought("q -> a"), 3, always, 1),
    "refine": lambda: Refine(Chain("q -> d", "d -> a"), 2, always, 1),
    "majority": lambda: Majority(lf.Predict("q -> a"), 3),
    "ensemble": lambda: Ensemble([lf.Predict("q -> a"), ChainOfThought("q -> a")]),
    "rag": lambda: Chain(
        Retrieve(
            BM25Retriever(["alpha beta", "gamma delta"], stemmer=None), query="q", output="ctx"
        ),
        "ctx: list[str], q -> a",
    ),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_copies_state_and_artifacts(name: str, tmp_path: Path) -> None:
    program = PROGRAMS[name]()
    names = [n for n, _ in program.named_predictors()]
    assert names, "every module exposes at least one predictor to tune"
    for predictor in program.predictors():
        predictor.demos = [{"note": name}]
    copy = program.reset_copy()
    assert [n for n, _ in copy.named_predictors()] == names
    assert all(a is not b for a, b in zip(copy.predictors(), program.predictors(), strict=True))
    assert all(p.demos == () for p in copy.predictors())
    copy.load_state(program.state())
    assert copy.state() == program.state()
    path = tmp_path / f"{name}.json"
    program.save(path)
    loaded = lf.load(path, trusted_modules=[__name__])  # its tools and rewards live here
    assert type(loaded) is type(program)
    assert loaded.state() == program.state()


def test_refine_advises_a_multi_step_program_on_a_copy() -> None:
    def fake(request: lf.LMRequest) -> str:
        system = request.messages[0]["content"]
        if "`advice`" in system:
            return reply(advice="be longer")
        if "`d`" in system and "`a`" in system:
            return reply(a="long answer" if "be longer" in system else "x")
        return reply(d="draft")

    program = Refine(Chain("q -> d", "d -> a"), 2, lambda i, p: len(p.a), 5)
    with lf.use(lm=FunctionLM(fake)):
        assert program(q="?").a == "long answer"
    assert all("be longer" not in p.signature.instructions for p in program.module.predictors())
