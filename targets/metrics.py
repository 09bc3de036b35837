"""Prometheus metrics of one program server (a registry per app, never the global one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmforge.errors import LMError, ParseError
from lmforge.trace import Tracker

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        from lmforge.errors import MissingExtraError

        raise MissingExtraError(
            "prometheus-client", "serve", "the program server's /metrics"
        ) from None
    return prometheus_client


class _Labelled:
    """A labelled metric whose children are looked up once per label set: prometheus'
    ``labels()`` takes a lock and rebuilds the key on every call, a cost paid several
    times per request otherwise. Label sets are few (programs, routes, statuses,
    predictors, error types), so the memo stays small."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class ServerMetrics:
    """Counters and histograms for requests, predictors, tokens, errors and drift."""

    def __init__(self) -> None:
        prom = _prometheus()
        self.registry = prom.CollectorRegistry(auto_describe=True)

        def labelled(kind: Any, name: str, doc: str, labels: list[str], **extra: Any) -> Any:
            return _Labelled(kind(name, doc, labels, registry=self.registry, **extra))

        per_predictor = ["program", "predictor"]
        self.requests = labelled(
            prom.Counter,
            "lmforge_requests",
            "Program requests by route and outcome.",
            ["program", "route", "status"],
        )
        self.latency = labelled(
            prom.Histogram,
            "lmforge_request_latency_seconds",
            "Program call latency.",
            ["program"],
            buckets=_LATENCY_BUCKETS,
        )
        self.predictor_latency = labelled(
            prom.Histogram,
            "lmforge_predictor_latency_seconds",
            "LM call latency per predictor.",
            per_predictor,
            buckets=_LATENCY_BUCKETS,
        )
        self.tokens = labelled(
            prom.Counter, "lmforge_tokens", "Tokens used per predictor.", [*per_predictor, "kind"]
        )
        self.parse_failures = labelled(
            prom.Counter, "lmforge_parse_failures", "LM answers that did not parse.", per_predictor
        )
        self.cache_hits = labelled(
            prom.Counter, "lmforge_cache_hits", "LM calls answered from the cache.", per_predictor
        )
        self.lm_errors = labelled(
            prom.Counter,
            "lmforge_lm_errors",
            "LM call failures by error type.",
            [*per_predictor, "type"],
        )
        self.rejected = labelled(
            prom.Counter,
            "lmforge_rejected_requests",
            "Requests refused before reaching the program.",
            ["reason"],
        )
        self.in_flight = prom.Gauge(
            "lmforge_in_flight_requests", "Program calls in progress.", registry=self.registry
        )
        # Named for dashboards: lmforge_answers_total{program, light}; light "none" counts
        # answers without a confidence.
        self.answers = labelled(
            prom.Counter,
            "lmforge_answers",
            "Answers by confidence light (green, yellow, red; none without a confidence).",
            ["program", "light"],
        )
        self.drift = labelled(
            prom.Gauge,
            "lmforge_drift_score",
            "Population stability index of a statistic against the reference.",
            ["program", "statistic"],
        )

    def record_calls(self, program: str, tracker: Tracker, names: Mapping[int, str]) -> None:
        """Per-predictor metrics from one request's trace."""
        latencies = {id(call.request): call.latency for call in tracker.calls}
        for record in tracker.predictions:
            name = names.get(id(record.predictor), "unknown")
            call = record.lm_call
            error = record.error
            if isinstance(error, ParseError):
                self.parse_failures.labels(program, name).inc()
            elif isinstance(error, LMError):
                self.lm_errors.labels(program, name, type(error).__name__).inc()
            if call is None:
                continue
            latency = latencies.get(id(call.request))
            if latency is not None:
                self.predictor_latency.labels(program, name).observe(latency)
            response = call.response
            if response is None:
                continue
            if response.cache_hit:
                self.cache_hits.labels(program, name).inc()
            self.tokens.labels(program, name, "prompt").inc(response.usage.prompt_tokens)
            self.tokens.labels(program, name, "completion").inc(response.usage.completion_tokens)

    def render(self) -> tuple[bytes, str]:
        prom = _prometheus()
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST
