"""A lean backend for OpenAI-compatible HTTP servers.

Speaks ``/chat/completions`` and ``/completions`` to vLLM (``hosted_vllm/...`` with
``api_base``), llama.cpp's server, OpenAI and compatible hosts, for a fraction of the client
CPU litellm spends per request (which is what caps batch throughput at high concurrency).

Connections are pooled per backend and kept alive between calls, created on first use:
sync calls and TLS endpoints go through small ``httpx.Client`` / ``httpx.AsyncClient``
shards; async calls to plain-``http://`` servers (vLLM, llama.cpp on the same host or
network) through a keep-alive asyncio stream pool, about ten times cheaper per request
(see ``_http.py``). Async pools belong to one event loop each. The API key (``api_key=`` or
the provider's environment variable) is sent only in the ``Authorization`` header. HTTP and
transport errors are translated here, once, into lmforge's error tree.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import math
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._version import __version__
from ..errors import (
    AuthenticationError,
    ContextWindowError,
    LMError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
    UsageError,
)
from ._http import (
    SHARD_CONNECTIONS,
    ClientShards,
    HTTPStreamPool,
    ssl_context,
    without_userinfo,
)
from .types import LMRequest, LMResponse, Usage

if TYPE_CHECKING:
    import asyncio

__all__ = ["PROVIDERS", "OpenAIBackend", "error_from_status"]

# provider prefix -> (default api_base, environment variable holding its API key)
PROVIDERS: dict[str, tuple[str | None, str | None]] = {
    "openai/": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "hosted_vllm/": (None, "HOSTED_VLLM_API_KEY"),
}
# Request parameters handled by the client, never sent in the body.
_CLIENT_PARAMS = frozenset({"timeout", "num_retries", "api_base", "base_url", "api_key"})
_CONTEXT_WINDOW = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|too many tokens|prompt is too long|"
    r"exceeds? the (available )?context",
    re.I,
)


def _check_network(url: str) -> None:
    from ..testing import network_blocked

    if network_blocked() and not _is_loopback(url):
        raise UsageError(
            "real network LM calls are blocked here (lmforge.testing.block_network); use a fake LM "
            "or a server on 127.0.0.1"
        )


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIBackend:
    """Calls an OpenAI-compatible server over HTTP with pooled connections.

    Args:
        api_base: the server's base URL including its version path
            (``http://127.0.0.1:8000/v1``); defaults to the provider's public endpoint.
        api_key: the key to send; else the provider's environment variable (e.g.
            ``OPENAI_API_KEY``); none is sent when neither is set.
        timeout: seconds per request (``None``: no limit).
        max_connections: the most connections open at once (per event loop for async).
    """

    def __init__(
        self,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float | None = 120.0,
        max_connections: int = 256,
    ) -> None:
        self._api_base = api_base
        self._api_key = api_key
        self._timeout = timeout
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._pools: dict[str, ClientShards] = {}
        self._async_pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, ClientShards]
        ] = weakref.WeakKeyDictionary()
        self._stream_pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, HTTPStreamPool]
        ] = weakref.WeakKeyDictionary()
        self._resolved: dict[str, tuple[str, dict[str, str]]] = {}

    # -- the backend contract -----------------------------------------------------------

    def complete(self, request: LMRequest) -> LMResponse:
        url, kwargs = self._prepare(request)
        pool = self._pool(url, None)
        index, client = pool.acquire()
        try:
            response = client.post(url, **kwargs)
        except Exception as exc:
            raise _transport_error(exc, request.model, url) from exc
        finally:
            pool.release(index)
        return _to_response(response.status_code, response.headers, response.content, request, url)

    async def acomplete(self, request: LMRequest) -> LMResponse:
        import asyncio

        url, kwargs = self._prepare(request)
        loop = asyncio.get_running_loop()
        response: Any
        if url.startswith("http://"):
            streams, path = self._streams(url, loop)
            timeout = kwargs.get("timeout", self._timeout)
            try:
                response = await streams.post(path, kwargs["headers"], kwargs["content"], timeout)
            except Exception as exc:
                raise _transport_error(exc, request.model, url) from exc
            return _to_response(
                response.status_code, response.headers, response.content, request, url
            )
        pool = self._pool(url, loop)
        index, client = pool.acquire()
        try:
            response = await client.post(url, **kwargs)
        except Exception as exc:
            raise _transport_error(exc, request.model, url) from exc
        finally:
            pool.release(index)
        return _to_response(response.status_code, response.headers, response.content, request, url)

    def close(self) -> None:
        """Close the pooled sync connections (async clients close with their event loop)."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    # -- request building ---------------------------------------------------------------

    def _prepare(self, request: LMRequest) -> tuple[str, dict[str, Any]]:
        """The URL and ``post`` arguments for ``request``."""
        base, headers = self._endpoint(request.model)
        url = base + ("/chat/completions" if request.messages is not None else "/completions")
        _check_network(url)
        payload, timeout = wire_payload(request)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        kwargs: dict[str, Any] = {"content": body, "headers": headers}
        if timeout is not None:
            kwargs["timeout"] = timeout
        return url, kwargs

    def _endpoint(self, model: str) -> tuple[str, dict[str, str]]:
        resolved = self._resolved.get(model)
        if resolved is None:
            default_base, key_env = _provider(model)
            base = (self._api_base or default_base or "").rstrip("/")
            if not base:
                raise UsageError(
                    f"{model} needs the server's address: lf.LM({model!r}, api_base='http://host:8000/v1')"
                )
            for suffix in ("/chat/completions", "/completions"):
                if base.endswith(suffix):
                    base = base[: -len(suffix)]
            headers = {"Content-Type": "application/json", "User-Agent": f"lmforge/{__version__}"}
            key = self._api_key or (os.environ.get(key_env) if key_env else None)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            resolved = self._resolved[model] = (base, headers)
        return resolved

    # -- clients ------------------------------------------------------------------------

    def _streams(self, url: str, loop: asyncio.AbstractEventLoop) -> tuple[HTTPStreamPool, str]:
        """The keep-alive stream pool of ``loop`` for a plain-http ``url``, and its path."""
        parts = urlsplit(url)
        key = f"{parts.hostname}:{parts.port or 80}"
        pools = self._stream_pools.get(loop)
        pool = pools.get(key) if pools is not None else None
        if pool is None:
            with self._lock:
                pools = self._stream_pools.setdefault(loop, {})
                pool = pools.get(key)
                if pool is None:
                    pool = HTTPStreamPool(
                        parts.hostname or "localhost",
                        parts.port or 80,
                        max_connections=self._max_connections,
                        host_header=parts.netloc,
                    )
                    pools[key] = pool
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return pool, path

    def _pool(self, url: str, loop: asyncio.AbstractEventLoop | None) -> ClientShards:
        """The client shards for ``url``'s scheme: sync ones, or those of ``loop``."""
        scheme = url.split(":", 1)[0]
        pools = self._pools if loop is None else self._async_pools.get(loop)
        pool = pools.get(scheme) if pools is not None else None
        if pool is None:
            with self._lock:
                pools = self._pools if loop is None else self._async_pools.setdefault(loop, {})
                pool = pools.get(scheme)
                if pool is None:
                    pool = pools[scheme] = self._new_pool(scheme, is_async=loop is not None)
        return pool

    def _new_pool(self, scheme: str, *, is_async: bool) -> ClientShards:
        import httpx

        size = min(self._max_connections, SHARD_CONNECTIONS)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        verify: Any = ssl_context() if scheme == "https" else False
        kind = httpx.AsyncClient if is_async else httpx.Client

        def make() -> Any:
            return kind(timeout=self._timeout, limits=limits, verify=verify)

        return ClientShards(make, max(1, -(-self._max_connections // size)))

    def __repr__(self) -> str:
        return f"OpenAIBackend(api_base={self._api_base!r})"


def _provider(model: str) -> tuple[str | None, str | None]:
    for prefix, info in PROVIDERS.items():
        if model.startswith(prefix):
            return info
    return (None, None)


def wire_model(model: str) -> str:
    """The model name the server knows: the provider prefix (``openai/``...) removed."""
    for prefix in PROVIDERS:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def wire_payload(request: LMRequest) -> tuple[dict[str, Any], float | None]:
    """The JSON body for ``request`` and its per-request timeout, if it sets one."""
    payload: dict[str, Any] = {"model": wire_model(request.model)}
    timeout = None
    for key, value in request.params.items():
        if key in _CLIENT_PARAMS:
            if key == "timeout" and value is not None:
                timeout = float(value)
            continue
        if value is not None:
            payload[key] = list(value) if key == "stop" and isinstance(value, tuple) else value
    if request.messages is not None:
        payload["messages"] = list(request.messages)
    else:
        payload["prompt"] = request.prompt
    if request.response_format is not None:
        payload["response_format"] = request.response_format
    if request.tools:
        payload["tools"] = list(request.tools)
    return payload, timeout


# -- responses and errors ---------------------------------------------------------------


def _to_response(
    status: int, headers: Mapping[str, str], content: bytes, request: LMRequest, url: str
) -> LMResponse:
    if status >= 400:
        raise error_from_status(status, headers, content, request.model, url)
    try:
        return _parse_completion(json.loads(content), request)
    except (ValueError, KeyError, TypeError, AttributeError):
        # Anything off-shape (choices, usage, tool calls) is the server's fault, reported as
        # one ProviderError, never a bare AttributeError from deep in the parsing.
        raise ProviderError(
            f"{request.model}: {_host(url)} sent a malformed response: {content[:200]!r}",
            model=request.model,
            status_code=status,
            retryable=True,
        ) from None


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list (some servers)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "") if isinstance(part, dict) else str(part) for part in content
        )
    raise TypeError(f"message content is {type(content).__name__}, not text")


def _parse_completion(data: Any, request: LMRequest) -> LMResponse:
    """An LMResponse from a completion document; raises on a malformed one."""
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for choice in choices:
        message = choice.get("message")
        if isinstance(message, dict):
            texts.append(_content_text(message.get("content")))
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                tool_calls.append(
                    {
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments"),
                    }
                )
        else:
            texts.append(_content_text(choice.get("text")))
    usage = data.get("usage") or {}
    return LMResponse(
        texts=tuple(texts) or ("",),
        usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
        model=data.get("model") or request.model,
        finish_reason=choices[0].get("finish_reason") if choices else None,
        tool_calls=tuple(tool_calls) or None,
    )


def error_from_status(
    status: int, headers: Mapping[str, str], content: bytes, model: str, url: str = ""
) -> LMError:
    """The lmforge error for an HTTP error response (status >= 400)."""
    detail = _error_detail(content)
    where = f" from {_host(url)}" if url else ""
    message = f"{model}: HTTP {status}{where}: {detail}"
    common: dict[str, Any] = {"model": model, "status_code": status}
    if status == 429:
        return RateLimitError(
            message, retry_after=retry_after(headers.get("retry-after")), **common
        )
    if status in (401, 403):
        return AuthenticationError(message, **common)
    if status == 408:
        return LMTimeoutError(message, **common)
    if status in (400, 413, 422) and _CONTEXT_WINDOW.search(detail):
        return ContextWindowError(message, **common)
    if status >= 500:
        return ProviderError(
            message, retryable=True, retry_after=retry_after(headers.get("retry-after")), **common
        )
    return ProviderError(message, retryable=False, **common)


def _error_detail(content: bytes) -> str:
    text = content.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            text = str(error.get("message") or error.get("detail") or error)
        elif error is not None:
            text = str(error)
    text = " ".join(text.split())
    return text[:300] or "no error message"


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" and "inf" parse as floats; neither is a wait anyone can sleep for.
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _transport_error(exc: BaseException, model: str, url: str) -> LMError:
    """The lmforge error for a request that got no HTTP response."""
    if isinstance(exc, LMError):
        return exc
    name = type(exc).__name__
    timeouts: tuple[type[BaseException], ...] = (TimeoutError,)
    transport: tuple[type[BaseException], ...] = (OSError, EOFError)  # incl. IncompleteReadError
    httpx = sys.modules.get("httpx")
    if httpx is not None:
        timeouts += (httpx.TimeoutException,)
        transport += (httpx.TransportError,)
    if isinstance(exc, timeouts):
        return LMTimeoutError(f"{model}: no answer from {_host(url)} in time ({name})", model=model)
    if isinstance(exc, transport):
        detail = str(exc)[:200] or "connection failed"
        return ProviderError(
            f"{model}: cannot reach {_host(url)} ({name}: {detail})", model=model, retryable=True
        )
    return ProviderError(
        f"{model}: request to {_host(url)} failed ({name}: {str(exc)[:200]})", model=model
    )


def _host(url: str) -> str:
    """The host (and port) of ``url`` for messages: never its ``user:password@`` part."""
    netloc = urlsplit(without_userinfo(url)).netloc
    return netloc or (url.rpartition("@")[2] if "@" in url else url)
