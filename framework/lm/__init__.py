"""The LM layer: one backend contract, wrapped with cache, retries and accounting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cache import ResponseCache
from .lm import DEFAULT_LOCAL_MODEL, LM
from .profiles import ModelProfile, profile_for
from .retry import RetryPolicy
from .types import (
    Backend,
    ConstraintSegment,
    LMRequest,
    LMResponse,
    OutputConstraint,
    ScoringBackend,
    Usage,
)

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "LM",
    "Backend",
    "ConstraintSegment",
    "ContinuationScores",
    "LMRequest",
    "LMResponse",
    "ModelProfile",
    "OutputConstraint",
    "ResponseCache",
    "RetryPolicy",
    "ScoringBackend",
    "Usage",
    "profile_for",
]


if TYPE_CHECKING:
    from .score_call import ContinuationScores


def __getattr__(name: str) -> Any:
    # Scoring types load with the scoring code, not with `import lmforge`.
    if name == "ContinuationScores":
        from .score_call import ContinuationScores

        return ContinuationScores
    raise AttributeError(f"module 'lmforge.lm' has no attribute {name!r}")
