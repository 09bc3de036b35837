"""JSON from files lmforge did not write, parsed with a bound on how deeply it nests.

``json.loads`` raises ``RecursionError`` on a line like ``[[[[...]]]]`` 200,000 levels
deep, and a value nested just under Python's recursion limit parses but breaks the code
that walks it later (hashing, rendering, schema building). :func:`loads_bounded` refuses
both with :class:`TooDeepError`, a ``ValueError`` the loaders turn into their own
one-line errors.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "TooDeepError", "json_depth", "loads_bounded"]

# Far deeper than any dataset record or artifact lmforge writes (signature schemas keep
# nested models in $defs), far below Python's recursion limit of 1000.
MAX_DEPTH = 128


class TooDeepError(ValueError):
    """A JSON value nests more lists and objects than allowed."""


def json_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How many lists/objects deep ``value`` nests (0 for a scalar); stops counting, and
    returns ``limit + 1``, as soon as it is deeper than ``limit``. Iterative: any depth."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            if depth > limit:
                return limit + 1
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def loads_bounded(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)``, refusing (:class:`TooDeepError`) values nested deeper than
    ``max_depth``; other malformed JSON raises ``json.JSONDecodeError`` as usual."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeepError(f"its JSON is nested more than {max_depth} levels deep") from None
    if json_depth(value, max_depth) > max_depth:
        raise TooDeepError(f"its JSON is nested more than {max_depth} levels deep")
    return value
