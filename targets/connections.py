"""The program server's uvicorn settings: connection cap, header-read timeout, one-line logs.

uvicorn (0.55) closes a keep-alive connection that stays idle between requests, but not
one whose request headers never finish: a slow-loris client holds every connection it
opens for as long as it likes. :func:`protocol_class` wraps uvicorn's HTTP protocol so
that

- a request's headers must be complete within ``header_timeout_s`` of the connection
  opening (or of the first byte of a later request on it), else the connection is closed;
- they may take at most :data:`MAX_HEAD_BYTES` (431 above it);
- a connection opened while ``max_connections`` are open is answered 503 and closed.

uvicorn's own ``limit_concurrency`` is not used for the cap: it counts idle connections
too and then answers 503 to every request, those on healthy connections included, so a
flood of idle connections would shut everybody out until they time out.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any

from .config import ServerConfig
from .guard import error_body
from .logsafe import log_config

__all__ = ["MAX_HEAD_BYTES", "protocol_class", "uvicorn_config"]

# A request line and headers larger than this answer 431 (h11 enforces the same size).
MAX_HEAD_BYTES = 64 * 1024


class _ConnectionGuard:
    """Mixin over uvicorn's HTTP protocol class; see the module docstring."""

    header_timeout_s: float = 10.0
    max_connections: int = 512
    _header_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    # Set by uvicorn's protocol classes.
    connections: set[Any]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:
            self._refuse(
                503,
                "too_many_connections",
                f"the server holds its limit of {self.max_connections} open connections; "
                "retry shortly",
            )
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not None and not self.cycle.response_complete:
            # The request's headers are in: from here the app's own limits apply.
            self._disarm()
            self._head_bytes = 0
        elif not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(
                    431,
                    "headers_too_large",
                    f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes",
                )
            elif self._header_timer is None:
                self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: int, kind: str, message: str) -> None:
        self._disarm()
        body = error_body(kind, message, "-")
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


def protocol_class(config: ServerConfig) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with ``config``'s
    header-read timeout and connection cap."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    settings = {
        "header_timeout_s": config.header_timeout_s,
        "max_connections": config.max_connections,
    }
    return type("GuardedHTTPProtocol", (_ConnectionGuard, AutoHTTPProtocol), settings)


def uvicorn_config(app: Any, config: ServerConfig, *, host: str, port: int, **options: Any) -> Any:
    """A ``uvicorn.Config`` serving ``app`` with ``config``'s connection limits and
    one-line logs; ``options`` go to ``uvicorn.Config`` as they are."""
    import uvicorn

    settings: dict[str, Any] = {
        "http": protocol_class(config),
        "timeout_keep_alive": config.keep_alive_timeout_s,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "log_config": log_config(),
        "access_log": False,  # the gate writes one access line per request
        "server_header": False,
        **options,
    }
    return uvicorn.Config(app, host=host, port=port, **settings)
