"""OpenTelemetry traces (lmforge.integrations.otel): the real SDK with its in-memory
exporter, and the real OTLP/HTTP exporter posting to a collector the test runs on loopback."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

import lmforge as lf
from lmforge import trace as lf_trace
from lmforge.errors import LMError, MissingExtraError
from lmforge.integrations import otel
from lmforge.testing import DummyLM, FunctionLM
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.otel

CANARY = "sk-CANARY-7f3a9c"


class Answer(lf.Module):
    """Two predictors: drafts an answer, then polishes it."""

    def __init__(self) -> None:
        self.draft = lf.Predict("question -> draft")
        self.polish = lf.Predict("draft -> answer")

    def forward(self, question: str) -> lf.Prediction:
        draft = self.draft(question=question).draft
        return self.polish(draft=draft)


def _lm() -> DummyLM:
    return DummyLM(
        {"What is 2+2": {"draft": "four"}, "four": {"answer": "4"}}, cycle=True, model="test/x"
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider, capture_content=False)
    try:
        yield exporter
    finally:
        otel.uninstrument()


def _by_kind(finished: tuple[ReadableSpan, ...], kind: str) -> list[ReadableSpan]:
    return [s for s in finished if (s.attributes or {}).get("lmforge.span.kind") == kind]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_program_predictor_and_lm_spans_nest_with_genai_attributes(
    spans: InMemorySpanExporter,
) -> None:
    program = Answer()
    with lf.use(lm=_lm()), lf.track() as tracker:
        assert program(question="What is 2+2?").answer == "4"
    finished = spans.get_finished_spans()
    (root,) = _by_kind(finished, "program")
    predictors = _by_kind(finished, "predictor")
    calls = _by_kind(finished, "lm")
    assert root.name == "program Answer" and root.parent is None
    assert [p.attributes["lmforge.signature"] for p in predictors] == [
        "question -> draft",
        "draft -> answer",
    ]
    assert {_parent_id(p) for p in predictors} == {root.context.span_id}
    assert [_parent_id(c) for c in calls] == [p.context.span_id for p in predictors]
    assert {c.context.trace_id for c in finished} == {root.context.trace_id}
    first = calls[0].attributes
    assert calls[0].name == "chat test/x"
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.request.model"] == "test/x"
    assert first["gen_ai.provider.name"] == "test"
    assert first["gen_ai.usage.input_tokens"] == tracker.calls[0].prompt_tokens > 0
    assert first["gen_ai.usage.output_tokens"] == tracker.calls[0].completion_tokens > 0
    assert root.attributes["lmforge.usage.input_tokens"] == tracker.prompt_tokens
    assert root.attributes["lmforge.lm_calls"] == 2
    # Content is opt-in: none of the question or answers by default.
    text = json.dumps([dict(s.attributes or {}) for s in finished])
    assert "What is 2+2" not in text and "gen_ai.input.messages" not in text


async def test_async_batch_keeps_each_calls_spans_under_its_own_program(
    spans: InMemorySpanExporter,
) -> None:
    program = Answer()
    with lf.use(lm=_lm()):
        results = await program.abatch([{"question": "What is 2+2?"}] * 3, concurrency=3)
    assert all(r.answer == "4" for r in results)  # type: ignore[union-attr]
    finished = spans.get_finished_spans()
    roots = _by_kind(finished, "program")
    assert len(roots) == 3 and len({r.context.trace_id for r in roots}) == 3
    for root in roots:
        inside = [s for s in finished if s.context.trace_id == root.context.trace_id]
        assert sorted(s.attributes["lmforge.span.kind"] for s in inside) == [
            "lm",
            "lm",
            "predictor",
            "predictor",
            "program",
        ]


def test_content_is_recorded_when_opted_in_and_credentials_never_are() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider, capture_content=True)
    lm = FunctionLM(
        lambda request: "[[ ## answer ## ]]\n4",
        model="test/gpt-x",
        api_key=CANARY,
        api_base=f"http://user:{CANARY}@127.0.0.1:9/v1",
    )
    try:
        lf.Predict("question -> answer", lm=lm)(question="What is 2+2?")
    finally:
        otel.uninstrument()
    finished = exporter.get_finished_spans()
    (call,) = _by_kind(finished, "lm")
    assert "What is 2+2?" in call.attributes["gen_ai.input.messages"]
    assert "4" in call.attributes["gen_ai.output.messages"]
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["server.port"] == 9
    (predictor,) = _by_kind(finished, "predictor")
    assert json.loads(predictor.attributes["lmforge.outputs"]) == {"answer": "4"}
    dumped = json.dumps(
        [[s.name, dict(s.attributes or {}), str(s.resource.attributes)] for s in finished]
    )
    assert CANARY not in dumped


def test_failed_lm_call_marks_its_spans_as_errors(spans: InMemorySpanExporter) -> None:
    lm = FunctionLM(lambda request: LMError("backend said no"), model="test/down")
    with pytest.raises(LMError):
        lf.Predict("question -> answer", lm=lm)(question="hi")
    finished = spans.get_finished_spans()
    (call,) = _by_kind(finished, "lm")
    (predictor,) = _by_kind(finished, "predictor")
    for span in (call, predictor):
        assert span.status.status_code.name == "ERROR"
        assert span.attributes["error.type"] == "LMError"


def test_uninstrumented_calls_record_no_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider)
    otel.uninstrument()
    assert lf_trace.instrumentation() is None
    lf.Predict("question -> draft", lm=_lm())(question="What is 2+2?")
    assert exporter.get_finished_spans() == ()


async def test_server_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    import httpx
    from lmforge.targets import ServerConfig, create_app

    app = create_app(
        lf.Predict("question -> draft", lm=_lm()), ServerConfig(name="qa", api_keys=("k" * 24,))
    )
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        reply = await client.post(
            "/v1/programs/qa",
            json={"question": "What is 2+2?"},
            headers={
                "Authorization": "Bearer " + "k" * 24,
                "traceparent": f"00-{trace_id}-{parent_id}-01",
            },
        )
    assert reply.status_code == 200, reply.text
    (predictor,) = _by_kind(spans.get_finished_spans(), "predictor")
    assert format(predictor.context.trace_id, "032x") == trace_id
    assert predictor.parent is not None and predictor.parent.is_remote
    assert format(predictor.parent.span_id, "016x") == parent_id


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(MissingExtraError, match=r"lmforge\[otel\]"):
        otel.instrument()


# -- the real OTLP/HTTP exporter against a loopback collector ------------------------------


class _Collector(http.server.ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf exports on /v1/traces and keeps the decoded spans."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CollectorHandler)
        self.spans: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.received = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = self.path == "/v1/traces" and self.headers["Content-Type"] == (
            "application/x-protobuf"
        )
        if ok:
            self.server.bodies.append(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}.get(
                    "service.name"
                )
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        decoded = MessageToDict(span)
                        decoded["service"] = service
                        decoded["attrs"] = {
                            a["key"]: next(iter(a["value"].values()), None)
                            for a in decoded.get("attributes", [])
                        }
                        self.server.spans.append(decoded)
            self.server.received.set()
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_http_exporter_delivers_spans_to_a_collector(collector: _Collector) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.endpoint)))
    otel.instrument(provider)
    try:
        with lf.use(lm=_lm()):
            Answer()(question="What is 2+2?")
    finally:
        otel.uninstrument()
    assert provider.force_flush(10_000)
    names = sorted(span["name"] for span in collector.spans)
    assert names == [
        "chat test/x",
        "chat test/x",
        "predict draft -> answer",
        "predict question -> draft",
        "program Answer",
    ]
    call = next(s for s in collector.spans if s["name"] == "chat test/x")
    assert call["kind"] == "SPAN_KIND_CLIENT"
    assert call["attrs"]["gen_ai.request.model"] == "test/x"
    assert int(call["attrs"]["gen_ai.usage.input_tokens"]) > 0


CHILD = """
import lmforge as lf
from lmforge.testing import DummyLM
lm = DummyLM([{"answer": "4"}], model="test/env", api_key=%r)
print(lf.Predict("question -> answer", lm=lm)(question="What is 2+2?").answer)
"""


def test_lmforge_otel_env_exports_over_otlp_from_a_plain_script(
    collector: _Collector, subprocess_env: dict[str, str], python: str, tmp_path: Path
) -> None:
    env = {
        **subprocess_env,
        "LMFORGE_OTEL": "1",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    done = subprocess.run(
        [python, "-c", CHILD % CANARY],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"
    assert collector.received.wait(10)  # the SDK flushes at exit
    (predictor,) = [s for s in collector.spans if s["attrs"]["lmforge.span.kind"] == "predictor"]
    assert predictor["service"] == "lmforge"
    assert {s["name"] for s in collector.spans} == {"predict question -> answer", "chat test/env"}
    assert collector.bodies and not any(CANARY.encode() in body for body in collector.bodies)
