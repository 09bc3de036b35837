"""Checkpoint storage and accounting helpers for optimizer runs: stable hashes, JSON
normalisation, usage of LM calls, and :class:`RunStore` (one atomic JSON file per step)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.artifact import write_json_atomic
from lmforge.errors import UsageError
from lmforge.trace import LMCall

__all__ = [
    "RunStore",
    "add_usage",
    "code_fingerprint",
    "fingerprint",
    "jsonable",
    "program_fingerprint",
    "rounded_usage",
    "work_usage",
]

RUN_FORMAT = "lmforge.run"
RUN_VERSION = 1


# -- hashing and JSON helpers -------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (pydantic models and enums converted)."""
    from lmforge.adapters.coerce import _json_default

    return json.loads(json.dumps(value, ensure_ascii=False, default=_json_default))


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able ``parts``."""
    blob = json.dumps(
        jsonable(list(parts)), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def program_fingerprint(program: lf.Module) -> str:
    """A hash of everything learnable in ``program`` (signatures, demos, adapters, LMs)."""
    cls = type(program)
    return fingerprint(f"{cls.__module__}:{cls.__qualname__}", program.state())


def code_fingerprint(obj: Any) -> str | None:
    """A hash of the source code behind a callable (a metric), so a resumed run notices
    that it was edited: a function's source, or an object's class source plus its plain
    JSON attributes (``ExactMatch(fields=...)``). ``None`` when no source is available
    (built-ins, interactive sessions), in which case only the callable's name identifies it.
    """
    import functools
    import inspect

    parts: list[Any] = []
    while isinstance(obj, functools.partial):
        try:
            parts.append(json.dumps([obj.args, obj.keywords], sort_keys=True))
        except (TypeError, ValueError):
            parts.append(None)
        obj = obj.func
    target = inspect.unwrap(obj) if inspect.isfunction(obj) or inspect.ismethod(obj) else obj
    state: str | None = None
    if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isclass(target)):
        try:
            state = json.dumps(vars(target), sort_keys=True)
        except (TypeError, ValueError):
            state = None
        target = type(target)
    try:
        source: str | None = inspect.getsource(target)
    except (OSError, TypeError):
        source = None
    if source is None and state is None:
        return None
    return fingerprint(source, state, parts)


# -- usage ------------------------------------------------------------------------------

_USAGE_KEYS = ("lm_calls", "prompt_tokens", "completion_tokens", "cost_usd")


def work_usage(calls: Iterable[LMCall]) -> dict[str, Any]:
    """Usage of the work done by ``calls``, cache hits included (so it does not depend on
    what the cache held): calls, tokens and USD cost (``None`` when no price is known)."""
    usage: dict[str, Any] = {
        "lm_calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": None,
    }
    for call in calls:
        if call.response is None:
            continue
        usage["lm_calls"] += 1
        usage["prompt_tokens"] += call.prompt_tokens
        usage["completion_tokens"] += call.completion_tokens
        if call.cost is not None:
            usage["cost_usd"] = (usage["cost_usd"] or 0.0) + call.cost
    return usage


def add_usage(total: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key in ("lm_calls", "prompt_tokens", "completion_tokens"):
        total[key] = total.get(key, 0) + int(extra.get(key) or 0)
    if extra.get("cost_usd") is not None:
        total["cost_usd"] = (total.get("cost_usd") or 0.0) + float(extra["cost_usd"])


def rounded_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: usage.get(k, 0) for k in _USAGE_KEYS}
    if out["cost_usd"] is not None:
        out["cost_usd"] = round(float(out["cost_usd"]), 8)
    return out


# -- the checkpoint store -----------------------------------------------------------------


class RunStore:
    """JSON checkpoints of one run, one file per step, each written atomically.

    ``directory=None`` keeps checkpoints in memory (nothing is resumable). The directory's
    ``run.json`` records the run's identity; opening it for a different run raises
    :class:`UsageError` rather than mixing results.
    """

    def __init__(
        self, directory: str | Path | None, identity: Mapping[str, Any] | None = None
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.restored = 0
        self.identity = jsonable(dict(identity or {}))
        self.state: dict[str, Any] = {"budget_calls": 0, "budget_cost": 0.0}
        if self.directory is not None:
            self._open()

    def _open(self) -> None:
        assert self.directory is not None
        (self.directory / "steps").mkdir(parents=True, exist_ok=True)
        marker = self.directory / "run.json"
        if marker.exists():
            try:
                data = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(
                    f"{marker} is unreadable ({exc}); delete the run directory to start over"
                ) from None
            if data.get("identity") != self.identity:
                raise UsageError(
                    f"{self.directory} holds a different run (other program, data, metric, seed "
                    f"or optimizer "
                    "settings); pass a new run directory or delete this one"
                )
            self.state.update(data.get("state") or {})
        else:
            self._write_marker()

    def _write_marker(self) -> None:
        assert self.directory is not None
        write_json_atomic(
            self.directory / "run.json",
            {
                "format": RUN_FORMAT,
                "version": RUN_VERSION,
                "identity": self.identity,
                "state": self.state,
            },
        )

    #: Whether workers on other machines see these checkpoints (a database store).
    shared = False

    @property
    def persistent(self) -> bool:
        return self.directory is not None

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the run's lock ``name`` for the block, so that of several workers sharing
        the run only one at a time does the work inside (the others then restore it)."""
        path = self.path(f"{name}.lock")
        if path is None:
            yield
            return
        from filelock import FileLock

        with FileLock(str(path)):
            yield

    def path(self, name: str) -> Path | None:
        """A file inside the run directory for the optimizer's own use (e.g. an optuna
        SQLite study); ``None`` for in-memory runs."""
        return self.directory / name if self.directory is not None else None

    def _file(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / "steps" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored ``{"key", "value", "usage"}`` record of step ``key``, or ``None``."""
        with self._lock:
            if key in self._memory:
                return self._memory[key]  # type: ignore[no-any-return]
        if self.directory is None:
            return None
        file = self._file(key)
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a torn or foreign file: recompute the step
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        with self._lock:
            self._memory[key] = record
        return record

    def put(self, key: str, value: Any, usage: Mapping[str, Any]) -> dict[str, Any]:
        """Store a finished step; returns the stored record (JSON round-tripped)."""
        record = jsonable({"key": key, "value": value, "usage": dict(usage)})
        with self._lock:
            self._memory[key] = record
        if self.directory is not None:
            write_json_atomic(self._file(key), record)
        return record

    def save_state(self, **changes: Any) -> None:
        """Update the run's small mutable state (e.g. budget spent so far)."""
        with self._lock:
            self.state.update(jsonable(changes))
            if self.directory is not None:
                self._write_marker()
