"""The litellm backend: any provider string litellm knows (chat and text completion).

litellm is imported on first use, never at ``import lmforge``. Its own retries are turned
off (lmforge's retry policy wraps every backend) and its errors are translated here, once,
into lmforge's error tree, with every credential redacted from their text. litellm hands
``timeout`` to httpx, which applies it to each socket read, so a server that drips its
answer would outlast it: every call here is also bounded by ``timeout`` of wall clock.
"""

from __future__ import annotations

import contextvars
import functools
import math
import os
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    AuthenticationError,
    ContextWindowError,
    LMError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
    UsageError,
)
from .redaction import redact, safe_cause
from .types import LMRequest, LMResponse, Usage

__all__ = ["LiteLLMBackend", "translate_error"]


@functools.lru_cache(maxsize=1)
def _litellm() -> Any:
    # Without this, importing litellm tries to download its price map over the network.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _check_network() -> None:
    from ..testing import network_blocked

    if network_blocked():
        raise UsageError(
            "real network LM calls are blocked here (lmforge.testing.block_network); use a fake LM"
        )


class LiteLLMBackend:
    """Calls ``litellm.completion``/``text_completion`` and their async forms."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._api_key = api_key
        self._api_base = api_base
        self._timeout = timeout
        # Credentials to take out of error text (keys from the environment are found there).
        self._secrets = (api_key, urlsplit(api_base).password if api_base else None)

    def _kwargs(self, request: LMRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(request.params)
        kwargs["model"] = request.model
        kwargs["num_retries"] = 0
        # Per call, not litellm's global flag: other litellm users in the process keep theirs.
        kwargs["drop_params"] = True
        if self._timeout is not None:
            kwargs.setdefault("timeout", self._timeout)
        if self._api_key:
            kwargs["api_key"] = self._api_key
        if self._api_base:
            kwargs["api_base"] = self._api_base
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        if request.tools:
            kwargs["tools"] = list(request.tools)
        if request.messages is not None:
            kwargs["messages"] = list(request.messages)
        else:
            kwargs["prompt"] = request.prompt
        return kwargs

    def complete(self, request: LMRequest) -> LMResponse:
        _check_network()
        litellm = _litellm()
        kwargs = self._kwargs(request)
        call = litellm.completion if request.messages is not None else litellm.text_completion
        try:
            raw = _within(kwargs.get("timeout"), lambda: call(**kwargs))
        except Exception as exc:
            error = translate_error(exc, request.model, self._secrets)
            raise error from safe_cause(exc, self._secrets)
        return _to_response(raw, request)

    async def acomplete(self, request: LMRequest) -> LMResponse:
        import asyncio

        _check_network()
        litellm = _litellm()
        kwargs = self._kwargs(request)
        call = litellm.acompletion if request.messages is not None else litellm.atext_completion
        deadline = asyncio.timeout(kwargs.get("timeout"))
        try:
            async with deadline:
                raw = await call(**kwargs)
        except Exception as exc:
            failure: BaseException = exc
            if deadline.expired():
                failure = TimeoutError(f"no complete answer within {kwargs['timeout']} s")
            error = translate_error(failure, request.model, self._secrets)
            raise error from safe_cause(exc, self._secrets)
        return _to_response(raw, request)


def _within(timeout: float | None, func: Callable[[], Any]) -> Any:
    """``func()``, given up with ``TimeoutError`` after ``timeout`` seconds of wall clock.

    A sync call cannot be interrupted, so it runs in a daemon thread that is left behind
    on timeout; it ends when the server finishes or litellm's per-read timeout fires.
    """
    if timeout is None:
        return func()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    context = contextvars.copy_context()  # litellm callbacks see the caller's settings
    worker = threading.Thread(target=context.run, args=(run,), daemon=True)
    worker.start()
    worker.join(float(timeout))
    if worker.is_alive():
        raise TimeoutError(f"no complete answer within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _to_response(raw: Any, request: LMRequest) -> LMResponse:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    finish = None
    for choice in getattr(raw, "choices", None) or []:
        message = getattr(choice, "message", None)
        if message is not None:
            texts.append(getattr(message, "content", None) or "")
            for call in getattr(message, "tool_calls", None) or []:
                function = getattr(call, "function", None)
                tool_calls.append(
                    {
                        "id": getattr(call, "id", None),
                        "name": getattr(function, "name", None),
                        "arguments": getattr(function, "arguments", None),
                    }
                )
        else:
            texts.append(getattr(choice, "text", None) or "")
        finish = getattr(choice, "finish_reason", finish)
    usage = getattr(raw, "usage", None)
    return LMResponse(
        texts=tuple(texts) or ("",),
        usage=Usage(
            int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0),
        ),
        model=getattr(raw, "model", None) or request.model,
        finish_reason=finish,
        tool_calls=tuple(tool_calls) or None,
    )


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    # "nan" and "inf" parse as floats; neither is a wait anyone can sleep for.
    return seconds if seconds is None or math.isfinite(seconds) else None


_MISSING_KEY = re.compile(
    r"missing credentials|api_key client option must be set|"
    r"api[ _-]?key (?:is )?(?:missing|not (?:set|found|provided))|"
    r"no api[ _-]?key (?:was )?(?:provided|found|set)",
    re.I,
)


def translate_error(
    exc: BaseException, model: str, secrets: tuple[str | None, ...] = ()
) -> LMError:
    """Map a litellm/provider exception onto lmforge's error tree (by class name, so the
    mapping needs no litellm import and survives its re-exports), with ``secrets`` and
    every other credential redacted from its text."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    detail = redact(" ".join(str(exc).split()), secrets)[:500]  # one line, then shortened
    message = f"{model}: {type(exc).__name__}: {detail}"
    common: dict[str, Any] = {"model": model, "status_code": status}
    if _MISSING_KEY.search(detail):
        # Some SDKs fail before any request when no key is set; litellm reports that as a
        # 500, which must not be retried.
        provider = model.split("/", 1)[0] if "/" in model else "the provider"
        return AuthenticationError(
            f"{model}: no API key for {provider}: set its key in the environment "
            f"(e.g. {provider.upper()}_API_KEY) or pass lf.LM({model!r}, api_key=...)",
            **common,
        )
    if "ContextWindowExceededError" in names:
        return ContextWindowError(message, **common)
    if "RateLimitError" in names or status == 429:
        return RateLimitError(message, retry_after=_retry_after(exc), **common)
    if names & {"Timeout", "APITimeoutError", "TimeoutError", "ReadTimeout"} or status == 408:
        return LMTimeoutError(message, **common)
    if names & {"AuthenticationError", "PermissionDeniedError"} or status in (401, 403):
        return AuthenticationError(message, **common)
    if names & {
        "APIConnectionError",
        "ServiceUnavailableError",
        "InternalServerError",
        "BadGatewayError",
    }:
        return ProviderError(message, retryable=True, retry_after=_retry_after(exc), **common)
    if isinstance(status, int) and status >= 500:
        return ProviderError(message, retryable=True, retry_after=_retry_after(exc), **common)
    return ProviderError(message, retryable=False, **common)
