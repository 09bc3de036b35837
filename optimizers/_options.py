"""Checking optimizer options (``-o name=value`` on the CLI) against the constructor."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from lmforge.errors import UsageError

__all__ = ["check_options"]

#: Plain option types, by how the message names them.
_PLAIN = {bool: "true or false", int: "an int", float: "a number", str: "text"}


def check_options(cls: type, name: str, options: dict[str, Any]) -> None:
    """Raise a :class:`UsageError` for an option ``cls`` does not take, or a value of a
    plain type (int, float, bool, text) other than its annotation allows."""

    try:
        parameters = dict(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return
    parameters.pop("self", None)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {
        k: p
        for k, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    unknown = sorted(k for k in options if k not in named)
    if unknown and not takes_any:
        raise UsageError(
            f"optimizer {name!r}: bad option(s) {', '.join(map(repr, unknown))}: no such "
            f"option; its options are {', '.join(sorted(named))}"
        )
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # an annotation that does not resolve: leave the values unchecked
        hints = {}
    for key, value in options.items():
        parameter = named.get(key)
        if parameter is None:
            continue
        allowed = _plain_types(hints.get(key, inspect.Parameter.empty))
        if allowed is None or _fits(value, allowed):
            continue
        wanted = " or ".join(_PLAIN[t] for t in (bool, int, float, str) if t in allowed)
        if type(None) in allowed:
            wanted += " (or null)"
        raise UsageError(
            f"optimizer {name!r}: option {key} expects {wanted}, got {value!r} "
            f"({type(value).__name__}); e.g. -o {key}={_example(allowed)}"
        )


def _plain_types(annotation: Any) -> set[type] | None:
    """The types an annotation allows when they are all plain (int, float, bool, str,
    None); ``None`` when it allows anything else (then the value is not checked here)."""
    if annotation is inspect.Parameter.empty:
        return None
    if annotation is None or annotation is type(None):
        return {type(None)}
    if annotation in _PLAIN:
        return {annotation}
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        found: set[type] = set()
        for arg in typing.get_args(annotation):
            inner = _plain_types(arg)
            if inner is None:
                return None
            found |= inner
        return found
    return None


def _fits(value: Any, allowed: set[type]) -> bool:
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed
    return any(isinstance(value, t) for t in allowed if t is not type(None))


def _example(allowed: set[type]) -> str:
    if int in allowed:
        return "4"
    if float in allowed:
        return "0.5"
    if bool in allowed:
        return "true"
    return "text"
