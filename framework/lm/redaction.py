"""Credentials taken out of error text before it becomes an lmforge error.

Providers and proxies sometimes echo the request's key (``Incorrect API key provided:
sk-...``, a reflected ``Authorization`` header, an endpoint URL with ``user:password@``).
The backends pass every error text through :func:`redact` where they translate backend
errors into lmforge's error tree, so no credential reaches messages, logs, traces, reports
or CLI output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["REDACTED", "redact", "safe_cause"]

REDACTED = "[redacted]"
# Environment variables whose values are credentials: OPENAI_API_KEY, ANTHROPIC_API_KEY,
# HOSTED_VLLM_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, ... (any provider litellm knows).
_SECRET_ENV = re.compile(
    r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.I
)
# Shorter values are too likely to be ordinary words to replace wherever they appear.
_MIN_ENV_SECRET = 8
_MIN_SECRET = 4
_PATTERNS = (
    # Authorization: Bearer <token> / Basic <base64>, in headers or reflected text
    (re.compile(r"\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=-]{6,}", re.I), rf"\1\2{REDACTED}"),
    # api_key=..., "x-api-key": "...", Authorization: ..., password=... (JSON, query, headers)
    (
        re.compile(
            r"""((?:x-)?api[-_]?key|authorization|access[-_]?token|password|secret)"""
            r"""(["']?\s*[:=]\s*["']?)(?!Bearer\b|Basic\b|Token\b|\[redacted\])[^\s"',;&}]+""",
            re.I,
        ),
        rf"\1\2{REDACTED}",
    ),
    # scheme://user:password@host
    (re.compile(r"\b([a-z][a-z0-9+.-]*://)[^\s/?#@]+@", re.I), rf"\1{REDACTED}@"),
)


def _known_secrets(secrets: Iterable[str | None]) -> list[str]:
    found = {s for s in secrets if s and len(s) >= _MIN_SECRET}
    for name, value in os.environ.items():
        if len(value) >= _MIN_ENV_SECRET and _SECRET_ENV.search(name):
            found.add(value)
    # Longest first: a key that contains another is replaced whole.
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every credential replaced by ``[redacted]``: the given ``secrets``
    (e.g. the LM's ``api_key``), the values of credential environment variables
    (``*_API_KEY``, ``*_TOKEN``, ...), ``Bearer``/``Basic`` tokens, ``api_key=``-style
    values and URL userinfo. Redact whole texts, before any truncation."""
    for secret in _known_secrets(secrets):
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def safe_cause(exc: BaseException, secrets: Iterable[str | None] = ()) -> BaseException | None:
    """``exc`` to chain as the translated error's cause, or ``None`` when its text holds a
    credential (a traceback or ``logging.exception`` would print it)."""
    text = str(exc)
    return exc if redact(text, secrets) == text else None
