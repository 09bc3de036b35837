"""The program server: a compiled program behind a typed, secured HTTP API (FastAPI).

Routes: ``POST /v1/programs/{name}`` (typed by the program's signature),
``POST /v1/programs/{name}:batch``, ``GET /v1/programs/{name}`` (its schema),
``GET /v1/programs/{name}/drift``, ``POST /v1/programs/{name}/feedback``,
``POST /v1/chat/completions`` and ``GET /v1/models``
(OpenAI-compatible), ``GET /health``, ``GET /ready``, ``GET /metrics``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handlers' real types.

import asyncio
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge import Module
from lmforge import trace as _trace
from lmforge.errors import MissingExtraError, UsageError

from .config import ServerConfig
from .feedback import FeedbackService
from .guard import Gate, TokenBuckets, error_body
from .metrics import ServerMetrics
from .runtime import ApiError, ProgramRuntime, inputs_of, validation_message

__all__ = ["ApiError", "ProgramRuntime", "create_app"]

_log = logging.getLogger("lmforge.server")


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError:
        raise MissingExtraError("fastapi", "serve", "the program server") from None
    return fastapi


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
    feedback = FeedbackService(name, program, models.response, config, metrics)

    app = fastapi.FastAPI(
        title=f"lmforge program: {name}",
        description=runtime.signature.instructions,
        version="1",
    )
    app.state.runtime = runtime
    app.state.feedback = feedback
    # Queued request-log rows are written before the process exits.
    app.router.on_shutdown.append(feedback.close)
    # One set of rate-limit buckets for the gate (one token per request) and the batch
    # route (one more per further item).
    buckets = TokenBuckets(config.rate_limit_per_minute, config.rate_limit_burst)
    app.add_middleware(
        Gate,
        config=config,
        on_reject=lambda reason: metrics.rejected.labels(reason).inc(),
        buckets=buckets,
    )
    # LMFORGE_OTEL is read here at the latest, so `lmforge serve` installs the middleware.
    instrumentation = _trace.instrumentation()
    if instrumentation is not None and (middleware := instrumentation.asgi_middleware()):
        app.add_middleware(middleware)  # added last: outermost, so every route sees it

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
        await feedback.refresh_metrics()
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def call_program(request: Any) -> Any:
        status = 200
        try:
            inputs = runtime.validate_json(await request.body())
            request_id = rid(request)
            asked = False

            def on_answer(payload: dict[str, Any], prediction: Any, seconds: float) -> None:
                nonlocal asked
                asked = feedback.observe(request_id, inputs, payload, prediction, seconds)

            runtime.acquire()
            try:
                answer = await runtime.answer(inputs, on_answer)
            finally:
                runtime.release()
            body = answer.body(config.answer_metadata or _asks_metadata(request))
            return Response(
                json.dumps(body, ensure_ascii=False).encode(),
                media_type="application/json",
                headers={**answer.headers(), **({"X-Feedback-Requested": "true"} if asked else {})},
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
    # The schema of what this server answers by default: the outputs, the envelope (answer
    # metadata on), or either (answers of some lights withheld).
    answered: Any = models.response
    if config.answer_metadata:
        answered = models.envelope
    elif config.withhold is not None:
        answered = models.response | models.envelope  # type: ignore[operator]
    call_program.__annotations__ = {"request": fastapi.Request, "return": answered}
    documented = fastapi.routing.APIRoute(
        program_path,
        call_program,
        methods=["POST"],
        response_model=answered,
        tags=["programs"],
        summary=f"Call {name}",
        description=runtime.signature.instructions,
        openapi_extra={
            "parameters": [METADATA_PARAMETER],
            "responses": {"200": {"headers": ANSWER_HEADERS}},
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{models.request.__name__}"}
                    }
                },
            },
        },
    )
    documented_routes = [documented]  # the feedback route joins below
    _document_routes(app, documented_routes, extra_schemas=[models.envelope])

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
        metadata = config.answer_metadata or _asks_metadata(request)
        slots = runtime.acquire(min(config.batch_concurrency, max(1, len(items))))
        semaphore = asyncio.Semaphore(slots)

        batch_id = rid(request)

        async def one(index: int, item: Any) -> dict[str, Any]:
            inputs = inputs_of(item)

            def on_answer(payload: dict[str, Any], prediction: Any, seconds: float) -> None:
                # Item i of a batch is logged as REQUEST_ID.i (for its feedback).
                feedback.observe(f"{batch_id}.{index}", inputs, payload, prediction, seconds)

            async with semaphore:
                try:
                    answer = await runtime.answer(inputs, on_answer)
                except ApiError as exc:
                    return {"error": {"type": exc.kind, "message": exc.message}}
            if answer.withheld or metadata:
                return answer.body(True, key="output")
            return {"output": answer.payload}

        try:
            results = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
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
        description="Results keep the order of `items`; a failed item holds an `error` object; "
        "with answer metadata (bundle setting or `?metadata=true`) each result also holds "
        "`confidence` and `light`, and a withheld answer has `output: null`. "
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

    async def post_feedback(request: Any) -> Any:
        """Feedback on one logged answer: the correct outputs, or a score from 0 to 1."""
        answer = await feedback.post(await request.body())
        return JSONResponse(answer)

    feedback_path = f"/v1/programs/{name}/feedback"
    app.router.routes.append(Route(feedback_path, post_feedback, methods=["POST"]))
    documented_routes.append(feedback.documented_route(feedback_path))

    from .openai_shim import add_openai_routes

    add_openai_routes(app, runtime, error_response)
    return app


METADATA_PARAMETER = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "Answer {answer, confidence, light} (the <Program>Answer schema) instead "
    "of the outputs alone (always so when the bundle sets answer_metadata).",
}
ANSWER_HEADERS = {
    "X-LMForge-Confidence": {
        "description": "How likely the answer is right, 0 to 1 (absent when unknown).",
        "schema": {"type": "number"},
    },
    "X-LMForge-Light": {
        "description": "green, yellow or red from the thresholds calibrated at compile "
        "time (absent without a confidence or thresholds).",
        "schema": {"type": "string", "enum": ["green", "yellow", "red"]},
    },
}


def _asks_metadata(request: Any) -> bool:
    """Whether the request asks for ``{answer, confidence, light}`` (``?metadata=true``)."""
    return str(request.query_params.get("metadata", "")).lower() in ("1", "true", "yes")


def _document_routes(app: Any, routes: list[Any], extra_schemas: Sequence[Any] = ()) -> None:
    """Include ``routes`` (served by other means) in the app's OpenAPI schema, and the
    ``extra_schemas`` models (answers on request, e.g. ``?metadata=true``) in its components."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=[*routes, *app.routes],
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in extra_schemas:
                if model.__name__ not in components:
                    extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
                    extra.pop("$defs", None)  # the outputs' model is documented already
                    components[model.__name__] = extra
            app.openapi_schema = schema
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
