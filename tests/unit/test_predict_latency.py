"""A predictor's history and trace records carry the real wall time of its call."""

from __future__ import annotations

import asyncio
import time

import lmforge as lf
import pytest
from lmforge.lm.types import LMRequest
from lmforge.testing import FunctionLM

ANSWER = "[[ ## answer ## ]]\nfine"
DELAY = 0.05


def slow(request: LMRequest) -> str:
    time.sleep(DELAY)
    return ANSWER


async def aslow(request: LMRequest) -> str:
    await asyncio.sleep(DELAY)
    return ANSWER


def test_history_records_the_latency_of_the_call() -> None:
    qa = lf.Predict("question -> answer", lm=FunctionLM(slow))
    with lf.track() as t:
        qa(question="q")
    latency = qa.history[-1].latency
    assert DELAY <= latency < DELAY + 1.0
    record = t.predictions[0].lm_call
    assert record is not None and record.latency == latency


def test_failed_call_records_its_latency_too() -> None:
    def slow_failure(request: LMRequest) -> str:
        time.sleep(DELAY)
        raise lf.AuthenticationError("bad key", status_code=401)

    qa = lf.Predict("question -> answer", lm=FunctionLM(slow_failure))
    with pytest.raises(lf.AuthenticationError):
        qa(question="q")
    assert DELAY <= qa.history[-1].latency < DELAY + 1.0


async def test_async_history_records_the_latency_of_the_call() -> None:
    qa = lf.Predict("question -> answer", lm=FunctionLM(aslow))
    await qa.acall(question="q")
    assert DELAY <= qa.history[-1].latency < DELAY + 1.0
