"""Optimizer settings: declared once as dataclass fields, from which the constructor, its
checks and ``config()`` all derive; and checking ``-o name=value`` options (CLI) against
the constructor.

    @dataclasses.dataclass(eq=False, repr=False)
    class MyOptimizer(Optimizer):
        rounds: int = setting(3, least=1)
        prompt_lm: lf.LM | str | None = setting(None, record="prompt_model", convert=as_lm)
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import lmforge as lf
from lmforge.errors import UsageError
from lmforge.lm.lm import LM

__all__ = ["check_options", "check_settings", "recorded_settings", "setting"]


def setting(
    default: Any = None,
    *,
    least: int | None = None,
    kind: type | None = None,
    record: bool | str = True,
    convert: Callable[[Any], Any] | None = None,
    record_default: bool = True,
) -> Any:
    """A dataclass field for one optimizer setting.

    Args:
        default: its default value.
        least: the smallest value allowed (``None`` values are not checked).
        kind: the type a value other than ``None`` must have.
        record: whether ``config()`` records it (the run's identity and the artifact);
            a string records it under that name.
        convert: applied to the value when the optimizer is built (a model name to an LM).
        record_default: ``False`` records the setting only when it differs from its default
            (a setting added later leaves the identities of earlier runs unchanged).
    """
    metadata = {
        "least": least,
        "kind": kind,
        "record": record,
        "convert": convert,
        "record_default": record_default,
    }
    return dataclasses.field(default=default, metadata=metadata)


def check_settings(optimizer: Any) -> None:
    """Convert and check every setting of a dataclass optimizer (one-line UsageErrors)."""
    owner = type(optimizer).__name__
    for field in dataclasses.fields(optimizer):
        value = getattr(optimizer, field.name)
        convert = field.metadata.get("convert")
        if convert is not None:
            value = convert(value)
            setattr(optimizer, field.name, value)
        if value is None:
            continue
        kind = field.metadata.get("kind")
        if kind is not None and not isinstance(value, kind):
            raise UsageError(
                f"{owner}({field.name}=...) must be an lf.{kind.__name__}, "
                f"got {type(value).__name__}"
            )
        least = field.metadata.get("least")
        if least is not None and value < least:
            raise UsageError(f"{owner}({field.name}=...) must be at least {least}, got {value!r}")


def recorded_settings(optimizer: Any) -> dict[str, Any]:
    """The settings ``config()`` records, as JSON-safe data: programs by their fingerprint,
    LMs by their model name."""
    from .store import program_fingerprint

    config: dict[str, Any] = {}
    for field in dataclasses.fields(optimizer):
        record = field.metadata.get("record", True)
        if record is False:
            continue
        value = getattr(optimizer, field.name)
        if not field.metadata.get("record_default", True) and value == field.default:
            continue
        if isinstance(value, lf.Module):
            value = program_fingerprint(value)
        elif isinstance(value, LM):
            value = value.model
        config[record if isinstance(record, str) else field.name] = value
    return config


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
