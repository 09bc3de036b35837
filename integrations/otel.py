"""OpenTelemetry traces of program calls (extra ``otel``).

``instrument()`` (or ``LMFORGE_OTEL=1`` in the environment, read at the process's first
program or LM call) turns what ``lf.track()`` records into OTel spans: one span per program
call, a child span per predictor call and per LM call, nested through OTel's context (which
is ContextVar-based, so asyncio tasks, ``batch`` threads and ``acall`` keep their parents).
LM call spans follow the GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ...). Prompt and response text is
recorded only when opted in (``capture_content=True`` or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``). Credentials never are: spans
carry the model name, the endpoint's host and port, and token counts, never request
headers, API keys or an endpoint's user info.

Without a tracer provider of its own, ``instrument()`` uses the global one; when none is
configured it installs the SDK's with an OTLP/HTTP exporter, configured by the standard
``OTEL_EXPORTER_OTLP_*`` and ``OTEL_SERVICE_NAME`` variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lmforge import trace as _trace
from lmforge.errors import MissingExtraError

if TYPE_CHECKING:
    from lmforge.lm.types import LMRequest
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["OtelInstrumentation", "TraceContextMiddleware", "instrument", "uninstrument"]

_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_TRUE = ("1", "true", "yes", "on")
# Request parameters reported as gen_ai.request.* (numbers only: nothing free-form).
_REQUEST_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)
_installing = threading.Lock()
# Whether an lmforge span encloses the current call: the outermost module call is the
# program, the ones inside it are its modules.
_inside: ContextVar[bool] = ContextVar("lmforge_otel_inside", default=False)


def _otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise MissingExtraError("opentelemetry-sdk", "otel", "OpenTelemetry tracing") from None
    return trace


def instrument(
    tracer_provider: TracerProvider | None = None, *, capture_content: bool | None = None
) -> OtelInstrumentation:
    """Report every later program, predictor and LM call in this process as OTel spans.

    ``tracer_provider``: where spans go (default: the global provider; when none is set,
    the SDK's with an OTLP/HTTP exporter). ``capture_content``: record prompts, responses
    and predictor inputs/outputs (default: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_
    CONTENT``). Calling it again replaces the previous instrumentation.
    """
    otel = _otel()
    with _installing:
        if tracer_provider is None:
            tracer_provider = _global_provider(otel)
        if capture_content is None:
            capture_content = os.environ.get(_CONTENT_ENV, "").strip().lower() in _TRUE
        from lmforge import __version__

        tracer = tracer_provider.get_tracer("lmforge", __version__)
        hook = OtelInstrumentation(tracer, capture_content=capture_content)
        _trace.set_instrumentation(hook)
        return hook


def uninstrument() -> None:
    """Stop reporting spans (calls made afterwards pay nothing)."""
    _trace.set_instrumentation(None)


def _global_provider(otel: Any) -> TracerProvider:
    provider = otel.get_tracer_provider()
    if not isinstance(provider, otel.ProxyTracerProvider):
        return provider  # type: ignore[no-any-return]
    # Nothing configured: the SDK with an OTLP/HTTP exporter (OTEL_EXPORTER_OTLP_* apply).
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise MissingExtraError(
            "opentelemetry-exporter-otlp-proto-http", "otel", "OpenTelemetry tracing"
        ) from None
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    sdk = SdkTracerProvider(resource=Resource.create({} if named else {"service.name": "lmforge"}))
    sdk.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    otel.set_tracer_provider(sdk)
    return otel.get_tracer_provider()  # type: ignore[no-any-return]


class OtelInstrumentation:
    """The :class:`lmforge.trace.Instrumentation` that writes OTel spans."""

    def __init__(self, tracer: Tracer, *, capture_content: bool = False) -> None:
        self.tracer = tracer
        self.capture_content = capture_content

    @contextlib.contextmanager
    def span(self, subject: Any, detail: Any) -> Iterator[object]:
        """A current span around one call of ``subject`` with a tracker of its own: the
        calls made inside it are recorded (the records ``lf.track()`` gets) and become the
        span's attributes when it ends."""
        from lmforge.lm.lm import LM
        from lmforge.predict import Predict

        otel = _otel()
        if isinstance(subject, LM):
            name, kind, attributes, finish = self._lm(subject, detail, otel)
        elif isinstance(subject, Predict):
            name, kind, attributes, finish = self._predictor(subject, detail, otel)
        else:
            name, kind, attributes, finish = self._module(subject, detail, otel)
        with (
            self.tracer.start_as_current_span(
                name,
                kind=kind,
                attributes=attributes,
                record_exception=False,  # a message may quote inputs; the type is enough
                set_status_on_exception=False,
            ) as span,
            _trace.track() as tracker,
        ):
            token = _inside.set(True)
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(otel.Status(otel.StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                _inside.reset(token)
                span.set_attributes(finish(tracker))

    def asgi_middleware(self) -> type:
        return TraceContextMiddleware

    # -- what each kind of span says ---------------------------------------------------

    def _lm(self, lm: Any, request: LMRequest, otel: Any) -> _Plan:
        operation = "chat" if request.messages is not None else "text_completion"
        attributes: dict[str, Any] = {
            "lmforge.span.kind": "lm",
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": lm.model,
        }
        provider, _, rest = lm.model.partition("/")
        if rest:
            attributes["gen_ai.provider.name"] = provider
        for key in _REQUEST_PARAMS:
            value = request.params.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[f"gen_ai.request.{key}"] = value
        if lm.api_base:
            # Host and port only: an endpoint's user info may hold a password.
            endpoint = urlsplit(lm.api_base)
            if endpoint.hostname:
                attributes["server.address"] = endpoint.hostname
            if endpoint.port:
                attributes["server.port"] = endpoint.port
        if self.capture_content:
            messages = (
                list(request.messages)
                if request.messages is not None
                else [{"role": "user", "content": request.prompt}]
            )
            attributes["gen_ai.input.messages"] = _json(messages)

        def finish(tracker: _trace.Tracker) -> dict[str, Any]:
            calls = [c for c in tracker.calls if c.request is request]
            if not calls:
                return {}
            call = calls[-1]
            done: dict[str, Any] = {
                "lmforge.cache_hit": call.cache_hit,
                "lmforge.retries": call.retries,
            }
            if call.error is not None:
                done["error.type"] = call.error
            response = call.response
            if response is None:
                return done
            done["gen_ai.usage.input_tokens"] = response.usage.prompt_tokens
            done["gen_ai.usage.output_tokens"] = response.usage.completion_tokens
            if response.model:
                done["gen_ai.response.model"] = response.model
            if response.finish_reason:
                done["gen_ai.response.finish_reasons"] = (response.finish_reason,)
            if response.cost is not None:
                done["lmforge.cost_usd"] = response.cost
            if self.capture_content:
                done["gen_ai.output.messages"] = _json(
                    [{"role": "assistant", "content": text} for text in response.texts]
                )
            return done

        return f"{operation} {lm.model}", otel.SpanKind.CLIENT, attributes, finish

    def _predictor(self, predictor: Any, inputs: Mapping[str, Any], otel: Any) -> _Plan:
        signature = predictor.signature
        shape = (
            ", ".join(f.name for f in signature.input_fields)
            + " -> "
            + ", ".join(f.name for f in signature.output_fields)
        )
        attributes: dict[str, Any] = {
            "lmforge.span.kind": "predictor",
            "lmforge.signature": shape,
            "lmforge.demos": len(predictor.demos),
        }
        if self.capture_content:
            attributes["lmforge.inputs"] = _json(inputs)

        def finish(tracker: _trace.Tracker) -> dict[str, Any]:
            calls = [c for c in tracker.predictions if c.predictor is predictor]
            if not calls:
                return {}
            call = calls[-1]
            done: dict[str, Any] = {}
            if call.error is not None:
                done["error.type"] = type(call.error).__qualname__
            if self.capture_content and call.outputs is not None:
                done["lmforge.outputs"] = _json(call.outputs.to_dict())
            return done

        return f"predict {shape}", otel.SpanKind.INTERNAL, attributes, finish

    def _module(self, module: Any, inputs: Mapping[str, Any], otel: Any) -> _Plan:
        role = "module" if _inside.get() else "program"
        name = type(module).__qualname__
        attributes: dict[str, Any] = {"lmforge.span.kind": role, "lmforge.module": name}
        if self.capture_content:
            attributes["lmforge.inputs"] = _json(inputs)

        def finish(tracker: _trace.Tracker) -> dict[str, Any]:
            return {
                "lmforge.usage.input_tokens": tracker.prompt_tokens,
                "lmforge.usage.output_tokens": tracker.completion_tokens,
                "lmforge.lm_calls": tracker.lm_calls,
                "lmforge.cache_hits": tracker.cache_hits,
            }

        return f"{role} {name}", otel.SpanKind.INTERNAL, attributes, finish


_Plan = tuple[str, Any, dict[str, Any], Callable[[_trace.Tracker], dict[str, Any]]]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class TraceContextMiddleware:
    """Pure ASGI middleware of the program server: a request's ``traceparent`` (and
    ``tracestate``, or whatever ``OTEL_PROPAGATORS`` names) becomes the parent of the
    spans of the calls it makes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        token = context.attach(propagate.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
