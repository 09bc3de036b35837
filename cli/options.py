"""Checking option values shared by several commands (``--model``, counts, budgets,
``--out``) so that every command refuses the same bad values with the same one-line error."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from lmforge.errors import UsageError

__all__ = ["at_least", "budget", "failure_rate", "model_option", "output_dir", "share"]

MODEL_HINT = "a model name like openai/gpt-4o-mini, or path/to/lms.py:name"


def model_option(value: str | None, option: str = "--model") -> str | None:
    """A ``--model`` value (``None`` when the option was not given); an empty one is an
    error rather than silently meaning the default model."""
    if value is None:
        return None
    if not value.strip():
        raise UsageError(f"{option} is empty; pass {MODEL_HINT}")
    return value.strip()


def at_least(value: int | None, option: str, least: int) -> int | None:
    """``value`` unless it is below ``least`` (``None``: not given, kept)."""
    if value is not None and value < least:
        raise UsageError(f"{option} must be {least} or more, got {value}")
    return value


def budget(max_calls: int | None, max_cost: float | None) -> Any:
    """The ``lf.Budget`` of ``--max-calls`` / ``--max-cost`` (``None`` when neither is given)."""
    from lmforge.budget import Budget

    if max_calls is None and max_cost is None:
        return None
    at_least(max_calls, "--max-calls", 0)
    if max_cost is not None and not (math.isfinite(max_cost) and max_cost >= 0):
        raise UsageError(
            f"--max-cost must be a finite number of 0 or more (USD), got {max_cost}; "
            "leave it out for no limit"
        )
    return Budget(max_lm_calls=max_calls, max_cost_usd=max_cost)


def failure_rate(value: float) -> float:
    """A ``--max-failure-rate`` value: a share from 0 to 1."""
    if not 0 <= value <= 1:  # NaN fails this too
        raise UsageError(f"--max-failure-rate must be from 0 to 1 (e.g. 0.5 for 50%), got {value}")
    return value


def share(value: float, option: str) -> float:
    """A share from 0 to 1 given as ``option`` (e.g. ``--lights-target``)."""
    if not 0 <= value <= 1:  # NaN fails this too
        raise UsageError(f"{option} must be from 0 to 1 (e.g. 0.9 for 90%), got {value}")
    return value


def output_dir(path: Path) -> Path:
    """``--out``: an existing writable directory, or one that can be created; checked before
    any work starts, so a bad path does not fail after a long compile."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a directory; pass a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"--out {path}: cannot create the directory ({reason})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path} is not writable; pass a directory you can write to")
    return path
