"""``lf.evaluate``: score a program on a dataset with a metric, concurrently.

Scores are floats in [0, 1] (a metric returning ``True``/``False`` gives 1/0; NaN or a
number outside [0, 1] is a :class:`lmforge.UsageError`) and are shown as percentages. A
failed example (the program raised, or the metric did) scores ``failure_score`` and is
listed with its error: failures are counted, never dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import json
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from . import budget as _budget
from . import progress as _progress
from . import settings as _settings
from .errors import BudgetExceededError, LMForgeError, UsageError
from .example import Example, Prediction
from .metrics import call_metric, metric_name
from .module import Module
from .trace import track

__all__ = ["EvaluationResult", "EvaluationRow", "aevaluate", "evaluate"]

Metric = Callable[..., Any]
P = ParamSpec("P")
R = TypeVar("R")


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
        usage: LM usage of the run: ``calls``, ``lm_calls`` (backend), ``retries``
            (backend requests that retried a failed one), ``cache_hits``, ``errors``,
            ``prompt_tokens``, ``completion_tokens``, ``cost_usd``.
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
        retries = self.usage.get("retries")
        retried = f" (+{retries} retries)" if retries else ""
        return (
            f"{self.metric}: {self.percent:.1f}% on {self.n} example(s) · "
            f"{self.num_failures} failed · "
            f"{self.usage.get('lm_calls', 0)} LM call(s){retried}, "
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


#: Rounding slack at the ends of [0, 1] (an F1 of 1.0000000000000002 is 1.0).
_SLACK = 1e-9


def score_value(value: Any, metric: str = "metric") -> float:
    """A metric's return value as a float score in [0, 1] (bools become 1.0 / 0.0).

    Numbers of other types (numpy's ``bool_``, ``float64``, ``int64``, ``Fraction``, ...)
    are accepted by what they can do (``float(value)``), so numpy is never imported here.
    NaN and numbers outside [0, 1] are a :class:`UsageError` naming ``metric``.
    """
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    number: float | None = None
    if not isinstance(value, str | bytes) and hasattr(type(value), "__float__"):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = None
    if number is None:
        raise UsageError(
            f"the metric {metric!r} must return a bool or a number, got "
            f"{type(value).__name__}: {value!r}"
        )
    if number != number:  # NaN
        raise UsageError(
            f"the metric {metric!r} returned NaN; return a score in [0, 1] (a bool or a float)"
        )
    if not -_SLACK <= number <= 1.0 + _SLACK:
        raise UsageError(
            f"the metric {metric!r} returned {value!r}, outside [0, 1]; scores must be in "
            "[0, 1]: return a bool, or divide by the largest possible value"
        )
    return min(1.0, max(0.0, number))


async def ascore(
    metric: Metric, example: Example, prediction: Prediction, trace: Any = None
) -> float:
    """Run ``metric`` (sync, async, or an object with ``acall``) and return its float score."""
    value = await call_metric(metric, example, prediction, trace)
    return score_value(value, metric_name(metric))


def _check_failure_score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise UsageError(
            f"failure_score must be a number in [0, 1] (the score of a failed example), "
            f"got {type(value).__name__}: {value!r}"
        )
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"failure_score must be in [0, 1], got {value!r}")
    return float(value)


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
    """Score ``program`` on ``dataset`` with ``metric(example, prediction, trace=None)``.

    Runs up to ``concurrency`` examples at once (default: ``lf.use(max_concurrency=...)``,
    8). Returns an :class:`EvaluationResult` with the mean score in [0, 1], one row per
    example and the LM usage. An example whose program call or metric raises scores
    ``failure_score`` and is listed in ``result.failures``. A spent budget
    (:class:`lmforge.BudgetExceededError`) stops the evaluation and is raised, and so is the
    :class:`lmforge.UsageError` when *every* example failed with one (e.g. no LM configured,
    a metric comparing fields the program does not output, or one returning scores outside
    [0, 1]). An empty dataset, or a ``failure_score`` that is not a number in [0, 1], is a
    :class:`lmforge.UsageError` before anything runs.

    ``await aevaluate(...)`` in async code; :func:`evaluate` (same arguments) blocks.
    """
    examples = _examples(dataset)
    if not examples:
        raise UsageError(
            "nothing to evaluate: the dataset is empty; pass labeled lf.Example items "
            "(e.g. lf.data.load_jsonl(path, inputs=[...]))"
        )
    failure_score = _check_failure_score(failure_score)
    limit = concurrency if concurrency is not None else _settings.current().max_concurrency
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"concurrency must be a whole number of at least 1, got {limit!r}")
    semaphore = asyncio.Semaphore(limit)
    name = metric_name(metric)
    stopped: list[BudgetExceededError] = []
    mistakes: dict[int, UsageError] = {}
    metric_bugs: dict[int, Exception] = {}
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
                    program, metric, index, example, failure_score, stopped, mistakes, metric_bugs
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
    _check_metric_ran(rows, metric_bugs, name)
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
    metric_bugs: dict[int, Exception],
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
        elif not isinstance(exc, LMForgeError):  # a Python error in the metric's own code
            metric_bugs[index] = exc
        return EvaluationRow(
            index,
            example,
            prediction,
            failure_score,
            f"metric:{type(exc).__name__}",
            _one_line(exc),
        )
    return EvaluationRow(index, example, prediction, value)


def _check_metric_ran(
    rows: tuple[EvaluationRow, ...], metric_bugs: Mapping[int, Exception], name: str
) -> None:
    """Raise a :class:`UsageError` when the metric's own code raised (``AttributeError``,
    ``TypeError``, ``KeyError``, ...) on every prediction it was given: that is a bug in
    the metric, not a score of zero. A judge's LM or parse errors are real failures."""
    scored = [row for row in rows if row.prediction is not None]
    if not scored or len(metric_bugs) < len(scored):
        return
    first = metric_bugs[min(metric_bugs)]
    raise UsageError(
        f"the metric {name!r} raised on every prediction it scored ({len(scored)} of "
        f"{len(rows)}): {type(first).__name__}: {_one_line(first)}; fix the metric, which is "
        "called as metric(example, prediction, trace=None)"
    ) from first


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


def _blocking_twin(afunc: Callable[P, Coroutine[Any, Any, R]], name: str) -> Callable[P, R]:
    """The blocking twin ``name`` of the coroutine function ``afunc``: same arguments (and
    signature, for ``help``), run with :func:`run_sync`."""

    @functools.wraps(afunc)
    def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        result: R = run_sync(afunc(*args, **kwargs))
        return result

    twin.__name__ = twin.__qualname__ = name
    return twin


evaluate = _blocking_twin(aevaluate, "evaluate")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500]


def _jsonable(value: Any) -> Any:
    from .adapters.coerce import _json_default

    return json.loads(json.dumps(value, ensure_ascii=False, default=_json_default))
