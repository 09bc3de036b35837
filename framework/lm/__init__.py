"""The LM layer: one backend contract, wrapped with cache, retries and accounting."""

from __future__ import annotations

from .cache import ResponseCache
from .lm import DEFAULT_LOCAL_MODEL, LM
from .profiles import ModelProfile, profile_for
from .retry import RetryPolicy
from .types import (
    Backend,
    ConstraintSegment,
    ContinuationScores,
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
