"""``lf.Module``: the base class of every program.

Sub-modules and predictors are found by walking instance attributes (lists, tuples and
dicts included); there is no metaclass. A module is callable (``program(**inputs)``),
awaitable (``await program.acall(**inputs)``) and batchable.
"""

from __future__ import annotations

import contextvars
import copy
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from . import settings as _settings
from . import trace as _trace
from .errors import LMForgeError, UsageError
from .example import Example, Prediction
from .steps import run_blocking

if TYPE_CHECKING:
    from .predict import Predict

__all__ = ["BatchError", "Module"]


class BatchError(LMForgeError):
    """One failed item of ``Module.batch``: ``error`` is what it raised, ``inputs`` its inputs."""

    def __init__(self, index: int, inputs: Mapping[str, Any], error: BaseException) -> None:
        super().__init__(f"item {index} failed: {type(error).__name__}: {error}")
        self.index = index
        self.inputs = dict(inputs)
        self.error = error


if TYPE_CHECKING:
    # For type checkers only (``**options: Unpack[BatchOptions]``): a TypedDict costs
    # import time.
    class BatchOptions(TypedDict, total=False):
        """Options of :meth:`Module.batch` and :meth:`Module.abatch`.

        ``concurrency``: items run at once (default: ``lf.use(max_concurrency=...)``).
        ``raise_errors``: raise a failed item's error instead of putting a
        :class:`BatchError` in its place. ``on_result``: ``on_result(index, outcome)`` is
        called as each item finishes.
        """

        concurrency: int | None
        raise_errors: bool
        on_result: Callable[[int, Prediction | BatchError], None] | None


class _Batch:
    """One batch call: its items' inputs and how each item runs (both twins share it)."""

    def __init__(
        self,
        module: Module,
        items: Iterable[Mapping[str, Any] | Example],
        *,
        concurrency: int | None = None,
        raise_errors: bool = False,
        on_result: Callable[[int, Prediction | BatchError], None] | None = None,
    ) -> None:
        self.module = module
        self.inputs = [_inputs_of(item) for item in items]
        self.limit = _limit(concurrency)
        self.raise_errors = raise_errors
        self.on_result = on_result

    def blocking_item(self, index: int) -> Prediction | BatchError:
        return run_blocking(self.item(index, blocking=True))

    async def item(self, index: int, *, blocking: bool) -> Prediction | BatchError:
        """Item ``index``'s outcome (a :mod:`lmforge.steps` core)."""
        inputs = self.inputs[index]
        module = self.module
        outcome: Prediction | BatchError
        try:
            outcome = module(**inputs) if blocking else await module.acall(**inputs)
        except Exception as exc:
            if self.raise_errors:
                raise
            outcome = BatchError(index, inputs, exc)
        if self.on_result is not None:
            self.on_result(index, outcome)
        return outcome


