"""HTTP error responses and transport failures of the OpenAI-compatible backend, as
lmforge errors: status codes mapped onto the error tree, ``Retry-After`` read, and every
credential redacted from the server's text before it is shortened."""

from __future__ import annotations

import email.utils
import json
import math
import re
import sys
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    AuthenticationError,
    ContextWindowError,
    LMError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
)
from ._http import without_userinfo
from .redaction import redact

__all__ = ["ERROR_TEXT_BYTES", "error_from_status", "host", "retry_after", "transport_error"]

# How much of an error body is read for its message: redacted whole, then shortened.
ERROR_TEXT_BYTES = 64 * 1024
_CONTEXT_WINDOW = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|too many tokens|prompt is too long|"
    r"exceeds? the (available )?context",
    re.I,
)


def error_from_status(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    model: str,
    url: str = "",
    *,
    secrets: tuple[str | None, ...] = (),
) -> LMError:
    """The lmforge error for an HTTP error response (status >= 400), with ``secrets`` and
    every other credential redacted from the server's text."""
    detail = _error_detail(content, secrets)
    where = f" from {host(url)}" if url else ""
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


def _error_detail(content: bytes, secrets: tuple[str | None, ...]) -> str:
    text = content[:ERROR_TEXT_BYTES].decode("utf-8", "replace").strip()
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
    text = redact(" ".join(text.split()), secrets)
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


def transport_error(
    exc: BaseException, model: str, url: str, secrets: tuple[str | None, ...] = ()
) -> LMError:
    """The lmforge error for a request that got no HTTP response."""
    if isinstance(exc, LMError):
        return exc
    name = type(exc).__name__
    timeouts: tuple[type[BaseException], ...] = (TimeoutError,)
    transport: tuple[type[BaseException], ...] = (OSError, EOFError)  # incl. IncompleteReadError
    httpcore = sys.modules.get("httpcore")
    if httpcore is not None:
        timeouts += (httpcore.TimeoutException,)
        transport += (httpcore.NetworkError, httpcore.RemoteProtocolError)
    if isinstance(exc, timeouts):
        return LMTimeoutError(f"{model}: no answer from {host(url)} in time ({name})", model=model)
    detail = redact(str(exc), secrets)[:200]
    if isinstance(exc, transport):
        return ProviderError(
            f"{model}: cannot reach {host(url)} ({name}: {detail or 'connection failed'})",
            model=model,
            retryable=True,
        )
    return ProviderError(f"{model}: request to {host(url)} failed ({name}: {detail})", model=model)


def host(url: str) -> str:
    """The host (and port) of ``url`` for messages: never its ``user:password@`` part."""
    netloc = urlsplit(without_userinfo(url)).netloc
    return netloc or (url.rpartition("@")[2] if "@" in url else url)
