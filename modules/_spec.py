"""Recording modules and functions inside artifacts by import path, and rebuilding them.

Nested modules are saved as ``{"type": "package.module:Class", "config": spec_config()}``
and functions (tools, rewards, reducers) as ``"package.module:function"``; nothing is
ever pickled. Loading re-imports what was recorded, from trusted modules only
(see :mod:`lmforge.trust`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lmforge as lf
from lmforge.trust import import_trusted

__all__ = ["callable_ref", "import_object", "module_from_spec", "module_spec", "resolve_callable"]


def module_spec(module: lf.Module) -> dict[str, Any]:
    """How to rebuild ``module`` without user code: its class path and constructor config."""
    cls = type(module)
    return {"type": f"{cls.__module__}:{cls.__qualname__}", "config": module.spec_config()}


def module_from_spec(spec: Mapping[str, Any], *, what: str = "module") -> lf.Module:
    """Rebuild a module recorded by :func:`module_spec`."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise lf.UsageError(f"a saved {what} must be an object with a 'type'; got {spec!r}")
    cls = import_object(str(spec["type"]), what=what)
    if not (isinstance(cls, type) and issubclass(cls, lf.Module)):
        raise lf.UsageError(f"the saved {what} {spec['type']} is not an lmforge Module subclass")
    module_cls: type[lf.Module] = cls
    return module_cls.from_spec_config(dict(spec.get("config") or {}))


def callable_ref(func: Callable[..., Any]) -> str:
    """The ``package.module:qualname`` import path of a function."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname:
        raise lf.UsageError(f"{func!r} has no import path; use a module-level function")
    return f"{module}:{qualname}"


def resolve_callable(ref: str, *, what: str, hint: str) -> Callable[..., Any]:
    """Import the function recorded as ``ref``; ``hint`` says how to supply it instead."""
    func = import_object(ref, what=what, hint=hint)
    if not callable(func):
        raise lf.UsageError(f"the saved {what} {ref} is not callable")
    return func  # type: ignore[no-any-return]


def import_object(ref: str, *, what: str, hint: str = "") -> Any:
    """Import the object recorded as ``package.module:qualname`` (never from ``__main__``)."""
    module_name, _, qualname = ref.partition(":")
    suffix = f"; {hint}" if hint else ""
    if not module_name or not qualname:
        raise lf.UsageError(f"the saved {what} {ref!r} is not a 'package.module:name' path{suffix}")
    if module_name == "__main__":
        raise lf.UsageError(
            f"the {what} {qualname} was defined in a script (__main__) and cannot be "
            f"re-imported{suffix}"
        )
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise lf.UsageError(
            f"the {what} {ref} is a local function or lambda and cannot be re-imported{suffix}"
        )
    try:
        # Inside lf.load, a module the caller does not trust is refused before importing.
        obj: Any = import_trusted(module_name, qualname, what=what)
    except (ImportError, AttributeError) as exc:
        raise lf.UsageError(f"cannot import the {what} {ref} ({exc}){suffix}") from None
    return obj
