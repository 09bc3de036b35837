"""Scoped settings: a frozen object in a ContextVar, changed only with :func:`use`.

There is no module-level mutable configuration. Each thread and asyncio task sees the
settings of the context it was started in; ``Module.batch`` copies the caller's context
into its workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .adapters.base import Adapter
    from .lm.lm import LM

__all__ = ["Settings", "current", "use"]


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
# Settings is frozen, so sharing one default instance across contexts is safe.
_current: ContextVar[Settings] = ContextVar("lmforge_settings", default=Settings())  # noqa: B039


def current() -> Settings:
    """Return the settings in force for the calling thread or task."""
    return _current.get()


@contextlib.contextmanager
def use(**changes: Any) -> Iterator[Settings]:
    """Change settings for the enclosed block only.

    ``with lf.use(lm=lf.LM("openai/gpt-4o-mini"), cache=False): ...``

    Unknown keys raise :class:`UsageError`. The change is visible to code in this thread
    or task and to batch workers started inside the block, never to other threads.
    """
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        raise UsageError(
            f"lf.use() got unknown setting(s) {', '.join(unknown)}; "
            f"known settings are: {', '.join(sorted(_FIELDS))}"
        )
    if "max_concurrency" in changes:
        limit = changes["max_concurrency"]
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise UsageError(f"max_concurrency must be an int of at least 1, got {limit!r}")
    if "cache" in changes and not isinstance(changes["cache"], bool):
        raise UsageError(f"cache must be True or False, got {changes['cache']!r}")
    if changes.get("lm") is not None:
        check_lm(changes["lm"], "lf.use(lm=...)")
    if changes.get("adapter") is not None:
        check_adapter(changes["adapter"], "lf.use(adapter=...)")
    new = dataclasses.replace(_current.get(), **changes)
    token = _current.set(new)
    try:
        yield new
    finally:
        _current.reset(token)


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
