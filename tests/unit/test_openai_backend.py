"""The httpx OpenAI-compatible backend, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.errors import (
    AuthenticationError,
    ContextWindowError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
    UsageError,
)
from lmforge.lm.litellm_backend import LiteLLMBackend
from lmforge.lm.openai_backend import OpenAIBackend, retry_after, wire_payload
from lmforge.lm.retry import RetryPolicy
from lmforge.lm.types import LMRequest
from lmforge.testing import block_network

Reply = tuple[int, dict[str, str], Any]  # status, headers, JSON body (or raw bytes)


def chat_body(
    *texts: str, usage: tuple[int, int] = (11, 3), tool_calls: list[Any] | None = None
) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": t, "tool_calls": tool_calls},
            "finish_reason": "stop",
        }
        for i, t in enumerate(texts)
    ]
    return {
        "id": "x",
        "model": "served-model",
        "choices": list(reversed(choices)),  # servers may list choices in any order
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }


class FakeServer:
    """A tiny OpenAI-compatible server whose replies come from ``self.reply(request)``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply: Callable[[dict[str, Any]], Reply] = lambda req: (200, {}, chat_body("ok"))
        self.delay = 0.0
        self.raw: Callable[[BaseHTTPRequestHandler, dict[str, Any]], None] | None = None
        self.connections: set[int] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                request = {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(raw),
                    "raw": raw,
                }
                server.requests.append(request)
                server.connections.add(self.client_address[1])
                if server.delay:
                    time.sleep(server.delay)
                if server.raw is not None:
                    server.raw(self, request)
                    return
                status, headers, body = server.reply(request)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return None  # a client that gave up (timeout tests) is expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    try:
        yield srv
    finally:
        srv.close()


def vllm(server: FakeServer, **kwargs: Any) -> lf.LM:
    kwargs.setdefault("cache", False)
    return lf.LM("hosted_vllm/my-model", api_base=server.base, **kwargs)


NO_RETRY = RetryPolicy(max_attempts=1)


# -- requests and responses ------------------------------------------------------------


def test_chat_request_and_response(server: FakeServer) -> None:
    server.reply = lambda req: (
        200,
        {},
        chat_body("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"),
    )
    lm = vllm(server, temperature=0.3)
    assert isinstance(lm.backend, OpenAIBackend)
    with lf.track() as t:
        result = lf.Predict("question -> answer", lm=lm)(question="Capital of France?")
    assert result.answer == "Paris"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert body["model"] == "my-model"
    assert body["temperature"] == 0.3
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "Capital of France?" in body["messages"][-1]["content"]
    assert "authorization" not in {k.lower() for k in request["headers"]}
    assert t.prompt_tokens == 11 and t.completion_tokens == 3


def test_cache_tells_servers_apart_and_never_stores_the_endpoint(
    server: FakeServer, tmp_path: Path
) -> None:
    other = FakeServer()
    try:
        server.reply = lambda req: (200, {}, chat_body("[[ ## answer ## ]]\nfirst"))
        other.reply = lambda req: (200, {}, chat_body("[[ ## answer ## ]]\nsecond"))
        cache = tmp_path / "cache"
        # A user and password in the URL must not reach the cache files.
        secret_base = other.base.replace("http://", "http://svc:hunter2pass@")
        first = lf.LM("hosted_vllm/my-model", api_base=server.base, cache=cache)
        second = lf.LM("hosted_vllm/my-model", api_base=secret_base, cache=cache)
        ask = lf.Predict("question -> answer")
        with lf.use(lm=first):
            assert ask(question="q").answer == "first"
        for _ in range(2):
            with lf.use(lm=second):
                assert ask(question="q").answer == "second"
        assert len(server.requests) == 1 and len(other.requests) == 1
        stored = b"".join(p.read_bytes() for p in cache.rglob("*") if p.is_file())
        assert b"hunter2pass" not in stored and b"127.0.0.1" not in stored
    finally:
        other.close()


