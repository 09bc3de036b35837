"""A bundle's ``serving.json``: reading it, and the server limits it may set."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import ArtifactError, UsageError

if TYPE_CHECKING:
    from .request_log import RequestLogSettings

__all__ = [
    "BUNDLE_LIMIT_KEYS",
    "answer_options",
    "bundle_limits",
    "bundle_request_log",
    "read_serving",
]

# The ServerConfig fields a bundle may set, with their types: request limits only. Auth
# switches (api_keys, insecure_no_auth) come from the operator, never from the bundle.
BUNDLE_LIMIT_KEYS: dict[str, type] = {
    "max_body_bytes": int,
    "rate_limit_per_minute": float,
    "rate_limit_burst": int,
    "max_concurrency": int,
    "request_timeout_s": float,
    "max_batch_items": int,
    "batch_concurrency": int,
    "drift_window": int,
    "retry_after_s": int,
    "header_timeout_s": float,
    "keep_alive_timeout_s": int,
    "max_connections": int,
}
_SHAPES: dict[str, tuple[type, str]] = {
    "name": (str, "a string"),
    "target": (str, "a string"),
    "backend": (dict, "an object"),
    "predictors": (dict, "an object"),
}


def read_serving(directory: Path) -> dict[str, Any]:
    """The bundle's ``serving.json``; ArtifactError when it is missing or malformed."""
    path = Path(directory) / "serving.json"
    try:
        serving = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing; re-export the bundle") from None
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); re-export the bundle") from None
    if not isinstance(serving, dict) or serving.get("format", "lmforge.serving") != (
        "lmforge.serving"
    ):
        raise ArtifactError(f"{path} is not an lmforge serving file; re-export the bundle")
    for key, (shape, described) in _SHAPES.items():
        if not isinstance(serving.get(key), shape):
            raise ArtifactError(f"{path}: {key!r} must be {described}; re-export the bundle")
    if serving["target"] not in ("vllm", "managed"):
        raise ArtifactError(
            f"{path}: unknown target {serving['target']!r} (vllm or managed); re-export it"
        )
    return serving


def bundle_limits(serving: Mapping[str, Any]) -> dict[str, Any]:
    """The server limits in ``serving.json``'s ``server`` object, checked.

    Only the keys in :data:`BUNDLE_LIMIT_KEYS` are allowed, each a positive number:
    authentication and other security switches come from whoever serves the bundle
    (``lmforge serve`` flags, ``$LMFORGE_API_KEYS``). Raises ArtifactError.
    """
    server = serving.get("server", {})
    if not isinstance(server, Mapping):
        raise ArtifactError("serving.json: 'server' must be an object of limits; re-export it")
    limits: dict[str, Any] = {}
    for key, value in server.items():
        kind = BUNDLE_LIMIT_KEYS.get(key)
        if kind is None:
            raise ArtifactError(
                f"serving.json: server setting {key!r} is not allowed in a bundle (allowed: "
                f"{', '.join(sorted(BUNDLE_LIMIT_KEYS))}); authentication is chosen when "
                "serving (--insecure-no-auth, $LMFORGE_API_KEYS). Remove it and re-export"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
            or (kind is int and not float(value).is_integer())
        ):
            raise ArtifactError(
                f"serving.json: server setting {key!r} must be a positive "
                f"{'integer' if kind is int else 'number'}, got {value!r}; fix it and re-export"
            )
        limits[key] = kind(value)
    return limits


def answer_options(serving: Mapping[str, Any]) -> dict[str, Any]:
    """``serving.json``'s ``answers`` object as ServerConfig settings: ``metadata`` (answer
    ``{answer, confidence, light}``) and ``withhold`` (``"red"``, ``"yellow"`` or null).
    Bundles written before lights have none: both off. Raises ArtifactError."""
    answers = serving.get("answers", {})
    if not isinstance(answers, Mapping) or set(answers) - {"metadata", "withhold"}:
        raise ArtifactError(
            "serving.json: 'answers' must be an object with 'metadata' (true/false) and "
            '\'withhold\' ("red", "yellow" or null); fix it and re-export'
        )
    metadata = answers.get("metadata", False)
    withhold = answers.get("withhold")
    if not isinstance(metadata, bool) or withhold not in (None, "red", "yellow"):
        raise ArtifactError(
            f"serving.json: answers must have metadata true/false and withhold "
            f'"red", "yellow" or null, got {dict(answers)!r}; fix it and re-export'
        )
    return {"answer_metadata": metadata, "withhold": withhold}


def bundle_request_log(serving: Mapping[str, Any], directory: Path) -> RequestLogSettings | None:
    """The bundle's request-log settings (``serving.json``'s ``request_log``), or None when
    it keeps none; a relative SQLite path is resolved against the bundle folder."""
    from .request_log import RequestLogSettings
    from .request_store import store_location

    data = serving.get("request_log")
    if data is None:
        return None
    try:
        settings = RequestLogSettings.from_json(data)
        return dataclasses.replace(settings, url=store_location(settings.url, Path(directory)))
    except (UsageError, TypeError, ValueError) as exc:
        raise ArtifactError(f"serving.json: request_log: {exc}; fix it and re-export") from None
