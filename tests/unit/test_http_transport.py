"""The lean HTTP client's transport, against raw loopback TCP servers: the Host header,
the response size cap, environment proxies and one wall-clock deadline per request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import lmforge as lf
import pytest
from lmforge.errors import LMTimeoutError, ProviderError, UsageError
from lmforge.lm.openai_backend import OpenAIBackend
from lmforge.lm.retry import RetryPolicy
from loopback import Handler, Loop, read_request

NO_RETRY = RetryPolicy(max_attempts=1)
COMPLETION = json.dumps(
    {"choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}]}
).encode()


@pytest.fixture
def net() -> Iterator[Loop]:
    loop = Loop()
    try:
        yield loop
    finally:
        loop.close()


def answering(
    reply: bytes = COMPLETION, seen: list[bytes] | None = None, status: bytes = b"200 OK"
) -> Handler:
    """A keep-alive server that answers every request with ``reply``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if seen is not None:
                seen.append(request)
            writer.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, len(reply)))
            writer.write(reply)
            await writer.drain()

    return handle


def call(lm: lf.LM, mode: str) -> list[str]:
    request = lm.request(prompt="hi")
    if mode == "sync":
        return list(lm.complete(request).texts)
    return list(asyncio.run(lm.acomplete(request)).texts)


def lm_for(port: int, **kwargs: Any) -> lf.LM:
    kwargs.setdefault("api_base", f"http://127.0.0.1:{port}/v1")
    return lf.LM("hosted_vllm/m", cache=False, retry=NO_RETRY, **kwargs)


def host_lines(request: bytes) -> list[bytes]:
    return [line for line in request.split(b"\r\n") if line.lower().startswith(b"host:")]


# -- the Host header ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_credentials_in_api_base_never_reach_the_host_header(net: Loop, mode: str) -> None:
    seen: list[bytes] = []
    port = net.serve(answering(seen=seen))
    lm = lm_for(port, api_base=f"http://alice:s3cret-pw@127.0.0.1:{port}/v1")
    assert call(lm, mode) == ["ok"]
    (request,) = seen
    head = request.split(b"\r\n\r\n")[0]
    assert b"s3cret-pw" not in head and b"alice" not in head
    assert host_lines(request) == [b"Host: 127.0.0.1:%d" % port]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    # The userinfo is HTTP Basic auth, in its header only.
    assert b"Authorization: Basic YWxpY2U6czNjcmV0LXB3" in head


def test_host_header_brackets_ipv6_and_drops_the_default_port() -> None:
    from lmforge.lm._http import host_header

    assert host_header("::1", 8000, default_port=80) == "[::1]:8000"
    assert host_header("::1", 80, default_port=80) == "[::1]"
    assert host_header("example.com", None, default_port=80) == "example.com"
    assert host_header("example.com", 443, default_port=443) == "example.com"


# -- the response size cap ----------------------------------------------------------------


