"""Argument checks shared by the modules' constructors: a wrong type is a
:class:`lmforge.UsageError` naming the argument, never a ``TypeError`` from deep inside."""

from __future__ import annotations

import math
from typing import Any

import lmforge as lf

__all__ = ["check_count", "check_number"]


def check_count(value: Any, owner: str, param: str, *, least: int) -> int:
    """``owner(param=value)`` as an int of at least ``least`` (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise lf.UsageError(
            f"{owner}({param}=...) must be a whole number ({param} >= {least}), got {value!r} "
            f"({type(value).__name__})"
        )
    if value < least:
        raise lf.UsageError(f"{owner} needs {param} >= {least}, got {param}={value}")
    return value


def check_number(value: Any, what: str) -> float:
    """``value`` as a float, not NaN (ints and numpy scalars accepted; bools and text refused)."""
    if isinstance(value, bool | str | bytes) or not hasattr(type(value), "__float__"):
        raise lf.UsageError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if math.isnan(number):
        raise lf.UsageError(f"{what} must be a number, got NaN")
    return number
