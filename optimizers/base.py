"""The optimizer contract: ``compile(program, trainset, *, metric, ...) -> Module``.

Subclasses implement three things:

- their settings, as dataclass fields declared with :func:`lmforge.optimizers._options.setting`
  (the class is a ``@dataclasses.dataclass(eq=False, repr=False)``): the constructor, its
  checks and ``config()`` (the settings as JSON, recorded in the artifact and in the run's
  identity) derive from them; a class that is not a dataclass overrides ``config()``;
- ``estimate_calls(program, trainset, valset)``: an upper bound of the LM calls a fresh run
  makes (printed before the run starts); :func:`lm_calls_per_run` bounds one program call;
- ``_compile(run)``: the search itself, written against :class:`lmforge.optimizers.run.Run`
  (checkpointed steps, evaluations, seeded randomness, candidates). It returns the program
  it chose. It may raise :class:`lmforge.BudgetExceededError` at any point (any LM call
  can); :meth:`Optimizer.compile` then returns the best candidate recorded so far.

An optimizer object only holds its settings: every ``compile`` call starts from scratch
(or from its run directory), so one optimizer can compile many programs, also at once.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import lmforge as lf
from lmforge import settings as _settings
from lmforge.artifact import write_json_atomic
from lmforge.budget import Budget, BudgetMeter, enforce
from lmforge.errors import BudgetExceededError, UsageError
from lmforge.trace import track

from ._options import check_settings, recorded_settings, setting
from .calibrating import calibration_calls, check_calibration, finish_calibration
from .progress import CompileProgress
from .run import Run, RunStore, jsonable, program_fingerprint
from .shared_store import is_database_url
from .store import code_fingerprint

if TYPE_CHECKING:
    from lmforge.integrations.mlflow_tracking import CompileLogger, MlflowRun

__all__ = ["Optimizer", "check_dataset", "lm_calls_per_run", "target_model"]


@dataclasses.dataclass(eq=False, repr=False)
class Optimizer(abc.ABC):
    """Base class of optimizers (see the module docstring for what subclasses implement).

    Every optimizer takes ``max_errors`` (keyword, default 10, as DSPy): when more examples
    than that raise (program or metric) while bootstrapping demos or in one evaluation, the
    compile stops with :class:`lmforge.optimizers.TooManyErrorsError`; fewer are counted in
    ``artifact_meta["errors"]``. ``None`` never stops.

    And ``calibration`` (keyword, default ``"auto"``): how label-scoring predictors are
    calibrated while candidates are scored and in the result (``"auto"``, ``"contextual"``,
    ``"fitted"`` or ``"off"``; see :mod:`lmforge.optimizers.calibrating`).
    """

    #: The name used on the command line and in artifacts (``lmforge compile --optimizer``).
    name: ClassVar[str] = "optimizer"
    #: Whether the compiled program learns from every training row (tuned weights), rather
    #: than showing some of them as demos: then no training row is held out (see
    #: :meth:`unseen_training_rows`).
    tunes_weights: ClassVar[bool] = False

    _: dataclasses.KW_ONLY
    # Not recorded: it decides whether a run stops, not what it computes or resumes from.
    max_errors: int | None = setting(10, least=0, record=False)
    calibration: str = setting("auto", kind=str, record_default=False)

    def __post_init__(self) -> None:
        check_settings(self)
        check_calibration(self.calibration, type(self).__name__)

    def unseen_training_rows(
        self, compiled: lf.Module, trainset: Sequence[lf.Example]
    ) -> list[lf.Example]:
        """The rows of ``trainset`` that ``compiled`` (this optimizer's result) never shows,
        as good as held out for calibrating its lights (:func:`lmforge.lights.unseen_rows`;
        none when it tunes weights)."""
        if self.tunes_weights:
            return []
        from lmforge.lights import unseen_rows

        return unseen_rows(compiled, trainset)

    def config(self) -> dict[str, Any]:
        """This optimizer's settings as JSON-safe data (its recorded dataclass fields)."""
        if not any("__dataclass_fields__" in vars(cls) for cls in _subclasses(type(self))):
            raise TypeError(
                f"{type(self).__name__} must declare its settings as dataclass fields "
                "or override config()"
            )
        return recorded_settings(self)

    @abc.abstractmethod
    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        """An upper bound of the LM calls a fresh, uncached run makes."""

    @abc.abstractmethod
    def _compile(self, run: Run) -> lf.Module:
        """Search, using ``run``; return the chosen program (a copy, never ``run.student``'s
        caller-owned original)."""

    # -- the public entry point -----------------------------------------------------------

    def compile(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        *,
        metric: Callable[..., Any],
        valset: Sequence[lf.Example] | None = None,
        lm: lf.LM | str | None = None,
        seed: int = 0,
        budget: Budget | None = None,
        run_dir: str | Path | None = None,
        progress: bool = True,
        concurrency: int | None = None,
        mlflow_run: MlflowRun | bool | None = None,
    ) -> lf.Module:
        """Compile ``program`` against ``trainset`` and return an optimized copy.

        Args:
            program: the program to optimize (never modified).
            trainset: labeled ``lf.Example`` items (inputs marked with ``with_inputs``).
            metric: ``metric(example, prediction, trace=None) -> float | bool``.
            valset: examples to score candidates on (optimizers that need one fall back
                to the trainset when it is missing).
            lm: the task model (an ``lf.LM`` or a model name); defaults to
                ``lf.use(lm=...)``. Predictors without their
                own LM are pinned to it in the result, so the artifact records it.
            seed: every random choice derives from it.
            budget: ``lf.Budget(max_lm_calls=..., max_cost_usd=...)``; when spent, the run
                stops and the best program found so far is returned (``artifact_meta
                ["stopped"]`` says why).
            run_dir: a directory for checkpoints; rerunning with the same directory and
                inputs resumes and skips finished work.
            progress: show progress bars (drawn only on a terminal). The call estimate
                and early-stop notices always go to stderr as one-line messages.
            concurrency: parallel LM calls (default ``lf.use(max_concurrency=...)``).
            mlflow_run: log this run to MLflow (needs the ``mlflow`` extra): ``True`` (MLflow's
                own tracking settings, or the active run) or a
                :class:`lmforge.integrations.mlflow.MlflowRun` (store, experiment, model
                registration). Parameters, the call estimate, each trial's score, the dev
                score and the compiled program are logged; ``compile_info["mlflow_run_id"]``
                names the run.

        The result carries ``artifact_meta`` (saved by ``program.save(path)``): target
        model, optimizer name and config, seed, dataset hashes, dev score, usage, the
        candidates considered and the lmforge version.
        """
        from lmforge import __version__
        from lmforge.data import dataset_hash

        task_lm: lf.LM | None = lf.LM(lm) if isinstance(lm, str) else lm
        if not isinstance(program, lf.Module):
            raise UsageError(f"compile() needs an lf.Module program, got {type(program).__name__}")
        if not program.predictors():
            raise UsageError(
                f"{type(program).__name__} has no lf.Predict inside; there is nothing to optimize"
            )
        if not callable(metric) and not callable(getattr(metric, "acall", None)):
            raise UsageError("metric must be callable as metric(example, prediction, trace=None)")
        train = check_dataset(trainset, "trainset")
        if not train:
            raise UsageError("trainset is empty; compile needs labeled examples")
        val = check_dataset(valset, "valset") if valset is not None else None
        if val is not None and not val:
            raise UsageError("valset is empty; pass labeled examples or valset=None")
        limit = concurrency if concurrency is not None else _settings.current().max_concurrency
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError(f"concurrency must be a whole number of at least 1, got {limit!r}")
        model = task_lm.model if task_lm is not None else target_model(program)
        if (
            task_lm is None
            and _settings.current().lm is None
            and any(p.lm is None for p in program.predictors())
        ):
            raise UsageError(
                "compile() has no task model: pass lm=lf.LM('...') or use `with lf.use(lm=...):`"
            )
        student = program.deepcopy()
        from lmforge.metrics import metric_name

        identity = {
            "optimizer": self.name,
            "config": self.config(),
            "seed": seed,
            "program": program_fingerprint(student),
            "model": model,
            "metric": metric_name(metric),
            "metric_code": code_fingerprint(metric),
            "train": dataset_hash(train),
            "dev": dataset_hash(val) if val is not None else None,
        }
        store = self._run_store(run_dir, identity)
        meter = BudgetMeter(
            budget or Budget(),
            spent_calls=int(store.state.get("budget_calls") or 0),
            spent_cost=float(store.state.get("budget_cost") or 0.0),
        )
        estimate = self.estimate_calls(student, train, val)
        logger: CompileLogger | None = None
        if mlflow_run:  # MLflow is imported only when asked for
            from lmforge.integrations.mlflow_tracking import start_compile_run

            logger = start_compile_run(mlflow_run, identity, len(train), val, estimate)
        started = time.perf_counter()
        scope = lf.use(lm=task_lm) if task_lm is not None else contextlib.nullcontext()
        on_trial = logger.trial if logger is not None else None
        with (
            logger.failing() if logger is not None else contextlib.nullcontext(),
            CompileProgress(f"{self.name}", enabled=progress, on_trial=on_trial) as bar,
            scope,
            enforce(meter),
            track() as tracker,
        ):
            run = Run(
                optimizer=self.name,
                student=student,
                trainset=train,
                valset=val,
                metric=metric,
                seed=seed,
                lm=task_lm,
                store=store,
                meter=meter,
                progress=bar,
                concurrency=limit,
                max_errors=self.max_errors,
                calibration=self.calibration,
            )
            per_candidate, final = calibration_calls(
                student, len(val or train), bool(val), self.calibration, lm_calls_per_run(student)
            )
            estimate += final
            run.note(self._estimate_line(estimate, train, val, budget, meter, per_candidate))
            result, dev, stopped = self._search(run, val)
            searched = result  # the candidate chosen, before its final calibration
            calibration: dict[str, Any] | None = None
            if stopped is None:
                try:
                    result, dev, calibration = finish_calibration(
                        run, result, dev, self.calibration
                    )
                except BudgetExceededError as exc:
                    stopped = f"budget spent ({exc}) while calibrating label scores"
            usage = run.usage(tracker)
            backend_calls, cache_hits = tracker.lm_calls, tracker.cache_hits
            retries = tracker.retries
        if run.errors.failed:
            run.note(f"{self.name}: {_describe_errors(run.error_summary())}")
        if stopped is not None:
            best = f"dev {100 * dev:.1f}%" if dev is not None else "no candidate was scored yet"
            run.note(f"stopped early: {stopped}; returning the best program found so far ({best})")
        if task_lm is not None:
            for predictor in result.predictors():
                if predictor.lm is None:
                    predictor.lm = task_lm
        meta = jsonable(
            {
                "target_model": model,
                "optimizer": {"name": self.name, "config": self.config()},
                "seed": seed,
                "metric": metric_name(metric),
                "datasets": {
                    "train": {"sha256": identity["train"], "n": len(train)},
                    "dev": {"sha256": identity["dev"], "n": len(val)} if val is not None else None,
                },
                "scores": {"dev": dev},
                "calibration": calibration,
                "strategy": run.strategy,
                "usage": usage,
                "estimated_lm_calls": estimate,
                "stopped": stopped,
                "errors": run.error_summary(),
                "candidates": [c.summary() for c in run.candidates],
                "chosen_candidate": next(
                    (c.number for c in run.candidates if c.program is searched), None
                ),
                "trials": run.trials,
                "lmforge_version": __version__,
            }
        )
        result.artifact_meta = meta  # type: ignore[attr-defined]
        summary = store.path("result.json")
        if summary is not None:  # every candidate and trial, next to the checkpoints
            write_json_atomic(summary, meta)
        result.compile_info = {  # type: ignore[attr-defined]
            "backend_calls": backend_calls,
            "retries": retries,  # backend requests that retried a failed one
            "cache_hits": cache_hits,
            "restored_steps": store.restored,
            "failures": run.failures.summary(),
            "errors": run.error_summary(),
            "wall_s": round(time.perf_counter() - started, 3),
            "run_dir": str(store.directory) if store.directory is not None else None,
        }
        if logger is not None:
            logger.finish(result, meta)
            result.compile_info["mlflow_run_id"] = logger.run_id  # type: ignore[attr-defined]
        return result

    def _run_store(self, run_dir: str | Path | None, identity: dict[str, Any]) -> RunStore:
        """Where the run's checkpoints live: the run directory, or the database named by a
        search optimizer's ``storage`` URL (shared by workers on several machines)."""
        storage = getattr(self, "storage", None)
        if isinstance(storage, str) and is_database_url(storage):
            from .shared_store import DatabaseRunStore

            return DatabaseRunStore(storage, identity, run_dir)
        return RunStore(run_dir, identity)

    def _search(
        self, run: Run, val: list[lf.Example] | None
    ) -> tuple[lf.Module, float | None, str | None]:
        """Run ``_compile``; on a spent budget fall back to the best so far. Returns the
        program, its dev score (when known) and why the run stopped early (or ``None``)."""
        stopped: str | None = None
        result: lf.Module | None = None
        try:
            result = self._compile(run)
        except BudgetExceededError as exc:
            stopped = f"budget spent ({exc})"
        best = run.best
        if result is None:
            if best is not None:
                return best.program, best.score, stopped
            return run.fallback or run.student, None, stopped
        if best is not None and best.program is result:
            return result, best.score, stopped
        dev = None
        if val:
            try:
                dev = run.evaluate(result, val, label="dev").score
            except BudgetExceededError as exc:
                stopped = f"budget spent ({exc}) before the final dev evaluation"
        return result, dev, stopped

    def _estimate_line(
        self,
        estimate: int,
        train: list[lf.Example],
        val: list[lf.Example] | None,
        budget: Budget | None,
        meter: BudgetMeter,
        calibration_per_candidate: int,
    ) -> str:
        data = f"{len(train)} train" + (f", {len(val)} dev" if val is not None else "")
        calibrating = ""
        if calibration_per_candidate:
            calibrating = (
                f", + {calibration_per_candidate} label-calibration calls per candidate scored"
            )
        line = (
            f"{self.name}: at most ~{estimate} LM calls ({data}; cache hits and "
            f"resumed steps are free{calibrating})"
        )
        if budget is not None and not budget.unlimited:
            limits = []
            if budget.max_lm_calls is not None:
                limits.append(f"{budget.max_lm_calls} calls")
            if budget.max_cost_usd is not None:
                limits.append(f"${budget.max_cost_usd:.2f}")
            line += f"; budget {' / '.join(limits)}"
            if meter.spent_calls:
                line += f" ({meter.spent_calls} calls already spent by earlier attempts)"
        return line

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _subclasses(cls: type) -> list[type]:
    """``cls`` and its bases below :class:`Optimizer` (the classes that may declare settings)."""
    return [c for c in cls.__mro__ if issubclass(c, Optimizer) and c is not Optimizer]


def _describe_errors(errors: dict[str, Any]) -> str:
    kinds = ", ".join(f"{kind} {count}x" for kind, count in errors["types"].items())
    return f"{errors['count']} example run(s) raised ({kinds}); see artifact_meta['errors']"


def check_dataset(dataset: Sequence[lf.Example] | None, name: str) -> list[lf.Example]:
    """``dataset`` as a list of ``lf.Example`` with inputs marked, or a ``UsageError``."""
    if dataset is None:
        return []
    items = list(dataset)
    for i, item in enumerate(items):
        if not isinstance(item, lf.Example):
            raise UsageError(
                f"{name}[{i}] is a {type(item).__name__}, not an lf.Example; load data "
                f"with lf.data.load_jsonl"
            )
        if item.input_keys is None:
            raise UsageError(
                f"{name}[{i}] has no inputs marked; build it with .with_inputs('field', ...)"
            )
    return items


def target_model(program: lf.Module) -> str | None:
    """The model a compile targets: the configured LM's, else the program's first pinned LM."""
    configured = _settings.current().lm
    if configured is not None:
        return configured.model
    for predictor in program.predictors():
        if predictor.lm is not None:
            return predictor.lm.model
    return None


def lm_calls_per_run(program: lf.Module) -> int:
    """An upper bound of the LM calls one call of ``program`` makes: one per predictor,
    times the repeats of the modules around it (``BestOfN`` / ``Refine`` / ``Majority``
    attempts: ``n``; Refine's feedback step: ``n - 1``; ReAct's tool-choosing step:
    ``max_steps``), nested repeats multiplied; plus one judge call per ``Confidence`` with a
    judge."""
    from lmforge.modules import Confidence

    modules = program.named_modules()
    total = 0
    for name, module in modules:
        if not isinstance(module, lf.Predict):
            continue
        factor = 1
        for outer_name, outer in modules:
            if outer is module:
                continue
            if not outer_name:
                rest = name
            elif name.startswith(outer_name) and name[len(outer_name) : len(outer_name) + 1] in (
                ".",
                "[",
            ):
                rest = name[len(outer_name) :].lstrip(".")
            else:
                continue
            factor *= _repeats(outer, rest)
        total += factor
    return total + sum(
        1 for _, module in modules if isinstance(module, Confidence) and module.judge is not None
    )


def _repeats(module: lf.Module, path: str) -> int:
    """How many times one call of ``module`` calls its part at ``path`` (at most)."""
    from lmforge.modules import BestOfN, Majority, ReAct, Refine

    attribute = re.split(r"[.\[]", path, maxsplit=1)[0]
    if isinstance(module, BestOfN | Refine | Majority) and attribute == "module":
        return max(1, int(module.n))
    if isinstance(module, Refine) and attribute == "feedback":
        return max(0, int(module.n) - 1)
    if isinstance(module, ReAct) and attribute == "react":
        return max(1, int(module.max_steps))
    return 1
