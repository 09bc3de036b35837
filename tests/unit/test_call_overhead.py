"""The per-call overhead of ``Predict``: the work of one call is done once.

``benchmarks/overhead.py`` times the call path; timings are noisy on shared machines, so
these tests pin what the timings follow: how often a call repeats a step, and how many
Python functions one call runs (counted by a profile hook, the same on every run).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Annotated, Any

import lmforge as lf
import pydantic
import pytest
from lmforge.testing import FunctionLM

ANSWER = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
# Python functions one sync or async call of a 1-input/1-output Predict runs with a
# zero-latency LM and caches off (64 before the retry, deadline and image-refusal features;
# 77 once they came in; 68 with them after the call path was trimmed). A few to spare.
MAX_PYTHON_CALLS = 72


def _count_calls(run: Callable[[], Any]) -> int:
    calls = 0

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(hook)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls


def _quiet_predict(test: str) -> lf.Predict:
    # Instructions of its own: no other test's equal signature is in the shared adapter's
    # caches (an equal signature costs an equality test per lookup).
    signature = lf.Signature("question -> answer", f"Answer the question of test {test}.")
    return lf.Predict(signature, lm=FunctionLM(lambda _request: ANSWER, cache=False))


def test_a_sync_call_runs_few_python_functions() -> None:
    qa = _quiet_predict("sync")
    with lf.use(cache=False):
        qa(question="q")  # first call: builds the cached prompt prefix and layout
        calls = _count_calls(lambda: qa(question="q"))
    assert calls <= MAX_PYTHON_CALLS, (
        f"one Predict call runs {calls} Python functions (at most {MAX_PYTHON_CALLS}); "
        "check benchmarks/overhead.py before raising the bound"
    )


def test_an_async_call_runs_few_python_functions() -> None:
    qa = _quiet_predict("async")

    async def main() -> int:
        await qa.acall(question="q")
        calls = 0

        def hook(frame: Any, event: str, arg: Any) -> None:
            nonlocal calls
            if event == "call":
                calls += 1

        # The zero-latency LM never suspends: the loop does not run during the await.
        sys.setprofile(hook)
        try:
            await qa.acall(question="q")
        finally:
            sys.setprofile(None)
        return calls

    with lf.use(cache=False):
        calls = asyncio.run(main())
    assert calls <= MAX_PYTHON_CALLS, (
        f"one async Predict call runs {calls} Python functions (at most {MAX_PYTHON_CALLS}); "
        "check benchmarks/overhead.py before raising the bound"
    )


CHECKED: list[int] = []


def _seen(value: int) -> int:
    CHECKED.append(value)
    return value


class Counted(lf.Signature):
    """Answer about the number."""

    number: Annotated[int, pydantic.AfterValidator(_seen)] = lf.InputField()
    answer: str = lf.OutputField()


class Lookup(lf.Signature):
    """Look it up."""

    question: str = lf.InputField()
    hint: str | None = lf.InputField(default=None)
    count: Annotated[int, pydantic.Field(ge=0)] = lf.InputField(default=0)
    answer: str = lf.OutputField()


def test_a_constrained_input_is_checked_once_per_call() -> None:
    CHECKED.clear()
    qa = lf.Predict(Counted, lm=FunctionLM(lambda _request: ANSWER, cache=False))
    qa(number=2)
    assert CHECKED == [2]
    asyncio.run(qa.acall(number=3))
    assert CHECKED == [2, 3]


def test_formatting_still_fills_in_defaults_and_checks_constraints() -> None:
    lm = FunctionLM(lambda _request: ANSWER, cache=False)
    adapter = lf.ChatAdapter()
    predict = lf.Predict(Lookup, adapter=adapter)
    full = {"question": "q", "hint": None, "count": 0}
    assert predict.format({"question": "q"}, lm=lm) == predict.format(full, lm=lm)
    assert adapter.format(Lookup, [], {"question": "q"}) == adapter.format(Lookup, [], full)
    with pytest.raises(lf.UsageError, match="count"):
        predict.format({"question": "q", "count": -1}, lm=lm)
    with pytest.raises(lf.UsageError, match="count"):
        adapter.format(Lookup, [], {"question": "q", "count": -1})
