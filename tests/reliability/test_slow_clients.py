"""Slow and idle clients: connections that never finish their request headers are closed
within the header timeout, the server caps its open connections, and normal requests are
answered meanwhile (served with the uvicorn settings of ``lmforge serve``)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import lmforge as lf
import pytest

from ._support import chat_reply, record, serve_in_thread

pytestmark = pytest.mark.reliability

KEY = "slow-clients-key-0123456789"
PARTIAL = b"POST /v1/programs/route HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"


@contextlib.contextmanager
def _served(**limits: Any) -> Iterator[tuple[str, int]]:
    pytest.importorskip("fastapi")
    from lmforge.targets import ServerConfig, create_app
    from lmforge.testing import FunctionLM

    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'technical', 'shipping']")
    lm = FunctionLM(lambda request: chat_reply(request.as_text()))
    program = lf.Predict(sig, lm=lm, adapter=lf.ChatAdapter())
    config = ServerConfig(name="route", api_keys=(KEY,), **limits)
    with serve_in_thread(create_app(program, config), config) as url:
        port = urlsplit(url).port
        assert port is not None
        yield url, port


def _call(url: str) -> Any:
    import httpx

    return httpx.post(
        f"{url}/v1/programs/route",
        json={"ticket": "my parcel is late"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``sock`` before ``deadline`` (reads what it may send)."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def test_partial_header_connections_are_closed_within_the_header_timeout() -> None:
    timeout = 1.0
    with _served(header_timeout_s=timeout) as (url, port):
        opened = time.monotonic()
        slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        try:
            for sock in slow:
                sock.sendall(PARTIAL)
            # One more trickles a header byte every 0.2 s: bytes arriving do not extend it.
            trickler = socket.create_connection(("127.0.0.1", port), timeout=5)
            slow.append(trickler)
            trickler.sendall(PARTIAL)
            for _ in range(int(timeout / 0.2) + 5):  # bounded: past the timeout, then stop
                time.sleep(0.2)
                try:
                    trickler.sendall(b"X")
                except OSError:
                    break
            answered = _call(url)  # a normal request is served while they hang
            deadline = opened + timeout + 3.0
            closed = sum(_closed_by_server(sock, deadline) for sock in slow)
            elapsed = time.monotonic() - opened
        finally:
            for sock in slow:
                sock.close()
        after = _call(url)
    record(
        "test_partial_header_connections_are_closed_within_the_header_timeout",
        connections=len(slow),
        closed=closed,
        seconds=round(elapsed, 2),
    )
    assert closed == len(slow) == 51, f"{closed} of {len(slow)} closed in {elapsed:.1f} s"
    assert elapsed < timeout + 3.0
    assert answered.status_code == 200 and answered.json() == {"team": "shipping"}
    assert after.status_code == 200


def test_connections_past_the_cap_are_answered_503_and_closed() -> None:
    with _served(max_connections=20, header_timeout_s=30.0) as (url, port):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        try:
            time.sleep(0.2)  # let the server accept them all
            extra = socket.create_connection(("127.0.0.1", port), timeout=5)
            with extra:
                extra.settimeout(5)
                refused = extra.recv(4096)
                assert _closed_by_server(extra, time.monotonic() + 5)
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)  # the server sees them go
        answered = _call(url)
    assert refused.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in refused
    assert answered.status_code == 200


def test_oversized_request_headers_are_answered_431() -> None:
    with _served() as (_, port), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PARTIAL)
        try:
            for _ in range(80):  # 80 KiB of headers, never finished; bounded
                sock.sendall(b"X-Filler: " + b"a" * 1012 + b"\r\n")
        except ConnectionError:
            pass  # the server answered and closed while we were still sending
        sock.settimeout(5)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"headers_too_large" in answer
