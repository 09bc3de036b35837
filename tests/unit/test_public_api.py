"""The public surface: ``lmforge.__all__`` is complete and resolvable, and ``import lmforge``
is cheap and free of side effects (no heavy imports, no directories, no log handlers)."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import textwrap
from pathlib import Path

import lmforge as lf
import pytest
from lmforge import errors

# The names the project promises (issue "Foundation", DESIGN.md §3); removing one breaks users.
EXPECTED_EXPORTS = {
    "__version__",
    # signatures and data
    "Signature",
    "InputField",
    "OutputField",
    "Example",
    "Prediction",
    # input types (lazy: pydantic models)
    "History",
    "Image",
    # programs
    "Module",
    "Predict",
    "BatchError",
    # adapters
    "Adapter",
    "ChatAdapter",
    "JSONAdapter",
    "CompletionAdapter",
    # language models
    "LM",
    "LMRequest",
    "LMResponse",
    "ModelProfile",
    "RetryPolicy",
    # settings, tracing, artifacts
    "use",
    "configure",
    "Settings",
    "track",
    "inspect",
    "load",
    # evaluation (lazy)
    "evaluate",
    "EvaluationResult",
    "data",
    "metrics",
    "Budget",
    # errors
    "LMForgeError",
    "UsageError",
    "SignatureError",
    "ParseError",
    "LMError",
    "RateLimitError",
    "LMTimeoutError",
    "ContextWindowError",
    "AuthenticationError",
    "ProviderError",
    "ArtifactError",
    "MissingExtraError",
    "BudgetExceededError",
}

# Public names of core modules that are deliberately reached through their module
# (``lmforge.trace.Tracker``) rather than the top level. A new public name in one of these
# modules must be either exported from ``lmforge`` or listed here.
SUBMODULE_ONLY = {
    "lmforge.signature": {"Field", "as_signature"},
    "lmforge.settings": {"current", "no_lm_error"},
    "lmforge.trace": {
        "LMCall",
        "PredictorCall",
        "Tracker",
        # The hook integrations (lmforge.integrations.otel) install; not for programs.
        "Instrumentation",
        "instrumentation",
        "set_instrumentation",
    },
    "lmforge.artifact": {
        "SCHEMA_VERSION",
        "read_artifact",
        "save",
        "write_json_atomic",
        "to_artifact",
    },
    "lmforge.predict": {"current_call", "request_config"},
    "lmforge.adapters": {"Prompt", "PromptPrefix", "adapter_from_config", "adapter_named"},
    "lmforge.lm": {
        "DEFAULT_LOCAL_MODEL",
        "Backend",
        "ConstraintSegment",
        "ContinuationScores",
        "OutputConstraint",
        "ResponseCache",
        "ScoringBackend",
        "Usage",
        "profile_for",
    },
    "lmforge.errors": set(),
    "lmforge.example": set(),
    "lmforge.module": set(),
    "lmforge.inspection": set(),
    "lmforge.history": set(),
    "lmforge.image": {"MAX_IMAGE_BYTES"},
}

HEAVY = (
    "litellm",
    "optuna",
    "fastapi",
    "uvicorn",
    "torch",
    "transformers",
    "llama_cpp",
    "openai",
    "vllm",
    "plotly",
    "bm25s",
)


def test_every_name_in_all_resolves() -> None:
    assert len(lf.__all__) == len(set(lf.__all__)), "duplicates in __all__"
    for name in lf.__all__:
        assert getattr(lf, name) is not None, name


def test_promised_names_are_exported() -> None:
    assert EXPECTED_EXPORTS - set(lf.__all__) == set()


@pytest.mark.parametrize("module_name", sorted(SUBMODULE_ONLY))
def test_core_module_public_names_are_exported_or_deliberately_internal(module_name: str) -> None:
    module = importlib.import_module(module_name)
    public = set(getattr(module, "__all__", ()))
    assert public, f"{module_name} has no __all__"
    for name in public:
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which does not exist"
    unexported = public - set(lf.__all__) - SUBMODULE_ONLY[module_name]
    assert unexported == set(), (
        f"export these from lmforge or list them in SUBMODULE_ONLY: {sorted(unexported)}"
    )


def test_every_error_class_is_exported() -> None:
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, lf.LMForgeError)
        and obj.__module__ == errors.__name__
    }
    assert defined - set(lf.__all__) == set()


def test_exports_have_docstrings() -> None:
    for name in lf.__all__:
        obj = getattr(lf, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"lmforge.{name} has no docstring"


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        lf.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_import_is_side_effect_free(
    tmp_path: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    home = tmp_path / "home"  # made by the fixture, empty
    script = textwrap.dedent(
        f"""
        import json, logging, sys
        def handlers():
            known = logging.Logger.manager.loggerDict.values()
            loggers = [logging.getLogger()] + [l for l in known if isinstance(l, logging.Logger)]
            return sum(len(l.handlers) for l in loggers)
        before = handlers()
        import lmforge, lmforge.testing, lmforge.adapters, lmforge.lm
        print(json.dumps({{
            "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules),
            "new_handlers": handlers() - before,
        }}))
        """
    )
    env = {
        **subprocess_env,
        "LMFORGE_CACHE_DIR": str(empty / "cache"),
        "XDG_CACHE_HOME": str(empty / "xdg"),
    }
    done = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, timeout=60, cwd=empty, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    assert result["new_handlers"] == 0
    assert list(empty.iterdir()) == []
    assert list(home.iterdir()) == []
