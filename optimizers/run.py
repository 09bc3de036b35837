"""Run machinery shared by every optimizer: checkpoints, seeded randomness, scored
candidates, usage accounting and budgets.

An optimizer's ``_compile`` receives a :class:`Run`. Every unit of work that costs LM
calls goes through :meth:`Run.step` (or :meth:`Run.evaluate`, which is a step): its
JSON result is written atomically to the run directory, and when the same run is started
again (same program, data, seed and optimizer config) the step returns the stored result
instead of calling the LM. Optimizers are written to *replay*: they run from the top every
time and finished steps come back instantly, so a killed run continues where it stopped
and ends with the same result.

Usage (LM calls, tokens, cost) is accounted per step and stored with it, so the totals
written into an artifact are the same whether work was done now, answered by the LM cache,
or restored from a checkpoint: same seed + data + cache gives byte-identical artifacts.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import lmforge as lf
from lmforge.budget import BudgetMeter
from lmforge.evaluation import aevaluate, run_sync
from lmforge.metrics import metric_name
from lmforge.trace import track

from .failures import FailureTally, check_max_errors, error_type, lm_failures
from .progress import CompileProgress
from .store import (
    RunStore,
    add_usage,
    fingerprint,
    jsonable,
    program_fingerprint,
    rounded_usage,
    work_usage,
)

__all__ = [
    "Candidate",
    "Run",
    "RunStore",
    "Scored",
    "fingerprint",
    "jsonable",
    "program_fingerprint",
    "work_usage",
]


class _Restored:
    """Usage of steps restored from checkpoints inside an enclosing step (or the run)."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {
            "lm_calls": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": None,
        }
        self.lock = threading.Lock()

    def add(self, usage: Mapping[str, Any]) -> None:
        with self.lock:
            add_usage(self.usage, usage)


_restored_stack: ContextVar[tuple[_Restored, ...]] = ContextVar(
    "lmforge_restored_usage", default=()
)


# -- results ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Scored:
    """A checkpointed evaluation: mean ``score`` in [0, 1], per-example ``scores`` (in
    dataset order), failure count and the first few failure messages."""

    score: float
    scores: tuple[float, ...]
    failures: int
    errors: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return len(self.scores)


@dataclasses.dataclass(slots=True)
class Candidate:
    """A program an optimizer considered, with its score (``None``: not scored)."""

    number: int
    kind: str
    program: lf.Module = dataclasses.field(repr=False)
    score: float | None
    info: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        demos = {name: len(p.demos) for name, p in self.program.named_predictors()}
        return jsonable(
            {
                "candidate": self.number,
                "kind": self.kind,
                "score": self.score,
                "demos": demos,
                **self.info,
            }
        )


# -- the run ----------------------------------------------------------------------------


