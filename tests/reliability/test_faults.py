"""Runs against a fake LM server that injects faults at 20%: every run completes, every
example is accounted for, retries stay within their bounds."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import lmforge as lf
import pytest
from lmforge.lm.retry import RetryPolicy

from ._support import chat_reply, record, scaled
from .fault_server import FaultPlan, FaultServer

pytestmark = pytest.mark.reliability

TEAMS = ("billing", "technical", "shipping")
WORDS = {
    "billing": "invoice refund charge",
    "technical": "crash error login",
    "shipping": "parcel courier late",
}
MAX_ATTEMPTS = 4


class Route(lf.Signature):
    """Route the ticket."""

    ticket: str = lf.InputField()
    team: Literal["billing", "technical", "shipping"] = lf.OutputField()


def answer(prompt: str) -> str:
    """Reply like a perfect chat model: the team whose words the last ticket contains."""
    ticket = re.findall(r"\[\[ ## ticket ## \]\]\n(.*?)\n", prompt)[-1]
    team = next(t for t, words in WORDS.items() if any(w in ticket for w in words.split()))
    return f"[[ ## team ## ]]\n{team}\n\n[[ ## completed ## ]]"


def dataset(n: int) -> list[lf.Example]:
    items = []
    for i in range(n):
        team = TEAMS[i % 3]
        word = WORDS[team].split()[i % 3]
        items.append(
            lf.Example(ticket=f"ticket {i} about my {word}", team=team).with_inputs("ticket")
        )
    return items


def metric(example: lf.Example, prediction: lf.Prediction, trace: object = None) -> bool:
    return bool(example.team == prediction.team)


@pytest.fixture
def faulty() -> Iterator[FaultServer]:
    plan = FaultPlan.uniform(0.20, slow_seconds=1.5, retry_after=0.01, seed=7, max_requests=5000)
    server = FaultServer(chat_reply, plan)
    with server.running():
        yield server


def lm_for(server: FaultServer, tmp_path: Path) -> lf.LM:
    return lf.LM(
        "hosted_vllm/fake",
        api_base=server.base_url,
        api_key="sk-fault-test",
        timeout=0.5,
        cache=tmp_path / "cache",
        retry=RetryPolicy(
            max_attempts=MAX_ATTEMPTS, base_delay=0.01, max_delay=0.05, max_total_seconds=5
        ),
    )


def test_evaluate_under_faults_accounts_for_every_example(
    faulty: FaultServer, tmp_path: Path
) -> None:
    data = dataset(60)
    lm = lm_for(faulty, tmp_path)
    with lf.use(lm=lm, adapter=lf.ChatAdapter()):
        result = lf.evaluate(lf.Predict(Route), data, metric, concurrency=8, progress=False)

    assert result.n == 60 and [row.index for row in result.rows] == list(range(60))
    for row in result.rows:
        assert (row.prediction is not None) != row.failed
        if row.failed:
            assert row.error_type in {
                "ParseError",
                "LMTimeoutError",
                "RateLimitError",
                "ProviderError",
            }
            assert row.score == 0.0
    # Retries absorb most faults: only what failed MAX_ATTEMPTS times or came back
    # truncated (a well-formed reply with a cut answer is not retried) is a failure.
    record(
        "test_evaluate_under_faults_accounts_for_every_example",
        examples=result.n,
        score=result.score,
        failed=sum(row.failed for row in result.rows),
        requests=faulty.stats.requests,
        faults=dict(faulty.stats.faults),
    )
    assert result.score >= 0.85, result.summary()
    assert faulty.stats.requests <= 60 * MAX_ATTEMPTS
    assert sum(faulty.stats.faults.values()) > 0


def test_bootstrap_compile_under_faults_completes(faulty: FaultServer, tmp_path: Path) -> None:
    from lmforge.optimizers import BootstrapFewShot

    data = dataset(30)
    lm = lm_for(faulty, tmp_path)
    with lf.use(lm=lm, adapter=lf.ChatAdapter()):
        compiled = BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=3).compile(
            lf.Predict(Route), data[:20], metric=metric, valset=data[20:], progress=False
        )
        result = lf.evaluate(compiled, data[20:], metric, concurrency=4, progress=False)
    demos = compiled.predictors()[0].demos
    record(
        "test_bootstrap_compile_under_faults_completes",
        demos=len(demos),
        score=result.score,
        requests=faulty.stats.requests,
        faults=sum(faulty.stats.faults.values()),
    )
    assert 0 < len(demos) <= 6
    assert all(d["team"] in TEAMS for d in demos)
    assert result.n == 10


def test_mipro_compile_under_faults_completes(faulty: FaultServer, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from lmforge.optimizers import MIPRO

    data = dataset(24)
    lm = lm_for(faulty, tmp_path)
    optimizer = MIPRO(
        num_trials=4,
        minibatch_size=4,
        num_instruction_candidates=2,
        num_demo_sets=2,
        max_bootstrapped_demos=2,
        max_labeled_demos=2,
        prompt_lm=lm,
    )
    with lf.use(adapter=lf.ChatAdapter()):
        compiled = optimizer.compile(
            lf.Predict(Route),
            data[:12],
            metric=metric,
            valset=data[12:],
            lm=lm,
            run_dir=tmp_path / "run",
            progress=False,
            concurrency=4,
        )
        result = lf.evaluate(compiled, data[12:], metric, concurrency=4, progress=False)
    record(
        "test_mipro_compile_under_faults_completes",
        score=result.score,
        requests=faulty.stats.requests,
        faults=sum(faulty.stats.faults.values()),
    )
    assert result.n == 12 and len(result.rows) == 12
    assert result.score >= 0.75, result.summary()
    meta = compiled.artifact_meta  # type: ignore[attr-defined]
    assert meta["optimizer"]["name"] == "mipro"
    assert sum(faulty.stats.faults.values()) > 0


# The program server's deliberate answers to a failing model (see targets/server.py: lm_error).
DELIBERATE = {200, 502, 503, 504}


async def test_served_program_under_faults_answers_only_deliberate_codes(
    faulty: FaultServer, tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    import asyncio

    import httpx
    from lmforge.targets import ServerConfig, create_app

    key = "reliability-key-0123456789"
    lm = lf.LM(
        "hosted_vllm/fake",
        api_base=faulty.base_url,
        api_key="sk-fault-test",
        timeout=0.5,
        cache=False,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02, max_total_seconds=2),
    )
    program = lf.Predict(Route, lm=lm, adapter=lf.ChatAdapter())
    app = create_app(
        program,
        ServerConfig(name="route", api_keys=(key,), max_concurrency=64, rate_limit_burst=1000),
    )
    requests = scaled(120, 600)
    statuses: list[int] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as client:
        semaphore = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with semaphore:
                if i % 2:
                    response = await client.post(
                        "/v1/programs/route", json={"ticket": f"my invoice {i}"}
                    )
                else:
                    response = await client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "route",
                            "messages": [{"role": "user", "content": f"parcel {i} late"}],
                        },
                    )
                statuses.append(response.status_code)
                assert response.status_code in DELIBERATE, response.text
                body = response.json()  # never a plain-text traceback
                if response.status_code != 200:
                    assert set(body) == {"error"} and {"type", "message"} <= set(body["error"])
                    if response.status_code == 503:
                        assert "Retry-After" in response.headers
                elif i % 2:
                    assert body["team"] in TEAMS

        await asyncio.gather(*(one(i) for i in range(requests)))
    record(
        "test_served_program_under_faults_answers_only_deliberate_codes",
        requests=requests,
        statuses={str(code): statuses.count(code) for code in sorted(set(statuses))},
        faults=sum(faulty.stats.faults.values()),
    )
    assert len(statuses) == requests
    assert statuses.count(200) >= requests * 0.7, sorted(statuses)
    assert sum(faulty.stats.faults.values()) > 0
