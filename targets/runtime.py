"""The program call behind the server's routes: concurrency slots, timeout, tracing,
metrics, drift, request validation, and the mapping of failures onto HTTP errors."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from lmforge import Module, Signature, track
from lmforge.errors import (
    AuthenticationError,
    ContextWindowError,
    LMError,
    LMForgeError,
    LMTimeoutError,
    ParseError,
    RateLimitError,
    UsageError,
)
from lmforge.lights import LIGHTS

from .config import ServerConfig
from .drift import DriftMonitor
from .metrics import ServerMetrics
from .program import build_models, program_name, program_signature, response_payload

__all__ = [
    "Answer",
    "ApiError",
    "ProgramRuntime",
    "inputs_of",
    "lm_error",
    "validation_message",
]

_log = logging.getLogger("lmforge.server")


class ApiError(Exception):
    """An error answered as ``{"error": {"type", "message", "request_id"}}``."""

    def __init__(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})


def lm_error(exc: BaseException) -> ApiError:
    """Map a failure of the program call onto an HTTP error."""
    if isinstance(exc, ParseError):
        return ApiError(502, "parse_error", f"the model's answer could not be parsed: {exc}")
    if isinstance(exc, RateLimitError):
        wait = exc.retry_after if exc.retry_after and math.isfinite(exc.retry_after) else 1
        retry = str(max(1, math.ceil(wait)))
        return ApiError(
            503,
            "upstream_rate_limited",
            "the model provider is rate limiting; retry later",
            {"Retry-After": retry},
        )
    if isinstance(exc, LMTimeoutError):
        return ApiError(504, "upstream_timeout", "the model did not answer in time")
    if isinstance(exc, ContextWindowError):
        return ApiError(
            422, "context_window_exceeded", "the input is too long for the model's context window"
        )
    if isinstance(exc, AuthenticationError):
        return ApiError(
            502, "upstream_auth_error", "the server's credentials for the model were refused"
        )
    if isinstance(exc, LMError):
        return ApiError(502, "upstream_error", f"the model backend failed ({type(exc).__name__})")
    if isinstance(exc, UsageError):
        return ApiError(422, "invalid_input", str(exc))
    if isinstance(exc, LMForgeError):
        return ApiError(500, "program_error", f"{type(exc).__name__}: {exc}")
    return ApiError(500, "internal_error", "the program failed; see the server log (request id)")


#: The lights a ``withhold`` setting holds back: the named light and every worse one.
WITHHELD: dict[str | None, tuple[str, ...]] = {"red": ("red",), "yellow": ("yellow", "red")}


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """One program answer as the server sends it (see :meth:`ProgramRuntime.answer`)."""

    payload: dict[str, Any]
    usage: dict[str, int]
    confidence: float | None = None
    light: str | None = None
    withheld: bool = False

    def headers(self) -> dict[str, str]:
        """``X-LMForge-Confidence`` and ``X-LMForge-Light``, when known."""
        headers = {}
        if self.confidence is not None:
            headers["X-LMForge-Confidence"] = f"{self.confidence:.4g}"
        if self.light is not None:
            headers["X-LMForge-Light"] = self.light
        return headers

    def body(self, metadata: bool, key: str = "answer") -> dict[str, Any]:
        """The response body: the outputs alone (what clients always got), or with
        ``metadata`` ``{key: outputs, "confidence", "light"}``; a withheld answer is
        ``{key: null, "confidence", "light", "withheld": true}`` either way."""
        if self.withheld:
            return {key: None, "confidence": self.confidence, "light": self.light, "withheld": True}
        if metadata:
            return {key: self.payload, "confidence": self.confidence, "light": self.light}
        return self.payload


def trust_of(prediction: Any) -> tuple[float | None, str | None]:
    """A prediction's confidence (a number in [0, 1]) and light, ``None`` when unknown."""
    confidence: Any = getattr(prediction, "confidence", None)
    light = getattr(prediction, "light", None)
    valid = (
        isinstance(confidence, int | float)
        and not isinstance(confidence, bool)
        and 0 <= confidence <= 1
    )
    return (float(confidence) if valid else None), (light if light in LIGHTS else None)


