"""The server's gate, as plain ASGI middleware (cheap on the hot path).

For every HTTP request it assigns a request id (``X-Request-ID``), enforces the body size
limit (413), checks the bearer key with a constant-time compare (401) on every route but
``/health``, and applies the per-key rate limit (429 with ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import ServerConfig
from .logsafe import escape_controls

__all__ = ["Gate", "TokenBuckets", "error_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Only liveness is open: /ready names backend URLs and environment variables, and runs
# the backend checks (the k8s readiness probe sends a key, see k8s/program.yaml.j2).
_OPEN_PATHS = frozenset({"/health"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_log = logging.getLogger("lmforge.server")


def error_body(kind: str, message: str, request_id: str) -> bytes:
    """The structured error document every failure answers with."""
    return json.dumps(
        {"error": {"type": kind, "message": message, "request_id": request_id}}
    ).encode()


class TokenBuckets:
    """Per-client token buckets: ``rate`` tokens per second, ``burst`` at most."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_clients

    def take(self, client: str, now: float | None = None, cost: float = 1.0) -> float:
        """Take ``cost`` tokens, all or none; returns 0 when allowed, else the seconds
        until that many are available (never, when ``cost`` is above the burst)."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


class Gate:
    """ASGI middleware in front of the FastAPI app (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        config: ServerConfig,
        on_reject: Callable[[str], None] | None = None,
        buckets: TokenBuckets | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self._keys = [(k.encode(), _key_id(k)) for k in config.api_keys]
        self.buckets = buckets or TokenBuckets(
            config.rate_limit_per_minute, config.rate_limit_burst
        )
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status_holder = [500]
        rid = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        path = scope.get("path", "")
        client = "anonymous"
        try:
            rejection = self._check(scope, headers, path)
            if isinstance(rejection, tuple):
                await self._reject(send_with_id, request_id, *rejection)
                return
            client = rejection
            state["client"] = client
            if "content-length" not in headers and scope.get("method") in ("POST", "PUT", "PATCH"):
                body = await self._read_bounded(receive)
                if body is None:
                    await self._reject(send_with_id, request_id, *self._too_large())
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        finally:
            if _log.isEnabledFor(logging.INFO):
                _log_access(scope, path, status_holder[0], started, client, request_id)

    def _check(self, scope: Scope, headers: dict[str, str], path: str) -> str | tuple[Any, ...]:
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            return self._too_large()
        if path in _OPEN_PATHS:
            return "anonymous"
        if self.config.insecure_no_auth:
            peer = scope.get("client")
            client = f"ip:{peer[0]}" if peer else "anonymous"
        else:
            client_id = self._authenticate(headers.get("authorization", ""))
            if client_id is None:
                return (
                    401,
                    "unauthorized",
                    "missing or invalid API key; send 'Authorization: Bearer <key>'",
                    [(b"www-authenticate", b"Bearer")],
                )
            client = client_id
        wait = self.buckets.take(client)
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            return (
                429,
                "rate_limited",
                f"rate limit of {self.config.rate_limit_per_minute:g} requests/minute exceeded; "
                f"retry after {retry.decode()} s",
                [(b"retry-after", retry)],
            )
        return client

    def _too_large(self) -> tuple[Any, ...]:
        return (
            413,
            "body_too_large",
            f"request body is larger than the limit of {self.config.max_body_bytes} bytes",
            [],
        )

    def _authenticate(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        given = token.strip().encode()
        found: str | None = None
        for key, key_id in self._keys:  # compare against every key: no early exit
            if hmac.compare_digest(given, key):
                found = key_id
        return found

    async def _read_bounded(self, receive: Receive) -> bytes | None:
        """Read a body sent without Content-Length; None when it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _reject(
        self,
        send: Send,
        request_id: str,
        status: int,
        kind: str,
        message: str,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        if self.on_reject is not None:
            self.on_reject(kind)
        body = error_body(kind, message, request_id)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _log_access(
    scope: Scope, path: str, status: int, started: float, client: str, request_id: str
) -> None:
    # The path arrives percent-decoded: escaped, a "%0a" in it cannot forge a line.
    _log.info(
        "%s %s %d %.1fms client=%s request_id=%s",
        escape_controls(str(scope.get("method"))),
        escape_controls(path),
        status,
        (time.perf_counter() - started) * 1000,
        client,
        request_id,
    )


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _replay(body: bytes, upstream: Receive) -> Receive:
    """Hand the buffered body to the app once, then pass on the client's later messages."""
    sent = [False]

    async def receive() -> Message:
        if sent[0]:
            return await upstream()
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _key_id(key: str) -> str:
    """A non-secret identifier of a key (for rate limits and logs)."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]
