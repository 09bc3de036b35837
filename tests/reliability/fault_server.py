"""A loopback-only, OpenAI-compatible fake LM server that injects faults.

It answers ``POST /v1/chat/completions`` and ``POST /v1/completions`` with text from a
``responder(prompt_text) -> str`` function after a fixed latency, and, at configurable
rates, injects: 429 with ``Retry-After``, 500, connection resets, responses slower than the
client's timeout, truncated answers and malformed bodies. Request counts are bounded, it
binds 127.0.0.1 only, and it stops by itself when its budget of requests is spent.

Run standalone: ``python tests/reliability/fault_server.py --port 8765 --fault-rate 0.2``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("rate_limit", "server_error", "reset", "slow", "truncated", "malformed")


@dataclass
class FaultPlan:
    """Fault rates (each a probability per request) and the server's bounds."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    reset: float = 0.0
    slow: float = 0.0
    truncated: float = 0.0
    malformed: float = 0.0
    latency: float = 0.0
    slow_seconds: float = 5.0
    retry_after: float = 0.05
    max_requests: int = 100_000
    seed: int = 0

    @classmethod
    def uniform(cls, total: float, **kwargs: Any) -> FaultPlan:
        """Spread a total fault rate evenly over every fault kind."""
        rates: dict[str, Any] = {name: total / len(FAULTS) for name in FAULTS}
        return cls(**rates, **kwargs)


@dataclass
class ServerStats:
    requests: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    ok: int = 0


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    return str(body.get("prompt", ""))


class FaultServer:
    """The server; use :meth:`running` to run it in a background thread."""

    def __init__(self, responder: Callable[[str], str], plan: FaultPlan | None = None) -> None:
        self.responder = responder
        self.plan = plan or FaultPlan()
        self.stats = ServerStats()
        self._random = random.Random(self.plan.seed)
        self._lock = threading.Lock()
        self.port = 0

    def _draw(self) -> str | None:
        with self._lock:
            roll = self._random.random()
        edge = 0.0
        for name in FAULTS:
            edge += getattr(self.plan, name)
            if roll < edge:
                return name
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                path, body = request
                keep_open = await self._respond(path, body, writer)
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # client went away, or the server is stopping
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(self, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        with self._lock:
            self.stats.requests += 1
            over = self.stats.requests > self.plan.max_requests
        if over:
            await _send(
                writer, 503, {"error": {"message": "request budget of the fault server spent"}}
            )
            return False
        if path == "/health":
            await _send(writer, 200, {"status": "ok"})
            return True
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            await _send(writer, 400, {"error": {"message": "body is not JSON"}})
            return True
        fault = self._draw()
        if fault:
            with self._lock:
                self.stats.faults[fault] += 1
        if fault == "rate_limit":
            await _send(
                writer,
                429,
                {"error": {"message": "rate limited"}},
                {"Retry-After": str(self.plan.retry_after)},
            )
            return True
        if fault == "server_error":
            await _send(writer, 500, {"error": {"message": "injected failure"}})
            return True
        if fault == "reset":
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                import socket
                import struct

                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return False
        await asyncio.sleep(self.plan.slow_seconds if fault == "slow" else self.plan.latency)
        text = self.responder(_prompt_text(payload))
        if fault == "truncated":
            text = text[: max(0, len(text) // 3)]
        if fault == "malformed":
            raw = b'{"choices": [{"message": {"content": '  # cut mid-document
            await _send_raw(writer, 200, raw)
            return True
        with self._lock:
            self.stats.ok += 1
        await _send(writer, 200, _completion_body(path, payload, text))
        return True

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultServer]:
        """Serve on 127.0.0.1 (a free port) in a daemon thread for the block's duration."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        server_box: dict[str, asyncio.base_events.Server] = {}

        async def start() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            server_box["server"] = server
            self.port = server.sockets[0].getsockname()[1]
            started.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(start())
            loop.run_forever()

        thread = threading.Thread(target=run, name="fault-server", daemon=True)
        thread.start()
        if not started.wait(10):
            raise RuntimeError("the fault server did not start")
        try:
            yield self
        finally:

            async def stop() -> None:
                server_box["server"].close()
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                loop.stop()

            asyncio.run_coroutine_threadsafe(stop(), loop)
            thread.join(5)
            loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _completion_body(path: str, payload: dict[str, Any], text: str) -> dict[str, Any]:
    words = len(text.split())
    usage = {
        "prompt_tokens": len(_prompt_text(payload).split()),
        "completion_tokens": words,
        "total_tokens": words + len(_prompt_text(payload).split()),
    }
    created = int(time.time())
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        return {
            "id": "cmpl-fault",
            "object": "text_completion",
            "created": created,
            "model": payload.get("model", "fake"),
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": usage,
        }
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": created,
        "model": payload.get("model", "fake"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    path = parts[1] if len(parts) > 1 else "/"
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip() or 0)
    body = await reader.readexactly(length) if length else b""
    return path, body


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    await _send_raw(writer, status, json.dumps(body).encode(), headers)


async def _send_raw(
    writer: asyncio.StreamWriter, status: int, data: bytes, headers: dict[str, str] | None = None
) -> None:
    reason = {
        200: "OK",
        400: "Bad Request",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Status")
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        "Connection: keep-alive",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--max-requests", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=300.0, help="stop after this long")
    args = parser.parse_args()
    server = FaultServer(
        lambda prompt: "ok",
        FaultPlan.uniform(args.fault_rate, latency=args.latency, max_requests=args.max_requests),
    )
    server.port = args.port
    with server.running():
        print(f"fault server on {server.base_url} for {args.seconds:.0f}s", flush=True)
        time.sleep(args.seconds)


if __name__ == "__main__":
    main()
