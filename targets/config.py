"""Program-server settings: security limits, timeouts and readiness checks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lmforge.errors import UsageError

if TYPE_CHECKING:
    from .request_log import RequestLogSettings

__all__ = ["API_KEYS_ENV", "ReadinessCheck", "ServerConfig", "api_keys_from_env"]

API_KEYS_ENV = "LMFORGE_API_KEYS"
MIN_KEY_LENGTH = 16

# A readiness check returns None when ready, else a one-line reason.
ReadinessCheck = Callable[[], Awaitable[str | None]]


def api_keys_from_env(
    environ: Mapping[str, str] | None = None, name: str = API_KEYS_ENV
) -> tuple[str, ...]:
    """API keys from a comma-separated environment variable (blank entries ignored)."""
    raw = (environ if environ is not None else os.environ).get(name, "")
    return tuple(key.strip() for key in raw.split(",") if key.strip())


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the program server guards and runs a program.

    Attributes:
        name: the program's name in URLs and as the OpenAI ``model`` id.
        api_keys: accepted bearer keys; empty is refused unless ``insecure_no_auth``.
        insecure_no_auth: serve without authentication (explicit opt-out, for local use).
        max_body_bytes: largest accepted request body (larger answers 413).
        rate_limit_per_minute: sustained requests per minute per API key (429 above it),
            counted by this server process alone: replicas do not share counts, so N
            replicas admit N times this in all (global limits belong to the gateway).
        rate_limit_burst: requests a key may send at once before the rate applies (per
            process, like the rate).
        max_concurrency: program calls in flight at once; more answer 503.
        request_timeout_s: a program call taking longer answers 504.
        max_batch_items: most items in one batch request.
        batch_concurrency: calls in flight for one batch request.
        drift_window: recent calls kept for drift statistics.
        reference_stats: reference statistics for drift (see ``lmforge.targets.drift``).
        readiness: checks run by ``GET /ready``.
        structured: per-predictor request settings (recorded in the bundle, shown in docs).
        retry_after_s: the ``Retry-After`` advertised when saturated.
        header_timeout_s: a connection whose request headers are not complete this long
            after it opened (or after a later request's first byte) is closed.
        keep_alive_timeout_s: an idle keep-alive connection is closed after this long.
        max_connections: open connections per process; one more is answered 503.
        answer_metadata: the typed endpoint answers ``{"answer": outputs, "confidence",
            "light"}`` instead of the outputs alone (a request may ask with
            ``?metadata=true``); both are always sent as ``X-LMForge-Confidence`` and
            ``X-LMForge-Light`` headers when known.
        withhold: ``"red"`` (or ``"yellow"``: yellow and red) answers are held back: HTTP 200
            with ``{"answer": null, "light": ..., "confidence": ..., "withheld": true}``.
        request_log: where and how to log answers for feedback (off when None).
        artifact_sha256: the served artifact's hash, recorded with each logged answer.

    The last three are connection settings, applied by ``lmforge serve`` (see
    :func:`lmforge.targets.connections.uvicorn_config`), not by the app itself.
    """

    name: str = "program"
    api_keys: tuple[str, ...] = ()
    insecure_no_auth: bool = False
    max_body_bytes: int = 1_048_576
    rate_limit_per_minute: float = 600.0
    rate_limit_burst: int = 60
    max_concurrency: int = 64
    request_timeout_s: float = 120.0
    max_batch_items: int = 64
    batch_concurrency: int = 8
    drift_window: int = 500
    reference_stats: Mapping[str, Any] | None = None
    readiness: Sequence[ReadinessCheck] = ()
    structured: Mapping[str, Any] | None = None
    retry_after_s: int = 1
    header_timeout_s: float = 10.0
    keep_alive_timeout_s: int = 5
    max_connections: int = 512
    answer_metadata: bool = False
    withhold: str | None = None
    request_log: RequestLogSettings | None = None
    artifact_sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.api_keys and not self.insecure_no_auth:
            raise UsageError(
                f"no API keys configured: set {API_KEYS_ENV}=key1,key2 (at least {MIN_KEY_LENGTH} "
                "characters each), or pass --insecure-no-auth to serve without authentication"
            )
        short = [k for k in self.api_keys if len(k) < MIN_KEY_LENGTH]
        if short:
            raise UsageError(
                f"{len(short)} API key(s) are shorter than {MIN_KEY_LENGTH} characters; "
                "generate longer ones, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        for name in (
            "max_body_bytes",
            "max_concurrency",
            "max_batch_items",
            "batch_concurrency",
            "drift_window",
            "keep_alive_timeout_s",
            "max_connections",
        ):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"ServerConfig.{name} must be at least 1")
        if self.rate_limit_per_minute <= 0 or self.rate_limit_burst < 1:
            raise UsageError("rate_limit_per_minute must be > 0 and rate_limit_burst at least 1")
        if self.request_timeout_s <= 0:
            raise UsageError("request_timeout_s must be > 0")
        if not self.header_timeout_s > 0:
            raise UsageError("header_timeout_s must be > 0")
        if self.withhold not in (None, "red", "yellow"):
            raise UsageError(
                f"withhold must be 'red', 'yellow' (yellow and red) or None, got {self.withhold!r}"
            )

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)