def big_reply(kind: str, size: int) -> Handler:
    """A server whose reply body is ``size`` bytes, framed by ``kind``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b"x" * size
        if kind == "length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body)
        elif kind == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, size, 1000):
                piece = body[start : start + 1000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
        else:  # framed by closing the connection
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize("kind", ["length", "chunked", "close"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_response_over_the_size_limit_is_refused(
    net: Loop, mode: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMFORGE_MAX_RESPONSE_BYTES", "5000")
    port = net.serve(big_reply(kind, 20_000))
    with pytest.raises(ProviderError, match="over the 5000-byte limit") as info:
        call(lm_for(port), mode)
    assert "LMFORGE_MAX_RESPONSE_BYTES" in str(info.value) and not info.value.retryable


def test_the_size_limit_can_be_raised_on_the_backend(net: Loop) -> None:
    port = net.serve(answering(reply=COMPLETION + b" " * 40_000))
    backend = OpenAIBackend(api_base=f"http://127.0.0.1:{port}/v1", max_response_bytes=10**6)
    assert lf.LM("hosted_vllm/m", backend=backend, cache=False)(prompt="hi") == ["ok"]
    with pytest.raises(ProviderError, match="over the 1000-byte limit"):
        small = OpenAIBackend(api_base=f"http://127.0.0.1:{port}/v1", max_response_bytes=1000)
        lf.LM("hosted_vllm/m", backend=small, cache=False, retry=NO_RETRY)(prompt="hi")


def test_a_bad_size_limit_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_MAX_RESPONSE_BYTES", "lots")
    with pytest.raises(UsageError, match="LMFORGE_MAX_RESPONSE_BYTES must be a positive"):
        OpenAIBackend(api_base="http://127.0.0.1:1/v1")
    with pytest.raises(UsageError, match="max_response_bytes must be a positive"):
        OpenAIBackend(api_base="http://127.0.0.1:1/v1", max_response_bytes=0)


# -- proxies from the environment ---------------------------------------------------------


def forwarding_proxy(used: list[bytes]) -> Handler:
    """An HTTP proxy: records each request line it receives and forwards the bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        line = request.split(b"\r\n", 1)[0]
        used.append(line)
        target = line.split(b" ")[1]  # absolute form: http://host:port/path
        host, _, port = target.split(b"/")[2].partition(b":")
        up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
        up_writer.write(request)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(up_reader, writer), pipe(reader, up_writer))

    return handle


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_requests_go_through_the_environments_proxy(
    net: Loop, mode: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    used: list[bytes] = []
    upstream = net.serve(answering())
    monkeypatch.setenv(variable, f"http://127.0.0.1:{net.serve(forwarding_proxy(used))}")
    assert call(lm_for(upstream), mode) == ["ok"]
    assert used == [b"POST http://127.0.0.1:%d/v1/chat/completions HTTP/1.1" % upstream]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_no_proxy_hosts_are_reached_directly(
    net: Loop, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[bytes] = []
    seen: list[bytes] = []
    upstream = net.serve(answering(seen=seen))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{net.serve(forwarding_proxy(used))}")
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    assert call(lm_for(upstream), mode) == ["ok"]
    assert used == [] and len(seen) == 1


# -- one deadline per request -------------------------------------------------------------


def dripping(head_too: bool) -> Handler:
    """A server that sends its reply a byte every 0.1 s (8 s in all): each read returns in
    time, so only a deadline for the whole request ends it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b" " * 80
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        if not head_too:
            writer.write(head)
            head = b""
        for byte in head + body:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.close()

    return handle


@pytest.mark.parametrize("head_too", [False, True], ids=["body", "head"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dripping_server_cannot_outlast_the_timeout(net: Loop, mode: str, head_too: bool) -> None:
    port = net.serve(dripping(head_too))
    started = time.monotonic()
    with pytest.raises(LMTimeoutError, match="in time"):
        call(lm_for(port, timeout=1.0), mode)
    assert time.monotonic() - started < 2.0


def test_the_deadline_does_not_outlive_its_request(net: Loop) -> None:
    # A slow first request must not leave its deadline behind for the next one.
    port = net.serve(answering())
    lm = lm_for(port, timeout=0.5)
    assert call(lm, "sync") == ["ok"]
    time.sleep(0.6)
    assert call(lm, "sync") == ["ok"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_litellm_calls_end_by_the_timeout_too(
    net: Loop, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge.lm.litellm_backend import LiteLLMBackend, _litellm

    monkeypatch.delenv("LMFORGE_BLOCK_NETWORK")  # litellm's guard knows no loopback
    port = net.serve(dripping(head_too=False))
    backend = LiteLLMBackend(api_base=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=1.0)
    lm = lf.LM("hosted_vllm/m", backend=backend, cache=False, retry=NO_RETRY)
    _litellm()  # its import is not part of the call
    started = time.monotonic()
    with pytest.raises(LMTimeoutError, match=r"within 1\.0 s"):
        call(lm, mode)
    assert time.monotonic() - started < 2.0
