"""``lf.evaluate``: score a program on a dataset with a metric, concurrently.

Scores are floats in [0, 1] (a metric returning ``True``/``False`` gives 1/0) and are
shown as percentages. A failed example (the program raised, or the metric did) scores
``failure_score`` and is listed with its error: failures are counted, never dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import budget as _budget
from . import progress as _progress
from . import settings as _settings
from .errors import BudgetExceededError, UsageError
from .example import Example, Prediction
from .metrics import call_metric, metric_name
from .module import Module
from .trace import track

__all__ = ["EvaluationResult", "EvaluationRow", "aevaluate", "evaluate"]

Metric = Callable[..., Any]


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluationRow:
    """One example's outcome: its prediction and score, or the error it failed with."""

    index: int
    example: Example
    prediction: Prediction | None
    score: float
    error_type: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_type is not None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "index": self.index,
                "example": self.example.to_dict(),
                "prediction": self.prediction.to_dict() if self.prediction is not None else None,
                "score": self.score,
                "error_type": self.error_type,
                "error": self.error,
            }
        )


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes:
        score: mean score over every example, failures included (as ``failure_score``).
        rows: one :class:`EvaluationRow` per example, in dataset order.
        usage: LM usage of the run: ``calls``, ``lm_calls`` (backend), ``cache_hits``,
            ``errors``, ``prompt_tokens``, ``completion_tokens``, ``cost_usd``.
        metric: the metric's name.
    """

    score: float
    rows: tuple[EvaluationRow, ...]
    usage: Mapping[str, Any]
    metric: str = "metric"

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def scores(self) -> list[float]:
        return [row.score for row in self.rows]

    @property
    def failures(self) -> list[EvaluationRow]:
        """Rows whose program call or metric raised."""
        return [row for row in self.rows if row.failed]

    @property
    def num_failures(self) -> int:
        return sum(1 for row in self.rows if row.failed)

    @property
    def percent(self) -> float:
        return round(100.0 * self.score, 2)

    def summary(self) -> str:
        """One line: score, example count, failures and usage."""
        cost = self.usage.get("cost_usd")
        money = f" · ${cost:.4f}" if cost else ""
        return (
            f"{self.metric}: {self.percent:.1f}% on {self.n} example(s) · "
            f"{self.num_failures} failed · "
            f"{self.usage.get('lm_calls', 0)} LM call(s), "
            f"{self.usage.get('cache_hits', 0)} cached{money}"
        )

    def to_dict(self, *, rows: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "metric": self.metric,
            "score": self.score,
            "n": self.n,
            "failures": self.num_failures,
            "usage": dict(self.usage),
        }
        if rows:
            data["rows"] = [row.to_dict() for row in self.rows]
        return data

    def __float__(self) -> float:
        return self.score

    def __repr__(self) -> str:
        return f"EvaluationResult({self.summary()})"


def _examples(dataset: Iterable[Example | Mapping[str, Any]]) -> list[Example]:
    examples = []
    for i, item in enumerate(dataset):
        if not isinstance(item, Example):
            raise UsageError(
                f"dataset item {i} is a {type(item).__name__}; evaluate needs lf.Example items "
                "(load them with lf.data.load_jsonl(path, inputs=[...]))"
            )
        if item.input_keys is None:
            raise UsageError(
                f"dataset item {i} has no inputs marked; build it with .with_inputs('field', ...)"
            )
        examples.append(item)
    return examples


def score_value(value: Any) -> float:
    """A metric's return value as a float score (bools become 1.0 / 0.0)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    raise UsageError(
        f"a metric must return a bool or a number, got {type(value).__name__}: {value!r}"
    )


async def ascore(
    metric: Metric, example: Example, prediction: Prediction, trace: Any = None
) -> float:
    """Run ``metric`` (sync, async, or an object with ``acall``) and return its float score."""
    return score_value(await call_metric(metric, example, prediction, trace))


