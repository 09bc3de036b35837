"""One ``async def`` core for a blocking function and its async twin."""

from __future__ import annotations

import asyncio
from typing import Any

import lmforge as lf
import pytest
from lmforge.steps import run_blocking
from lmforge.testing import FunctionLM


async def core(log: list[str], *, blocking: bool) -> int:
    try:
        if blocking:
            value = 21
        else:
            await asyncio.sleep(0)  # really suspends
            value = 21
        if value:
            raise KeyError(value)
    except KeyError:
        log.append("caught")
    finally:
        log.append("cleanup")
    return 2 * value


def test_both_twins_run_the_same_core() -> None:
    blocking_log: list[str] = []
    async_log: list[str] = []
    assert run_blocking(core(blocking_log, blocking=True)) == 42
    assert asyncio.run(core(async_log, blocking=False)) == 42
    assert blocking_log == async_log == ["caught", "cleanup"]


def test_an_error_of_the_core_reaches_the_caller() -> None:
    async def fails(*, blocking: bool) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run_blocking(fails(blocking=True))


def test_a_blocking_run_that_suspends_is_refused() -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError, match="blocking=True awaited"):
        run_blocking(core(log, blocking=False))
    assert log == ["cleanup"]  # the core was closed: its cleanup ran


def test_batch_item_names_reach_the_program() -> None:
    answer = "[[ ## answer ## ]]\nok"
    qa = lf.Predict("index, blocking -> answer", lm=FunctionLM(lambda r: answer))
    [result] = qa.batch([{"index": "a", "blocking": "b"}])
    assert isinstance(result, lf.Prediction) and result.answer == "ok"

    async def main() -> Any:
        return await qa.abatch([{"index": "a", "blocking": "b"}])

    [aresult] = asyncio.run(main())
    assert isinstance(aresult, lf.Prediction) and aresult.answer == "ok"
