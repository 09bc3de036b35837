"""The program server: a compiled program behind a typed, secured HTTP API (FastAPI).

Routes: ``POST /v1/programs/{name}`` (typed by the program's signature),
``POST /v1/programs/{name}:batch``, ``GET /v1/programs/{name}`` (its schema),
``GET /v1/programs/{name}/drift``, ``POST /v1/chat/completions`` and ``GET /v1/models``
(OpenAI-compatible), ``GET /health``, ``GET /ready``, ``GET /metrics``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handlers' real types.

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from lmforge import Module, Signature, track
from lmforge.errors import (
    AuthenticationError,
    ContextWindowError,
    LMError,
    LMForgeError,
    LMTimeoutError,
    MissingExtraError,
    ParseError,
    RateLimitError,
    UsageError,
)

from .config import ServerConfig
from .drift import DriftMonitor
from .guard import Gate, TokenBuckets, error_body
from .metrics import ServerMetrics
from .program import build_models, program_name, program_signature, response_payload
from .worker import ProgramLoop

__all__ = ["ApiError", "ProgramRuntime", "create_app"]

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


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError:
        raise MissingExtraError("fastapi", "serve", "the program server") from None
    return fastapi


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
        # Prompt rendering and parsing are synchronous: they run there, not on the loop
        # that answers /health and every other request.
        self.worker = ProgramLoop(f"lmforge-program-{self.name}")

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
        """Run the program once; returns (outputs payload, token usage). Raises ApiError."""
        started = time.perf_counter()
        payload: dict[str, Any] | None = None
        with track() as tracker:
            try:
                async with asyncio.timeout(self.config.request_timeout_s):
                    prediction = await self.worker.run(self.program.acall(**inputs))
                payload = response_payload(self.signature, prediction)
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
        return payload, usage

    def close(self) -> None:
        """Stop the worker thread that runs program calls."""
        self.worker.close()

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


def create_app(program: Module | str | os.PathLike[str], config: ServerConfig | None = None) -> Any:
    """A FastAPI app serving ``program`` (a Module, or a bundle directory).

    With a bundle directory and no ``config``, settings come from the bundle and API keys
    from ``$LMFORGE_API_KEYS``.
    """
    fastapi = _fastapi()
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.routing import Route

    if not isinstance(program, Module):
        from .bundle import load_bundle

        program, config = load_bundle(Path(program), config)
    if config is None:
        raise UsageError("create_app(program, config) needs a ServerConfig when given a program")
    metrics = ServerMetrics()
    runtime = ProgramRuntime(program, config, metrics)
    name = runtime.name
    models = runtime.models

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            runtime.close()

    app = fastapi.FastAPI(
        title=f"lmforge program: {name}",
        description=runtime.signature.instructions,
        version="1",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    # One set of rate-limit buckets for the gate (one token per request) and the batch
    # route (one more per further item).
    buckets = TokenBuckets(config.rate_limit_per_minute, config.rate_limit_burst)
    app.add_middleware(
        Gate,
        config=config,
        on_reject=lambda reason: metrics.rejected.labels(reason).inc(),
        buckets=buckets,
    )

    def rid(request: Any) -> str:
        return getattr(request.state, "request_id", "-")

    def error_response(request: Any, error: ApiError) -> Any:
        return Response(
            error_body(error.kind, error.message, rid(request)),
            status_code=error.status,
            headers=error.headers,
            media_type="application/json",
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Any, exc: ApiError) -> Any:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, exc: Any) -> Any:
        return error_response(
            request, ApiError(422, "invalid_input", validation_message(exc.errors()))
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Any, exc: Any) -> Any:
        kinds = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            request,
            ApiError(exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail)),
        )

    @app.exception_handler(Exception)
    async def _internal(request: Any, exc: Exception) -> Any:
        _log.error("unhandled %s (request_id=%s)", type(exc).__name__, rid(request))
        return error_response(request, ApiError(500, "internal_error", "internal server error"))

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready() -> Any:
        """The LM backend is reachable and credentials are present."""
        reasons = await _readiness(config)
        if reasons:
            raise ApiError(503, "not_ready", "; ".join(reasons))
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["ops"])
    async def metrics_route() -> Any:
        """Prometheus metrics."""
        for statistic, entry in runtime.drift.report().items():
            if entry["score"] is not None:
                metrics.drift.labels(name, statistic).set(entry["score"])
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def call_program(request: Any) -> Any:
        status = 200
        try:
            inputs = runtime.validate_json(await request.body())
            runtime.acquire()
            try:
                payload, _ = await runtime.call(inputs)
            finally:
                runtime.release()
            return Response(
                json.dumps(payload, ensure_ascii=False).encode(), media_type="application/json"
            )
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            metrics.requests.labels(name, "call", str(status)).inc()

    # The hot path is a plain Starlette route: FastAPI's per-request handler machinery
    # (dependency solving, response-model pass) was a large share of the server's CPU per
    # request. The typed APIRoute below only documents it in the OpenAPI schema.
    program_path = f"/v1/programs/{name}"
    app.router.routes.append(Route(program_path, call_program, methods=["POST"]))
    call_program.__annotations__ = {"request": fastapi.Request, "return": models.response}
    documented = fastapi.routing.APIRoute(
        program_path,
        call_program,
        methods=["POST"],
        response_model=models.response,
        tags=["programs"],
        summary=f"Call {name}",
        description=runtime.signature.instructions,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{models.request.__name__}"}
                    }
                },
            }
        },
    )
    _document_routes(app, [documented])

    async def call_batch(body: Any, request: Any) -> Any:
        """Run the program on every item; each item counts as one call against the limits.

        Rate limit: a batch of N items costs N tokens of the caller's rate-limit bucket (the
        request itself paid one at the gate; the other N-1 are taken here, all or none).
        When the bucket holds fewer, the whole batch answers 429 with ``Retry-After`` and
        nothing runs; so a batch holds at most ``rate_limit_burst`` items. Concurrency: the
        items run in parallel on up to ``batch_concurrency`` of the server's
        ``max_concurrency`` call slots (as many as are free, at least one, else 503).
        """
        items = body.items
        most = min(config.max_batch_items, config.rate_limit_burst)
        if len(items) > most:
            raise ApiError(
                422,
                "invalid_input",
                f"a batch holds at most {most} items (max_batch_items "
                f"{config.max_batch_items}, rate_limit_burst {config.rate_limit_burst}); "
                f"got {len(items)}. Split it into smaller batches",
            )
        if len(items) > 1:
            client = getattr(request.state, "client", "anonymous")
            wait = buckets.take(client, cost=len(items) - 1)
            if wait > 0:
                metrics.rejected.labels("rate_limited").inc()
                retry = str(max(1, math.ceil(wait)))
                raise ApiError(
                    429,
                    "rate_limited",
                    f"a batch of {len(items)} items counts as {len(items)} requests against "
                    f"the rate limit of {config.rate_limit_per_minute:g} requests/minute; "
                    f"retry after {retry} s or send a smaller batch",
                    {"Retry-After": retry},
                )
        slots = runtime.acquire(min(config.batch_concurrency, max(1, len(items))))
        semaphore = asyncio.Semaphore(slots)

        async def one(item: Any) -> dict[str, Any]:
            async with semaphore:
                try:
                    payload, _ = await runtime.call(inputs_of(item))
                    return {"output": payload}
                except ApiError as exc:
                    return {"error": {"type": exc.kind, "message": exc.message}}

        try:
            results = await asyncio.gather(*(one(item) for item in items))
        finally:
            runtime.release(slots)
        metrics.requests.labels(name, "batch", "200").inc()
        return {"results": results}

    call_batch.__annotations__ = {
        "body": models.batch_request,
        "request": fastapi.Request,
        "return": dict[str, Any],
    }
    app.post(
        f"/v1/programs/{name}:batch",
        tags=["programs"],
        summary=f"Call {name} on many inputs",
        description="Results keep the order of `items`; a failed item holds an `error` object. "
        "Each item counts as one request against the rate limit (a batch the caller's "
        "bucket cannot cover answers 429) and runs on one of the server's concurrency slots.",
    )(call_batch)

    @app.get(f"/v1/programs/{name}", tags=["programs"])
    async def describe() -> dict[str, Any]:
        """The program's signature and JSON schemas."""
        return {
            "name": name,
            "signature": runtime.signature.to_json(),
            "input_schema": models.request.model_json_schema(),
            "output_schema": models.response.model_json_schema(),
            "predictors": [n for n, _ in program.named_predictors()],
            "structured_output": dict(config.structured or {}),
        }

    @app.get(f"/v1/programs/{name}/drift", tags=["ops"])
    async def drift() -> dict[str, Any]:
        """Drift scores (PSI) of recent calls against the bundle's reference statistics."""
        return {
            "program": name,
            "reference": runtime.drift.enabled,
            "statistics": runtime.drift.report(),
        }

    from .openai_shim import add_openai_routes

    add_openai_routes(app, runtime, error_response)
    return app


def _document_routes(app: Any, routes: list[Any]) -> None:
    """Include ``routes`` (served by other means) in the app's OpenAPI schema."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=[*routes, *app.routes],
            )
        return app.openapi_schema

    app.openapi = openapi


async def _readiness(config: ServerConfig) -> list[str]:
    if not config.readiness:
        return []
    results = await asyncio.gather(
        *(asyncio.wait_for(check(), 5.0) for check in config.readiness), return_exceptions=True
    )
    reasons = []
    for result in results:
        if isinstance(result, BaseException):
            reasons.append(f"readiness check failed: {type(result).__name__}")
        elif result:
            reasons.append(result)
    return reasons
