"""httpcore connection pools of the OpenAI-compatible backend: deadlines, size caps, proxies.

Sync calls, TLS endpoints and endpoints reached through a proxy go through these pools
(plain-``http://`` async calls use the cheaper stream pool of ``_http.py``). Three things
httpx's client does not do are done here:

* one wall-clock deadline per request: httpx's and httpcore's timeouts bound each socket
  read, so a server that drips a byte a second never times out. Sync pools get a network
  backend that caps every socket wait by what is left of the deadline of the request
  running on the calling thread; async requests run under ``asyncio.timeout``.
* a cap on the response body (``ResponseTooLargeError``), checked on the declared length
  and on the bytes received;
* the proxy the environment names (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/
  ``NO_PROXY``, lowercase too), read with ``urllib.request``'s semantics when a pool is
  made, as httpx reads them when a client is made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ._http import HTTPResponse, ResponseTooLargeError, ssl_context, without_userinfo

__all__ = ["DeadlineBackend", "apost", "new_pool", "post", "proxy_for"]


def proxy_for(url: str) -> str | None:
    """The proxy URL the environment names for ``url``, or ``None`` for a direct connection."""
    import urllib.request

    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"  # "host:3128" means an HTTP proxy


class _Deadlines(threading.local):
    """The deadline (a ``time.monotonic()`` value) of the request running on this thread."""

    until: float | None = None


def _cap(deadlines: _Deadlines, timeout: float | None) -> float | None:
    """``timeout`` shortened to what is left of the current request's deadline."""
    until = deadlines.until
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        import httpcore

        raise httpcore.ReadTimeout("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """A network stream whose every wait ends by the deadline of the current request."""

    def __init__(self, stream: Any, deadlines: _Deadlines) -> None:
        self._stream = stream
        self._deadlines = deadlines

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _cap(self._deadlines, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _cap(self._deadlines, timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        timeout = _cap(self._deadlines, timeout)
        stream = self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _DeadlineStream(stream, self._deadlines)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend:
    """httpcore's sync network backend, with waits capped by a per-thread deadline."""

    def __init__(self) -> None:
        import httpcore

        self._backend = httpcore.SyncBackend()
        self.deadlines = _Deadlines()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _DeadlineStream:
        timeout = _cap(self.deadlines, timeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self.deadlines)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> _DeadlineStream:
        stream = self._backend.connect_unix_socket(path, timeout, socket_options)
        return _DeadlineStream(stream, self.deadlines)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def new_pool(url: str, *, max_connections: int, backend: DeadlineBackend | None) -> Any:
    """An httpcore pool for ``url``'s host: sync with ``backend``, async without one."""
    import httpcore

    proxy = proxy_for(url)
    tls = url.startswith("https:") or (proxy or "").startswith("https:")
    options: dict[str, Any] = {
        "ssl_context": ssl_context() if tls else None,
        "max_connections": max_connections,
        "max_keepalive_connections": max_connections,
    }
    if backend is not None:
        options["network_backend"] = backend
    if proxy is None:
        return (httpcore.ConnectionPool if backend else httpcore.AsyncConnectionPool)(**options)
    parts = urlsplit(proxy)
    if parts.username is not None:
        from urllib.parse import unquote

        options["proxy_auth"] = (unquote(parts.username), unquote(parts.password or ""))
    kind: Any
    if parts.scheme.startswith("socks5"):
        kind = httpcore.SOCKSProxy if backend else httpcore.AsyncSOCKSProxy
    else:
        kind = httpcore.HTTPProxy if backend else httpcore.AsyncHTTPProxy
    return kind(proxy_url=without_userinfo(proxy), **options)


def _timeouts(timeout: float | None) -> dict[str, Any]:
    return {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}


def _head(response: Any, limit: int) -> tuple[int, dict[str, str]]:
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers
    }
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLargeError(limit)
    return response.status, headers


def post(
    pool: Any,
    backend: DeadlineBackend,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    timeout: float | None,
    limit: int,
) -> HTTPResponse:
    """``POST`` on a sync pool, all of it within ``timeout`` seconds, at most ``limit``
    bytes of body; raises httpcore's errors and ``ResponseTooLargeError``."""
    deadlines = backend.deadlines
    deadlines.until = None if timeout is None else time.monotonic() + timeout
    try:
        with pool.stream(
            "POST", url, headers=headers, content=body, extensions=_timeouts(timeout)
        ) as response:
            status, head = _head(response, limit)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_stream():
                size += len(chunk)
                if size > limit:
                    raise ResponseTooLargeError(limit)
                chunks.append(chunk)
    finally:
        deadlines.until = None
    return HTTPResponse(status, head, b"".join(chunks))


async def apost(
    pool: Any,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    timeout: float | None,
    limit: int,
) -> HTTPResponse:
    """``POST`` on an async pool, all of it within ``timeout`` seconds, at most ``limit``
    bytes of body; raises ``TimeoutError``, httpcore's errors and ``ResponseTooLargeError``."""
    import asyncio

    async with asyncio.timeout(timeout):
        async with pool.stream(
            "POST", url, headers=headers, content=body, extensions=_timeouts(timeout)
        ) as response:
            status, head = _head(response, limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_stream():
                size += len(chunk)
                if size > limit:
                    raise ResponseTooLargeError(limit)
                chunks.append(chunk)
    return HTTPResponse(status, head, b"".join(chunks))
