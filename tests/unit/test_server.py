"""The program server against FunctionLM: validation, security limits, batch, metrics, drift,
the OpenAI shim (official SDK over real HTTP) and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
import httpx
import lmforge as lf
from lmforge.lm.types import LMRequest
from lmforge.targets import DriftMonitor, ServerConfig, create_app, reference_stats
from lmforge.testing import FunctionLM

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
SIG = lf.Signature.parse("ticket: str, priority: int -> team: Literal['billing', 'tech']")


def _team(request: LMRequest) -> str:
    text = request.as_text().rsplit("Ticket", 1)[-1].lower()
    return "[[ ## team ## ]]\n" + ("billing" if "refund" in text else "tech")


def _app(lm: Any = None, sig: Any = SIG, **changes: Any) -> Any:
    program = lf.Predict(sig, lm=lm or FunctionLM(_team))
    return create_app(program, ServerConfig(name="triage", api_keys=(KEY,), **changes))


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@contextlib.contextmanager
def _serve(app: Any, **options: Any) -> Iterator[tuple[str, Any]]:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_typed_call_and_schema_errors() -> None:
    async with _client(_app()) as client:
        ok = await client.post(
            "/v1/programs/triage", json={"ticket": "refund me", "priority": 2}, headers=AUTH
        )
        assert ok.status_code == 200 and ok.json() == {"team": "billing"}
        assert ok.headers["x-request-id"]
        bad = await client.post(
            "/v1/programs/triage", json={"ticket": "x", "priority": "high"}, headers=AUTH
        )
        assert bad.status_code == 422
        error = bad.json()["error"]
        assert error["type"] == "invalid_input" and "priority" in error["message"]
        assert error["request_id"] == bad.headers["x-request-id"]
        extra = await client.post(
            "/v1/programs/triage", json={"ticket": "x", "priority": 1, "x": 1}, headers=AUTH
        )
        assert extra.status_code == 422 and "x: Extra inputs" in extra.json()["error"]["message"]
        schema = (await client.get("/openapi.json", headers=AUTH)).json()
        call = schema["paths"]["/v1/programs/triage"]["post"]
        request_schema = call["requestBody"]["content"]["application/json"]["schema"]
        assert request_schema == {"$ref": "#/components/schemas/TriageRequest"}
        response_schema = call["responses"]["200"]["content"]["application/json"]["schema"]
        assert response_schema == {"$ref": "#/components/schemas/TriageResponse"}
        assert schema["components"]["schemas"]["TriageRequest"]["required"] == [
            "ticket",
            "priority",
        ]
        assert schema["components"]["schemas"]["TriageResponse"]["properties"]["team"]["enum"] == [
            "billing",
            "tech",
        ]


async def test_auth_required_except_health() -> None:
    async with _client(_app()) as client:
        assert (await client.get("/health")).status_code == 200
        body = {"ticket": "x", "priority": 1}
        missing = await client.post("/v1/programs/triage", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["type"] == "unauthorized"
        wrong = await client.post(
            "/v1/programs/triage", json=body, headers={"Authorization": "Bearer " + "z" * 24}
        )
        assert wrong.status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (
            await client.post("/v1/programs/triage", json=body, headers=AUTH)
        ).status_code == 200


def test_refuses_to_start_without_keys() -> None:
    with pytest.raises(lf.UsageError, match="LMFORGE_API_KEYS"):
        ServerConfig(name="triage")
    assert ServerConfig(name="triage", insecure_no_auth=True).api_keys == ()


async def test_rate_limit_answers_429_with_retry_after() -> None:
    async with _client(_app(rate_limit_per_minute=60, rate_limit_burst=2)) as client:
        body = {"ticket": "x", "priority": 1}
        codes = [
            (await client.post("/v1/programs/triage", json=body, headers=AUTH)).status_code
            for _ in range(2)
        ]
        limited = await client.post("/v1/programs/triage", json=body, headers=AUTH)
        assert codes == [200, 200]
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["type"] == "rate_limited"


async def _until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.005)


async def test_saturation_answers_503() -> None:
    release = threading.Event()

    async def slow(request: LMRequest) -> str:
        await _until(release)
        return "[[ ## team ## ]]\ntech"

    async with _client(_app(FunctionLM(slow), max_concurrency=1)) as client:
        body = {"ticket": "x", "priority": 1}
        first = asyncio.create_task(client.post("/v1/programs/triage", json=body, headers=AUTH))
        await asyncio.sleep(0.05)
        second = await client.post("/v1/programs/triage", json=body, headers=AUTH)
        release.set()
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert second.json()["error"]["type"] == "saturated"
        assert (await first).status_code == 200


async def test_body_size_limit() -> None:
    async with _client(_app(max_body_bytes=200)) as client:
        big = await client.post(
            "/v1/programs/triage", json={"ticket": "x" * 500, "priority": 1}, headers=AUTH
        )
        assert big.status_code == 413 and big.json()["error"]["type"] == "body_too_large"

        async def chunks() -> Any:  # no Content-Length: counted while reading
            yield b'{"ticket": "' + b"y" * 300 + b'", "priority": 1}'

        streamed = await client.post("/v1/programs/triage", content=chunks(), headers=AUTH)
        assert streamed.status_code == 413


async def test_batch_endpoint_keeps_order_and_reports_item_errors() -> None:
    def reply(request: LMRequest) -> str:
        if "boom" in request.as_text().rsplit("Ticket", 1)[-1]:
            return "no markers and no answer"
        return _team(request)

    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech'], note: str")
    async with _client(
        _app(FunctionLM(lambda r: reply(r) + "\n[[ ## note ## ]]\nok"), sig=sig)
    ) as client:
        items = [{"ticket": "refund"}, {"ticket": "crash"}, {"ticket": "boom"}]
        response = await client.post(
            "/v1/programs/triage:batch", json={"items": items}, headers=AUTH
        )
        results = response.json()["results"]
        assert [r.get("output", {}).get("team") for r in results[:2]] == ["billing", "tech"]
        assert results[2]["error"]["type"] == "parse_error"


async def test_metrics_counters_move() -> None:
    async with _client(_app()) as client:

        def value(text: str, prefix: str) -> float:
            lines = [line for line in text.splitlines() if line.startswith(prefix)]
            return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

        before = (await client.get("/metrics", headers=AUTH)).text
        for _ in range(3):
            await client.post(
                "/v1/programs/triage", json={"ticket": "refund", "priority": 1}, headers=AUTH
            )
        await client.post(
            "/v1/programs/triage", json={"ticket": "x"}, headers={"Authorization": "Bearer nope"}
        )
        after = (await client.get("/metrics", headers=AUTH)).text
        ok = 'lmforge_requests_total{program="triage",route="call",status="200"}'
        assert value(after, ok) - value(before, ok) == 3
        assert (
            value(
                after, 'lmforge_predictor_latency_seconds_count{predictor="self",program="triage"}'
            )
            == 3
        )
        assert (
            value(after, 'lmforge_tokens_total{kind="prompt",predictor="self",program="triage"}')
            > 0
        )
        assert value(after, 'lmforge_rejected_requests_total{reason="unauthorized"}') == 1


async def test_drift_endpoint_reacts_to_shifted_inputs() -> None:
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    dev = [
        {"ticket": "refund " + "a" * (i % 20), "team": "billing" if i % 2 else "tech"}
        for i in range(200)
    ]
    reference = reference_stats(sig, dev)
    async with _client(_app(sig=sig, reference_stats=reference, rate_limit_burst=500)) as client:
        for row in dev[:60]:
            await client.post("/v1/programs/triage", json={"ticket": row["ticket"]}, headers=AUTH)
        stable = (await client.get("/v1/programs/triage/drift", headers=AUTH)).json()["statistics"]
        for _ in range(120):
            await client.post("/v1/programs/triage", json={"ticket": "x" * 400}, headers=AUTH)
        shifted = (await client.get("/v1/programs/triage/drift", headers=AUTH)).json()["statistics"]
        metrics = (await client.get("/metrics", headers=AUTH)).text
    length = "input_length.ticket"
    assert stable[length]["level"] == "stable"
    assert (
        shifted[length]["level"] == "significant"
        and shifted[length]["score"] > stable[length]["score"] + 1
    )
    assert 'lmforge_drift_score{program="triage",statistic="input_length.ticket"}' in metrics


def test_drift_monitor_needs_a_window() -> None:
    monitor = DriftMonitor(reference_stats(SIG, [{"ticket": "a", "priority": 1}] * 5), window=10)
    monitor.observe({"ticket": "a", "priority": 1}, None, None)
    assert monitor.report()["input_length.ticket"]["level"] == "insufficient_data"


def test_openai_sdk_chat_and_stream() -> None:
    openai = pytest.importorskip("openai")
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    with _serve(_app(sig=sig)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = client.chat.completions.create(
            model="triage", messages=[{"role": "user", "content": "refund!"}]
        )
        assert answer.choices[0].message.content == "billing"
        assert answer.usage is not None and answer.usage.prompt_tokens > 0
        stream = client.chat.completions.create(
            model="triage", messages=[{"role": "user", "content": "it crashes"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "tech"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="other", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"{url}/v1", api_key="wrong-key-000000000", max_retries=0
            ).models.list()


async def test_chat_shim_multi_input_takes_json() -> None:
    async with _client(_app()) as client:
        ok = await client.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={
                "model": "triage",
                "messages": [{"role": "user", "content": '{"ticket": "refund", "priority": 3}'}],
            },
        )
        assert ok.json()["choices"][0]["message"]["content"] == "billing"
        bad = await client.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={"model": "triage", "messages": [{"role": "user", "content": "refund"}]},
        )
        assert bad.status_code == 422 and "JSON object" in bad.json()["error"]["message"]
        typed = await client.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={
                "model": "triage",
                "messages": [{"role": "user", "content": '{"ticket": "a", "priority": "x"}'}],
            },
        )
        assert typed.status_code == 422 and "priority" in typed.json()["error"]["message"]


def test_graceful_shutdown_finishes_in_flight_request() -> None:
    started = threading.Event()

    def slow(request: LMRequest) -> str:
        started.set()
        time.sleep(0.8)
        return "[[ ## team ## ]]\ntech"

    result: dict[str, Any] = {}
    with _serve(_app(FunctionLM(slow)), timeout_graceful_shutdown=10) as (url, server):

        def call() -> None:
            result["response"] = httpx.post(
                f"{url}/v1/programs/triage",
                json={"ticket": "x", "priority": 1},
                headers=AUTH,
                timeout=10,
            )

        caller = threading.Thread(target=call)
        caller.start()
        assert started.wait(5)
        server.should_exit = True  # what SIGTERM does
        caller.join(10)
    assert result["response"].status_code == 200 and result["response"].json() == {"team": "tech"}


def test_bench_load_generator_counts_latency_and_errors() -> None:
    import lmforge.cli.deploy  # noqa: F401  (registers the commands)
    from lmforge.cli.app import app
    from lmforge.targets.loadtest import run_load
    from typer.testing import CliRunner

    lm = FunctionLM(_team)
    with _serve(_app(lm, rate_limit_burst=1000)) as (url, _):
        endpoint = f"{url}/v1/programs/triage"
        good = asyncio.run(
            run_load(
                endpoint,
                {"ticket": "x", "priority": 1},
                requests=20,
                concurrency=4,
                api_key=KEY,
                warmup=3,
            )
        )
        served_by_good = len(lm.calls)
        bad = asyncio.run(
            run_load(endpoint, {"ticket": "x"}, requests=5, concurrency=2, api_key=KEY)
        )
        cli = CliRunner().invoke(
            app,
            [
                "bench",
                endpoint,
                "-i",
                '{"ticket": "x", "priority": 1}',
                "--requests",
                "6",
                "--concurrency",
                "2",
                "--api-key",
                KEY,
            ],
        )
    assert served_by_good == 23  # the warm-up requests are sent but not counted
    assert (
        good.ok == good.requests == len(good.latencies_s) == 20
        and not good.errors
        and good.summary()["p99_ms"] >= good.summary()["p50_ms"] > 0
    )
    assert bad.ok == 0 and bad.errors == {"HTTP 422": 5}
    assert cli.exit_code == 0 and "6/6 ok" in cli.output and "p95" in cli.output
    assert len(lm.calls) == 23 + 6 + 2  # bench warms up with one request per client


async def test_batch_items_count_against_the_rate_limit() -> None:
    lm = FunctionLM(_team)
    async with _client(_app(lm, rate_limit_per_minute=0.001, rate_limit_burst=5)) as client:
        ok = await client.post(
            "/v1/programs/triage:batch",
            json={"items": [{"ticket": "refund", "priority": 1}] * 4},
            headers=AUTH,
        )
        assert ok.status_code == 200 and len(ok.json()["results"]) == 4
        assert len(lm.calls) == 4
        # One token left: a batch of two needs two (the request's own and one more).
        limited = await client.post(
            "/v1/programs/triage:batch",
            json={"items": [{"ticket": "x", "priority": 1}] * 2},
            headers=AUTH,
        )
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        error = limited.json()["error"]
        assert error["type"] == "rate_limited" and "batch of 2 items" in error["message"]
        assert len(lm.calls) == 4  # nothing ran
    async with _client(_app(rate_limit_burst=3)) as client:
        too_big = await client.post(
            "/v1/programs/triage:batch",
            json={"items": [{"ticket": "x", "priority": 1}] * 4},
            headers=AUTH,
        )
        assert too_big.status_code == 422
        assert "at most 3 items" in too_big.json()["error"]["message"]
        assert "rate_limit_burst 3" in too_big.json()["error"]["message"]


async def test_batch_items_use_the_servers_concurrency_slots() -> None:
    running = [0]
    most = [0]
    release = threading.Event()

    async def slow(request: LMRequest) -> str:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await _until(release)
        await asyncio.sleep(0.01)
        running[0] -= 1
        return "[[ ## team ## ]]\ntech"

    app = _app(FunctionLM(slow), max_concurrency=2, batch_concurrency=8)
    async with _client(app) as client:
        batch = asyncio.create_task(
            client.post(
                "/v1/programs/triage:batch",
                json={"items": [{"ticket": "x", "priority": 1}] * 6},
                headers=AUTH,
            )
        )
        await asyncio.sleep(0.1)
        assert app.state.runtime.in_flight == 2  # the batch holds both slots
        single = await client.post(
            "/v1/programs/triage", json={"ticket": "x", "priority": 1}, headers=AUTH
        )
        assert single.status_code == 503 and single.json()["error"]["type"] == "saturated"
        release.set()
        done = await batch
    assert done.status_code == 200
    assert [r["output"]["team"] for r in done.json()["results"]] == ["tech"] * 6
    assert most[0] == 2 and app.state.runtime.in_flight == 0


async def test_chat_stream_options_must_be_an_object() -> None:
    async with _client(_app(sig=lf.Signature.parse("ticket: str -> team: str"))) as client:
        body = {
            "model": "triage",
            "messages": [{"role": "user", "content": "refund"}],
            "stream": True,
        }
        bad = await client.post(
            "/v1/chat/completions", headers=AUTH, json={**body, "stream_options": "yes"}
        )
        assert bad.status_code == 422
        error = bad.json()["error"]
        assert error["type"] == "invalid_input" and "stream_options" in error["message"]
        good = await client.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={**body, "stream_options": {"include_usage": True}},
        )
        assert good.status_code == 200 and '"usage"' in good.text and "data: [DONE]" in good.text


async def test_chat_refuses_options_a_program_cannot_honour() -> None:
    one_input = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    async with _client(_app(sig=one_input)) as client:
        base = {"model": "triage", "messages": [{"role": "user", "content": "refund"}]}

        async def chat(**extra: Any) -> httpx.Response:
            return await client.post("/v1/chat/completions", headers=AUTH, json={**base, **extra})

        several = await chat(n=2)
        assert several.status_code == 422 and "n=2" in several.json()["error"]["message"]
        forced = await chat(
            tools=[{"type": "function", "function": {"name": "lookup"}}], tool_choice="required"
        )
        assert forced.status_code == 422 and "tool_choice" in forced.json()["error"]["message"]
        for content in (None, 5, [{"type": "image_url", "image_url": {"url": "x"}}]):
            empty = await chat(messages=[{"role": "user", "content": content}])
            assert empty.status_code == 422, content
            assert "no text content" in empty.json()["error"]["message"]
        for fine in ({"n": 1}, {"n": None}, {"tool_choice": "auto"}, {}):
            ok = await chat(**fine)
            assert ok.status_code == 200, fine
            assert len(ok.json()["choices"]) == 1


def test_upstream_rate_limit_with_a_non_finite_retry_after_still_answers_503() -> None:
    from lmforge.errors import RateLimitError
    from lmforge.targets.runtime import lm_error

    for wait in (float("inf"), float("nan"), None, 2.2):
        error = lm_error(RateLimitError("slow down", retry_after=wait))
        assert error.status == 503
        assert error.headers["Retry-After"] == ("3" if wait == 2.2 else "1")


async def test_non_finite_outputs_are_a_parse_error_not_invalid_json() -> None:
    # The call route answered 200 with the body {"score": NaN}, which is not JSON.
    sig = lf.Signature.parse("ticket: str -> score: float")
    app = _app(lm=FunctionLM(lambda request: "[[ ## score ## ]]\nnan"), sig=sig)
    async with _client(app) as client:
        single = await client.post("/v1/programs/triage", json={"ticket": "x"}, headers=AUTH)
        assert single.status_code == 502 and single.json()["error"]["type"] == "parse_error"
        batch = await client.post(
            "/v1/programs/triage:batch", json={"items": [{"ticket": "x"}]}, headers=AUTH
        )
        assert batch.status_code == 200
        assert batch.json()["results"][0]["error"]["type"] == "parse_error"


async def test_chat_shim_answers_deeply_nested_json_with_a_4xx_json_error() -> None:
    # The message text went through json.loads, whose RecursionError (not a ValueError)
    # was answered 500.
    deep_list = "[" * 50_000 + "]" * 50_000
    deep_object = '{"ticket": "a", "priority": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001
    async with _client(_app()) as client:
        for content in (deep_list, deep_object):
            chat = await client.post(
                "/v1/chat/completions",
                headers=AUTH,
                json={"model": "triage", "messages": [{"role": "user", "content": content}]},
            )
            assert chat.status_code == 422, chat.text
            error = chat.json()["error"]
            assert error["type"] == "invalid_input" and "JSON object" in error["message"]
        for path in ("/v1/chat/completions", "/v1/programs/triage", "/v1/programs/triage:batch"):
            raw = await client.post(
                path,
                headers={**AUTH, "content-type": "application/json"},
                content=deep_object.encode(),
            )
            assert 400 <= raw.status_code < 500, (path, raw.text)
            assert set(raw.json()["error"]) == {"type", "message", "request_id"}


def test_access_log_escapes_control_characters_in_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "%0a" arrives decoded: the path was logged with a real line feed, forging a line.
    with caplog.at_level(logging.INFO, logger="lmforge.server"), _serve(_app()) as (url, _):
        response = httpx.get(f"{url}/v1/programs/x%0aFAKE%E2%80%A8line%0d%1b[31m", headers=AUTH)
    assert response.status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "lmforge.server"]
    assert len(lines) == 1 and len(caplog.text.splitlines()) == 1, caplog.text
    assert "/v1/programs/x\\nFAKE\\u2028line\\r\\x1b[31m 404 " in lines[0]


def test_one_line_formatter_keeps_every_record_on_its_own_line() -> None:
    from lmforge.targets.logsafe import OneLineFormatter, escape_controls

    formatter = OneLineFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("bad value\nINFO forged record")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "got %s", ("a\r\nb\x85c",), sys.exc_info()
        )
    text = formatter.format(record)
    first, *rest = text.split("\n")
    assert first == "ERROR got a\\r\\nb\\x85c"
    assert rest and all(line.startswith("  | ") for line in rest), text
    assert "  | INFO forged record" in rest
    assert escape_controls("tab\there\u2029") == "tab\\there\\u2029"
    assert escape_controls("plain /v1/programs/x") == "plain /v1/programs/x"


def test_health_answers_while_a_prompt_renders_slowly() -> None:
    # Predict renders the prompt synchronously inside acall: on the server's event loop a
    # slow render stalled every other request, /health included.
    rendering = threading.Event()

    class SlowAdapter(lf.ChatAdapter):
        def format_inputs(self, signature: Any, prefix: Any, inputs: Any) -> Any:
            rendering.set()
            time.sleep(1.5)
            return super().format_inputs(signature, prefix, inputs)

    program = lf.Predict(SIG, lm=FunctionLM(_team), adapter=SlowAdapter())
    app = create_app(program, ServerConfig(name="triage", api_keys=(KEY,)))
    result: dict[str, Any] = {}
    with _serve(app) as (url, _):

        def call() -> None:
            result["call"] = httpx.post(
                f"{url}/v1/programs/triage",
                json={"ticket": "refund", "priority": 1},
                headers=AUTH,
                timeout=10,
            )

        caller = threading.Thread(target=call)
        caller.start()
        assert rendering.wait(5)
        started = time.perf_counter()
        health = httpx.get(f"{url}/health", timeout=5)
        elapsed = time.perf_counter() - started
        caller.join(10)
    assert health.status_code == 200 and elapsed < 0.5, elapsed
    assert result["call"].status_code == 200 and result["call"].json() == {"team": "billing"}


async def test_a_timed_out_call_is_cancelled() -> None:
    cancelled = threading.Event()

    async def stuck(request: LMRequest) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "[[ ## team ## ]]\ntech"

    app = _app(FunctionLM(stuck), request_timeout_s=0.3)
    async with _client(app) as client:
        response = await client.post(
            "/v1/programs/triage", json={"ticket": "x", "priority": 1}, headers=AUTH
        )
        assert response.status_code == 504 and response.json()["error"]["type"] == "timeout"
        assert await asyncio.to_thread(cancelled.wait, 5)
        assert app.state.runtime.in_flight == 0
