"""``BootstrapFewShot``: run a teacher on the training set and keep the traces that pass
the metric as demos for every predictor of the program.

The building blocks (:func:`acollect_traces`, :func:`assemble`, :func:`default_teacher`)
are public so other optimizers (random search, MIPRO) bootstrap demo sets the same way,
with the same per-example checkpoints.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import lmforge as lf
from lmforge.errors import BudgetExceededError, UsageError
from lmforge.evaluation import ascore, run_sync
from lmforge.modules.demo_sets import interleave
from lmforge.modules.sampling import rejected_attempts
from lmforge.trace import track

from ._options import setting
from .base import Optimizer, lm_calls_per_run
from .calibrating import calibrated_teacher
from .failures import check_max_errors, error_type, lm_failures
from .labeled import balance_label, labeled_demos
from .run import Run, fingerprint, jsonable, program_fingerprint

__all__ = [
    "BootstrapFewShot",
    "acollect_traces",
    "assemble",
    "bootstrap_program",
    "check_same_structure",
    "choose_teacher",
    "default_teacher",
    "example_key",
]

#: Examples started together before checking whether enough traces passed. Fixed (not the
#: concurrency) so which examples are tried does not depend on how many run at once.
CHUNK = 8


def example_key(example: lf.Example) -> str:
    """A stable key of one example (its fields and input keys) for checkpoint names."""
    return fingerprint(example.to_dict(), list(example.input_keys or ()))


def default_teacher(run: Run, student: lf.Module, max_labeled_demos: int) -> lf.Module:
    """The student with ``max_labeled_demos`` labeled demos (seeded), as DSPy does;
    class-balanced for closed outputs (see :func:`labeled_demos`)."""
    teacher = student.reset_copy()
    if max_labeled_demos:
        for predictor in teacher.predictors():
            predictor.demos = labeled_demos(
                run.trainset,
                max_labeled_demos,
                run.rng("teacher"),
                label=balance_label(predictor, run.trainset),
            )
    # A label-scoring teacher answers as calibrated as the student will be: uncalibrated,
    # a biased prompt passes traces of one label only.
    return calibrated_teacher(teacher, run.calibration)


def choose_teacher(
    run: Run, student: lf.Module, teacher: lf.Module | None, max_labeled_demos: int
) -> lf.Module:
    """A copy of the given ``teacher`` (checked to have the student's predictors), else
    :func:`default_teacher`."""
    if teacher is None:
        return default_teacher(run, student, max_labeled_demos)
    chosen = teacher.deepcopy()
    check_same_structure(student, chosen)
    return chosen


def _teacher_for(
    teacher: lf.Module, example: lf.Example, round_: int, temperature: float
) -> lf.Module:
    """The teacher for one example: without the example among its demos (no answer
    leaking), and on later rounds with a distinct rollout id and temperature."""
    record = jsonable(example.to_dict())
    leaks = any(record in predictor.demos for predictor in teacher.predictors())
    if not leaks and round_ == 0:
        return teacher
    program = teacher.deepcopy()
    for predictor in program.predictors():
        if leaks:
            predictor.demos = [d for d in predictor.demos if d != record]
        if round_ > 0:
            predictor.config = {
                **predictor.config,
                "rollout_id": round_,
                "temperature": temperature,
            }
    return program


async def _trace(
    run: Run,
    teacher: lf.Module,
    example: lf.Example,
    round_: int,
    threshold: float,
    temperature: float,
) -> dict[str, Any]:
    program = _teacher_for(teacher, example, round_, temperature)
    names = {id(p): name for name, p in program.named_predictors()}
    # Attempts that BestOfN / Refine did not return (and Refine's feedback calls) are in the
    # trace too; only the returned attempt shows outputs worth copying.
    with track() as tracker, rejected_attempts() as rejected:
        try:
            prediction = await program.acall(**example.inputs())
        except BudgetExceededError:
            raise
        except Exception as exc:
            return {
                "passed": False,
                "score": None,
                "error": f"{type(exc).__name__}: {exc}"[:300],
                "demos": {},
            }
    calls = sorted(
        (
            c
            for c in tracker.predictions
            if id(c.predictor) in names
            and c.error is None
            and c.outputs is not None
            and c.seq not in rejected
        ),
        key=lambda c: c.seq,
    )
    try:
        score = await ascore(run.metric, example, prediction, calls)
    except (BudgetExceededError, UsageError):
        raise  # a spent budget, or a metric bug (e.g. a score outside [0, 1]): stop the run
    except Exception as exc:
        return {
            "passed": False,
            "score": None,
            "error": f"metric {type(exc).__name__}: {exc}"[:300],
            "demos": {},
            # the metric's own code raised (not a judge's LM): a bug when it always does
            "metric_bug": not isinstance(exc, lf.LMForgeError),
        }
    passed = score >= threshold
    demos: dict[str, list[dict[str, Any]]] = {}
    if passed:
        for call in calls:
            assert call.outputs is not None
            demos.setdefault(names[id(call.predictor)], []).append(
                {**call.inputs, **call.outputs.to_dict()}
            )
    return {"passed": passed, "score": score, "error": None, "demos": demos}


async def acollect_traces(
    run: Run,
    teacher: lf.Module,
    examples: Sequence[lf.Example],
    *,
    needed: int | None,
    max_rounds: int = 1,
    threshold: float = 1.0,
    temperature: float = 1.0,
    found: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run ``teacher`` over ``examples`` (in order, in chunks) until ``needed`` traces pass
    the metric (``None``: try them all), for up to ``max_rounds`` rounds over the ones that
    failed. Each example's outcome is a checkpointed step.

    Returns the passing traces in discovery order, each ``{"index", "round", "score",
    "demos": {predictor name: [demo, ...]}}``; they are also appended to ``found`` as they
    arrive (so a caller can use them when a budget stops the run).
    """
    found = found if found is not None else []
    teacher_id = program_fingerprint(teacher)
    semaphore = asyncio.Semaphore(run.concurrency)
    passed: set[int] = set()
    scored = 0  # outcomes the metric was called on
    bugs: list[str] = []  # ... of which the metric's own code raised
    raised: list[str] = []  # outcomes whose program or metric raised
    attempted = 0

    async def one(index: int, round_: int) -> dict[str, Any]:
        example = examples[index]
        key = f"trace/{teacher_id}/{run.metric_name}/{threshold}/{round_}/{example_key(example)}"

        async def compute() -> dict[str, Any]:
            async with semaphore:
                return await _trace(run, teacher, example, round_, threshold, temperature)

        return await run.astep(key, compute)  # type: ignore[no-any-return]

    with run.progress.rows("bootstrap", len(examples) * max_rounds) as row:
        for round_ in range(max_rounds):
            pending = [i for i in range(len(examples)) if i not in passed]
            for start in range(0, len(pending), CHUNK):
                chunk = pending[start : start + CHUNK]
                outcomes = await asyncio.gather(
                    *(one(i, round_) for i in chunk), return_exceptions=True
                )
                stop: BaseException | None = None
                for index, outcome in zip(chunk, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        stop = stop or outcome
                        continue
                    row.advance(1)
                    attempted += 1
                    error = outcome.get("error")
                    run.failures.merge({"attempted": 1, **lm_failures([error])})
                    run.errors.add(1, int(error is not None), [error_type(error)] if error else [])
                    if error is not None:
                        raised.append(str(error))
                    if outcome.get("error") is None or "metric_bug" in outcome:
                        scored += 1
                    if outcome.get("metric_bug"):
                        bugs.append(str(outcome["error"]))
                    if outcome["passed"]:
                        passed.add(index)
                        found.append(
                            {
                                "index": index,
                                "round": round_,
                                "score": outcome["score"],
                                "demos": outcome["demos"],
                            }
                        )
                if stop is not None:
                    raise stop
                check_max_errors(
                    collections.Counter(map(error_type, raised)),
                    attempted,
                    run.max_errors,
                    "bootstrapping demos",
                    raised,
                )
                if needed is not None and len(found) >= needed:
                    return found[:needed]
    if scored and len(bugs) == scored:
        raise UsageError(
            f"the metric {run.metric_name!r} raised on every trace it scored ({scored}): "
            f"{bugs[0].removeprefix('metric ')}; fix the metric, which is called as "
            "metric(example, prediction, trace=None)"
        )
    return found


def interleave_by_label(examples: Sequence[lf.Example]) -> list[lf.Example]:
    """Order examples round-robin over their labels when the labels are categorical.

    Bootstrapping keeps the first traces that pass; on a training set sorted or skewed by
    class those all show one label, and demos of one class teach a small model to answer
    that class. Interleaving makes the first passing traces span the classes. Free-text
    labels (mostly distinct) keep their order.
    """
    groups: dict[str, list[lf.Example]] = {}
    for example in examples:
        groups.setdefault(fingerprint(jsonable(example.labels().to_dict())), []).append(example)
    if not 2 <= len(groups) <= len(examples) // 2:
        return list(examples)
    ordered: list[lf.Example] = []
    queues = list(groups.values())
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def assemble(
    student: lf.Module,
    traces: Sequence[dict[str, Any]],
    examples: Sequence[lf.Example],
    *,
    max_bootstrapped_demos: int,
    max_labeled_demos: int,
    rng: random.Random,
) -> lf.Module:
    """A copy of ``student`` whose predictors get the bootstrapped demos of their name
    (up to ``max_bootstrapped_demos``), topped up to ``max_labeled_demos`` demos with
    labeled examples that produced no trace (sampled with ``rng``). For a closed output the
    top-up is class-balanced and the whole set interleaved by label (see
    :mod:`lmforge.modules.demo_sets`)."""
    program = student.reset_copy()
    used = {t["index"] for t in traces}
    unused = [ex for i, ex in enumerate(examples) if i not in used]
    state = rng.getstate()
    for name, predictor in program.named_predictors():
        label = balance_label(predictor, unused or examples)
        rng.setstate(state)  # every predictor draws the same sample
        raw = labeled_demos(unused, max_labeled_demos, rng, label=label)
        boot = [demo for trace in traces for demo in trace["demos"].get(name, [])][
            :max_bootstrapped_demos
        ]
        demos = boot + raw[: max(0, max_labeled_demos - len(boot))]
        predictor.demos = interleave(demos, label) if label is not None else demos
    return program


def check_same_structure(student: lf.Module, teacher: lf.Module) -> None:
    """Raise ``UsageError`` unless the teacher's predictors have the student's names."""
    ours = [name for name, _ in student.named_predictors()]
    theirs = [name for name, _ in teacher.named_predictors()]
    if sorted(ours) != sorted(theirs):
        raise UsageError(
            f"the teacher's predictors {theirs} do not match the student's {ours}; "
            "use a teacher with the same structure (e.g. the same program class on another LM)"
        )


@dataclasses.dataclass(eq=False, repr=False)
class BootstrapFewShot(Optimizer):
    """Demos from the program's own successful runs (DSPy's BootstrapFewShot).

    The teacher (default: the student with ``max_labeled_demos`` labeled demos) runs on the
    training set; every run whose metric score reaches ``metric_threshold`` gives each
    predictor it called a demo with that call's inputs and outputs, so multi-step programs
    get demos for every step. Up to ``max_bootstrapped_demos`` traces are kept per
    predictor, topped up with labeled examples to ``max_labeled_demos``. Examples that fail
    are retried on later rounds (``max_rounds``) with a new rollout id at
    ``rollout_temperature``, so cached answers are not simply repeated.
    """

    name = "bootstrap"

    max_bootstrapped_demos: int = setting(4, least=0)
    max_labeled_demos: int = setting(16, least=0)
    teacher: lf.Module | None = setting(None, kind=lf.Module)  # noqa: RUF009 (a field)
    max_rounds: int = setting(1, least=1)
    _: dataclasses.KW_ONLY
    metric_threshold: float = 1.0
    rollout_temperature: float = 1.0

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        # per program call: one per predictor, times BestOfN / Refine attempts (and ReAct steps)
        steps = lm_calls_per_run(self.teacher or program)
        teacher_calls = (
            len(trainset) * self.max_rounds * steps if self.max_bootstrapped_demos else 0
        )
        return teacher_calls + len(valset or ()) * lm_calls_per_run(program)

    def _compile(self, run: Run) -> lf.Module:
        student = run.student.reset_copy()
        teacher = choose_teacher(run, student, self.teacher, self.max_labeled_demos)
        return bootstrap_program(
            run,
            student,
            teacher,
            run.trainset,
            max_bootstrapped_demos=self.max_bootstrapped_demos,
            max_labeled_demos=self.max_labeled_demos,
            max_rounds=self.max_rounds,
            threshold=self.metric_threshold,
            temperature=self.rollout_temperature,
            rng_tag="labeled",
        )


def bootstrap_program(
    run: Run,
    student: lf.Module,
    teacher: lf.Module,
    examples: Sequence[lf.Example],
    *,
    max_bootstrapped_demos: int,
    max_labeled_demos: int,
    max_rounds: int,
    threshold: float,
    temperature: float,
    rng_tag: Any,
) -> lf.Module:
    """Collect traces and assemble the student; if the budget runs out midway, the program
    assembled from the traces found so far becomes the run's fallback before re-raising."""
    examples = interleave_by_label(examples)
    found: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    run.progress.phase("bootstrapping demos")
    try:
        if max_bootstrapped_demos:
            traces = run_sync(
                acollect_traces(
                    run,
                    teacher,
                    examples,
                    needed=max_bootstrapped_demos,
                    max_rounds=max_rounds,
                    threshold=threshold,
                    temperature=temperature,
                    found=found,
                )
            )
    except BudgetExceededError:
        run.set_fallback(
            assemble(
                student,
                found,
                examples,
                max_bootstrapped_demos=max_bootstrapped_demos,
                max_labeled_demos=max_labeled_demos,
                rng=run.rng(rng_tag),
            )
        )
        raise
    return assemble(
        student,
        traces,
        examples,
        max_bootstrapped_demos=max_bootstrapped_demos,
        max_labeled_demos=max_labeled_demos,
        rng=run.rng(rng_tag),
    )
