"""Resolving what the command line names: programs, metrics, datasets, model file names."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.errors import UsageError
from lmforge.metrics import BUILTIN

__all__ = [
    "TRUST_HELP",
    "console",
    "load_artifact",
    "load_data",
    "load_metric",
    "load_target",
    "model_slug",
    "program_inputs",
    "resolve_object",
    "trusted_modules",
]


def model_slug(model: str) -> str:
    """A file-name-safe form of a model name (``openai/gpt-4o-mini`` -> ``openai_gpt-4o-mini``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")
    return slug or "model"


def _import_file(path: Path) -> Any:
    """Import a Python file; inside a package (``__init__.py`` files) it is imported under
    its dotted name, so relative imports and artifact class paths work."""
    path = path.resolve()
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    name = ".".join(parts)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if len(parts) > 1:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot import it as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import(target: str, what: str, spec: str) -> Any:
    """The module ``target`` (a ``.py`` file or a dotted name); failures are UsageErrors."""
    try:
        if _is_file(target):
            file = Path(target)
            if not file.is_file():
                raise UsageError(f"{what} {spec!r}: no such file {target}")
            return _import_file(file)
        return importlib.import_module(target)
    except UsageError:
        raise
    except ImportError as exc:
        raise UsageError(f"{what} {spec!r}: cannot import {target} ({exc})") from None
    except Exception as exc:
        raise UsageError(
            f"{what} {spec!r}: importing {target} failed ({type(exc).__name__}: {exc})"
        ) from None


def resolve_object(spec: str, what: str) -> Any:
    """``path/to/file.py:name`` or ``package.module:name`` -> the object (dotted names allowed)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(
            f"{what} {spec!r} must look like path/to/file.py:name or package.module:name"
        )
    obj: Any = _import(target, what, spec)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{what} {spec!r}: {target} has no attribute {attr!r}") from None
    return obj


TRUST_HELP = (
    "Code the artifact may import (its program class, tools, functions): a module name "
    "(mypackage.programs) or a Python file (path/to/programs.py); repeatable. Importing runs "
    "that code: name only code you trust. lmforge's own modules need no --trust."
)


def trusted_modules(trust: Sequence[str]) -> list[str]:
    """``--trust`` values as module names: a Python file the user named is imported the way
    ``file.py:object`` programs are, and its module is trusted; anything else is a module
    name (its submodules are trusted too)."""
    names = []
    for value in trust:
        if _is_file(value):
            names.append(_import(value, "--trust", value).__name__)
        elif value.strip():
            names.append(value.strip())
    return names


def load_artifact(
    path: Path, *, trust: Sequence[str] = (), allow_endpoints: bool = False
) -> lf.Module:
    """``lf.load`` for the command line: the modules named by ``--trust`` may be imported."""
    return lf.load(path, allow_endpoints=allow_endpoints, trusted_modules=trusted_modules(trust))


def load_target(spec: str, *, trust: Sequence[str] = ()) -> tuple[lf.Module, str]:
    """The program named on the command line and its short name: an artifact file (which
    may import the ``--trust`` modules), or ``file.py:object`` (a Module instance, a Module
    class or a function returning one)."""
    path = Path(spec)
    if path.suffix == ".json" and ":" not in path.name:
        program = load_artifact(path, trust=trust)
        return program, path.stem.split("@", 1)[0]
    obj = resolve_object(spec, "program")
    name = spec.rpartition(":")[2].split(".")[-1]
    if isinstance(obj, lf.Module):
        return obj.deepcopy(), name
    if callable(obj):
        built = _build(obj, spec, "program")
        if isinstance(built, lf.Module):
            return built, name
    raise UsageError(
        f"program {spec!r} is not an lf.Module (nor a class or function that builds one)"
    )


def _build(factory: Callable[..., Any], spec: str, what: str) -> Any:
    """Call a class or factory named on the command line with no arguments; anything it
    raises (other than lmforge's own one-line errors) becomes a :class:`UsageError`."""
    try:
        return factory()
    except lf.LMForgeError:
        raise
    except Exception as exc:
        raise UsageError(
            f"{what} {spec!r}: calling it with no arguments failed "
            f"({type(exc).__name__}: {exc}); name an object, or a function that takes none"
        ) from None


def load_metric(spec: str) -> Callable[..., Any]:
    """A built-in metric name (``exact_match``, ``f1``, ``contains``) or an import path."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" not in spec:
        raise UsageError(
            f"unknown metric {spec!r}; use a built-in ({', '.join(sorted(BUILTIN))}) "
            "or an import path like path/to/file.py:metric"
        )
    metric = resolve_object(spec, "metric")
    if isinstance(metric, type):
        metric = _build(metric, spec, "metric")
    if not callable(metric):
        raise UsageError(
            f"metric {spec!r} is not callable as metric(example, prediction, trace=None)"
        )
    return metric  # type: ignore[no-any-return]


def program_inputs(program: lf.Module) -> list[str]:
    """The program's input names: the input fields of its own ``signature`` (``Predict``,
    ``Chain``, ``ReAct``, ``Retrieve``, ``BestOfN``, ... have one); else the named
    parameters of its ``forward``; else its first predictor's input fields."""
    signature = getattr(program, "signature", None)
    if isinstance(signature, lf.Signature) and signature.input_fields:
        return [f.name for f in signature.input_fields]
    named = _forward_parameters(program)
    if named:
        return named
    predictors = program.predictors()
    if not predictors:
        raise UsageError(
            f"{type(program).__name__} has no signature and no lf.Predict inside; "
            "name its inputs with --inputs a,b"
        )
    return [f.name for f in predictors[0].signature.input_fields]


def _forward_parameters(program: lf.Module) -> list[str]:
    """``forward(self, question, context, k=3)`` -> ``["question", "context"]`` (the
    parameters without a default); ``[]`` when it takes ``**inputs``."""
    import inspect

    try:
        parameters = inspect.signature(program.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return []
    return [p.name for p in parameters if p.kind in kinds and p.default is p.empty]


def load_data(
    path: Path,
    inputs: list[str],
    program: lf.Module,
    *,
    builtin_metric: bool,
    labels: list[str] | None = None,
) -> list[lf.Example]:
    """Load a JSONL split; with a built-in metric, check its labels name program outputs."""
    from lmforge.data import DataError, load_jsonl

    examples = load_jsonl(path, inputs=inputs, labels=labels)
    if builtin_metric:
        outputs = {f.name for p in program.predictors() for f in p.signature.output_fields}
        found = [k for k in examples[0].labels() if k in outputs]
        if not found:
            raise DataError(
                f"{path}: its label field(s) {sorted(examples[0].labels())} match no "
                f"output field of the "
                f"program ({sorted(outputs)}); rename the label or pass a custom --metric"
            )
    return examples


def console() -> Any:
    """A rich console for stdout; off a terminal it is wide, so tables are not truncated."""
    from rich.console import Console

    probe = Console()
    return Console(soft_wrap=True, width=None if probe.is_terminal else 200)


_LM_SPEC = re.compile(r"\.py:[A-Za-z_][\w.]*$")


def is_lm_spec(model: str) -> bool:
    """Whether ``--model`` names a Python object (``path/to/lms.py:name``), not a model."""
    return bool(_LM_SPEC.search(model))


def load_lm(model: str) -> lf.LM:
    """The LM for a ``--model`` value: a model name (``openai/gpt-4o-mini``), or
    ``path/to/lms.py:name`` naming an ``lf.LM`` (or a function returning one) for models
    that need settings beyond a name (endpoints, defaults, custom backends)."""
    if not is_lm_spec(model):
        return lf.LM(model)
    obj = resolve_object(model, "model")
    if not isinstance(obj, lf.LM) and callable(obj):
        obj = _build(obj, model, "model")
    if not isinstance(obj, lf.LM):
        raise UsageError(f"model {model!r} is not an lf.LM (nor a function that returns one)")
    return obj