def test_text_completion_request(server: FakeServer) -> None:
    server.reply = lambda req: (
        200,
        {},
        {
            "choices": [{"index": 0, "text": " Paris", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5},
        },
    )
    lm = vllm(server, model_type="text", max_tokens=16)
    result = lf.Predict("question -> answer", lm=lm)(question="Capital of France?")
    assert result.answer == "Paris"
    (request,) = server.requests
    assert request["path"] == "/v1/completions"
    body = request["body"]
    assert body["prompt"].endswith("Answer:")
    assert body["max_tokens"] == 16
    assert isinstance(body["stop"], list) and "\n\n" in body["stop"]
    assert "messages" not in body


def test_response_format_is_passed_through(server: FakeServer) -> None:
    server.reply = lambda req: (200, {}, chat_body('{"answer": "4"}'))
    program = lf.Predict("question -> answer: int", lm=vllm(server), adapter=lf.JSONAdapter())
    assert program(question="2+2?").answer == 4
    sent = server.requests[0]["body"]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["properties"]["answer"]["type"] == "integer"


def test_several_choices_are_kept_in_index_order(server: FakeServer) -> None:
    server.reply = lambda req: (200, {}, chat_body("first", "second", usage=(4, 2)))
    lm = vllm(server)
    response = lm.complete(lm.request(messages=[{"role": "user", "content": "hi"}], n=2))
    assert response.texts == ("first", "second")
    assert server.requests[0]["body"]["n"] == 2
    assert response.usage.prompt_tokens == 4 and response.finish_reason == "stop"


def test_tool_calls_are_parsed(server: FakeServer) -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    ]
    server.reply = lambda req: (200, {}, chat_body("", tool_calls=calls))
    lm = vllm(server)
    tools = (
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
    )
    response = lm.complete(lm.request(messages=[{"role": "user", "content": "hi"}], tools=tools))
    assert response.tool_calls == ({"id": "c1", "name": "lookup", "arguments": '{"q": "x"}'},)
    assert server.requests[0]["body"]["tools"][0]["function"]["name"] == "lookup"


def test_wire_payload_keeps_client_settings_out_of_the_body() -> None:
    request = LMRequest(
        model="openai/gpt-4o-mini",
        prompt="hi",
        params={"timeout": 3, "temperature": 0, "stop": ("x",)},
    )
    payload, timeout = wire_payload(request)
    assert payload == {"model": "gpt-4o-mini", "prompt": "hi", "temperature": 0, "stop": ["x"]}
    assert timeout == 3.0


# -- credentials -----------------------------------------------------------------------