async def aevaluate(
    program: Module,
    dataset: Iterable[Example],
    metric: Metric,
    *,
    concurrency: int | None = None,
    progress: bool = True,
    failure_score: float = 0.0,
    description: str = "evaluate",
) -> EvaluationResult:
    """Async :func:`evaluate`."""
    examples = _examples(dataset)
    limit = concurrency if concurrency is not None else _settings.current().max_concurrency
    if limit < 1:
        raise UsageError("concurrency must be at least 1")
    semaphore = asyncio.Semaphore(limit)
    name = metric_name(metric)
    stopped: list[BudgetExceededError] = []
    mistakes: dict[int, UsageError] = {}
    spent_before = _budget.exhausted()
    done = [0, 0.0]

    with (
        track() as tracker,
        _progress.task(description, len(examples), enabled=progress, transient=True) as bar,
    ):

        async def one(index: int, example: Example) -> EvaluationRow | None:
            async with semaphore:
                if stopped:
                    return None
                row = await _run_one(
                    program, metric, index, example, failure_score, stopped, mistakes
                )
            if row is not None:
                done[0] += 1
                done[1] += row.score
                bar.advance(1, status=f"{name} {100 * done[1] / done[0]:.1f}%")
            return row

        outcomes = await asyncio.gather(*(one(i, ex) for i, ex in enumerate(examples)))
    if stopped:
        raise stopped[0]
    reason = _budget.exhausted()
    if reason is not None and spent_before is None:
        raise BudgetExceededError(reason)  # a budget stop swallowed inside the program
    rows = tuple(row for row in outcomes if row is not None)
    if rows and len(mistakes) == len(rows):
        # every example failed with a usage mistake (no LM configured, wrong field names):
        # that is a bug in the call, not a score of zero
        raise mistakes[min(mistakes)]
    mean = sum(row.score for row in rows) / len(rows) if rows else 0.0
    return EvaluationResult(score=mean, rows=rows, usage=tracker.totals(), metric=name)


async def _run_one(
    program: Module,
    metric: Metric,
    index: int,
    example: Example,
    failure_score: float,
    stopped: list[BudgetExceededError],
    mistakes: dict[int, UsageError],
) -> EvaluationRow | None:
    try:
        prediction = await program.acall(**example.inputs())
    except BudgetExceededError as exc:
        stopped.append(exc)
        return None
    except Exception as exc:
        if isinstance(exc, UsageError):
            mistakes[index] = exc
        return EvaluationRow(
            index, example, None, failure_score, type(exc).__name__, _one_line(exc)
        )
    try:
        value = await ascore(metric, example, prediction)
    except BudgetExceededError as exc:
        stopped.append(exc)
        return None
    except Exception as exc:
        if isinstance(exc, UsageError):
            mistakes[index] = exc
        return EvaluationRow(
            index,
            example,
            prediction,
            failure_score,
            f"metric:{type(exc).__name__}",
            _one_line(exc),
        )
    return EvaluationRow(index, example, prediction, value)


def evaluate(
    program: Module,
    dataset: Iterable[Example],
    metric: Metric,
    *,
    concurrency: int | None = None,
    progress: bool = True,
    failure_score: float = 0.0,
    description: str = "evaluate",
) -> EvaluationResult:
    """Score ``program`` on ``dataset`` with ``metric(example, prediction, trace=None)``.

    Runs up to ``concurrency`` examples at once (default: ``lf.use(max_concurrency=...)``,
    8). Returns an :class:`EvaluationResult` with the mean score in [0, 1], one row per
    example and the LM usage. An example whose program call or metric raises scores
    ``failure_score`` and is listed in ``result.failures``. A spent budget
    (:class:`lmforge.BudgetExceededError`) stops the evaluation and is raised, and so is the
    :class:`lmforge.UsageError` when *every* example failed with one (e.g. no LM configured,
    or a metric comparing fields the program does not output).
    """
    coroutine = aevaluate(
        program,
        dataset,
        metric,
        concurrency=concurrency,
        progress=progress,
        failure_score=failure_score,
        description=description,
    )
    return run_sync(coroutine)


def run_sync(coroutine: Any) -> Any:
    """Run a coroutine to completion from sync code, even when a loop is already running
    in this thread (e.g. a notebook): then it runs in a helper thread with a copy of the
    caller's context (settings, trackers, budgets)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result: list[Any] = []
    error: list[BaseException] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            result.append(context.run(asyncio.run, coroutine))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="lmforge-evaluate")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500]


def _jsonable(value: Any) -> Any:
    from .adapters.coerce import _json_default

    return json.loads(json.dumps(value, ensure_ascii=False, default=_json_default))
