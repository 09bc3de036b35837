"""Connection pools of the OpenAI-compatible backend.

``HTTPStreamPool`` is a minimal keep-alive HTTP/1.1 client on asyncio streams, used for
async calls to plain-``http://`` endpoints (a vLLM or llama.cpp server on the same host or
network), where client CPU per request caps batch throughput: a request costs about a
tenth of the CPU it costs through httpx's async stack. It speaks just what those servers
need: ``POST`` with a JSON body, responses framed by ``Content-Length``, chunked encoding or
connection close, of at most a given size.

``ClientShards`` spreads requests over several small connection pools (sync calls, TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "SHARD_CONNECTIONS",
    "ClientShards",
    "HTTPResponse",
    "HTTPStreamPool",
    "ProtocolError",
    "ResponseTooLargeError",
    "host_header",
    "ssl_context",
    "without_userinfo",
]

# httpcore's pool scans every connection of a client (with a socket check for each idle
# one) on every request event, so one client with many connections spends O(connections)
# CPU per request. Small clients, least busy first, keep that cost flat under concurrency.
SHARD_CONNECTIONS = 8

_MAX_HEADER_BYTES = 64 * 1024


class ProtocolError(ConnectionError):
    """The server's reply is not valid HTTP/1.1."""


class ResponseTooLargeError(Exception):
    """The response body is larger than the client accepts (``limit`` bytes)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response body is over {limit} bytes")
        self.limit = limit


class _NoResponseError(ConnectionError):
    """The connection failed before any byte of the response arrived."""


class HTTPResponse:
    """Status, lower-cased headers and body of one response."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HTTPStreamPool:
    """Keep-alive connections to one ``host:port``, at most ``max_connections`` at once.

    Belongs to one event loop. A request on a reused connection that the server had closed
    while it sat idle is sent again once on a fresh connection. A response body over
    ``max_body`` bytes raises ``ResponseTooLargeError``.
    """

    def __init__(self, host: str, port: int, *, max_connections: int, max_body: int) -> None:
        self._host = host
        self._port = port
        self._host_header = host_header(host, port, default_port=80).encode()
        self._max_body = max_body
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def post(
        self, path: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> HTTPResponse:
        """Send ``POST path`` with ``body``; raises ``TimeoutError``, ``OSError`` subclasses."""
        head = [b"POST ", path.encode(), b" HTTP/1.1\r\nHost: ", self._host_header, b"\r\n"]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n".encode())
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        message = b"".join(head) + body
        async with self._slots:
            async with asyncio.timeout(timeout):
                while True:
                    connection, reused = await self._connection()
                    try:
                        response, keep = await _exchange(connection, message, self._max_body)
                    except _NoResponseError as exc:
                        _close(connection)
                        if reused:
                            continue  # the server closed it while it sat idle: use a fresh one
                        raise ConnectionResetError(str(exc.__cause__ or exc)) from exc
                    except BaseException:
                        _close(connection)
                        raise
                    if keep:
                        self._idle.append(connection)
                    else:
                        _close(connection)
                    return response

    async def _connection(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if connection[0].at_eof() or connection[1].is_closing():
                _close(connection)
                continue
            return connection, True
        reader, writer = await asyncio.open_connection(
            self._host, self._port, limit=_MAX_HEADER_BYTES
        )
        return (reader, writer), False

    def close(self) -> None:
        while self._idle:
            _close(self._idle.pop())


async def _exchange(
    connection: _Connection, message: bytes, limit: int
) -> tuple[HTTPResponse, bool]:
    reader, writer = connection
    try:
        writer.write(message)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError("response headers too large") from None
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError(
                "the connection closed in the middle of the response headers"
            ) from exc
        raise _NoResponseError("the server closed the connection") from exc
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
        raise _NoResponseError(str(exc)) from exc
    version, status, lines = _status(head)
    while 100 <= status < 200:  # interim responses (e.g. 100 Continue) precede the real one
        if status == 101:
            raise ProtocolError("the server switched protocols")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError("response headers too large") from None
        version, status, lines = _status(head)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    connection_header = headers.get("connection", "").lower()
    keep = (
        "close" not in connection_header
        if version == "HTTP/1.1"
        else "keep-alive" in connection_header
    )
    if "chunked" in headers.get("transfer-encoding", "").lower():
        content = await _read_chunked(reader, limit)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ProtocolError("invalid Content-Length") from None
        if length > limit:
            raise ResponseTooLargeError(limit)
        content = await reader.readexactly(length)
    elif status in (204, 304):
        content = b""
    else:
        content = await _read_to_close(reader, limit)
        keep = False
    return HTTPResponse(status, headers, content), keep


def _status(head: bytes) -> tuple[str, int, list[str]]:
    """The HTTP version, status code and header lines of a response head."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    return parts[0], int(parts[1]), lines


async def _read_to_close(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await reader.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            chunk_size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError("invalid chunk size") from None
        if chunk_size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        size += chunk_size
        if size > limit:
            raise ResponseTooLargeError(limit)
        chunks.append(await reader.readexactly(chunk_size))
        await reader.readexactly(2)


def _close(connection: _Connection) -> None:
    with contextlib.suppress(Exception):
        connection[1].close()


class ClientShards:
    """Several small connection pools; each request goes to the least busy one."""

    def __init__(self, make: Callable[[], Any], count: int) -> None:
        self._make = make
        self._clients: list[Any] = [None] * count
        self._busy = [0] * count
        self._lock = threading.Lock()

    def acquire(self) -> tuple[int, Any]:
        with self._lock:
            busy = self._busy
            index = busy.index(min(busy))
            busy[index] += 1
            client = self._clients[index]
            if client is None:
                client = self._clients[index] = self._make()
        return index, client

    def release(self, index: int) -> None:
        with self._lock:
            self._busy[index] -= 1

    def close(self) -> None:
        for client in self._clients:
            if client is not None:
                client.close()


@functools.lru_cache(maxsize=1)
def ssl_context() -> Any:
    """One TLS context for every client (building one costs ~0.1 s)."""
    import httpx

    return httpx.create_ssl_context()


def host_header(host: str, port: int | None, *, default_port: int) -> str:
    """The ``Host`` header for ``host`` and ``port``: IPv6 addresses in brackets, the
    scheme's default port left out, never any ``user:password@`` part."""
    if ":" in host:
        host = f"[{host}]"
    return host if port is None or port == default_port else f"{host}:{port}"


def without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part (for messages, artifacts and bundles)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
