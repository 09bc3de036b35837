"""Ground truth from production: the server side of the request log and of feedback.

:class:`FeedbackService` counts every answer by light, hands answers to the opt-in
:class:`~lmforge.targets.request_log.RequestLog`, serves
``POST /v1/programs/NAME/feedback`` (``{"request_id", "outputs"}`` with the correct
outputs, or ``{"request_id", "score"}`` with a score in [0, 1]; idempotent per request
id), and exports feedback statistics as Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge import Module
from pydantic_core import to_jsonable_python

from .config import ServerConfig
from .metrics import ServerMetrics
from .request_log import RequestLog, wants_feedback
from .request_store import StoreError
from .runtime import ApiError, validation_message

__all__ = ["FeedbackService"]

_REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,160}$"


def _jsonable(values: Mapping[str, Any]) -> str:
    # fallback=str: an input type JSON cannot hold is logged as its text, never a failure.
    jsonable = to_jsonable_python(dict(values), fallback=str)
    return json.dumps(jsonable, ensure_ascii=False, sort_keys=True)


def _model_name(program: Module) -> str | None:
    lm = next((p.lm for p in program.predictors() if p.lm is not None), None)
    return str(lm.model) if lm is not None else None


class FeedbackService:
    """Answers by light, the request log and the feedback route of one program server."""

    def __init__(
        self,
        name: str,
        program: Module,
        response_model: Any,
        config: ServerConfig,
        metrics: ServerMetrics,
        *,
        base: Path | None = None,
    ) -> None:
        import prometheus_client as prom
        import pydantic

        from .metrics import _Labelled

        self.name = name
        self.metrics = metrics
        registry = metrics.registry
        self.log_outcomes = _Labelled(
            prom.Counter(
                "lmforge_request_log_rows",
                "Answers given to the request log: queued, or dropped (queue_full, store_error).",
                ["outcome"],
                registry=registry,
            )
        )
        self.feedback_posts = _Labelled(
            prom.Counter(
                "lmforge_feedback",
                "Feedback posts by result (recorded, duplicate, feedback_conflict, "
                "unknown_request, invalid_input, store_unavailable, request_log_off).",
                ["program", "result"],
                registry=registry,
            )
        )
        self.feedback_requested = _Labelled(
            prom.Counter(
                "lmforge_feedback_requested",
                "Answers sent with X-Feedback-Requested (yellow, red, and the sampled share "
                "of green).",
                ["program", "light"],
                registry=registry,
            )
        )
        self.weekly = prom.Gauge(
            "lmforge_feedback_score",
            "Mean feedback correctness (1: the answer was right) per week of feedback.",
            ["program", "week"],
            registry=registry,
        )
        self.weekly_count = prom.Gauge(
            "lmforge_feedback_count",
            "Feedback posts per week.",
            ["program", "week"],
            registry=registry,
        )
        self.settings = config.request_log
        self.sample = self.settings.feedback_sample if self.settings is not None else 0.0
        self.artifact_sha256 = config.artifact_sha256
        self.model = _model_name(program)
        self.log: RequestLog | None = None
        if self.settings is not None:
            self.log = RequestLog(
                self.settings,
                base=base,
                on_drop=lambda reason, count: self.log_outcomes.labels(reason).inc(count),
            )
        fields: dict[str, Any] = {
            field: (info.annotation, info) for field, info in response_model.model_fields.items()
        }
        base = response_model.__name__.removesuffix("Response")
        outputs = pydantic.create_model(
            f"{base}FeedbackOutputs",
            __config__=pydantic.ConfigDict(extra="forbid"),
            **fields,
        )
        self.body_model: Any = pydantic.create_model(
            f"{base}Feedback",
            __config__=pydantic.ConfigDict(extra="forbid"),
            request_id=(str, pydantic.Field(..., pattern=_REQUEST_ID_PATTERN)),
            outputs=(outputs | None, None),
            score=(float | None, pydantic.Field(None, ge=0.0, le=1.0, allow_inf_nan=False)),
        )

    def observe(
        self,
        request_id: str,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        prediction: Any,
        latency_s: float,
    ) -> bool:
        """Log one answer (the runtime counts it by light); True when feedback is asked
        for it."""
        confidence = getattr(prediction, "confidence", None)
        light = getattr(prediction, "light", None)
        light = light if isinstance(light, str) else None
        if self.log is None:
            return False
        asked = wants_feedback(request_id, light, self.sample)
        queued = self.log.record(
            {
                "request_id": request_id,
                "program": self.name,
                "created_at": time.time(),
                "inputs": _jsonable(self.log.scrub(inputs)),
                "outputs": _jsonable(self.log.scrub(outputs)),
                "confidence": float(confidence) if isinstance(confidence, int | float) else None,
                "light": light,
                "latency_s": round(latency_s, 6),
                "model": self.model,
                "artifact_sha256": self.artifact_sha256,
                "feedback_requested": int(asked),
            }
        )
        if queued:
            self.log_outcomes.labels("queued").inc()
        if asked:
            self.feedback_requested.labels(self.name, light or "none").inc()
        return asked

    async def post(self, raw: bytes) -> dict[str, Any]:
        """Handle one feedback body; the answer document, or ApiError."""
        import pydantic

        result = "invalid_input"
        try:
            if self.log is None:
                raise ApiError(
                    404,
                    "request_log_off",
                    "this server keeps no request log, so feedback cannot be matched to an "
                    "answer; serve with --request-log PATH_OR_URL (or export the bundle with "
                    "--request-log)",
                )
            try:
                body: Any = self.body_model.model_validate_json(raw)
            except pydantic.ValidationError as exc:
                raise ApiError(422, "invalid_input", validation_message(exc.errors())) from None
            if (body.outputs is None) == (body.score is None):
                raise ApiError(
                    422,
                    "invalid_input",
                    'invalid feedback: send exactly one of "outputs" (the correct outputs) '
                    'or "score" (a number from 0 to 1)',
                )
            outputs = body.outputs.model_dump(mode="json") if body.outputs is not None else None
            answer, result = await asyncio.to_thread(
                self._record, body.request_id, outputs, body.score
            )
            return answer
        except ApiError as exc:
            result = exc.kind
            raise
        finally:
            self.feedback_posts.labels(self.name, result).inc()

    def _record(
        self, request_id: str, outputs: dict[str, Any] | None, score: float | None
    ) -> tuple[dict[str, Any], str]:
        assert self.log is not None
        try:
            row = self.log.store.request(request_id)
            if row is None and self.log.flush(timeout=2.0):
                row = self.log.store.request(request_id)  # the answer was still queued
            if row is None:
                raise ApiError(
                    404,
                    "unknown_request",
                    f"no logged answer has request_id {request_id!r}; use the X-Request-ID "
                    "header of the answer (answers older than the retention limit are gone)",
                )
            scrubbed = self.log.scrub(outputs) if outputs is not None else None
            correct = (
                float(_same(scrubbed, row["outputs"])) if scrubbed is not None else float(score)  # type: ignore[arg-type]
            )
            if self.log.store.add_feedback(request_id, scrubbed, score, correct):
                return {"request_id": request_id, "status": "recorded"}, "recorded"
            existing = self.log.store.request(request_id)
            previous = (existing or {}).get("feedback") or {}
            if (
                previous.get("outputs") == (json.loads(_jsonable(scrubbed)) if scrubbed else None)
                and previous.get("score") == score
            ):
                return {"request_id": request_id, "status": "duplicate"}, "duplicate"
            raise ApiError(
                409,
                "feedback_conflict",
                f"request {request_id!r} already has different feedback; feedback is "
                "recorded once per request_id (the first one is kept)",
            )
        except StoreError as exc:
            raise ApiError(
                503, "store_unavailable", f"{exc}; the feedback was not recorded"
            ) from None

    async def refresh_metrics(self) -> None:
        """Update the weekly feedback gauges from the store (called on a scrape)."""
        if self.log is None:
            return
        try:
            weeks = await asyncio.to_thread(self.log.store.weekly_scores)
        except StoreError:
            return  # the writer already logs and counts store failures
        # Weeks that left the window (or the store) leave the gauges too.
        self.weekly.clear()
        self.weekly_count.clear()
        for start, score, count in weeks:
            label = datetime.datetime.fromtimestamp(start, datetime.UTC).date().isoformat()
            self.weekly.labels(self.name, label).set(round(score, 4))
            self.weekly_count.labels(self.name, label).set(count)

    def documented_route(self, path: str) -> Any:
        """The feedback route as FastAPI documents it (served by a plain route)."""
        import fastapi

        async def feedback(body: Any) -> dict[str, Any]:
            return await self.post(body.model_dump_json(exclude_none=True).encode())

        feedback.__annotations__ = {"body": self.body_model, "return": dict[str, str]}
        # Served by the plain route in the server (cheaper); this one feeds /openapi.json.
        return fastapi.routing.APIRoute(
            path,
            feedback,
            methods=["POST"],
            tags=["programs"],
            summary=f"Feedback on an answer of {self.name}",
            description="The correct `outputs` of a logged answer, or a `score` from 0 to 1, "
            "for the answer whose `X-Request-ID` is `request_id`. Recorded once per request "
            "id: the same feedback again answers `duplicate`, different feedback 409. Needs "
            "the server's request log.",
        )

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _same(corrected: Mapping[str, Any], logged: Mapping[str, Any]) -> bool:
    return json.loads(_jsonable(corrected)) == json.loads(_jsonable(logged))
