"""Which structured-output ``response_format`` a model is sent, and falling back when a
provider refuses one.

The JSONAdapter builds the strongest format (a JSON schema); the LM's profile says how
much of it the model takes (``json_schema`` -> ``json_object`` -> prompt only). When a
provider answers that it does not support the format after all, the LM's profile is
lowered one step, once, so later calls do not repeat the failing request.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..errors import LMError

if TYPE_CHECKING:
    from ..lm.lm import LM
    from ..lm.profiles import StructuredOutput
    from ..lm.types import LMRequest, LMResponse

__all__ = ["allowed_format", "complete_core"]

# Strongest first; "none" sends no response_format and relies on the prompt and parsing.
_MODES: tuple[StructuredOutput, ...] = ("json_schema", "json_object", "none")


def allowed_format(response_format: dict[str, Any] | None, mode: str) -> dict[str, Any] | None:
    """``response_format`` lowered to what a model of structured-output ``mode`` takes."""
    if response_format is None or mode not in _MODES:
        return response_format  # e.g. "grammar": the local backend compiles the schema
    kind = response_format.get("type")
    if kind not in _MODES or _MODES.index(kind) >= _MODES.index(mode):
        return response_format
    return {"type": "json_object"} if mode == "json_object" else None


def _unsupported(exc: LMError) -> bool:
    """Whether ``exc`` is a provider refusing the response_format (HTTP 400/422)."""
    text = str(exc).lower().replace(" ", "_")
    return (
        not exc.retryable
        and exc.status_code in (None, 400, 422)
        and ("response_format" in text or "json_schema" in text)
    )


def _prepared(lm: LM, request: LMRequest) -> LMRequest:
    fmt = allowed_format(request.response_format, lm.profile.structured_output)
    if fmt is request.response_format:
        return request
    return dataclasses.replace(request, response_format=fmt)


def _lower(lm: LM, request: LMRequest, exc: LMError) -> bool:
    """Lower ``lm``'s structured-output mode past the refused format; False when
    ``exc`` is not such a refusal (or nothing is left to lower)."""
    fmt = request.response_format
    if fmt is None or fmt.get("type") not in _MODES[:-1] or not _unsupported(exc):
        return False
    lower = _MODES[_MODES.index(fmt["type"]) + 1]
    # The profile is the LM's declared capability; what the provider said corrects it.
    lm.profile = dataclasses.replace(lm.profile, structured_output=lower)
    return True


async def complete_core(lm: LM, request: LMRequest, *, blocking: bool) -> LMResponse:
    """``lm.complete(request)`` with the response_format the LM takes, falling back one
    mode per refusal (a :mod:`lmforge.steps` core, awaited with the caller's
    ``blocking``)."""
    while True:
        request = _prepared(lm, request)
        try:
            return await lm.complete_core(request, blocking=blocking)
        except LMError as exc:
            if not _lower(lm, request, exc):
                raise
