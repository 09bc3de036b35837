"""``RandomSearch``: bootstrap several candidate programs and keep the best on the valset.

Candidates (DSPy's BootstrapFewShotWithRandomSearch): zero-shot, labeled demos only,
bootstrapped in training-set order, then ``num_candidates`` bootstraps over seeded
shuffles of the training set with a random number of demos. Every candidate is scored on
the valset (the trainset when there is none); all of them are reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import lmforge as lf

from ._options import setting
from .base import Optimizer, lm_calls_per_run
from .bootstrap import bootstrap_program, choose_teacher
from .labeled import labeled_demos
from .run import Run

__all__ = ["RandomSearch"]


@dataclasses.dataclass(eq=False, repr=False)
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

    num_candidates: int = setting(8, least=0)
    # shuffled candidates draw between 1 and this many bootstrapped demos
    max_bootstrapped_demos: int = setting(4, least=1)
    max_labeled_demos: int = setting(16, least=0)
    teacher: lf.Module | None = setting(None, kind=lf.Module)  # noqa: RUF009 (a field)
    max_rounds: int = setting(1, least=1)
    _: dataclasses.KW_ONLY
    metric_threshold: float = 1.0
    stop_at_score: float | None = None

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
        teacher = choose_teacher(run, student, self.teacher, self.max_labeled_demos)
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
