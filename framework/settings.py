"""Settings: one process default plus scoped overrides in a ContextVar.

:func:`configure` sets the process default, which every thread sees (the application's
default LM). ``with lf.use(...)`` overrides it for a block: the override lives in a
ContextVar, so it reaches the calling thread or task and the workers lmforge starts
(``Module.batch`` and evaluation copy the caller's context), never other threads. There is
no other module-level mutable configuration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .adapters.base import Adapter
    from .lm.lm import LM

__all__ = ["Settings", "configure", "current", "no_lm_error", "use"]


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The settings in force for the current context.

    Attributes:
        lm: the language model predictors call when they have none of their own.
        adapter: the adapter predictors use when they have none of their own; ``None``
            lets the LM's model profile choose.
        cache: whether LM calls may be answered from (and stored in) the on-disk cache.
        max_concurrency: default concurrency of ``Module.batch`` and evaluation.
    """

    lm: LM | None = None
    adapter: Adapter | None = None
    cache: bool = True
    max_concurrency: int = 8


_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings))


@dataclasses.dataclass(frozen=True, slots=True)
class _Scope:
    """The overrides of the innermost ``lf.use`` block, resolved against ``base``."""

    changes: dict[str, Any]
    base: Settings
    resolved: Settings


# The process default: replaced (never mutated) by configure(), under the lock.
_default = Settings()
_default_lock = threading.Lock()
_scope: ContextVar[_Scope | None] = ContextVar("lmforge_settings", default=None)


def current() -> Settings:
    """Return the settings in force for the calling thread or task."""
    scope = _scope.get()
    if scope is None:
        return _default
    if scope.base is _default:
        return scope.resolved
    # lf.configure() ran after the block was entered: its keys show through.
    return dataclasses.replace(_default, **scope.changes)


def configure(**settings: Any) -> Settings:
    """Set the process-wide default settings, which every thread and task sees.

    ``lf.configure(lm=lf.LM("openai/gpt-4o-mini"))`` at application start-up; keys not
    given keep their value. ``with lf.use(...)`` blocks override it in their scope.
    Unknown keys and wrong types raise :class:`UsageError`.
    """
    global _default
    _check(settings, "lf.configure")
    with _default_lock:
        _default = dataclasses.replace(_default, **settings)
        return _default


@contextlib.contextmanager
def use(**changes: Any) -> Iterator[Settings]:
    """Change settings for the enclosed block only.

    ``with lf.use(lm=lf.LM("openai/gpt-4o-mini"), cache=False): ...``

    Unknown keys raise :class:`UsageError`. The change is visible to code in this thread
    or task and to batch workers started inside the block, never to other threads (those
    see the process default set by :func:`configure`).
    """
    _check(changes, "lf.use")
    outer = _scope.get()
    merged = {**outer.changes, **changes} if outer is not None else dict(changes)
    base = _default
    new = dataclasses.replace(base, **merged)
    token = _scope.set(_Scope(merged, base, new))
    try:
        yield new
    finally:
        _scope.reset(token)


def no_lm_error() -> UsageError:
    """The error for a predictor call with no LM anywhere: says where an LM can come from
    and why a ``with lf.use(...)`` block may not reach the calling thread."""
    return UsageError(
        "no LM configured: this thread has no `with lf.use(lm=...)` block and no process "
        "default from lf.configure(lm=...). Pass lm= to the predictor, call "
        "lf.configure(lm=lf.LM(...)) once for every thread, or use `with lf.use(lm=lf.LM(...)):` "
        "(it reaches its own thread and lmforge's batch workers; a thread you start "
        "yourself needs contextvars.copy_context().run). lf.LM() is the embedded local model."
    )


def _check(changes: dict[str, Any], where: str) -> None:
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        raise UsageError(
            f"{where}() got unknown setting(s) {', '.join(unknown)}; "
            f"known settings are: {', '.join(sorted(_FIELDS))}"
        )
    if "max_concurrency" in changes:
        limit = changes["max_concurrency"]
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise UsageError(f"max_concurrency must be an int of at least 1, got {limit!r}")
    if "cache" in changes and not isinstance(changes["cache"], bool):
        raise UsageError(f"cache must be True or False, got {changes['cache']!r}")
    if changes.get("lm") is not None:
        check_lm(changes["lm"], f"{where}(lm=...)")
    if changes.get("adapter") is not None:
        check_adapter(changes["adapter"], f"{where}(adapter=...)")


def check_lm(value: Any, where: str) -> None:
    """Raise a :class:`UsageError` unless ``value`` is an ``lf.LM``."""
    from .lm.lm import LM

    if isinstance(value, LM):
        return
    if isinstance(value, str):
        raise UsageError(
            f"{where} needs an lf.LM, not the model name {value!r}: pass lf.LM({value!r})"
        )
    raise UsageError(
        f"{where} needs an lf.LM such as lf.LM('openai/gpt-4o-mini'), got {type(value).__name__}"
    )


def check_adapter(value: Any, where: str) -> None:
    """Raise a :class:`UsageError` unless ``value`` is an ``lf.Adapter``."""
    from .adapters.base import Adapter

    if isinstance(value, Adapter):
        return
    names = {
        "chat": "lf.ChatAdapter()",
        "json": "lf.JSONAdapter()",
        "completion": "lf.CompletionAdapter()",
    }
    suggestion = names.get(str(value).lower(), " / ".join(names.values()))
    raise UsageError(f"{where} needs an adapter object such as {suggestion}, got {value!r}")
