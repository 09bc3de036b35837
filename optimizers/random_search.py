"""``RandomSearch``: bootstrap several candidate programs and keep the best on the valset.

Candidates (DSPy's BootstrapFewShotWithRandomSearch): zero-shot, labeled demos only,
bootstrapped in training-set order, then ``num_candidates`` bootstraps over seeded
shuffles of the training set with a random number of demos. Every candidate is scored on
the valset (the trainset when there is none); all of them are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lmforge as lf
from lmforge.errors import UsageError

from .base import Optimizer, lm_calls_per_run
from .bootstrap import bootstrap_program, check_same_structure, default_teacher
from .labeled import labeled_demos
from .run import Run, program_fingerprint

__all__ = ["RandomSearch"]


class RandomSearch(Optimizer):
    """Search over bootstrapped demo sets; keep the candidate with the best valset score.

    Args:
        num_candidates: shuffled bootstrap candidates, on top of the three fixed ones
            (zero-shot, labeled-only, unshuffled bootstrap).
        max_bootstrapped_demos / max_labeled_demos / teacher / max_rounds /
            metric_threshold: as for :class:`BootstrapFewShot`; shuffled candidates use
            between 1 and ``max_bootstrapped_demos`` bootstrapped demos.
        stop_at_score: stop early once a candidate reaches this valset score.
    """

    name = "random"

    def __init__(
        self,
        num_candidates: int = 8,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        teacher: lf.Module | None = None,
        max_rounds: int = 1,
        *,
        metric_threshold: float = 1.0,
        stop_at_score: float | None = None,
    ) -> None:
        if num_candidates < 0:
            raise UsageError("RandomSearch(num_candidates=...) must be 0 or more")
        if max_bootstrapped_demos < 1:
            raise UsageError("RandomSearch needs max_bootstrapped_demos of at least 1")
        if max_labeled_demos < 0 or max_rounds < 1:
            raise UsageError("max_labeled_demos must be 0 or more and max_rounds at least 1")
        if teacher is not None and not isinstance(teacher, lf.Module):
            raise UsageError(f"teacher must be an lf.Module, got {type(teacher).__name__}")
        self.num_candidates = num_candidates
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.teacher = teacher
        self.max_rounds = max_rounds
        self.metric_threshold = metric_threshold
        self.stop_at_score = stop_at_score

    def config(self) -> dict[str, Any]:
        return {
            "num_candidates": self.num_candidates,
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
            "max_rounds": self.max_rounds,
            "metric_threshold": self.metric_threshold,
            "stop_at_score": self.stop_at_score,
            "teacher": program_fingerprint(self.teacher) if self.teacher is not None else None,
        }

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        steps = lm_calls_per_run(program)
        scored = len(valset) if valset else len(trainset)
        candidates = self.num_candidates + 3
        # Teacher traces are checkpointed per example and shared by every candidate.
        teacher_calls = len(trainset) * self.max_rounds * lm_calls_per_run(self.teacher or program)
        return teacher_calls + candidates * scored * steps

    def _candidate_plan(self) -> list[tuple[int, str]]:
        plan = [(-3, "zero-shot"), (-2, "labeled"), (-1, "bootstrap")]
        plan += [(seed, "bootstrap-shuffled") for seed in range(self.num_candidates)]
        return plan

    def _compile(self, run: Run) -> lf.Module:
        if run.valset is None:
            run.note(
                "random: no valset given; scoring candidates on the trainset (scores will "
                "be optimistic)"
            )
        student = run.student.reset_copy()
        teacher = (
            self.teacher.deepcopy()
            if self.teacher is not None
            else default_teacher(run, student, self.max_labeled_demos)
        )
        check_same_structure(student, teacher)
        plan = self._candidate_plan()
        run.progress.phase("candidates", total=len(plan))
        for seed, kind in plan:
            program, info = self._build(run, student, teacher, seed, kind)
            run.progress.phase(f"candidate {len(run.candidates) + 1}/{len(plan)} ({kind})")
            scored = run.evaluate(program, run.valset, label=f"candidate {len(run.candidates) + 1}")
            run.add_candidate(
                program, scored.score, kind=kind, seed=seed, failures=scored.failures, **info
            )
            run.add_trial(scored.score, kind="full", label=kind, seed=seed)
            run.progress.advance()
            if self.stop_at_score is not None and scored.score >= self.stop_at_score:
                run.note(
                    f"random: candidate reached {100 * scored.score:.1f}% >= "
                    f"stop_at_score; stopping"
                )
                break
        best = run.best
        assert best is not None
        return best.program

    def _build(
        self, run: Run, student: lf.Module, teacher: lf.Module, seed: int, kind: str
    ) -> tuple[lf.Module, dict[str, Any]]:
        if kind == "zero-shot":
            return student.reset_copy(), {}
        if kind == "labeled":
            program = student.reset_copy()
            demos = labeled_demos(run.trainset, self.max_labeled_demos, run.rng("candidate", seed))
            for predictor in program.predictors():
                predictor.demos = demos
            return program, {}
        examples = list(run.trainset)
        size = self.max_bootstrapped_demos
        if seed >= 0:
            rng = run.rng("candidate", seed)
            rng.shuffle(examples)
            size = rng.randint(1, self.max_bootstrapped_demos)
        program = bootstrap_program(
            run,
            student,
            teacher,
            examples,
            max_bootstrapped_demos=size,
            max_labeled_demos=self.max_labeled_demos,
            max_rounds=self.max_rounds,
            threshold=self.metric_threshold,
            temperature=1.0,
            rng_tag=("candidate", seed),
        )
        return program, {"bootstrapped": size}