class Run:
    """Everything one ``compile`` call shares: data, metric, seed, store, budget, progress.

    Created by :meth:`lmforge.optimizers.base.Optimizer.compile`; optimizers never build
    one themselves. Attributes are read-only by convention.
    """

    def __init__(
        self,
        *,
        optimizer: str,
        student: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
        metric: Callable[..., Any],
        seed: int,
        lm: lf.LM | None,
        store: RunStore,
        meter: BudgetMeter | None,
        progress: CompileProgress,
        concurrency: int,
        max_errors: int | None = 10,
        calibration: str = "off",
    ) -> None:
        self.optimizer = optimizer
        self.student = student
        self.trainset = list(trainset)
        self.valset = list(valset) if valset is not None else None
        self.metric = metric
        self.metric_name = metric_name(metric)
        self.seed = seed
        self.lm = lm
        self.store = store
        self.meter = meter
        self.progress = progress
        self.concurrency = concurrency
        self.max_errors = max_errors
        #: how candidates are calibrated before scoring (:mod:`.calibrating`)
        self.calibration = calibration
        #: contextually calibrated copies of scored programs, by program fingerprint
        self.calibrated: dict[str, lf.Module] = {}
        #: the strategy an optimizer that chooses one picked, and why (reported)
        self.strategy: dict[str, Any] | None = None
        self.candidates: list[Candidate] = []
        self.trials: list[dict[str, Any]] = []
        self.fallback: lf.Module | None = None
        #: examples that raised, over every evaluation and trace (restored ones included)
        self.failures = FailureTally()
        #: examples that raised anything (program or metric), by error type
        self.errors = FailureTally()
        self._restored = _Restored()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    # -- randomness ---------------------------------------------------------------------

    def rng(self, *tags: Any) -> random.Random:
        """A ``random.Random`` seeded from the run's seed and ``tags`` (stable across runs)."""
        return random.Random(int(fingerprint(self.seed, *tags), 16))

    # -- steps --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _accounting(self) -> Iterator[tuple[Any, _Restored]]:
        inner = _Restored()
        token = _restored_stack.set((*_restored_stack.get(), inner))
        try:
            with track() as tracker:
                yield tracker, inner
        finally:
            _restored_stack.reset(token)

    def _restore(self, record: Mapping[str, Any]) -> Any:
        key = str(record.get("key"))
        with self._lock:
            counted = key in self._seen
            self._seen.add(key)
        if not counted:  # work done by an earlier attempt: count its usage once
            usage = record.get("usage") or {}
            for acc in _restored_stack.get():
                acc.add(usage)
            self._restored.add(usage)
            self.store.restored += 1
        return record["value"]

    def _finish(self, key: str, value: Any, tracker: Any, inner: _Restored) -> Any:
        with self._lock:
            self._seen.add(key)
        usage = work_usage(tracker.calls)
        add_usage(usage, inner.usage)
        record = self.store.put(key, value, usage)
        self._save_budget()
        return record["value"]

    def step(self, key: str, compute: Callable[[], Any]) -> Any:
        """Run ``compute()`` once per run: its JSON-able result is checkpointed under ``key``
        and returned (always as stored JSON, so fresh and restored results are identical)."""
        record = self.store.get(key)
        if record is not None:
            return self._restore(record)
        with self._accounting() as (tracker, inner):
            value = compute()
        return self._finish(key, value, tracker, inner)

    async def astep(self, key: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        """Async :meth:`step`."""
        record = self.store.get(key)
        if record is not None:
            return self._restore(record)
        with self._accounting() as (tracker, inner):
            value = await compute()
        return self._finish(key, value, tracker, inner)

    def _save_budget(self) -> None:
        if self.meter is not None and self.store.persistent:
            self.store.save_state(
                budget_calls=self.meter.spent_calls, budget_cost=self.meter.spent_cost
            )

    # -- evaluation ---------------------------------------------------------------------

    def dataset_hash(self, dataset: Sequence[lf.Example]) -> str:
        """The content hash of ``dataset`` (computed each time: lists may change)."""
        from lmforge.data import dataset_hash

        return dataset_hash(dataset)

    async def aevaluate(
        self,
        program: lf.Module,
        dataset: Sequence[lf.Example] | None = None,
        *,
        label: str = "evaluate",
        calibrate: bool = True,
    ) -> Scored:
        """Score ``program`` on ``dataset`` (default: the valset, else the trainset),
        checkpointed by (program state, data, metric). With ``calibrate`` (and the run's
        calibration on) a label-scoring program is scored calibrated for its own prompt,
        as it will be served (:mod:`.calibrating`)."""
        if calibrate:
            from .calibrating import acalibrated

            program = await acalibrated(self, program)
        data = list(
            dataset
            if dataset is not None
            else (self.valset if self.valset is not None else self.trainset)
        )
        key = f"eval/{program_fingerprint(program)}/{self.dataset_hash(data)}/{self.metric_name}"

        async def compute() -> dict[str, Any]:
            result = await aevaluate(
                program,
                data,
                self.metric,
                concurrency=self.concurrency,
                progress=True,
                description=label,
            )
            errors = [f"{row.error_type}: {row.error}" for row in result.failures]
            return {
                "score": result.score,
                "scores": result.scores,
                "failures": result.num_failures,
                "errors": errors[:5],
                "error_types": dict(collections.Counter(map(error_type, errors))),
                "lm_failures": lm_failures(errors),
            }

        value = await self.astep(key, compute)
        attempted = len(value["scores"])
        # (checkpoints written before LM failures were counted have none recorded)
        self.failures.merge({"attempted": attempted, **(value.get("lm_failures") or {})})
        types = value.get("error_types") or collections.Counter(map(error_type, value["errors"]))
        self.errors.add(attempted, int(value["failures"]), types)
        check_max_errors(
            types, attempted, self.max_errors, f"evaluating ({label})", value["errors"]
        )
        self.progress.calls(self.live_usage())
        return Scored(
            float(value["score"]),
            tuple(value["scores"]),
            int(value["failures"]),
            tuple(value["errors"]),
        )

    def evaluate(
        self,
        program: lf.Module,
        dataset: Sequence[lf.Example] | None = None,
        *,
        label: str = "evaluate",
        calibrate: bool = True,
    ) -> Scored:
        """Sync :meth:`aevaluate`."""
        return run_sync(  # type: ignore[no-any-return]
            self.aevaluate(program, dataset, label=label, calibrate=calibrate)
        )

    # -- candidates ---------------------------------------------------------------------

    def add_candidate(
        self, program: lf.Module, score: float | None, *, kind: str, **info: Any
    ) -> Candidate:
        """Record a considered program; the best scored one is :attr:`best` (ties keep the
        earliest, so results do not depend on timing)."""
        with self._lock:
            candidate = Candidate(len(self.candidates), kind, program, score, jsonable(info))
            self.candidates.append(candidate)
        if score is not None:
            best = self.best
            self.progress.best(best.score if best is not None else None)
        return candidate

    def add_trial(self, score: float | None, *, kind: str = "trial", **info: Any) -> None:
        """Record one search trial for the report's score-per-trial plot."""
        with self._lock:
            record = jsonable({"number": len(self.trials), "kind": kind, "score": score, **info})
            self.trials.append(record)
        self.progress.trial(record)

    @property
    def best(self) -> Candidate | None:
        scored = [c for c in self.candidates if c.score is not None]
        if not scored:
            return None
        return max(scored, key=lambda c: (c.score, -c.number))

    def set_fallback(self, program: lf.Module) -> None:
        """The program to return if the run stops before any candidate was scored."""
        self.fallback = program

    # -- usage --------------------------------------------------------------------------

    def usage(self, tracker: Any) -> dict[str, Any]:
        """The run's work usage: this process's calls plus restored steps' stored usage."""
        total = work_usage(tracker.calls)
        add_usage(total, self._restored.usage)
        return rounded_usage(total)

    def error_summary(self) -> dict[str, Any]:
        """``{"count": examples that raised, "types": {error type: count}}`` (commonest
        five), for ``artifact_meta["errors"]``."""
        return {"count": self.errors.failed, "types": dict(self.errors.errors.most_common(5))}

    def live_usage(self) -> dict[str, Any]:
        meter = self.meter
        return {
            "backend_calls": meter.spent_calls if meter is not None else None,
            "retries": meter.retries if meter is not None else None,
            "cost_usd": meter.spent_cost if meter is not None else None,
        }

    def note(self, message: str) -> None:
        """Tell the user something (stderr), unless the run is quiet."""
        self.progress.print(message)
