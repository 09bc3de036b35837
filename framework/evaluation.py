"""``lf.evaluate``: score a program on a dataset with a metric, concurrently.

Scores are floats in [0, 1] (a metric returning ``True``/``False`` gives 1/0; NaN or a
number outside [0, 1] is a :class:`lmforge.UsageError`) and are shown as percentages. A
failed example (the program raised, or the metric did) scores ``failure_score`` and is
listed with its error: failures are counted, never dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from . import budget as _budget
from . import progress as _progress
from . import settings as _settings
from .errors import BudgetExceededError, LMForgeError, UsageError
from .evaluation_result import EvaluationResult, EvaluationRow
from .example import Example, Prediction
from .metrics import call_metric, metric_name
from .module import Module
from .trace import track

__all__ = ["EvaluationResult", "EvaluationRow", "aevaluate", "evaluate"]

Metric = Callable[..., Any]
#: A program: an ``lf.Module``, or a plain function of the inputs returning an
#: ``lf.Prediction`` or a dict of outputs (sync or async).
Program = Module | Callable[..., Any]
OnRow = Callable[[EvaluationRow], Any]
P = ParamSpec("P")
R = TypeVar("R")


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
    program: Program,
    dataset: Iterable[Example],
    metric: Metric,
    *,
    concurrency: int | None = None,
    progress: bool = True,
    failure_score: float = 0.0,
    description: str = "evaluate",
    on_row: OnRow | None = None,
    display_table: bool | int = False,
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

    ``program`` may also be a plain function of the inputs returning an ``lf.Prediction``
    or a dict of outputs (sync or async). ``on_row(row)`` is called with each
    :class:`EvaluationRow` as its example finishes, one call at a time; if it raises, the
    evaluation stops with a :class:`lmforge.UsageError` saying so. ``display_table=N``
    prints the first ``N`` rows as a table when done (``True``: all rows), as
    :meth:`EvaluationResult.display` does.

    ``await aevaluate(...)`` in async code; :func:`evaluate` (same arguments) blocks.
    """
    if not isinstance(program, Module) and not callable(program):
        raise UsageError(
            f"evaluate needs a program: an lf.Module or a function of the inputs, got "
            f"{type(program).__name__}"
        )
    if on_row is not None and not callable(on_row):
        raise UsageError(f"on_row must be a function of one row, got {type(on_row).__name__}")
    if not isinstance(display_table, bool) and (
        not isinstance(display_table, int) or display_table < 0
    ):
        raise UsageError(
            f"display_table must be True, False or a number of rows, got {display_table!r}"
        )
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
    stopped: list[BaseException] = []  # a spent budget, or on_row's error
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
                if on_row is not None and not stopped:
                    _report_row(on_row, row, stopped)
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
    result = EvaluationResult(score=mean, rows=rows, usage=tracker.totals(), metric=name)
    if display_table:
        result.display(None if display_table is True else display_table)
    return result


def _report_row(on_row: OnRow, row: EvaluationRow, stopped: list[BaseException]) -> None:
    """Call ``on_row(row)``; its error stops the evaluation (other examples are not
    started) and is raised as a :class:`UsageError` once running ones finish."""
    try:
        on_row(row)
    except Exception as exc:
        error = UsageError(
            f"the on_row callback raised on example {row.index}: {type(exc).__name__}: "
            f"{_one_line(exc)}; fix the callback, which is called as on_row(row)"
        )
        error.__cause__ = exc
        stopped.append(error)


async def _predict(program: Program, inputs: Mapping[str, Any]) -> Prediction:
    """``program``'s prediction for ``inputs``; a plain function may be async, and may
    return a dict of outputs."""
    if isinstance(program, Module):
        return await program.acall(**inputs)
    if inspect.iscoroutinefunction(program) or inspect.iscoroutinefunction(
        getattr(program, "__call__", None)  # noqa: B004 (a callable object's async __call__)
    ):
        value = await program(**inputs)
    else:
        value = await asyncio.to_thread(program, **inputs)  # context copied
    if isinstance(value, Prediction):
        return value
    if isinstance(value, Mapping):
        return Prediction(dict(value))
    raise UsageError(
        f"the program returned {type(value).__name__}; a program function must return an "
        "lf.Prediction or a dict of output fields"
    )


async def _run_one(
    program: Program,
    metric: Metric,
    index: int,
    example: Example,
    failure_score: float,
    stopped: list[BaseException],
    mistakes: dict[int, UsageError],
    metric_bugs: dict[int, Exception],
) -> EvaluationRow | None:
    try:
        prediction = await _predict(program, example.inputs())
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