class ProgramRuntime:
    """Runs a program for the server: limits, tracing, metrics and drift."""

    def __init__(self, program: Module, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.program = program
        self.config = config
        self.metrics = metrics
        self.name = program_name(config.name)
        self.signature: Signature = program_signature(program)
        self.models = build_models(self.name, self.signature)
        self.predictor_names = {id(p): n for n, p in program.named_predictors()}
        self.drift = DriftMonitor(config.reference_stats, config.drift_window)
        self.in_flight = 0

    def acquire(self, wanted: int = 1) -> int:
        """Take up to ``wanted`` of the ``max_concurrency`` call slots, at least one.

        Returns how many were taken (give them back with :meth:`release`); raises
        ApiError 503 when none is free.
        """
        free = self.config.max_concurrency - self.in_flight
        if free < 1:
            self.metrics.rejected.labels("saturated").inc()
            raise ApiError(
                503,
                "saturated",
                f"the server is at its limit of {self.config.max_concurrency} "
                "concurrent calls; retry shortly",
                {"Retry-After": str(self.config.retry_after_s)},
            )
        taken = max(1, min(wanted, free))
        self.in_flight += taken
        self.metrics.in_flight.inc(taken)
        return taken

    def release(self, count: int = 1) -> None:
        self.in_flight -= count
        self.metrics.in_flight.dec(count)

    async def call(self, inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
        """Run the program once; returns (outputs payload, token usage). Raises ApiError.
        The payload is never withheld here (see :meth:`answer`)."""
        answer = await self.answer(inputs)
        return answer.payload, answer.usage

    async def answer(
        self,
        inputs: dict[str, Any],
        on_answer: Callable[[dict[str, Any], Any, float], None] | None = None,
    ) -> Answer:
        """Run the program once: its outputs, usage, confidence and light, and whether the
        server's ``withhold`` setting holds the answer back. Raises ApiError.

        ``on_answer(payload, prediction, seconds)`` sees each successful answer (the
        request log).
        """
        started = time.perf_counter()
        payload: dict[str, Any] | None = None
        with track() as tracker:
            try:
                async with asyncio.timeout(self.config.request_timeout_s):
                    prediction = await self.program.acall(**inputs)
                outputs = payload = response_payload(self.signature, prediction)
                confidence, light = trust_of(prediction)
                if on_answer is not None:
                    on_answer(payload, prediction, time.perf_counter() - started)
            except TimeoutError:
                raise ApiError(
                    504,
                    "timeout",
                    f"the program did not finish within {self.config.request_timeout_s:g} s",
                ) from None
            except ApiError:
                raise
            except Exception as exc:
                error = lm_error(exc)
                if error.status >= 500:
                    _log.warning("program %s failed: %s", self.name, type(exc).__name__)
                raise error from exc
            finally:
                elapsed = time.perf_counter() - started
                self.metrics.latency.labels(self.name).observe(elapsed)
                self.metrics.record_calls(self.name, tracker, self.predictor_names)
                self.drift.observe(inputs, payload, elapsed if payload is not None else None)
        usage = {
            "prompt_tokens": tracker.prompt_tokens,
            "completion_tokens": tracker.completion_tokens,
        }
        self.metrics.answers.labels(self.name, light or "none").inc()
        withheld = light is not None and light in WITHHELD.get(self.config.withhold, ())
        return Answer(outputs, usage, confidence, light, withheld)

    def validate_json(self, raw: bytes) -> dict[str, Any]:
        """Validate a JSON request body against the request model (ApiError 422)."""
        import pydantic

        try:
            body = self.models.request.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            raise ApiError(422, "invalid_input", validation_message(exc.errors())) from None
        return inputs_of(body)

    def validate(self, data: Any) -> dict[str, Any]:
        """Validate raw inputs against the request model; ApiError 422 with a clear message."""
        import pydantic

        try:
            body = self.models.request.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ApiError(422, "invalid_input", validation_message(exc.errors())) from None
        return inputs_of(body)


def inputs_of(body: Any) -> dict[str, Any]:
    """Validated field values (nested models stay models) from a request model."""
    return {name: getattr(body, name) for name in type(body).model_fields}


def validation_message(errors: Any) -> str:
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
