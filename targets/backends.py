"""LM backends and readiness checks used by served bundles.

- :class:`VLLMBackend`: a lean async HTTP client for a vLLM (OpenAI-compatible) server.
  Text-mode requests go to ``/v1/completions`` with the adapter's output constraint sent
  as vLLM ``structured_outputs`` (``choice`` or ``regex``); chat requests go to
  ``/v1/chat/completions`` with the JSON-schema ``response_format``. Text-mode requests
  can also be scored (label scoring of closed outputs: echoed prompt log-probabilities).
- :class:`CacheHintBackend`: adds provider prompt-cache hints (Anthropic ``cache_control``
  on the static prefix; OpenAI ``prompt_cache_key`` keyed by the static prefix).
- :class:`FallbackBackend`: a second model answers when the first one fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from lmforge.errors import ContextWindowError, LMError
from lmforge.lm.score_call import ContinuationScores
from lmforge.lm.types import Backend, LMRequest, LMResponse, OutputConstraint

__all__ = [
    "CacheHintBackend",
    "FallbackBackend",
    "VLLMBackend",
    "constraint_to_structured",
    "env_key_check",
    "http_health_check",
]

_SCALAR_PATTERNS = {"integer": r"-?\d+", "number": r"-?\d+(\.\d+)?", "boolean": r"(true|false)"}


def _escape(text: str) -> str:
    """A regex for the literal ``text`` that stays readable (spaces and newlines plain)."""
    return re.escape(text).replace("\\ ", " ").replace("\\\n", "\\n")


def constraint_to_structured(constraint: OutputConstraint | None) -> dict[str, Any] | None:
    """vLLM ``structured_outputs`` for an adapter's output constraint, or None when it has
    no exact equivalent (the request is then sent unconstrained)."""
    if constraint is None or not constraint.segments:
        return None
    segments = constraint.segments
    if len(segments) == 2 and segments[0].text is not None and segments[1].choices:
        return {"choice": [segments[0].text + choice for choice in segments[1].choices]}
    parts: list[str] = []
    for segment in segments:
        if segment.text is not None:
            parts.append(_escape(segment.text))
        elif segment.choices:
            parts.append("(" + "|".join(_escape(c) for c in segment.choices) + ")")
        elif segment.schema is None:
            parts.append(r"[^\n]*")
        else:
            pattern = _SCALAR_PATTERNS.get(str(segment.schema.get("type")))
            if pattern is None:
                return None
            parts.append(pattern)
    return {"regex": "".join(parts)}


class VLLMBackend:
    """Calls a vLLM server through lmforge's OpenAI-compatible client.

    ``served_model`` is the name vLLM serves (the base model or a LoRA module). Text-mode
    requests carry the adapter's output constraint as vLLM ``structured_outputs``; chat
    requests carry the ``response_format`` JSON schema.
    """

    def __init__(
        self,
        base_url: str,
        served_model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        constrain: bool = True,
    ) -> None:
        from lmforge.lm.openai_backend import OpenAIBackend

        self.base_url = base_url.rstrip("/")
        self.served_model = served_model
        self.constrain = constrain
        self._client = OpenAIBackend(
            api_base=f"{self.base_url}/v1", api_key=api_key or "", timeout=timeout
        )

    def wire_request(self, request: LMRequest) -> LMRequest:
        """``request`` as sent to vLLM: served model name and structured-output settings."""
        params = {k: v for k, v in request.params.items() if k != "rollout_id"}
        response_format = request.response_format if self.constrain else None
        if request.prompt is not None and self.constrain:
            structured = constraint_to_structured(request.constraint)
            if structured is not None:
                params["structured_outputs"] = structured
        return dataclasses.replace(
            request,
            model=f"hosted_vllm/{self.served_model}",
            params=params,
            response_format=response_format,
            constraint=None,
        )

    def complete(self, request: LMRequest) -> LMResponse:
        response = self._client.complete(self.wire_request(request))
        return dataclasses.replace(response, model=request.model)

    async def acomplete(self, request: LMRequest) -> LMResponse:
        response = await self._client.acomplete(self.wire_request(request))
        return dataclasses.replace(response, model=request.model)

    # -- scoring (lmforge.lm.types.ScoringBackend): echoed prompt log-probabilities --------

    def can_score(self, request: LMRequest) -> bool:
        """Text-mode requests are scored through ``/v1/completions`` with ``echo``."""
        return request.prompt is not None and not request.tools

    def score(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores:
        return self._client.score(self.wire_request(request), continuations)

    async def ascore(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores:
        return await self._client.ascore(self.wire_request(request), continuations)


class CacheHintBackend:
    """Adds prompt-cache hints for ``style`` ("anthropic" or "openai") before delegating."""

    def __init__(self, inner: Backend, style: str) -> None:
        self.inner = inner
        self.style = style

    def hinted(self, request: LMRequest) -> LMRequest:
        messages = request.messages
        if messages is None or len(messages) < 2:
            return request
        static = messages[:-1]  # adapters put instructions and demos first, inputs last
        if self.style == "anthropic":
            last = dict(static[-1])
            content = last.get("content")
            blocks = (
                content
                if isinstance(content, list)
                else [{"type": "text", "text": str(content or "")}]
            )
            blocks = [*blocks[:-1], {**blocks[-1], "cache_control": {"type": "ephemeral"}}]
            last["content"] = blocks
            return dataclasses.replace(request, messages=(*static[:-1], last, messages[-1]))
        if self.style == "openai":
            blob = json.dumps(list(static), sort_keys=True, separators=(",", ":"))
            key = "lmforge-" + hashlib.sha256(blob.encode()).hexdigest()[:24]
            return dataclasses.replace(request, params={**request.params, "prompt_cache_key": key})
        return request

    def complete(self, request: LMRequest) -> LMResponse:
        return self.inner.complete(self.hinted(request))

    async def acomplete(self, request: LMRequest) -> LMResponse:
        return await self.inner.acomplete(self.hinted(request))


class FallbackBackend:
    """Tries ``primary``; on an LM failure other than bad input, asks ``fallback_model``."""

    def __init__(self, primary: Backend, fallback: Backend, fallback_model: str) -> None:
        self.primary = primary
        self.fallback = fallback
        self.fallback_model = fallback_model

    @staticmethod
    def _should_fall_back(exc: LMError) -> bool:
        return not isinstance(exc, ContextWindowError)

    def _priced(self, response: LMResponse) -> LMResponse:
        """The fallback's answer priced at the fallback model's rates.

        The wrapping ``lf.LM`` prices unpriced answers by its own (the primary) model, which
        would bill a cheap fallback at the primary's price.
        """
        if response.cost is not None:
            return response
        from lmforge.lm.pricing import cost_of

        cost = cost_of(self.fallback_model, response.usage)
        return response if cost is None else dataclasses.replace(response, cost=cost)

    def complete(self, request: LMRequest) -> LMResponse:
        try:
            return self.primary.complete(request)
        except LMError as exc:
            if not self._should_fall_back(exc):
                raise
            return self._priced(
                self.fallback.complete(dataclasses.replace(request, model=self.fallback_model))
            )

    async def acomplete(self, request: LMRequest) -> LMResponse:
        try:
            return await self.primary.acomplete(request)
        except LMError as exc:
            if not self._should_fall_back(exc):
                raise
            return self._priced(
                await self.fallback.acomplete(
                    dataclasses.replace(request, model=self.fallback_model)
                )
            )


def env_key_check(variable: str, provider: str) -> Callable[[], Awaitable[str | None]]:
    """Readiness: the provider's API key is in the environment."""

    async def check() -> str | None:
        if os.environ.get(variable):
            return None
        return f"provider key missing: set {variable} for {provider}"

    return check


def http_health_check(url: str, what: str) -> Callable[[], Awaitable[str | None]]:
    """Readiness: ``GET url`` answers 2xx within 3 s."""

    async def check() -> str | None:
        try:
            async with httpx.AsyncClient(timeout=3.0) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            return f"{what} at {url} is not reachable ({type(exc).__name__})"
        if response.status_code >= 300:
            return f"{what} at {url} answered HTTP {response.status_code}"
        return None

    return check
