"""lmforge: declarative programs for language models.

Write programs from typed signatures and modules, compile them against data into
per-model artifacts, and deploy them as served bundles::

    import lmforge as lf

    triage = lf.Predict("ticket -> team: Literal['billing', 'technical', 'sales']")
    with lf.use(lm=lf.LM("openai/gpt-4o-mini")):
        print(triage(ticket="I was charged twice").team)

Importing lmforge is cheap and side-effect free: no provider SDKs, no directories, no
log handlers, no network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .adapters import Adapter, ChatAdapter, CompletionAdapter, JSONAdapter
from .artifact import load
from .budget import Budget
from .errors import (
    ArtifactError,
    AuthenticationError,
    BudgetExceededError,
    ContextWindowError,
    LMError,
    LMForgeError,
    LMTimeoutError,
    MissingExtraError,
    ParseError,
    ProviderError,
    RateLimitError,
    SignatureError,
    UsageError,
)
from .example import Example, Prediction
from .inspection import inspect
from .lm import LM, LMRequest, LMResponse, ModelProfile, RetryPolicy
from .module import BatchError, Module
from .predict import Predict, request_config
from .settings import Settings, configure, use
from .signature import InputField, OutputField, Signature
from .trace import track

if TYPE_CHECKING:
    from . import data, lights, metrics
    from .evaluation import EvaluationResult, evaluate
    from .history import History
    from .image import Image

__all__ = [
    "LM",
    "Adapter",
    "ArtifactError",
    "AuthenticationError",
    "BatchError",
    "Budget",
    "BudgetExceededError",
    "ChatAdapter",
    "CompletionAdapter",
    "ContextWindowError",
    "EvaluationResult",
    "Example",
    "History",
    "Image",
    "InputField",
    "JSONAdapter",
    "LMError",
    "LMForgeError",
    "LMRequest",
    "LMResponse",
    "LMTimeoutError",
    "MissingExtraError",
    "ModelProfile",
    "Module",
    "OutputField",
    "ParseError",
    "Predict",
    "Prediction",
    "ProviderError",
    "RateLimitError",
    "RetryPolicy",
    "Settings",
    "Signature",
    "SignatureError",
    "UsageError",
    "__version__",
    "configure",
    "data",
    "evaluate",
    "inspect",
    "lights",
    "load",
    "metrics",
    "request_config",
    "track",
    "use",
]

# Evaluation pulls in more code than a plain call needs; load it on first access.
_LAZY = {
    "evaluate": ("lmforge.evaluation", "evaluate"),
    "EvaluationResult": ("lmforge.evaluation", "EvaluationResult"),
    # History and Image are pydantic models: pydantic loads on first use, not on import.
    "History": ("lmforge.history", "History"),
    "Image": ("lmforge.image", "Image"),
    "data": ("lmforge.data", None),
    "lights": ("lmforge.lights", None),
    "metrics": ("lmforge.metrics", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = getattr(module, attr) if attr else module
        globals()[name] = value
        return value
    from ._dspy_names import hint_for

    hint = hint_for(name)
    if hint is not None:
        raise AttributeError(f"module 'lmforge' has no attribute {name!r}; in lmforge: {hint}")
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")