class Module:
    """Base class of programs. Subclasses implement ``forward`` (and may ``aforward``)."""

    def forward(self, **inputs: Any) -> Prediction:
        raise UsageError(f"{type(self).__name__} must implement forward(**inputs)")

    async def aforward(self, **inputs: Any) -> Prediction:
        """Async forward; by default runs ``forward`` in a worker thread (context copied)."""
        import asyncio

        return await asyncio.to_thread(self.forward, **inputs)

    def __call__(self, *args: Any, **inputs: Any) -> Prediction:
        if args:
            raise UsageError(_positional_message(self, len(args)))
        hook = _trace.current
        if hook is None:
            prediction = self.forward(**inputs)
        else:
            with hook.span(self, inputs):
                prediction = self.forward(**inputs)
        if "artifact_meta" in self.__dict__:  # a compiled or loaded program: lights apply
            import lmforge.lights as lights  # absolute: no per-call name resolution

            return lights.mark(self, prediction)  # type: ignore[no-any-return]
        return prediction

    async def acall(self, *args: Any, **inputs: Any) -> Prediction:
        if args:
            raise UsageError(_positional_message(self, len(args)))
        hook = _trace.current
        if hook is None:
            prediction = await self.aforward(**inputs)
        else:
            with hook.span(self, inputs):
                prediction = await self.aforward(**inputs)
        if "artifact_meta" in self.__dict__:  # a compiled or loaded program: lights apply
            import lmforge.lights as lights  # absolute: no per-call name resolution

            return lights.mark(self, prediction)  # type: ignore[no-any-return]
        return prediction

    # -- batch --------------------------------------------------------------------------

    def batch(
        self, items: Iterable[Mapping[str, Any] | Example], **options: Unpack[BatchOptions]
    ) -> list[Prediction | BatchError]:
        """Call the program on every item with bounded thread concurrency, keeping order.

        A failed item yields a :class:`BatchError` in its place unless ``raise_errors``
        (see :class:`BatchOptions`). Workers see the caller's settings (``lf.use``) and
        trackers.
        """
        run = _Batch(self, items, **options)
        count = len(run.inputs)
        if run.limit == 1 or count <= 1:
            return [run.blocking_item(i) for i in range(count)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(run.limit, count)) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, run.blocking_item, i)
                for i in range(count)
            ]
            return [future.result() for future in futures]

    async def abatch(
        self, items: Iterable[Mapping[str, Any] | Example], **options: Unpack[BatchOptions]
    ) -> list[Prediction | BatchError]:
        """Async :meth:`batch`: at most ``concurrency`` calls in flight, order kept."""
        import asyncio

        run = _Batch(self, items, **options)
        semaphore = asyncio.Semaphore(run.limit)

        async def one(index: int) -> Prediction | BatchError:
            async with semaphore:
                return await run.item(index, blocking=False)

        return list(await asyncio.gather(*(one(i) for i in range(len(run.inputs)))))

    # -- structure ----------------------------------------------------------------------

    def named_predictors(self) -> list[tuple[str, Predict]]:
        """Every ``Predict`` inside this program with a stable dotted name."""
        from .predict import Predict

        found: list[tuple[str, Predict]] = []
        seen: set[int] = set()
        for name, module in self._walk("", seen):
            if isinstance(module, Predict):
                found.append((name or "self", module))
        return found

    def predictors(self) -> list[Predict]:
        return [p for _, p in self.named_predictors()]

    def named_modules(self) -> list[tuple[str, Module]]:
        return list(self._walk("", set()))

    def _walk(self, prefix: str, seen: set[int]) -> Iterator[tuple[str, Module]]:
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        for attr, value in vars(self).items():
            if attr.startswith("_"):
                continue
            yield from _walk_value(value, f"{prefix}.{attr}" if prefix else attr, seen)

    def set_lm(self, lm: Any) -> None:
        """Point every predictor of this program at ``lm``."""
        for predictor in self.predictors():
            predictor.lm = lm

    # -- copies and state ---------------------------------------------------------------

    def deepcopy(self) -> Module:
        """A deep copy of the program's parameters (predictors, their demos, sub-modules).

        LMs are shared, not copied, and so is any attribute that cannot be deep-copied (a
        lock, a client, a database handle): the copy uses the same object.
        """
        return copy.deepcopy(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Module:
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = _copy_part(value, memo)
        return new

    def reset_copy(self) -> Module:
        """A deep copy with every predictor's demos (and per-input demo selector) cleared."""
        new = self.deepcopy()
        for predictor in new.predictors():
            predictor.demos = []
            predictor.demo_selector = None
        return new

    def state(self) -> dict[str, Any]:
        """The learnable state of every predictor, by name (JSON-safe)."""
        return {name: p.dump_state() for name, p in self.named_predictors()}

    def load_state(self, state: Mapping[str, Any], *, allow_endpoints: bool = False) -> Module:
        """Load :meth:`state` output into this program's predictors (all or nothing)."""
        predictors = dict(self.named_predictors())
        missing = sorted(set(state) - set(predictors))
        if missing:
            raise UsageError(
                f"state names predictor(s) {missing} this program does not have; "
                f"it has {sorted(predictors)}"
            )
        staged = {
            name: predictors[name].parsed_state(data, allow_endpoints=allow_endpoints)
            for name, data in state.items()
        }
        for name, parsed in staged.items():
            predictors[name].apply_state(parsed)
        return self

    def spec_config(self) -> dict[str, Any]:
        """Constructor arguments needed to rebuild this module without user code.

        The default (``{}``) means the class is rebuilt by calling it with no arguments.
        """
        return {}

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> Module:
        if config:
            return cls(**config)
        return cls()

    def save(self, path: str | os.PathLike[str], *, meta: Mapping[str, Any] | None = None) -> None:
        """Write this program as a versioned JSON artifact (atomically)."""
        from .artifact import save

        save(self, path, meta=meta)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={p.signature!r}" for n, p in self.named_predictors())
        return f"{type(self).__name__}({inner})"


def _walk_value(value: Any, name: str, seen: set[int]) -> Iterator[tuple[str, Module]]:
    if isinstance(value, Module):
        yield from value._walk(name, seen)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk_value(item, f"{name}[{i}]", seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_value(item, f"{name}[{key!r}]", seen)


def _copy_part(value: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of one module attribute, or ``value`` itself when it cannot be copied.

    Plain containers are rebuilt item by item, so a list holding a predictor and a lock
    copies the predictor and shares the lock.
    """
    if isinstance(value, Module):
        return copy.deepcopy(value, memo)
    if type(value) in (list, tuple, dict):
        found = memo.get(id(value))
        if found is not None:
            return found
        rebuilt: Any
        if type(value) is dict:
            rebuilt = memo[id(value)] = {}
            for key, item in value.items():
                rebuilt[key] = _copy_part(item, memo)
        elif type(value) is list:
            rebuilt = memo[id(value)] = []
            rebuilt.extend(_copy_part(item, memo) for item in value)
        else:
            rebuilt = memo[id(value)] = tuple(_copy_part(item, memo) for item in value)
        return rebuilt
    # A failed deepcopy leaves half-built copies in its memo: try on a scratch memo and
    # keep what it built only when the copy succeeded.
    trial = dict(memo)
    try:
        result = copy.deepcopy(value, trial)
    except Exception:  # any object's __reduce__ may refuse (locks, sockets, clients)
        return value
    keep_alive = trial.pop(id(trial), None)
    memo.update(trial)
    if keep_alive:
        memo.setdefault(id(memo), []).extend(keep_alive)
    return result


def _positional_message(module: Module, count: int) -> str:
    signature = getattr(module, "signature", None)
    fields = getattr(signature, "input_fields", None)
    example = ", ".join(f"{f.name}=..." for f in fields) if fields else "question=..."
    return (
        f"{type(module).__name__} takes its inputs by name, not position "
        f"(got {count} positional argument(s)); call it as program({example})"
    )


def _inputs_of(item: Mapping[str, Any] | Example) -> dict[str, Any]:
    if isinstance(item, Example):
        return dict(item.inputs()) if item.input_keys is not None else dict(item)
    if isinstance(item, Mapping):
        return dict(item)
    raise UsageError(f"batch items must be dicts or lf.Example, got {type(item).__name__}")


def _limit(concurrency: int | None) -> int:
    limit = concurrency if concurrency is not None else _settings.current().max_concurrency
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise UsageError(f"concurrency must be an int of at least 1, got {limit!r}")
    return limit
