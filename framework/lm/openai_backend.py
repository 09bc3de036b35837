"""A lean backend for OpenAI-compatible HTTP servers.

Speaks ``/chat/completions`` and ``/completions`` to vLLM (``hosted_vllm/...`` with
``api_base``), llama.cpp's server, OpenAI and compatible hosts, for a fraction of the client
CPU litellm spends per request (which is what caps batch throughput at high concurrency).

Connections are pooled per backend and kept alive between calls, created on first use:
sync calls, TLS endpoints and proxied ones go through small httpcore pool shards
(``_transport.py``); async calls to plain-``http://`` servers (vLLM, llama.cpp on the same
host or network) through a keep-alive asyncio stream pool, about ten times cheaper per
request (``_http.py``). Async pools belong to one event loop each. Every request ends by
one wall-clock deadline (``timeout``), its response body is capped (``max_response_bytes``)
and the environment's proxy settings are honoured. The API key (``api_key=`` or the
provider's environment variable) is sent only in the ``Authorization`` header. HTTP and
transport errors are translated here, once, into lmforge's error tree, with every
credential redacted from their text.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .._version import __version__
from ..errors import (
    LMError,
    ProviderError,
    UsageError,
)
from ._http import (
    SHARD_CONNECTIONS,
    ClientShards,
    HTTPResponse,
    HTTPStreamPool,
    ResponseTooLargeError,
    without_userinfo,
)
from ._transport import DeadlineBackend, apost, new_pool, post, proxy_for
from .http_errors import ERROR_TEXT_BYTES, error_from_status, host, retry_after, transport_error
from .redaction import redact, safe_cause
from .score_call import ContinuationScores
from .types import LMRequest, LMResponse, Usage

if TYPE_CHECKING:
    import asyncio

__all__ = ["PROVIDERS", "OpenAIBackend", "error_from_status", "retry_after"]

# provider prefix -> (default api_base, environment variable holding its API key)
PROVIDERS: dict[str, tuple[str | None, str | None]] = {
    "openai/": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "hosted_vllm/": (None, "HOSTED_VLLM_API_KEY"),
}
# The largest response body accepted unless LMFORGE_MAX_RESPONSE_BYTES says otherwise: far
# above any completion, low enough that a misbehaving server cannot exhaust memory.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_RESPONSE_ENV = "LMFORGE_MAX_RESPONSE_BYTES"
# Statuses that say nothing about whether a server can score (it may next time).
_TRANSIENT_STATUS = frozenset({401, 403, 408, 409, 429, 502, 503, 504})
# Request parameters handled by the client, never sent in the body.
_CLIENT_PARAMS = frozenset({"timeout", "num_retries", "api_base", "base_url", "api_key"})


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
        timeout: seconds per request, all of it: connecting, sending and receiving
            (``None``: no limit).
        max_connections: the most connections open at once (per event loop for async).
        max_response_bytes: the largest response body accepted; default
            ``$LMFORGE_MAX_RESPONSE_BYTES``, else 32 MiB.
    """

    def __init__(
        self,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float | None = 120.0,
        max_connections: int = 256,
        max_response_bytes: int | None = None,
    ) -> None:
        self._api_base = api_base
        self._api_key = api_key
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_response_bytes = _response_limit(max_response_bytes)
        # Credentials to take out of error text (the key from the environment is found there).
        self._secrets = (api_key, urlsplit(api_base).password if api_base else None)
        self._lock = threading.RLock()  # a new pool may make the deadline backend
        self._sync_backend: DeadlineBackend | None = None
        self._pools: dict[str, ClientShards] = {}
        self._async_pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, ClientShards]
        ] = weakref.WeakKeyDictionary()
        self._stream_pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, HTTPStreamPool | None]
        ] = weakref.WeakKeyDictionary()
        self._resolved: dict[str, tuple[str, dict[str, str]]] = {}
        # Models whose server refused a scoring request (no echo or prompt logprobs, as
        # llama.cpp's servers): their closed outputs are generated from then on.
        self._unscorable: set[str] = set()

    # -- the backend contract -----------------------------------------------------------

    def complete(self, request: LMRequest) -> LMResponse:
        url, headers, body, timeout = self._prepare(request)
        return self._to_response(
            self._post(request.model, url, headers, body, timeout), request, url
        )

    async def acomplete(self, request: LMRequest) -> LMResponse:
        url, headers, body, timeout = self._prepare(request)
        response = await self._apost(request.model, url, headers, body, timeout)
        return self._to_response(response, request, url)

    # -- scoring (lmforge.lm.types.ScoringBackend) ----------------------------------------

    def can_score(self, request: LMRequest) -> bool:
        """Text prompts to self-hosted servers (vLLM and compatible ``/completions`` with
        ``echo``); chat requests, and OpenAI's own endpoint, cannot be scored."""
        if request.prompt is None or request.tools or request.model in self._unscorable:
            return False
        base, _ = self._endpoint(request.model)
        return urlsplit(base).hostname != "api.openai.com"

    def score(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores:
        """Each continuation's log-probability after the prompt, from one echoed
        ``/completions`` request holding every prompt-plus-continuation."""
        url, headers, body, timeout = self._prepare_scoring(request, continuations)
        response = self._post(request.model, url, headers, body, timeout)
        return self._to_scores(response, request, url, continuations)

    async def ascore(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores:
        """Async :meth:`score`."""
        url, headers, body, timeout = self._prepare_scoring(request, continuations)
        response = await self._apost(request.model, url, headers, body, timeout)
        return self._to_scores(response, request, url, continuations)

    def _prepare_scoring(
        self, request: LMRequest, continuations: Sequence[str]
    ) -> tuple[str, dict[str, str], bytes, float | None]:
        from .openai_scoring import scoring_payload

        if not self.can_score(request):
            raise UsageError(
                f"{request.model}: only text prompts to self-hosted servers are scored"
            )
        base, headers = self._endpoint(request.model)
        url = base + "/completions"
        _check_network(url)
        payload, timeout = wire_payload(request)
        body = json.dumps(
            scoring_payload(payload, continuations), ensure_ascii=False, separators=(",", ":")
        ).encode()
        return url, headers, body, self._timeout if timeout is None else timeout

    def _to_scores(
        self, response: HTTPResponse, request: LMRequest, url: str, continuations: Sequence[str]
    ) -> ContinuationScores:
        from .openai_scoring import parse_scores

        status, content = response.status_code, response.content
        if status >= 400:
            if status not in _TRANSIENT_STATUS:
                self._unscorable.add(request.model)
            raise error_from_status(
                status, response.headers, content, request.model, url, secrets=self._secrets
            )
        try:
            data = json.loads(content)
            scores = parse_scores(data, request.prompt or "", continuations)
            return ContinuationScores(tuple(scores), _usage(data))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            self._unscorable.add(request.model)
            shown = redact(repr(content[:ERROR_TEXT_BYTES]), self._secrets)[:200]
            raise ProviderError(
                f"{request.model}: {host(url)} sent no usable prompt log-probabilities (does it "
                f"support echo with logprobs?): {shown}",
                model=request.model,
                status_code=status,
            ) from None

    # -- transport ------------------------------------------------------------------------

    def _post(
        self, model: str, url: str, headers: dict[str, str], body: bytes, timeout: float | None
    ) -> HTTPResponse:
        pool = self._pool(url, None)
        index, client = pool.acquire()
        try:
            response = post(
                client,
                self._deadline_backend(),
                url,
                headers,
                body,
                timeout=timeout,
                limit=self._max_response_bytes,
            )
        except Exception as exc:
            raise self._transport_error(exc, model, url) from safe_cause(exc, self._secrets)
        finally:
            pool.release(index)
        return response

    async def _apost(
        self, model: str, url: str, headers: dict[str, str], body: bytes, timeout: float | None
    ) -> HTTPResponse:
        import asyncio

        loop = asyncio.get_running_loop()
        response: HTTPResponse
        streams = self._streams(url, loop) if url.startswith("http://") else None
        try:
            if streams is not None:
                response = await streams[0].post(streams[1], headers, body, timeout)
            else:
                pool = self._pool(url, loop)
                index, client = pool.acquire()
                try:
                    response = await apost(
                        client, url, headers, body, timeout=timeout, limit=self._max_response_bytes
                    )
                finally:
                    pool.release(index)
        except Exception as exc:
            raise self._transport_error(exc, model, url) from safe_cause(exc, self._secrets)
        return response

    def close(self) -> None:
        """Close the pooled sync connections (async clients close with their event loop)."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    # -- request building ---------------------------------------------------------------

    def _prepare(self, request: LMRequest) -> tuple[str, dict[str, str], bytes, float | None]:
        """The URL, headers, body and timeout of ``request``."""
        base, headers = self._endpoint(request.model)
        url = base + ("/chat/completions" if request.messages is not None else "/completions")
        _check_network(url)
        payload, timeout = wire_payload(request)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return url, headers, body, self._timeout if timeout is None else timeout

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
            parts = urlsplit(base)
            if parts.username is not None:
                # user:password@ in api_base is HTTP Basic auth (as httpx and curl read it),
                # sent in its header only: never in the request line or Host.
                base = without_userinfo(base)
                if not key:
                    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            resolved = self._resolved[model] = (base, headers)
        return resolved

    # -- clients ------------------------------------------------------------------------

    def _streams(
        self, url: str, loop: asyncio.AbstractEventLoop
    ) -> tuple[HTTPStreamPool, str] | None:
        """The keep-alive stream pool of ``loop`` for a plain-http ``url``, and its path;
        ``None`` when the environment sends ``url`` through a proxy."""
        parts = urlsplit(url)
        key = f"{parts.hostname}:{parts.port or 80}"
        pools = self._stream_pools.get(loop)
        if pools is None or key not in pools:
            with self._lock:
                pools = self._stream_pools.setdefault(loop, {})
                if key not in pools:
                    # Decided once per pool, as httpx reads proxies once per client.
                    pools[key] = (
                        None
                        if proxy_for(url)
                        else HTTPStreamPool(
                            parts.hostname or "localhost",
                            parts.port or 80,
                            max_connections=self._max_connections,
                            max_body=self._max_response_bytes,
                        )
                    )
        pool = pools[key]
        if pool is None:
            return None
        return pool, parts.path + (f"?{parts.query}" if parts.query else "")

    def _pool(self, url: str, loop: asyncio.AbstractEventLoop | None) -> ClientShards:
        """The pool shards for ``url``'s origin: sync ones, or those of ``loop``."""
        origin = url[: url.find("/", url.find("//") + 2)]
        pools = self._pools if loop is None else self._async_pools.get(loop)
        pool = pools.get(origin) if pools is not None else None
        if pool is None:
            with self._lock:
                pools = self._pools if loop is None else self._async_pools.setdefault(loop, {})
                pool = pools.get(origin)
                if pool is None:
                    pool = pools[origin] = self._new_pool(url, is_async=loop is not None)
        return pool

    def _deadline_backend(self) -> DeadlineBackend:
        backend = self._sync_backend
        if backend is None:
            with self._lock:
                if self._sync_backend is None:
                    self._sync_backend = DeadlineBackend()
                backend = self._sync_backend
        return backend

    def _new_pool(self, url: str, *, is_async: bool) -> ClientShards:
        size = min(self._max_connections, SHARD_CONNECTIONS)
        backend = None if is_async else self._deadline_backend()

        def make() -> Any:
            return new_pool(url, max_connections=size, backend=backend)

        return ClientShards(make, max(1, -(-self._max_connections // size)))

    # -- errors -------------------------------------------------------------------------

    def _to_response(self, response: HTTPResponse, request: LMRequest, url: str) -> LMResponse:
        status, content = response.status_code, response.content
        if status >= 400:
            raise error_from_status(
                status, response.headers, content, request.model, url, secrets=self._secrets
            )
        try:
            return _parse_completion(json.loads(content), request)
        except (ValueError, KeyError, TypeError, AttributeError):
            # Anything off-shape (choices, usage, tool calls) is the server's fault, reported
            # as one ProviderError, never a bare AttributeError from deep in the parsing.
            shown = redact(repr(content[:ERROR_TEXT_BYTES]), self._secrets)[:200]
            raise ProviderError(
                f"{request.model}: {host(url)} sent a malformed response: {shown}",
                model=request.model,
                status_code=status,
                retryable=True,
            ) from None

    def _transport_error(self, exc: BaseException, model: str, url: str) -> LMError:
        """The lmforge error for a request that got no (acceptable) HTTP response."""
        if isinstance(exc, ResponseTooLargeError):
            return ProviderError(
                f"{model}: the response from {host(url)} is over the {exc.limit}-byte limit; "
                f"raise it with {MAX_RESPONSE_ENV}=<bytes> in the environment",
                model=model,
                retryable=False,
            )
        return transport_error(exc, model, url, self._secrets)

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


def _response_limit(value: int | None) -> int:
    """``max_response_bytes``, else ``$LMFORGE_MAX_RESPONSE_BYTES``, else the default."""
    where = "max_response_bytes"
    if value is None:
        raw = os.environ.get(MAX_RESPONSE_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_RESPONSE_BYTES
        where = MAX_RESPONSE_ENV
        value = int(raw) if raw.isdigit() else -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where} must be a positive number of bytes, e.g. {32 * 1024 * 1024}")
    return value


# -- responses and errors ---------------------------------------------------------------


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
    return LMResponse(
        texts=tuple(texts) or ("",),
        usage=_usage(data),
        model=data.get("model") or request.model,
        finish_reason=choices[0].get("finish_reason") if choices else None,
        tool_calls=tuple(tool_calls) or None,
    )


def _usage(data: Any) -> Usage:
    usage = data.get("usage") or {}
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
