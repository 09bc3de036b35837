"""Reading JSON out of a model's answer: strict first, then leniently.

Models wrap JSON in code fences, put a sentence before it, write Python-style single
quotes or leave trailing commas. Strict parsing is tried first (fast, and exact for
well-formed answers); only when it fails is the answer repaired with ``json_repair``.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["NOT_JSON", "loads_lenient", "strip_fences"]

#: Returned by :func:`loads_lenient` when the text holds no JSON object or array.
NOT_JSON: Any = type("NotJSON", (), {"__repr__": lambda self: "NOT_JSON", "__slots__": ()})()

_FENCE = re.compile(r"^```[a-zA-Z]*\n(.*?)\n?```$", re.S)


def strip_fences(text: str) -> str:
    """``text`` without a Markdown code fence around it."""
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text


def loads_lenient(text: str) -> Any:
    """The JSON value in ``text``, or :data:`NOT_JSON`.

    ``text`` may be fenced, follow prose, or be almost-JSON (single quotes, trailing
    commas, an unclosed bracket); a bare scalar is read only when ``text`` is exactly one.
    """
    body = strip_fences(text.strip())
    try:
        return json.loads(body)
    except ValueError:
        pass
    start = next((i for i, ch in enumerate(body) if ch in "[{"), -1)
    if start < 0:
        return NOT_JSON
    decoder = json.JSONDecoder()
    try:
        return decoder.raw_decode(body, start)[0]  # well-formed JSON after some prose
    except ValueError:
        pass
    repaired = _repair(body[start:])
    if repaired is not NOT_JSON:
        return repaired
    for i in range(start + 1, len(body)):  # a well-formed value later on
        if body[i] in "[{":
            try:
                return decoder.raw_decode(body, i)[0]
            except ValueError:
                continue
    return NOT_JSON


def _repair(text: str) -> Any:
    import json_repair  # imported only when an answer is not strict JSON

    try:
        value = json_repair.loads(text)
    except (ValueError, RecursionError):
        return NOT_JSON
    return value if isinstance(value, dict | list) else NOT_JSON