def test_api_key_goes_only_in_the_authorization_header(server: FakeServer) -> None:
    lm = vllm(server, api_key="sk-secret-123")
    lm(messages=[{"role": "user", "content": "hi"}])
    request = server.requests[0]
    assert request["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert b"sk-secret-123" not in request["raw"]
    assert "sk-secret" not in json.dumps(lm.config())


def test_api_key_from_the_provider_environment_variable(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    lm = lf.LM("openai/gpt-4o-mini", api_base=server.base, cache=False)
    lm(messages=[{"role": "user", "content": "hi"}])
    request = server.requests[0]
    assert request["headers"]["Authorization"] == "Bearer sk-from-env"
    assert request["body"]["model"] == "gpt-4o-mini"


# -- errors ----------------------------------------------------------------------------


def _call(lm: lf.LM) -> Any:
    return lm(messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "retryable"),
    [
        (429, {"Retry-After": "7"}, {"error": {"message": "slow down"}}, RateLimitError, True),
        (401, {}, {"error": {"message": "bad key"}}, AuthenticationError, False),
        (403, {}, {"error": {"message": "forbidden"}}, AuthenticationError, False),
        (
            400,
            {},
            {"error": {"message": "maximum context length is 2048 tokens; you asked 4000"}},
            ContextWindowError,
            False,
        ),
        (400, {}, {"error": {"message": "temperature must be positive"}}, ProviderError, False),
        (404, {}, {"detail": "Not Found"}, ProviderError, False),
        (500, {}, b"internal error", ProviderError, True),
        (503, {"Retry-After": "2"}, {"error": "overloaded"}, ProviderError, True),
    ],
)
def test_http_errors_are_translated(
    server: FakeServer,
    status: int,
    headers: dict[str, str],
    body: Any,
    error: type,
    retryable: bool,
) -> None:
    server.reply = lambda req: (status, headers, body)
    with pytest.raises(error) as info:
        _call(vllm(server, retry=NO_RETRY))
    assert type(info.value) is error
    assert info.value.retryable is retryable
    assert info.value.status_code == status
    assert f"HTTP {status}" in str(info.value) and "\n" not in str(info.value)
    if "Retry-After" in headers:
        assert info.value.retry_after == float(headers["Retry-After"])


def test_rate_limit_is_retried_after_the_servers_delay(server: FakeServer) -> None:
    replies = iter([(429, {"Retry-After": "1.5"}, {"error": "busy"}), (200, {}, chat_body("done"))])
    server.reply = lambda req: next(replies)
    slept: list[float] = []
    lm = vllm(server, retry=RetryPolicy(max_attempts=3, sleep=slept.append))
    assert _call(lm) == ["done"]
    assert slept == [1.5] and len(server.requests) == 2


def test_auth_errors_are_not_retried(server: FakeServer) -> None:
    server.reply = lambda req: (401, {}, {"error": "nope"})
    slept: list[float] = []
    with pytest.raises(AuthenticationError):
        _call(vllm(server, retry=RetryPolicy(max_attempts=5, sleep=slept.append)))
    assert slept == [] and len(server.requests) == 1


def test_malformed_success_body_is_a_retryable_provider_error(server: FakeServer) -> None:
    server.reply = lambda req: (200, {}, b"{not json")
    with pytest.raises(ProviderError) as info:
        _call(vllm(server, retry=NO_RETRY))
    assert info.value.retryable


def test_timeout_becomes_lm_timeout_error(server: FakeServer) -> None:
    server.delay = 0.5
    with pytest.raises(LMTimeoutError):
        _call(vllm(server, retry=NO_RETRY, timeout=0.1))


def test_connection_refused_is_retryable() -> None:
    probe = FakeServer()
    base = probe.base
    probe.close()  # nothing listens there any more
    lm = lf.LM("hosted_vllm/m", api_base=base, cache=False, retry=NO_RETRY)
    with pytest.raises(ProviderError) as info:
        _call(lm)
    assert info.value.retryable and "cannot reach 127.0.0.1" in str(info.value)


def test_retry_after_parses_seconds_and_dates() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(None) is None
    assert retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: retry now


# -- async -----------------------------------------------------------------------------


async def test_async_chat_and_batch(server: FakeServer) -> None:
    server.reply = lambda req: (
        200,
        {},
        chat_body(f"[[ ## answer ## ]]\n{req['body']['messages'][-1]['content'].count('?')}"),
    )
    program = lf.Predict("question -> answer: int", lm=vllm(server))
    single = await program.acall(question="a?")
    assert single.answer == 1
    results = await program.abatch([{"question": "?" * i} for i in range(1, 9)], concurrency=4)
    assert [r.answer for r in results] == list(range(1, 9))


async def test_async_errors_are_translated(server: FakeServer) -> None:
    server.reply = lambda req: (429, {"Retry-After": "4"}, {"error": "busy"})
    lm = vllm(server, retry=NO_RETRY)
    with pytest.raises(RateLimitError) as info:
        await lm.acomplete(lm.request(messages=[{"role": "user", "content": "hi"}]))
    assert info.value.retry_after == 4.0


def test_one_lm_serves_several_event_loops(server: FakeServer) -> None:
    lm = vllm(server)
    request = lm.request(messages=[{"role": "user", "content": "hi"}])
    for _ in range(2):
        assert asyncio.run(lm.acomplete(request)).text == "ok"
    assert lm.complete(request).text == "ok"
    assert len(server.requests) == 3


# -- network blocking and backend choice -----------------------------------------------


def test_blocked_network_allows_loopback_only(server: FakeServer) -> None:
    with block_network():
        assert _call(vllm(server)) == ["ok"]
        remote = lf.LM(
            "hosted_vllm/m", api_base="http://10.255.255.1:8000/v1", cache=False, retry=NO_RETRY
        )
        with pytest.raises(UsageError, match="blocked"):
            _call(remote)


def test_backend_choice() -> None:
    base = "http://127.0.0.1:9/v1"
    assert isinstance(lf.LM("hosted_vllm/m", api_base=base).backend, OpenAIBackend)
    assert isinstance(lf.LM("openai/gpt-4o-mini", api_base=base).backend, OpenAIBackend)
    assert isinstance(lf.LM("openai/gpt-4o-mini").backend, LiteLLMBackend)
    assert isinstance(lf.LM("anthropic/claude-3-5-haiku", api_base=base).backend, LiteLLMBackend)
    assert isinstance(
        lf.LM("hosted_vllm/m", api_base=base, client="litellm").backend, LiteLLMBackend
    )
    assert isinstance(lf.LM("openai/gpt-4o-mini", client="http").backend, OpenAIBackend)
    with pytest.raises(UsageError, match="client"):
        lf.LM("openai/gpt-4o-mini", client="requests")  # type: ignore[arg-type]


def test_client_choice_survives_config_round_trip() -> None:
    assert "client" not in lf.LM("openai/gpt-4o-mini").config()
    lm = lf.LM("openai/gpt-4o-mini", client="litellm")
    assert lm.config()["client"] == "litellm"
    assert lf.LM.from_config(lm.config()).client == "litellm"


def test_missing_api_base_says_how_to_fix() -> None:
    lm = lf.LM("hosted_vllm/m", client="http", cache=False, retry=NO_RETRY)
    with pytest.raises(UsageError, match="api_base="):
        _call(lm)


# -- the async stream client's HTTP framing --------------------------------------------


def _write(handler: BaseHTTPRequestHandler, data: bytes, *, close: bool) -> None:
    handler.wfile.write(data)
    handler.wfile.flush()
    handler.close_connection = close


async def test_chunked_responses_are_decoded(server: FakeServer) -> None:
    body = json.dumps(chat_body("chunked ok")).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))

    def raw(handler: BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        _write(handler, head + chunks + b"0\r\n\r\n", close=False)

    server.raw = raw
    lm = vllm(server)
    request = lm.request(messages=[{"role": "user", "content": "hi"}])
    assert [(await lm.acomplete(request)).text for _ in range(3)] == ["chunked ok"] * 3
    assert len(server.connections) == 1  # kept alive across calls


async def test_http10_reply_without_length_reads_to_close(server: FakeServer) -> None:
    body = json.dumps(chat_body("old server")).encode()
    server.raw = lambda handler, request: _write(
        handler, b"HTTP/1.0 200 OK\r\n\r\n" + body, close=True
    )
    lm = vllm(server)
    request = lm.request(messages=[{"role": "user", "content": "hi"}])
    assert [(await lm.acomplete(request)).text for _ in range(2)] == ["old server"] * 2
    assert len(server.connections) == 2


async def test_connection_closed_while_idle_is_replaced(server: FakeServer) -> None:
    body = json.dumps(chat_body("fresh")).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)

    def raw(handler: BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        # Answer, then close the connection a moment later without saying so: the client's
        # next request on it gets no response and must be sent again on a new connection.
        _write(handler, head + body, close=True)
        time.sleep(0.05)

    server.raw = raw
    lm = vllm(server, retry=NO_RETRY)
    request = lm.request(messages=[{"role": "user", "content": "hi"}])
    for i in range(4):
        assert (await lm.acomplete(request)).text == "fresh"
        if i == 2:
            await asyncio.sleep(0.1)  # also: a connection already seen closed is skipped
    assert len(server.requests) == 4


async def test_interim_100_continue_is_skipped(server: FakeServer) -> None:
    body = json.dumps(chat_body("after continue")).encode()
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    server.raw = lambda handler, request: _write(handler, reply + body, close=False)
    lm = vllm(server)
    request = lm.request(messages=[{"role": "user", "content": "hi"}])
    assert [(await lm.acomplete(request)).text for _ in range(2)] == ["after continue"] * 2


async def test_garbage_reply_is_a_retryable_provider_error(server: FakeServer) -> None:
    server.raw = lambda handler, request: _write(handler, b"SSH-2.0-OpenSSH\r\n\r\n", close=True)
    lm = vllm(server, retry=NO_RETRY)
    with pytest.raises(ProviderError) as info:
        await lm.acomplete(lm.request(messages=[{"role": "user", "content": "hi"}]))
    assert info.value.retryable


async def test_async_timeout_becomes_lm_timeout_error(server: FakeServer) -> None:
    server.delay = 0.5
    lm = vllm(server, retry=NO_RETRY, timeout=0.1)
    with pytest.raises(LMTimeoutError):
        await lm.acomplete(lm.request(messages=[{"role": "user", "content": "hi"}]))


async def test_async_connection_refused_is_retryable() -> None:
    probe = FakeServer()
    base = probe.base
    probe.close()
    lm = lf.LM("hosted_vllm/m", api_base=base, cache=False, retry=NO_RETRY)
    with pytest.raises(ProviderError) as info:
        await lm.acomplete(lm.request(messages=[{"role": "user", "content": "hi"}]))
    assert info.value.retryable


# -- review: hostile and odd server replies ------------------------------------------------


def test_non_finite_retry_after_is_ignored() -> None:
    # float("nan") parses; time.sleep(nan) raises ValueError and int(nan) in the server too.
    assert retry_after("nan") is None
    assert retry_after("inf") is None
    assert retry_after("-inf") is None


@pytest.mark.parametrize(
    "body",
    [
        {"choices": [{"index": 0, "message": {"content": "hi"}}], "usage": [1, 2]},
        {"choices": [{"index": 0, "message": {"content": "hi"}}], "usage": {"prompt_tokens": "x"}},
        {"choices": [{"index": 0, "message": {"content": None, "tool_calls": ["x"]}}]},
        {"choices": [{"index": 0, "message": {"content": 5}}]},
    ],
)
async def test_off_shape_success_bodies_are_provider_errors(
    server: FakeServer, body: dict[str, Any]
) -> None:
    server.reply = lambda req: (200, {}, body)
    lm = vllm(server, retry=NO_RETRY)
    with pytest.raises(ProviderError) as info:
        _call(lm)
    assert info.value.retryable and "malformed response" in str(info.value)
    with pytest.raises(ProviderError):
        await lm.acomplete(lm.request(messages=[{"role": "user", "content": "hi"}]))


def test_content_parts_are_joined_into_text(server: FakeServer) -> None:
    parts = [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]
    server.reply = lambda req: (200, {}, {"choices": [{"index": 0, "message": {"content": parts}}]})
    assert _call(vllm(server, retry=NO_RETRY)) == ["hello"]


def test_error_messages_never_show_the_endpoints_credentials(server: FakeServer) -> None:
    server.reply = lambda req: (401, {}, {"error": {"message": "bad key"}})
    base = server.base.replace("http://", "http://user:s3cret-pass@")
    lm = lf.LM("hosted_vllm/m", api_base=base, cache=False, retry=NO_RETRY)
    with pytest.raises(AuthenticationError) as info:
        _call(lm)
    assert "s3cret-pass" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_per_call_credentials_are_refused() -> None:
    lm = lf.LM("openai/gpt-4o-mini", cache=False)
    with pytest.raises(UsageError, match="credential"):
        lm.request(prompt="hi", api_key="sk-not-for-traces")
    with pytest.raises(UsageError, match="credential"):
        lm.request(prompt="hi", extra_headers={"Authorization": "Bearer sk-x"})


def test_saved_artifacts_never_hold_the_endpoints_password(tmp_path: Path) -> None:
    base = "http://bob:hunter2-pass@10.0.0.5:8000/v1?api-version=1"
    lm = lf.LM("hosted_vllm/m", api_base=base, cache=False)
    path = tmp_path / "prog.json"
    lf.Predict("question -> answer", lm=lm).save(path)
    text = path.read_text()
    assert "hunter2-pass" not in text and "bob" not in text
    assert "http://10.0.0.5:8000/v1?api-version=1" in text
    assert lm.api_base == base  # the live LM still sends them
