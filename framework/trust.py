"""Which code an artifact may make lmforge import, checked before anything is imported.

Artifacts name classes and functions by import path (``package.module:Class``), and
importing a module runs its top-level code: a file from elsewhere could run anything just
by being loaded. While :func:`lmforge.load` rebuilds a program, only lmforge's own modules
and the ones its caller trusts (``trusted_modules=``) may be imported, and only objects
defined in them are used (``lf.load(path, program=...)`` imports nothing). Outside a load
(your own code calling ``from_spec_config``), imports are not restricted.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import ArtifactError, UsageError

__all__ = ["import_trusted", "trusted_names", "trusting"]

# The modules the load in progress (this thread or task) allows; None outside a load.
_TRUSTED: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "lmforge_trusted_modules", default=None
)


def trusted_names(modules: str | Iterable[str] | None) -> tuple[str, ...]:
    """``trusted_modules=`` as module names (one name, or several)."""
    if modules is None:
        return ()
    names = [modules] if isinstance(modules, str) else list(modules)
    wrong = [n for n in names if not isinstance(n, str) or not n.strip(".").strip()]
    if wrong:
        raise UsageError(
            f"trusted_modules must be module names like ['mypackage.programs'], got {wrong[0]!r}"
        )
    return tuple(n.strip().strip(".") for n in names)


@contextlib.contextmanager
def trusting(modules: Iterable[str]) -> Iterator[None]:
    """Allow imports from lmforge and ``modules`` (and their submodules) only, inside."""
    token = _TRUSTED.set(("lmforge", *modules))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _allowed(module: str, trusted: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in trusted)


def import_trusted(module: str, qualname: str, *, what: str) -> Any:
    """Import ``module`` and walk ``qualname`` in it; during a load, a module nobody
    trusted is refused before it is imported (:class:`ArtifactError`), and so is an object
    reached through it that is defined elsewhere (``lmforge.x:os.system``)."""
    trusted = _TRUSTED.get()
    ref = f"{module}:{qualname}"
    if trusted is not None and not _allowed(module, trusted):
        raise ArtifactError(_refusal(what, ref, module))
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if trusted is not None:
        home = getattr(obj, "__module__", None)
        if not isinstance(home, str) or not _allowed(home, trusted):
            raise ArtifactError(
                f"the {what} {ref} is defined in {home!r}, not in a trusted module; an "
                "artifact may only name classes and functions where they are defined"
            )
    return obj


def _refusal(what: str, ref: str, module: str) -> str:
    return (
        f"the {what} {ref} was not imported: module {module!r} is not trusted and importing "
        f"it would run its code; if you trust it, pass trusted_modules=[{module!r}] to "
        f"lf.load (on the command line: --trust {module})"
    )
