"""``Finetune``: compile a program into fine-tuned weights.

The teacher runs on the training set under tracing; the runs that pass the metric give
one training example per predictor call, rendered exactly as the student will be called
when deployed (its adapter and prompt format, with or without its demos). The data is
written to the run directory (chat and completion JSONL, deduplicated, hashed, split),
a :class:`lmforge.finetune.Finetuner` trains on it, and the result is the program with
every predictor pointing at the tuned model: a ``local/`` base plus LoRA adapter, or a
managed ``ft:`` model. ``fewshot_after=True`` then bootstraps few-shot demos for the tuned
model (prompt + weights in one compile); the better of the two on the dev set is returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.errors import ParseError, UsageError
from lmforge.evaluation import run_sync
from lmforge.finetune import Finetuner, TrainingData, TrainingExample, render_example
from lmforge.lm.lm import is_secret_key

from .._options import setting
from ..base import Optimizer, lm_calls_per_run, target_model
from ..bootstrap import acollect_traces, bootstrap_program, check_same_structure, default_teacher
from ..run import Run, fingerprint

__all__ = ["FINETUNERS", "Finetune"]

#: Finetuner names usable as ``Finetune(finetuner="...")`` / ``-o finetuner=...``.
FINETUNERS = ("auto", "local_lora", "openai")

#: Demos of ``fewshot_after=True`` unless ``fewshot_options`` says otherwise.
_FEWSHOT_DEFAULTS = {"max_bootstrapped_demos": 4, "max_labeled_demos": 4}


@dataclasses.dataclass(eq=False, repr=False)
class Finetune(Optimizer):
    """Fine-tune the program's model on traces of a teacher that pass the metric.

    Args:
        metric: the metric traces must pass (default: the one given to ``compile``).
        teacher: who produces the traces: ``None`` (the student with
            ``max_labeled_demos`` labeled demos, as BootstrapFewShot does), a model name
            or ``lf.LM`` (the student program run on that stronger model), an
            ``lf.Module`` with the same predictors (e.g. a few-shot-compiled program), or
            ``"labels"`` (the labeled outputs themselves; one-predictor programs only).
        finetuner: ``"auto"`` (``local_lora`` for ``local/`` models, ``openai`` for
            ``openai/`` models), ``"local_lora"``, ``"openai"``, or a Finetuner object.
        epochs: training epochs (passed to the finetuner).
        include_demos: train (and deploy) with the student's demos in the prompt.
        finetuner_options: constructor options of a finetuner given by name.
        fewshot_after: then bootstrap few-shot demos for the tuned model;
            ``fewshot_options`` are ``max_bootstrapped_demos`` / ``max_labeled_demos``.
    """

    name = "finetune"
    tunes_weights = True

    metric: Callable[..., Any] | None = setting(None, record=False)  # noqa: RUF009
    teacher: str | lf.LM | lf.Module | None = None
    finetuner: str | Finetuner = "auto"
    _: dataclasses.KW_ONLY
    epochs: int | None = setting(None, least=1)
    include_demos: bool = False
    max_labeled_demos: int = setting(8, least=0)
    max_rounds: int = setting(1, least=1)
    metric_threshold: float = 1.0
    validation_fraction: float = 0.1
    finetuner_options: Mapping[str, Any] | None = None
    fewshot_after: bool = False
    fewshot_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.finetuner, str) and self.finetuner not in FINETUNERS:
            raise UsageError(
                f"unknown finetuner {self.finetuner!r}; choose one of {', '.join(FINETUNERS)}"
            )
        if not isinstance(self.finetuner, str | Finetuner):
            raise UsageError(
                "finetuner must be a name or an object with name, base_lm(), config() and train()"
            )
        if self.teacher is not None and not isinstance(self.teacher, str | lf.LM | lf.Module):
            raise UsageError(
                "teacher must be a model name, lf.LM, lf.Module or 'labels', "
                f"not {type(self.teacher).__name__}"
            )
        unknown = set(self.fewshot_options or {}) - set(_FEWSHOT_DEFAULTS)
        if unknown:
            raise UsageError(
                f"unknown fewshot_options {sorted(unknown)}; "
                "use max_bootstrapped_demos, max_labeled_demos"
            )
        super().__post_init__()
        self.finetuner_options = dict(self.finetuner_options or {})
        self.fewshot_options = {**_FEWSHOT_DEFAULTS, **(self.fewshot_options or {})}

    def config(self) -> dict[str, Any]:
        config = super().config()
        if not isinstance(self.finetuner, str):
            config["finetuner"] = {"name": self.finetuner.name, "config": self.finetuner.config()}
        config["finetuner_options"] = {
            k: v for k, v in (self.finetuner_options or {}).items() if not is_secret_key(k)
        }
        config["fewshot_options"] = self.fewshot_options if self.fewshot_after else None
        return config

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        steps = lm_calls_per_run(program)
        teacher = 0 if self.teacher == "labels" else len(trainset) * self.max_rounds * steps
        fewshot = len(trainset) * steps if self.fewshot_after else 0
        evaluations = len(valset or ()) * steps * (2 if self.fewshot_after else 1)
        return teacher + fewshot + evaluations

    def compile(
        self, program: lf.Module, trainset: Sequence[lf.Example], **kwargs: Any
    ) -> lf.Module:  # type: ignore[override]
        """As :meth:`Optimizer.compile`; ``metric`` defaults to the one given to ``Finetune``.

        The artifact's meta gains ``finetune``: finetuner, base model, adapter path and
        hash, rank, target modules, training data hash and counts, hyperparameters, loss
        per step, wall time and peak memory (or the managed job's id and model).
        """
        if kwargs.get("metric") is None:
            if self.metric is None:
                raise UsageError("pass metric=... to Finetune(...) or to compile(...)")
            kwargs["metric"] = self.metric
        result = super().compile(program, trainset, **kwargs)
        info = getattr(result, "finetune_meta", None)
        if info is not None:
            result.artifact_meta["finetune"] = info  # type: ignore[attr-defined]
            result.artifact_meta["target_model"] = info.get("tuned_model")  # type: ignore[attr-defined]
        return result

    # -- the run -----------------------------------------------------------------------

    def _compile(self, run: Run) -> lf.Module:
        finetuner = self._finetuner(run)
        base_lm = finetuner.base_lm()
        student = run.student.deepcopy() if self.include_demos else run.student.reset_copy()
        examples, stats = self._examples(run, student, base_lm)
        if not examples:
            raise UsageError(
                f"fine-tuning needs training data, but none of the {len(run.trainset)} training "
                f"examples gave a teacher trace passing the metric {run.metric_name} "
                f"({stats['failed']} failed, {stats['errors']} errors); use a stronger teacher "
                "(teacher='<model>'), more teacher demos (max_labeled_demos=...), a lower "
                "metric_threshold, or teacher='labels' for a one-step program"
            )
        data = TrainingData.build(
            examples, validation_fraction=self.validation_fraction, seed=run.seed
        )
        workdir = self._workdir(run, data, finetuner)
        data.write(workdir / "data")
        run.note(
            f"finetune: {len(data.train)} train / {len(data.validation)} validation examples "
            f"(data {data.content_hash[:12]}, {data.duplicates} duplicates dropped); "
            f"training with {finetuner.name} in {workdir}"
        )
        run.progress.phase(f"fine-tuning ({finetuner.name})")
        tuned = finetuner.train(
            data, workdir / finetuner.name, seed=run.seed, progress=run.progress.shown
        )
        program = student.deepcopy()
        program.set_lm(tuned.lm)
        score = run.evaluate(program, label="dev").score if run.valset else None
        run.add_candidate(program, score, kind="finetune")
        chosen = program
        if self.fewshot_after:
            both = self._fewshot(run, program)
            both_score = run.evaluate(both, label="dev").score if run.valset else None
            run.add_candidate(both, both_score, kind="finetune+fewshot")
            if score is None or (both_score is not None and both_score >= score):
                chosen = both
        chosen.finetune_meta = {  # type: ignore[attr-defined]
            **tuned.meta,
            "finetuner": finetuner.name,
            "finetuner_config": finetuner.config(),
            "base_model": tuned.base_model,
            "tuned_model": tuned.lm.model,
            "adapter_path": str(tuned.adapter_dir) if tuned.adapter_dir is not None else None,
            "training_data": {**data.manifest(), "directory": str(workdir / "data")},
            "traces": stats,
            "include_demos": self.include_demos,
            "fewshot_after": self.fewshot_after,
            "fewshot_chosen": chosen is not program,
        }
        return chosen

    def _finetuner(self, run: Run) -> Finetuner:
        if not isinstance(self.finetuner, str):
            return self.finetuner
        options = dict(self.finetuner_options or {})
        name = self.finetuner
        model = run.lm.model if run.lm is not None else target_model(run.student)
        if name == "auto":
            if model is None:
                raise UsageError(
                    "finetune needs a model: pass lm=lf.LM('local/gemma-3-270m') to compile"
                )
            name = (
                "local_lora"
                if model.startswith("local/")
                else "openai"
                if model.startswith("openai/")
                else ""
            )
            if not name:
                raise UsageError(
                    f"no built-in finetuner for {model}; pass finetuner='local_lora' (with "
                    "finetuner_options={'base': ...}) or a Finetuner object"
                )
        if name == "local_lora":
            from .local_lora import LocalLoRA

            if model and model.startswith("local/"):
                options.setdefault("base", model)
            if self.epochs is not None:
                options["epochs"] = self.epochs
            return _build(LocalLoRA, options)
        from .openai_ft import OpenAIFinetune

        if model and model.startswith("openai/"):
            options.setdefault("model", model.removeprefix("openai/"))
            if run.lm is not None and run.lm.api_base:
                options.setdefault("base_url", run.lm.api_base)
        if self.epochs is not None:
            options["hyperparameters"] = {
                **options.get("hyperparameters", {}),
                "n_epochs": self.epochs,
            }
        return _build(OpenAIFinetune, options)

    def _teacher(self, run: Run, student: lf.Module) -> lf.Module:
        teacher = self.teacher
        if isinstance(teacher, lf.Module):
            program = teacher.deepcopy()
        elif isinstance(teacher, str | lf.LM):
            program = default_teacher(run, student, self.max_labeled_demos)
            program.set_lm(teacher if isinstance(teacher, lf.LM) else lf.LM(teacher))
        else:
            program = default_teacher(run, student, self.max_labeled_demos)
        check_same_structure(student, program)
        return program

    def _examples(
        self, run: Run, student: lf.Module, base_lm: lf.LM
    ) -> tuple[list[TrainingExample], dict[str, Any]]:
        predictors = dict(student.named_predictors())
        stats = {
            "examples": len(run.trainset),
            "passed": 0,
            "failed": 0,
            "errors": 0,
            "unrenderable": 0,
        }
        calls: list[tuple[str, dict[str, Any]]] = []
        if self.teacher == "labels":
            if len(predictors) != 1:
                raise UsageError(
                    "teacher='labels' needs a one-predictor program; use a teacher model"
                )
            (name,) = predictors
            for example in run.trainset:
                calls.append((name, example.to_dict()))
            stats["passed"] = len(run.trainset)
        else:
            run.progress.phase("running the teacher")
            teacher = self._teacher(run, student)
            traces = run_sync(
                acollect_traces(
                    run, teacher, run.trainset, needed=None, max_rounds=self.max_rounds,
                    threshold=self.metric_threshold,
                )
            )  # fmt: skip
            stats["passed"] = len(traces)
            stats["failed"] = len(run.trainset) - len(traces)
            for trace in traces:
                for name, demos in trace["demos"].items():
                    calls.extend((name, demo) for demo in demos)
        examples = []
        for name, record in calls:
            try:
                examples.append(
                    render_example(
                        name,
                        predictors[name],
                        record,
                        record,
                        lm=base_lm,
                        include_demos=self.include_demos,
                    )
                )
            except (KeyError, ParseError, UsageError):
                stats["unrenderable"] += 1
        return examples, stats

    def _workdir(self, run: Run, data: TrainingData, finetuner: Finetuner) -> Path:
        folder = run.store.path("finetune")
        if folder is not None:
            return folder
        from lmforge.lm.cache import default_cache_dir

        key = fingerprint(data.content_hash, finetuner.name, finetuner.config(), run.seed)
        return default_cache_dir() / "finetune" / key

    def _fewshot(self, run: Run, tuned: lf.Module) -> lf.Module:
        run.progress.phase("few-shot demos for the tuned model")
        fewshot = {**_FEWSHOT_DEFAULTS, **(self.fewshot_options or {})}
        labeled = int(fewshot["max_labeled_demos"])
        return bootstrap_program(
            run,
            tuned.reset_copy(),
            default_teacher(run, tuned, labeled),
            run.trainset,
            max_bootstrapped_demos=int(fewshot["max_bootstrapped_demos"]),
            max_labeled_demos=labeled,
            max_rounds=1,
            threshold=self.metric_threshold,
            temperature=1.0,
            rng_tag="finetune-fewshot",
        )


def _build(cls: type, options: Mapping[str, Any]) -> Any:
    try:
        return cls(**options)
    except TypeError as exc:
        raise UsageError(f"{cls.__name__}: bad option(s): {exc}") from None
